"""Replay of a day of retained traffic: a real router (storescu to it, folder destinations,
`retention: {delivered: 1d}`) receives a few dozen instances, whose arrival times the test then
spreads over the last day in the journal; stopped, `replay --dry-run` through a changed rule
file reports exactly what changes (the MR series now goes to RESEARCH, the CT's tag edit
changed), and `replay` queues them again, recorded as a replay, which the router delivers
once started again; a second replay, asked while it runs, is delivered at once."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pydicom
from helpers.files import bundled, write
from helpers.instances import make_instances
from helpers.peers import RouterProcess, storescu, wait_until

from rulesengine.cli import main as cli_main

DAY = 86400.0

RULES = """
rule "name the CT" {
  when DataSet.Modality == "CT"
  then set DataSet.InstitutionName = "FIRST"
}

rule "everything to the PACS" {
  then route to PACS
}
"""

CHANGED_RULES = """
rule "name the CT" {
  when DataSet.Modality == "CT"
  then set DataSet.InstitutionName = "SECOND"
}

rule "MR to research" {
  when DataSet.Modality == "MR"
  then route to RESEARCH
}

rule "the rest to the PACS" {
  when DataSet.Modality != "MR"
  then route to PACS
}
"""


def config(port: int) -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nretention: {{delivered: 1d}}\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            "destinations:\n  PACS: {type: folder, path: out/pacs}\n  RESEARCH: {type: folder, path: out/research}\n")


def journal(storage: Path, query: str, args=()) -> list[dict]:
    db = sqlite3.connect(storage / "journal.sqlite", timeout=10)
    try:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute(query, args)]
        db.commit()
        return rows
    finally:
        db.close()


def test_a_day_of_retained_traffic_replayed_through_a_changed_rule_file(router_factory, tmp_path, port, capsys):
    cts = make_instances(tmp_path / "sent" / "ct", 16)
    mrs = make_instances(tmp_path / "sent" / "mr", 8, source=bundled("MR_small.dcm"))
    router = router_factory(config(port), RULES, port)
    write(tmp_path / "changed.rules", CHANGED_RULES)
    sent = storescu(port, [i.path for i in cts + mrs])
    assert sent.returncode == 0, sent.stderr
    storage = tmp_path / "var"
    wait_until(lambda: len(journal(storage, "SELECT id FROM deliveries WHERE state='delivered'")) == 24,
               what="the 24 deliveries")
    router.stop()

    # a day of traffic: arrival times spread over the last 24 hours (two a day before that, still retained)
    now = time.time()
    rows = journal(storage, "SELECT id, sop_instance_uid, path FROM instances ORDER BY id")
    assert len(rows) == 24
    for number, row in enumerate(rows):
        received = now - 3 * DAY if number < 2 else now - DAY + 600 + (number - 2) * (DAY - 1200) / 22
        journal(storage, "UPDATE instances SET received_at=? WHERE id=?", (received, row["id"]))
    older = {rows[0]["sop_instance_uid"], rows[1]["sop_instance_uid"]}
    gone = rows[5]  # a CT whose retained file was removed by hand
    Path(gone["path"]).unlink()
    ct_uids = {i.sop_instance_uid for i in cts}
    mr_uids = {i.sop_instance_uid for i in mrs}
    in_period = {row["sop_instance_uid"] for row in rows} - older - {gone["sop_instance_uid"]}
    router_yaml = str(tmp_path / "router.yaml")

    # ---- the dry run: exactly what changes, per instance, and the counts
    status = cli_main(["replay", router_yaml, "--since", "1d", "--rules", str(tmp_path / "changed.rules"),
                       "--dry-run"])
    out = capsys.readouterr().out
    assert status == 1
    blocks = {re.search(r"^instance \d+ (\S+) from CT1", block).group(1): block
              for block in re.split(r"\n(?=instance )", out.strip()) if block.startswith("instance ")
              and "retained file" not in block.splitlines()[0]}
    assert set(blocks) == in_period
    for uid, block in blocks.items():
        lines = block.splitlines()[1:]
        if uid in mr_uids:
            assert lines == ["  destinations: -PACS +RESEARCH"], block
        else:
            assert lines == ['  - DataSet.InstitutionName = "FIRST"', '  + DataSet.InstitutionName = "SECOND"'], block
    assert f"{gone['sop_instance_uid']}: its retained file is gone: {gone['path']}" in out
    summary = out.strip().splitlines()[-1]
    changed_mr, changed_ct = len(mr_uids & in_period), len(ct_uids & in_period)
    assert summary.startswith("22 retained instance(s) received ")
    assert summary.endswith(f"would change (outcome 0, destinations {changed_mr}, edits {changed_ct}), "
                            "0 unchanged, 1 missing")
    assert f"{changed_mr + changed_ct} would change" in summary

    assert cli_main(["replay", router_yaml, "--since", "1d", "--rules", str(tmp_path / "changed.rules"),
                     "--dry-run", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["summary"] == {"instances": 22, "changed": 21, "unchanged": 0, "missing": 1, "outcome_changed": 0,
                                 "destinations_changed": changed_mr, "edits_changed": changed_ct}
    # through the rules in place, nothing changes
    assert cli_main(["replay", router_yaml, "--since", "1d", "--dry-run"]) == 1  # the missing file only
    assert "0 would change (outcome 0, destinations 0, edits 0), 21 unchanged, 1 missing" in capsys.readouterr().out
    assert not (tmp_path / "out" / "research").exists()  # a dry run sends nothing

    # ---- the replay: queued while the router is stopped, recorded, delivered once it starts
    status = cli_main(["replay", router_yaml, "--since", "1d", "--rules", str(tmp_path / "changed.rules")])
    out = capsys.readouterr().out
    assert status == 1  # one was missing; the others are queued
    assert re.search(r"^replay 1: 21 instance\(s\) received .* queued again with rules \w+ \(.*changed.rules\); "
                     r"1 missing$", out, re.M), out
    assert cli_main(["replays", router_yaml]) == 0
    listed = capsys.readouterr().out
    assert "replay 1 " in listed and "21 instance(s)" in listed and "1 missing" in listed
    assert "21 waiting; processed: none yet; deliveries: none" in listed

    def replay_done(number: int, deliveries: int):
        assert cli_main(["replays", router_yaml, "--format", "json"]) == 0
        replay = {item["id"]: item for item in json.loads(capsys.readouterr().out)}[number]
        return replay if replay["deliveries"].get("delivered") == deliveries else None

    restarted = RouterProcess(tmp_path / "router.yaml", port).start()
    try:
        replay = wait_until(lambda: replay_done(1, 21), timeout=60, interval=0.2, what="the replay's 21 deliveries")
        # and one asked while the router runs: the two older instances, through the rules in place
        assert cli_main(["replay", router_yaml, "--since", "4d", "--until", "2d"]) == 0
        assert re.search(r"^replay 2: 2 instance\(s\) received .* queued again with rules \w+ \(in place\)$",
                         capsys.readouterr().out, re.M)
        second = wait_until(lambda: replay_done(2, 2), timeout=60, interval=0.2, what="the second replay")
    finally:
        restarted.stop()
    assert (second["outcomes"], second["rules_file"]) == ({"route": 2}, None)
    assert cli_main(["replays", router_yaml, "-v"]) == 0
    ended = re.findall(r"^    instance \d+ replays \d+ \((\S+)\): (.*)$", capsys.readouterr().out, re.M)
    assert sorted(ended) == sorted([(uid, "route to RESEARCH") for uid in mr_uids & in_period] +
                                   [(uid, "route to PACS") for uid in (ct_uids & in_period) | older])
    assert (replay["waiting"], replay["outcomes"], replay["instances"], replay["missing"]) == (0, {"route": 21}, 21, 1)
    assert replay["rules_file"] == str(tmp_path / "changed.rules") and "@" in replay["requested_by"]
    research = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                for p in (tmp_path / "out" / "research").rglob("*.dcm")}
    assert research == mr_uids & in_period
    for path in (tmp_path / "out" / "pacs").rglob("*.dcm"):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        if str(dataset.SOPInstanceUID) in in_period & ct_uids:
            assert dataset.InstitutionName == "SECOND"  # delivered again, as the changed rules edit it
        elif str(dataset.SOPInstanceUID) in ct_uids:
            assert dataset.InstitutionName == "FIRST"  # not replayed: as the first time
    replayed = journal(storage, "SELECT sop_instance_uid, replay_id, replay_of, ruleset_version FROM instances "
                                "WHERE replay_id IS NOT NULL")
    assert {row["sop_instance_uid"] for row in replayed if row["replay_id"] == 1} == in_period
    assert {row["sop_instance_uid"] for row in replayed if row["replay_id"] == 2} == older
    # a later replay of the same day finds the instances as received, never the replayed copies
    assert cli_main(["replay", router_yaml, "--since", "1d", "--dry-run"]) == 1
    assert "22 retained instance(s) received" in capsys.readouterr().out
