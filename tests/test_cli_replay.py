"""`dicom-rules replay` and `dicom-rules replays` on a journal of retained instances (received
in this process by the router's own pipeline, SQLite and PostgreSQL), and what they answer to
bad input: dates that are none, a period in the future or upside down, nothing retained, a
retained file gone or damaged, a rule file with errors, a journal whose database is down."""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from helpers.files import SAMPLES, write
from helpers.peers import free_port

from rulesengine.arrival import Arrival
from rulesengine.cli import main
from rulesengine.cli.replay import parse_when
from rulesengine.config import load_config
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

RULES = 'rule "CT to the PACS" {\n  when DataSet.Modality == "CT"\n  then route to PACS\n}\n\nrule "the rest" {\n  when DataSet.Modality != "CT"\n  then drop\n}\n'
CHANGED = 'rule "all to the PACS" {\n  then copy to PACS {\n    set DataSet.StationName = "REPLAY"\n  }\n}\n'
ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")


def config_text(journal: str = "", retention: str = "retention: {delivered: 1d}\n") -> str:
    return (f"storage: storage\nprocesses: 1\nrules: main.rules\n{journal}{retention}"
            "destinations:\n  PACS: {type: folder, path: out/pacs}\n")


@pytest.fixture(params=["sqlite", "postgres"])
def retained_on_each(request, tmp_path):
    """`retained`, on each journal backend."""
    journal = f"journal: {request.getfixturevalue('postgres').new_database()}\n" if request.param == "postgres" else ""
    return retain(tmp_path, journal)


@pytest.fixture
def retained(tmp_path):
    return retain(tmp_path)


def retain(tmp_path, journal: str = ""):
    """A configuration whose journal retains a CT and an MR (dropped) received an hour ago."""
    write(tmp_path / "router.yaml", config_text(journal))
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage.of(config)
    opened = storage.journal()
    pipeline = Pipeline(storage, opened, RulesHolder(config, opened), lambda names: None)
    paths = []
    for sample in ("ct_head.dcm", "mr_knee.dcm"):
        path = storage.temp_path()
        shutil.copyfile(SAMPLES / sample, path)
        result = pipeline.receive(path, replace(ARRIVAL, received_at=time.time() - 3600))
        pipeline.process(result.instance_id)
        paths.append(opened.instance(result.instance_id).path)
    opened.close()
    return tmp_path, paths


def run(capsys, *args) -> tuple[int, str, str]:
    status = main(["replay", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    return status, captured.out, captured.err


def test_a_dry_run_through_a_changed_file_and_the_replay_it_records(retained_on_each, capsys):
    folder, _ = retained_on_each
    write(folder / "changed.rules", CHANGED)
    status, out, _ = run(capsys, folder / "router.yaml", "--since", "2h", "--rules", folder / "changed.rules",
                         "--dry-run")
    assert status == 1
    assert "  outcome: drop -> route\n  destinations: +PACS\n" in out
    assert out.count('  + [PACS] DataSet.StationName = "REPLAY"') == 2
    assert out.strip().endswith("would change (outcome 1, destinations 1, edits 2), 0 unchanged")
    status, out, _ = run(capsys, folder / "router.yaml", "--since", "2h", "--dry-run", "-v")
    assert (status, out.count("  unchanged\n")) == (0, 2)

    status, out, _ = run(capsys, folder / "router.yaml", "--since", "2h", "--format", "json")
    report = json.loads(out)
    assert status == 0 and report["replay"] == 1 and len(report["queued"]) == 2 and report["missing"] == []
    assert main(["replays", str(folder / "router.yaml")]) == 0
    listed = capsys.readouterr().out
    assert "replay 1 " in listed and "2 instance(s)" in listed and "(in place)" in listed
    assert "2 waiting; processed: none yet" in listed
    assert main(["replays", str(folder / "router.yaml"), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"\(.*\)", "(UID)", line) for line in lines[2:]] == [
        "    instance 3 replays 1 (UID): waiting", "    instance 4 replays 2 (UID): waiting"]
    assert main(["replays", str(folder / "router.yaml"), "-v", "--format", "json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert [(item["instance"], item["replays"], item["outcome"]) for item in listed["replayed"]] == [
        (3, 1, None), (4, 2, None)]


@pytest.mark.parametrize("option, value", [("--since", "yesterday"), ("--since", "2026-13-45"), ("--since", "12x"),
                                           ("--until", "soon"), ("--since", "")])
def test_a_time_that_is_none_is_refused_naming_the_option(tmp_path, capsys, option, value):
    args = ["replay", "router.yaml", "--since", "2d", option, value]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {value!r} is not a date and time (2026-12-01" in err and "(30m, 12h, 2d)" in err


def test_times_are_read_as_iso_8601_or_before_now():
    assert parse_when("2026-12-01T08:30:00+01:00").resolve(0) == datetime(2026, 12, 1, 7, 30,
                                                                          tzinfo=timezone.utc).timestamp()
    assert parse_when("2026-12-01").resolve(0) == datetime(2026, 12, 1).timestamp()  # local time
    assert parse_when("2026-12-01 08:30").resolve(0) == datetime(2026, 12, 1, 8, 30).timestamp()
    assert [parse_when(text).resolve(100000.0) for text in ("90s", "30m", "12h", "1d")] == [
        99910.0, 98200.0, 100000.0 - 43200, 100000.0 - 86400]
    assert parse_when("999999999d").resolve(100000.0) == 0.0  # not before 1970


def test_a_period_in_the_future_or_upside_down_is_refused(retained, capsys):
    folder, _ = retained
    status, _, err = run(capsys, folder / "router.yaml", "--since", "2999-01-01")
    assert status == 2 and "--since 2999-01-01: 2999-01-01 00:00:00 is in the future" in err
    status, _, err = run(capsys, folder / "router.yaml", "--since", "2d", "--until", "3d", "--dry-run")
    assert status == 2 and "--until 3d (" in err and ") is not after --since 2d (" in err
    status, _, err = run(capsys, folder / "router.yaml", "--since", "1d", "--until", "1d")
    assert status == 2 and "is not after" in err


def test_nothing_retained_in_the_period_is_said(retained, capsys):
    folder, _ = retained
    for dry_run in (["--dry-run"], []):
        status, out, err = run(capsys, folder / "router.yaml", "--since", "2000-01-01", "--until", "2000-01-02",
                               *dry_run)
        assert status == 1 and out == ""
        assert "no retained instances received 2000-01-01 00:00:00 - 2000-01-02 00:00:00" in err
    assert main(["replays", str(folder / "router.yaml")]) == 0
    assert capsys.readouterr().out == "no replays\n"  # nothing was recorded


def test_without_retention_the_message_says_so(tmp_path, capsys):
    write(tmp_path / "router.yaml", config_text(retention=""))
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    RulesHolder(config, Storage.of(config).journal())
    status, _, err = run(capsys, tmp_path / "router.yaml", "--since", "2d", "--dry-run")
    assert status == 1 and "retention.delivered is not set in" in err


def test_a_retained_file_gone_or_damaged_is_reported_not_a_traceback(retained_on_each, capsys):
    folder, (ct, mr) = retained_on_each
    (folder / "gone").mkdir()
    shutil.move(ct, folder / "gone" / "ct.dcm")
    write(folder / "damaged.txt", "not DICOM")
    shutil.copyfile(folder / "damaged.txt", mr)
    status, out, _ = run(capsys, folder / "router.yaml", "--since", "2h", "--dry-run")
    assert status == 1
    assert f"its retained file is gone: {ct}" in out and "its retained file cannot be read: " in out
    assert "0 would change (outcome 0, destinations 0, edits 0), 0 unchanged, 2 missing" in out
    shutil.move(folder / "gone" / "ct.dcm", ct)
    status, out, _ = run(capsys, folder / "router.yaml", "--since", "2h", "--format", "json")
    assert status == 0 and len(json.loads(out)["queued"]) == 2  # queued: the router quarantines what it cannot read


def test_a_rule_file_with_errors_gives_its_findings_and_status_1(retained, capsys):
    folder, _ = retained
    write(folder / "broken.rules", 'rule "x" {\n  when DataSet.Modality == "CT"\n  then route to NOWHERE\n}\n')
    write(folder / "blocks.rules", 'block tidy {\n  delete DataSet.StationName\n}\n')
    for dry_run in (["--dry-run"], []):
        status, out, err = run(capsys, folder / "router.yaml", "--since", "2h", "--rules", folder / "broken.rules",
                               *dry_run)
        assert status == 1 and out == ""
        assert f"{folder / 'broken.rules'}:3:" in err and "NOWHERE" in err
        status, _, err = run(capsys, folder / "router.yaml", "--since", "2h", "--rules", folder / "blocks.rules",
                             *dry_run)
        assert status == 1 and "blocks.rules has no rules" in err
    status, _, err = run(capsys, folder / "router.yaml", "--since", "2h", "--rules", folder / "absent.rules")
    assert status == 2 and "absent.rules: no such rule file" in err
    assert main(["replays", str(folder / "router.yaml")]) == 0 and capsys.readouterr().out == "no replays\n"


def test_a_journal_whose_database_is_down_is_a_clear_error(tmp_path, capsys):
    write(tmp_path / "router.yaml", config_text(f"journal: postgresql://router@127.0.0.1:{free_port()}/journal\n"))
    write(tmp_path / "main.rules", RULES)
    for args in (["--dry-run"], []):
        status, _, err = run(capsys, tmp_path / "router.yaml", "--since", "1d", *args)
        assert status == 2 and "cannot connect to the journal's database postgresql://router@127.0.0.1:" in err
    assert main(["replays", str(tmp_path / "router.yaml")]) == 2
    assert "cannot connect to the journal's database" in capsys.readouterr().err


def test_no_journal_yet_and_a_bad_limit(tmp_path, capsys):
    write(tmp_path / "router.yaml", config_text())
    write(tmp_path / "main.rules", RULES)
    status, _, err = run(capsys, tmp_path / "router.yaml", "--since", "1d")
    assert status == 2 and f"no journal in {tmp_path / 'storage'}" in err and "has the router run" in err
    assert main(["replays", str(tmp_path / "router.yaml"), "--limit", "0"]) == 2
    assert "--limit 0: give 1 or more" in capsys.readouterr().err
