"""After processing, every instance the journal holds is settled (routed, dropped or quarantined
with its reason), whatever fails after the answer; and each is processed with the rule set
version recorded at its answer, whoever processes it and whatever the rule files say by then.
Real files on disk, the real journal; two pipelines on one storage folder play the router's
two processes."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from helpers.files import SAMPLES, bundled, write
from helpers.damaged import with_command_element
from helpers.invariants import assert_settled, journal_rows

from rulesengine.config import load_config
from rulesengine.document import Arrival, DocumentReadError
from rulesengine.runtime.journal import ACCEPTED, DONE, PROCESSED, Journal
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RuleSetVersions, RulesHolder
from rulesengine.runtime.storage import Storage

CONFIG = """
storage: storage
rules: main.rules
destinations:
  PACS: {type: folder, path: out/pacs}
  RESEARCH: {type: folder, path: out/research}
"""

ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")


def versioned(label: str) -> str:
    return f"""
rule "hold the knee" {{
  when DataSet.PatientID == "MR-0001"
  then quarantine "knee under review"
}}

rule "drop reports" {{
  when DataSet.Modality == "SR" and DataSet.PatientID == "DROP"
  then drop
}}

rule "label and route" {{
  then {{
    set DataSet.InstitutionName = "{label}"
    route to PACS
  }}
}}
"""


@dataclass
class Process:
    """One of the router's processes: its own journal connection and pipeline."""

    storage: Storage
    journal: Journal
    rules: RulesHolder | None
    pipeline: Pipeline

    def receive(self, source, arrival: Arrival = ARRIVAL):
        path = self.storage.temp_path()
        shutil.copyfile(source, path)
        return self.pipeline.receive(path, arrival)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", versioned("V1"))
    return tmp_path


def main_process(folder: Path) -> Process:
    """What receives: the rules in place, each version recorded in the journal first."""
    config = load_config(folder / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    rules = RulesHolder(config, journal)
    return Process(storage, journal, rules, Pipeline(storage, journal, rules, lambda _names: None,
                                                     on_accepted=lambda _id: None))


def worker_process(folder: Path) -> Process:
    """What processes, as the worker does: no rules of its own, only the versions the journal kept."""
    config = load_config(folder / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    pipeline = Pipeline(storage, journal, None, lambda _names: None, on_accepted=lambda _id: None,
                        versions=RuleSetVersions(journal, config))
    return Process(storage, journal, None, pipeline)


def spool(storage: Storage, name: str) -> list[str]:
    return sorted(os.listdir(getattr(storage, name)))


# ---- 6. a failure after the answer ends in quarantine, once ------------------------------------------------


def test_a_copy_that_cannot_be_written_quarantines_the_instance_once(folder, caplog):
    main = main_process(folder)
    source = with_command_element(folder / "command.dcm")
    result = main.receive(source)
    assert result.outcome == "accepted"

    with caplog.at_level(logging.DEBUG, logger="rulesengine"):
        main.pipeline.process(result.instance_id)
        main.pipeline.process_pending()  # nothing left to take again

    row = main.journal.instance(result.instance_id)
    assert (row["state"], row["outcome"]) == (DONE, "quarantine")
    assert row["reason"].startswith("the copy for PACS cannot be written: Command Set elements (0000,eeee) are "
                                    "not allowed")
    [(kept, info)] = main.storage.quarantined()
    assert kept == row["path"] and Path(kept).read_bytes() == source.read_bytes()
    assert info["reason"] == row["reason"] and info["rules_version"] == main.rules.current.version
    assert spool(main.storage, "tmp") == [] and spool(main.storage, "outgoing") == [] and \
        spool(main.storage, "incoming") == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("rulesengine")]
    assert [(r.levelname, r.exc_info) for r in warnings] == [("WARNING", None)], caplog.text
    assert warnings[0].getMessage() == f"instance {result.instance_id} from CT1: {row['reason']}; quarantined"
    assert_settled(folder / "storage")


def test_a_copy_whose_rules_emptied_its_sop_instance_uid_quarantines_the_instance_with_the_reason(folder):
    """Sent under its own SOP Instance UID, a copy without one cannot go anywhere: the router
    says so, as dry-run does, rather than failing on it."""
    write(folder / "main.rules", 'rule "empty the UID of the research copy" {\n  then {\n    route to PACS\n'
                                 '    copy to RESEARCH {\n      blank DataSet.SOPInstanceUID\n    }\n  }\n}\n')
    main = main_process(folder)
    result = main.receive(SAMPLES / "ct_head.dcm")
    main.pipeline.process(result.instance_id)

    row = main.journal.instance(result.instance_id)
    assert (row["state"], row["outcome"]) == (DONE, "quarantine")
    assert row["reason"] == "the copy for RESEARCH cannot be written: its SOP Instance UID is empty (a rule emptied it)"
    assert spool(main.storage, "tmp") == [] and spool(main.storage, "outgoing") == []
    assert_settled(folder / "storage")


def test_every_instance_is_settled_whatever_happens_after_its_answer(folder):
    """Routed, dropped, quarantined by a rule, damaged on disk after the answer, a copy that
    cannot be written, answered under rules the journal lost: each ends settled."""
    main = main_process(folder)
    report_to_drop = folder / "drop.dcm"
    dataset = pydicom.dcmread(SAMPLES / "sr_report.dcm")
    dataset.PatientID = "DROP"
    dataset.save_as(report_to_drop, enforce_file_format=True)
    results = [main.receive(source) for source in (
        SAMPLES / "ct_head.dcm", report_to_drop, SAMPLES / "mr_knee.dcm", SAMPLES / "ct_chest.dcm",
        with_command_element(folder / "command.dcm"), SAMPLES / "mr_japanese.dcm")]
    damaged, lost_rules = results[3], results[5]
    os.truncate(damaged.path, os.path.getsize(damaged.path) // 2)
    with main.journal._transaction() as db:  # as if written by a router that kept no rule files
        db.execute("UPDATE instances SET ruleset_version='0123456789ab' WHERE id=?", (lost_rules.instance_id,))

    assert worker_process(folder).pipeline.process_pending() == 6

    counts = assert_settled(folder / "storage")
    assert counts == {"queued": 1, "dropped": 1, "quarantined": 4}
    reasons = {row["id"]: row["reason"] for row in journal_rows(folder / "storage", "SELECT * FROM instances")}
    assert reasons[results[2].instance_id] == "knee under review"
    assert "truncated" in reasons[damaged.instance_id]
    assert reasons[results[4].instance_id].startswith("the copy for PACS cannot be written")
    assert reasons[lost_rules.instance_id] == ("the rules it was answered under (version 0123456789ab) are not in "
                                              "the journal")


def test_refused_files_leave_nothing_behind(folder):
    main = main_process(folder)
    for name in ("DICOMDIR", "priv_SQ.dcm", "SC_rgb_jpeg.dcm"):
        path = main.storage.temp_path()
        shutil.copyfile(bundled(name), path)
        with pytest.raises(DocumentReadError):
            main.pipeline.receive(path, ARRIVAL)
        main.storage.remove(path)  # the caller's, as the listener and the watched folder do
    assert journal_rows(folder / "storage", "SELECT * FROM instances") == []
    assert assert_settled(folder / "storage") == {}


# ---- 19. the version fixed at the answer --------------------------------------------------------------------


def institution(delivery_path: str) -> str:
    return pydicom.dcmread(delivery_path, stop_before_pixels=True).InstitutionName


def routed_copy(process: Process, instance_id: int) -> str:
    [row] = journal_rows(process.storage.root, "SELECT path FROM deliveries WHERE instance_id=?", (instance_id,))
    return row["path"]


def test_an_instance_answered_after_a_reload_follows_the_new_rules_in_a_worker_that_did_not_reload(folder):
    main, worker = main_process(folder), worker_process(folder)
    v1 = main.rules.current.version
    before = main.receive(SAMPLES / "ct_head.dcm")
    worker.pipeline.process_pending()  # the worker has processed under V1 already

    write(folder / "main.rules", versioned("V2"))
    assert main.rules.reload()
    v2 = main.rules.current.version
    # Answered 1 ms after the reload: the worker has not been told of it yet.
    after = main.receive(SAMPLES / "ct_chest.dcm")
    waiting = main.receive(SAMPLES / "mr_japanese.dcm")
    assert [main.journal.instance(r.instance_id)["ruleset_version"] for r in (before, after, waiting)] == [v1, v2, v2]
    worker.pipeline.process(after.instance_id)

    assert institution(routed_copy(worker, before.instance_id)) == "V1"
    assert institution(routed_copy(worker, after.instance_id)) == "V2"
    assert worker.journal.instance(after.instance_id)["ruleset_version"] == v2

    # A restart with the rule file changed again on disk: what V2 answered still follows V2.
    write(folder / "main.rules", versioned("V3"))
    restarted_main, restarted_worker = main_process(folder), worker_process(folder)
    assert restarted_main.rules.current.version not in (v1, v2)
    restarted_worker.pipeline.process_pending()
    row = restarted_worker.journal.instance(waiting.instance_id)
    assert (row["state"], row["ruleset_version"]) == (PROCESSED, v2)
    assert institution(routed_copy(restarted_worker, waiting.instance_id)) == "V2"
    assert_settled(folder / "storage")


def test_the_journal_keeps_what_each_version_was_compiled_from(folder):
    """The files as they were read for the compile, not as they are on disk afterwards."""
    main = main_process(folder)
    v1 = main.rules.current.version
    write(folder / "main.rules", versioned("V2"))
    sources = main.journal.ruleset_sources(v1)
    assert list(sources) == [str(folder / "main.rules")]
    assert sources[str(folder / "main.rules")].decode() == versioned("V1")
    assert main.journal.latest_ruleset() == v1
    assert main.rules.reload()
    assert main.journal.latest_ruleset() == main.rules.current.version != v1


def test_an_instance_stays_accepted_only_until_it_is_processed(folder):
    main = main_process(folder)
    result = main.receive(SAMPLES / "ct_head.dcm")
    assert main.journal.instance(result.instance_id)["state"] == ACCEPTED
    with pytest.raises(AssertionError, match="is still accepted"):
        assert_settled(folder / "storage")
    worker_process(folder).pipeline.process_pending()
    assert assert_settled(folder / "storage") == {"queued": 1}
