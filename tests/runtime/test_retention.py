"""Retention and cleanup: received instances kept once delivered (or dropped) for
`retention.delivered`, the journal saying until when; the cleanup removing them, and old
files of the quarantine and the watched folders' done/ and failed/ folders; the start-up
sweep keeping retained files; one node cleaning up at a time. Times are injected: files are
aged by moving the clock, never by waiting."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from helpers.files import SAMPLES, write

from rulesengine.config import load_config
from rulesengine.arrival import Arrival
from rulesengine.runtime.cleanup import CLEANUP_SECONDS, LOCK_NAME, Cleanup, Housekeeper
from rulesengine.runtime.delivery import DestinationWorker
from rulesengine.runtime.journal import ACCEPTED, DELIVERED, NewDelivery, Outcome
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

DAY = 86400.0
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

CONFIG = """
storage: storage
processes: 1
rules: main.rules
retention: {delivered: 7d, quarantine: 30d, done: 30d, failed: 10d}
watch:
  - {name: inbox, path: inbox}
destinations:
  PACS: {type: folder, path: out/pacs}
"""

RULES = """
rule "drop reports" {
  when DataSet.Modality == "SR"
  then drop
}

rule "name the MR" {
  when DataSet.Modality == "MR"
  then set DataSet.InstitutionName = "ROUTED"
}

rule "to the PACS" {
  then route to PACS
}
"""

ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")


class Router:
    """Storage, journal, rules, pipeline and the PACS's delivery worker of CONFIG, in this process."""

    def __init__(self, folder: Path, config: str = CONFIG):
        write(folder / "router.yaml", config)
        write(folder / "main.rules", RULES)
        self.config = load_config(folder / "router.yaml")
        self.storage = Storage.of(self.config)
        self.journal = self.storage.journal()
        self.rules = RulesHolder(self.config, self.journal)
        self.pipeline = Pipeline(self.storage, self.journal, self.rules, lambda names: None)
        self.cleanup = Cleanup(self.storage, self.journal, self.config.retention, self.config.watch)

    def receive(self, sample: str) -> int:
        path = self.storage.temp_path()
        shutil.copyfile(SAMPLES / sample, path)
        result = self.pipeline.receive(path, ARRIVAL)
        assert result.outcome == "accepted"
        self.pipeline.process(result.instance_id)
        return result.instance_id

    def deliver(self) -> None:
        worker = DestinationWorker(self.config.destinations["PACS"], self.journal, self.storage, threading.Event())
        worker._claim_and_send()  # one round: what is due is sent now
        worker.sender.close()

    def close(self) -> None:
        self.pipeline.stop()
        self.journal.close()


@pytest.fixture
def router(tmp_path):
    made: list[Router] = []

    def make(config: str = CONFIG) -> Router:
        made.append(Router(tmp_path, config))
        return made[-1]

    yield make
    for item in made:
        item.close()


# ---- the journal, on both backends -----------------------------------------------------------------


def arrival(number: int, received_at: float | None = None) -> Arrival:
    return Arrival(calling_aet="CT1", source_name="main", source_kind="listener", sop_class_uid=CT_IMAGE,
                   sop_instance_uid=f"1.2.3.{number}", received_at=received_at)


def routed_instance(journal, path: str, number: int = 1, destinations=("PACS",), received_at=None) -> tuple[int, list[int]]:
    instance_id = journal.record(arrival(number, received_at), path, None, ACCEPTED)
    ids = journal.add_deliveries(instance_id, [NewDelivery(name, path, CT_IMAGE, f"1.2.3.{number}", None)
                                               for name in destinations],
                                 Outcome("v1", "route", None, ("all",), tuple(destinations)))
    return instance_id, ids


def test_a_retained_instance_names_its_file_until_its_retention_ends(open_journal):
    journal = open_journal("a", 1)
    instance_id, _ = routed_instance(journal, "/spool/in/a.dcm")
    [delivery] = journal.claim("PACS", 1)
    journal.delivered(delivery, time.time())
    assert not journal.path_in_use("/spool/in/a.dcm")  # as without retention: nothing needs it

    journal.retain(instance_id, 5000.0)
    journal.retain(instance_id, 4000.0)  # an earlier time never shortens it
    assert journal.instance(instance_id).retained_until == 5000.0
    assert journal.path_in_use("/spool/in/a.dcm") and "/spool/in/a.dcm" in journal.paths_in_use()
    assert journal.purge_instances() == 0  # its entry stays while the cleanup needs it
    assert journal.retained_count() == 1
    assert journal.expired_retentions(5000.0) == []  # not before its time
    [expired] = journal.expired_retentions(5000.5)
    assert (expired.instance_id, expired.path, expired.retained_until, expired.needed) == (
        instance_id, "/spool/in/a.dcm", 5000.0, False)

    assert journal.end_retention([instance_id]) == 1
    assert journal.end_retention([instance_id]) == 0
    assert journal.instance(instance_id).retained_until is None
    assert not journal.path_in_use("/spool/in/a.dcm") and journal.paths_in_use() == set()
    assert journal.expired_retentions(1e12) == [] and journal.retained_count() == 0
    assert journal.purge_instances() == 0  # its delivery is still journaled
    journal.purge([DELIVERED])
    assert journal.purge_instances() == 1


def test_a_retention_runs_from_the_last_delivery_and_is_never_shortened(open_journal):
    journal = open_journal("a", 1)
    instance_id, _ = routed_instance(journal, "/spool/in/a.dcm", destinations=("PACS", "ARCHIVE"))
    journal.retain(instance_id, 1000.0)
    [pacs] = journal.claim("PACS", 1)
    journal.delivered(pacs, time.time())
    assert not journal.extend_retention(instance_id, 2000.0)  # ARCHIVE is still to send
    assert journal.instance(instance_id).retained_until == 1000.0
    [archive] = journal.claim("ARCHIVE", 1)
    journal.delivered(archive, time.time())
    assert journal.extend_retention(instance_id, 2000.0)
    assert journal.instance(instance_id).retained_until == 2000.0
    journal.extend_retention(instance_id, 1500.0)
    assert journal.instance(instance_id).retained_until == 2000.0
    other, _ = routed_instance(journal, "/spool/in/b.dcm", number=2)
    assert not journal.extend_retention(other, 2000.0)  # not retained: nothing to extend
    assert journal.instance(other).retained_until is None


def test_an_expired_retention_says_when_a_dead_delivery_still_needs_the_file(open_journal):
    journal = open_journal("a", 1)
    instance_id, _ = routed_instance(journal, "/spool/in/a.dcm")
    journal.retain(instance_id, 1000.0)
    [delivery] = journal.claim("PACS", 1)
    journal.failed(delivery, time.time(), "refused", None)  # dead: kept for `queue retry`
    [expired] = journal.expired_retentions(2000.0)
    assert expired.needed


def test_retained_instances_are_found_by_arrival_time_for_a_replay(open_journal):
    journal = open_journal("a", 1)
    ids = []
    for number, received_at in enumerate((100.0, 200.0, 300.0), start=1):
        instance_id, _ = routed_instance(journal, f"/spool/in/{number}.dcm", number, received_at=received_at)
        journal.retain(instance_id, 10_000.0)
        ids.append(instance_id)
    routed_instance(journal, "/spool/in/not-retained.dcm", 9, received_at=150.0)
    assert [i.id for i in journal.retained_instances()] == ids
    assert [i.id for i in journal.retained_instances(received_from=150.0)] == ids[1:]
    assert [i.id for i in journal.retained_instances(received_from=150.0, received_to=300.0)] == ids[1:2]
    assert [i.id for i in journal.retained_instances(after=ids[0], limit=1)] == ids[1:2]
    assert journal.retained_instances()[0].path == "/spool/in/1.dcm"


def test_the_cleanup_runs_on_one_node_at_a_time(open_journal, tmp_path):
    a, b = open_journal("a", 1), open_journal("b", 2)
    storage = Storage(str(tmp_path / "storage"))
    config = load_config(write_config(tmp_path))
    first = Housekeeper(Cleanup(storage, a, config.retention), clock=lambda: 1000.0)
    second = Housekeeper(Cleanup(storage, b, config.retention), clock=lambda: 1000.0)
    held = a.try_exclusive(LOCK_NAME)  # node a is cleaning up
    assert held is not None
    try:
        assert second.tick(1000.0) is None
    finally:
        held.release()
    assert second.tick(1000.0 + CLEANUP_SECONDS) is not None  # free again: b runs it
    assert second.tick(1000.0 + CLEANUP_SECONDS + 1) is None  # and not again before its time
    assert first.tick(1000.0) is not None


def write_config(folder: Path) -> Path:
    write(folder / "cleanup.yaml", "storage: storage\nrules: main.rules\nretention: {delivered: 1h}\n")
    return folder / "cleanup.yaml"


# ---- received instances kept and removed (files, SQLite) ------------------------------------------


def test_an_instance_delivered_as_received_is_kept_until_its_retention_ends(router):
    setup = router()
    start = time.time()
    instance_id = setup.receive("ct_head.dcm")
    path = setup.journal.instance(instance_id).path
    setup.deliver()
    assert [row["state"] for row in setup.journal.deliveries()] == [DELIVERED]
    assert os.path.isfile(path)  # delivered, and kept
    until = setup.journal.instance(instance_id).retained_until
    assert start + 7 * DAY <= until <= time.time() + 7 * DAY

    # the start-up sweep of a restart keeps it, and does not take it for a lost instance
    assert setup.storage.sweep(setup.journal.paths_in_use()) == (0, [])
    assert os.path.isfile(path)

    assert setup.cleanup.run(now=until - 1).count("retained") == 0
    assert os.path.isfile(path)
    size = os.path.getsize(path)
    removed = setup.cleanup.run(now=until + 1)
    assert removed.count("retained") == 1 and removed.size("retained") == size > 0
    assert not os.path.exists(path)
    assert setup.journal.instance(instance_id).retained_until is None
    assert setup.storage.sweep(setup.journal.paths_in_use()) == (0, [])


def test_an_instance_whose_destinations_get_edited_copies_keeps_its_original(router):
    setup = router()
    instance_id = setup.receive("mr_knee.dcm")
    instance = setup.journal.instance(instance_id)
    [delivery] = setup.journal.deliveries()
    assert delivery["path"] != instance.path  # an edited copy
    assert os.path.isfile(instance.path) and instance.retained_until is not None
    original = (SAMPLES / "mr_knee.dcm").read_bytes()
    assert Path(instance.path).read_bytes() == original  # as received
    setup.deliver()
    assert not os.path.exists(delivery["path"])  # the copy goes once delivered, as always
    assert os.path.isfile(instance.path)


def test_a_dropped_instance_is_kept_too_and_the_journal_names_its_file(router):
    setup = router()
    instance_id = setup.receive("sr_report.dcm")
    instance = setup.journal.instance(instance_id)
    assert instance.outcome.outcome == "drop"
    assert instance.path and os.path.isfile(instance.path) and instance.retained_until is not None
    [found] = setup.journal.retained_instances()
    assert found.id == instance_id


def test_without_retention_a_delivered_instance_goes_at_once(router):
    setup = router(CONFIG.replace("delivered: 7d, ", ""))
    instance_id = setup.receive("ct_head.dcm")
    path = setup.journal.instance(instance_id).path
    setup.deliver()
    assert not os.path.exists(path)
    assert setup.journal.instance(instance_id).retained_until is None
    dropped = setup.receive("sr_report.dcm")
    assert setup.journal.instance(dropped).path is None and os.listdir(setup.storage.incoming) == []


def test_a_retained_file_a_dead_delivery_names_stays_with_that_delivery(router):
    setup = router()
    instance_id = setup.receive("ct_head.dcm")
    path = setup.journal.instance(instance_id).path
    [delivery] = setup.journal.claim("PACS", 1)
    setup.journal.failed(delivery, time.time(), "refused", None)
    removed = setup.cleanup.run(now=time.time() + 8 * DAY)
    assert removed.count("retained") == 1 and removed.size("retained") == 0
    assert os.path.isfile(path)  # for `queue retry`
    assert setup.journal.instance(instance_id).retained_until is None
    assert setup.journal.path_in_use(path)


def test_a_retained_path_outside_the_spool_is_never_removed(router, tmp_path):
    setup = router()
    outside = tmp_path / "not-ours.dcm"
    outside.write_bytes(b"x")
    instance_id, _ = routed_instance(setup.journal, str(outside))
    [delivery] = setup.journal.claim("PACS", 1)
    setup.journal.delivered(delivery, time.time())  # no delivery needs it: only the guard keeps it
    setup.journal.retain(instance_id, 1.0)
    setup.cleanup.run(now=10.0)
    assert outside.exists()
    assert setup.journal.instance(instance_id).retained_until is None


# ---- old files of the quarantine and the watched folders ------------------------------------------


def test_old_quarantine_done_and_failed_files_go_by_age(router, tmp_path):
    setup = router()
    kept_path = setup.storage.temp_path()
    shutil.copyfile(SAMPLES / "ct_head.dcm", kept_path)
    quarantined = setup.storage.quarantine(kept_path, "no PatientID", {"sop_instance_uid": "1.2.3"})
    done = Path(setup.config.watch[0].done)
    failed = Path(setup.config.watch[0].failed)
    write(done / "cd" / "IMG1", "done")
    write(done / "IMG2", "done")
    write(failed / "bad.dcm", "failed")
    write(failed / "bad.dcm.reason.txt", "cannot read\n")
    (done / "link").symlink_to(tmp_path / "router.yaml")  # not a plain file: never removed
    elsewhere = tmp_path / "inbox" / "waiting.dcm"
    write(elsewhere, "not taken yet")
    now = time.time()

    plan = setup.cleanup.plan(now + 9 * DAY)
    assert plan.total() == (0, 0)
    plan = setup.cleanup.plan(now + 11 * DAY)  # failed: 10d
    assert [item.path for item in plan.removals["failed"]] == [str(failed / "bad.dcm")]
    assert plan.removals["failed"][0].companions == (str(failed / "bad.dcm.reason.txt"),)
    assert plan.size("failed") == len("failed") + len("cannot read\n")
    assert plan.count("done") == plan.count("quarantine") == 0
    assert (failed / "bad.dcm").exists()  # a plan removes nothing

    removed = setup.cleanup.run(now + 31 * DAY)
    assert (removed.count("quarantine"), removed.count("done"), removed.count("failed")) == (1, 2, 1)
    assert not os.path.exists(quarantined) and not os.path.exists(quarantined + ".json")
    assert os.listdir(setup.storage.quarantine_dir) == []  # the day folder it left empty
    assert sorted(os.listdir(done)) == ["link"]  # cd/ went with its last file; done/ itself stays
    assert os.listdir(failed) == []
    assert elsewhere.exists() and (tmp_path / "router.yaml").exists()


def test_a_stray_quarantine_json_goes_by_age_and_other_files_stay(router):
    setup = router()
    day = Path(setup.storage.quarantine_dir) / "20260101"
    write(day / "1.2.3.dcm.json", "{}")
    write(day / "notes.txt", "kept")
    removed = setup.cleanup.run(time.time() + 31 * DAY)
    assert removed.count("quarantine") == 1
    assert sorted(os.listdir(day)) == ["notes.txt"]


def test_nothing_is_cleaned_of_a_kind_without_a_retention(router):
    setup = router(CONFIG.replace("quarantine: 30d, done: 30d, failed: 10d", "done: 30d"))
    write(Path(setup.config.watch[0].failed) / "bad.dcm", "x")
    write(Path(setup.storage.quarantine_dir) / "20260101" / "a.dcm", "x")
    removed = setup.cleanup.run(time.time() + 1000 * DAY)
    assert removed.total() == (0, 0)
