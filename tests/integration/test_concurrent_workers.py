"""Two worker processes on one storage folder and one journal (SQLite, and PostgreSQL on the
tests' server), as several processes of a node, or several nodes, run them: every instance
is processed by one of them, delivered exactly once to each destination, and, to the
destination that promises order (`max_associations: 1`), in the order it was received.
Real peers: DCMTK's storescp receives, its log says in which order."""

from __future__ import annotations

import re

import pydicom
import pytest
from helpers.peers import StoreSCP, wait_until
from helpers.workers import Workers
from pydicom.data import get_testdata_file

from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.runtime.journal import DELIVERED, PROCESSED
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

INSTANCES = 120
UID_ROOT = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture(params=["sqlite", "postgres"])
def journal_setting(request) -> str:
    if request.param == "sqlite":
        return ""
    return f"journal: {request.getfixturevalue('postgres').new_database()}\n"


def stored_order(peer: StoreSCP) -> list[int]:
    """The numbers of the instances the peer stored, in the order it stored them (its log)."""
    log = (peer.folder.parent / f"storescp-{peer.port}.log").read_text(errors="replace")
    return [int(number) for number in re.findall(rf"storing DICOM file: .*\.{re.escape(UID_ROOT)}\.(\d+)", log)]


def test_two_worker_processes_deliver_each_instance_once_and_in_order(tmp_path, journal_setting):
    ordered = StoreSCP(tmp_path / "ordered", extra=("-v",)).start()
    parallel = StoreSCP(tmp_path / "parallel", extra=("--fork",)).start()
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to ORDERED, PARALLEL\n}\n', encoding="utf-8")
    config_path = tmp_path / "router.yaml"
    config_path.write_text(
        f"storage: {tmp_path / 'var'}\nrules: main.rules\n{journal_setting}"
        f"destinations:\n"
        f"  ORDERED: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {ordered.port}}}\n"
        f"  PARALLEL: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {parallel.port}, "
        f"max_associations: 3}}\n", encoding="utf-8")
    config = load_config(str(config_path))
    storage = Storage.of(config)
    journal = storage.journal()
    rules = RulesHolder(config)
    rules.record_in(journal)
    receiving = Pipeline(storage, journal, rules, lambda _names: None, on_accepted=lambda _id: None)
    workers = Workers(config_path, 2, tmp_path)
    try:
        wait_until(workers.running, timeout=60, what="two worker processes")
        template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        for number in range(INSTANCES):  # received while both process and deliver
            template.SOPInstanceUID = f"{UID_ROOT}.{number}"
            path = storage.temp_path()
            template.save_as(path, enforce_file_format=True)
            receiving.receive(path, Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main",
                                            source_kind="listener"))
            if number % 10 == 9:
                workers.wake()

        def delivered() -> bool:
            counts = journal.counts()
            return all(counts.get(name, {}).get(DELIVERED, 0) == INSTANCES for name in ("ORDERED", "PARALLEL"))
        wait_until(delivered, timeout=240, what="every instance delivered to both destinations")
        assert workers.stop() == [0, 0]
        db = journal._connection()
        assert db.execute("SELECT COUNT(*) FROM instances WHERE state <> ?", (PROCESSED,)).fetchone()[0] == 0
        # processed once each, by one of the two processes, and both took part
        assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 2 * INSTANCES
        processors = {row[0] for row in db.execute("SELECT lease_process FROM instances")}
        assert processors == {process.pid for process in workers.processes}, processors
        # delivered once: one attempt each, one file each at the peers
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 2 * INSTANCES
        assert db.execute("SELECT COUNT(*) FROM attempts WHERE ok = 0").fetchone()[0] == 0
        assert len(ordered.files()) == len(parallel.files()) == INSTANCES
        assert stored_order(ordered) == list(range(INSTANCES))  # in the order received
        assert journal.counts() == {"ORDERED": {DELIVERED: INSTANCES}, "PARALLEL": {DELIVERED: INSTANCES}}
    finally:
        workers.stop()
        journal.close()
        ordered.stop()
        parallel.stop()
