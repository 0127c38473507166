"""Hot reload under load, in the real router: the rule set version an instance follows is fixed
when it is answered, and recorded in the journal with it; the worker process processes it with
exactly that version, however late it hears of a reload. A rule file emptied under a running
router is refused, and the running rules stay."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pydicom
from helpers.files import bundled
from helpers.invariants import assert_settled, journal_rows
from helpers.peers import storescu, wait_until
from pydicom.uid import generate_uid

CT_SMALL = bundled("CT_small.dcm")


def labelled(label: str) -> str:
    return f"""
rule "label" {{
  then {{
    set DataSet.InstitutionName = "{label}"
    route to PACS
  }}
}}
"""


def config(port: int) -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            "destinations:\n  PACS: {type: folder, path: pacs}\n")


class Sender(threading.Thread):
    """storescu sending new instances, a few per association, until told to stop."""

    def __init__(self, port: int, folder: Path, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.folder, self.stop = port, folder, stop
        self.failures: list[str] = []
        folder.mkdir(parents=True)

    def run(self) -> None:
        dataset = pydicom.dcmread(CT_SMALL)
        batch = 0
        while not self.stop.is_set():
            batch += 1
            files = []
            for number in range(4):
                dataset.SOPInstanceUID = generate_uid()
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
                files.append(self.folder / f"{batch:04d}-{number}.dcm")
                dataset.save_as(files[-1], enforce_file_format=True)
            result = storescu(self.port, files)
            if result.returncode != 0:
                self.failures.append(result.stderr)


def label_of(storage: Path, version: str) -> str:
    """Which labelled rule file a recorded version was compiled from (the journal's copy of it)."""
    [row] = journal_rows(storage, "SELECT data FROM ruleset_files WHERE version=? AND position=0", (version,))
    return re.search(r'InstitutionName = "(V\d)"', bytes(row["data"]).decode()).group(1)


def versions_answered(storage: Path) -> list[str]:
    return [row["ruleset_version"] for row in journal_rows(storage, "SELECT ruleset_version FROM instances")]


def test_every_instance_follows_the_version_recorded_at_its_answer_through_reloads(router_factory, tmp_path,
                                                                                   port):
    router = router_factory(config(port), labelled("V1"), port)
    router.wait_for_log("router running")
    storage = tmp_path / "var"
    stop = threading.Event()
    senders = [Sender(port, tmp_path / f"sent-{n}", stop) for n in range(3)]
    for sender in senders:
        sender.start()
    try:
        for label in ("V2", "V3"):
            # Reload while instances arrive: some before it, some in the moment after it.
            seen = len(versions_answered(storage))
            wait_until(lambda: len(versions_answered(storage)) >= seen + 12, what="instances before the reload")
            (tmp_path / "main.rules").write_text(labelled(label), encoding="utf-8")
            wait_until(lambda: router.output().count("rules reloaded") == int(label[1]) - 1, what="the reload")
            wait_until(lambda: {label_of(storage, v) for v in set(versions_answered(storage)) if v} >= {label},
                       what=f"instances answered under {label}")
        wait_until(lambda: versions_answered(storage)[-12:].count(versions_answered(storage)[-1]) == 12,
                   what="instances after the last reload")
    finally:
        stop.set()
        for sender in senders:
            sender.join(120)
    assert not [failure for sender in senders for failure in sender.failures]

    wait_until(lambda: not journal_rows(storage, "SELECT id FROM instances WHERE state='accepted'") and not
               journal_rows(storage, "SELECT id FROM deliveries WHERE state!='delivered'"),
               what="everything processed and delivered")
    assert router.stop() == 0
    counts = assert_settled(storage)
    rows = journal_rows(storage, "SELECT i.sop_instance_uid, i.ruleset_version, d.path FROM instances i "
                                 "JOIN deliveries d ON d.instance_id = i.id")
    assert counts == {"delivered": len(rows)}
    arrived = {path.name.removesuffix(".dcm"): pydicom.dcmread(path, stop_before_pixels=True).InstitutionName
               for path in (tmp_path / "pacs").glob("*.dcm")}
    labels = {version: label_of(storage, version) for version in {row["ruleset_version"] for row in rows}}
    assert sorted(labels.values()) == ["V1", "V2", "V3"]
    mismatched = [(row["sop_instance_uid"], labels[row["ruleset_version"]], arrived.get(row["sop_instance_uid"]))
                  for row in rows if arrived.get(row["sop_instance_uid"]) != labels[row["ruleset_version"]]]
    assert mismatched == []
    assert len(arrived) == len(rows)


def test_a_rule_file_emptied_under_a_running_router_leaves_the_running_rules(router_factory, tmp_path, port):
    router = router_factory(config(port), labelled("V1"), port)
    router.wait_for_log("router running")
    (tmp_path / "main.rules").write_text("", encoding="utf-8")
    router.wait_for_log("has no rules")
    assert "the running rules (version" in router.output()

    dataset = pydicom.dcmread(CT_SMALL)
    assert storescu(port, [CT_SMALL]).returncode == 0
    arrived = wait_until(lambda: list((tmp_path / "pacs").glob("*.dcm")), what="the instance routed")
    assert pydicom.dcmread(arrived[0]).InstitutionName == "V1"
    assert arrived[0].name == f"{dataset.SOPInstanceUID}.dcm"
    assert router.stop() == 0
    assert assert_settled(tmp_path / "var") == {"delivered": 1}
