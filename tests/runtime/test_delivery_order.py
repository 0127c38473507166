"""A destination that promises order (`max_associations: 1`): one process of the whole cluster
sends to it at a time (the journal's exclusive lock "destination:NAME"), and a batch whose
leases were lost to another process is not sent further. Real peers (DCMTK's storescp), real
journals (SQLite, and PostgreSQL on the tests' server); clocks are given, never waited for."""

from __future__ import annotations

import logging
import threading

import pydicom
from helpers.deliveries import FAST, another_ct
from helpers.peers import StoreSCP, wait_until

from rulesengine.arrival import Arrival
from rulesengine.config import DicomDestination
from rulesengine.runtime.delivery import IDLE_WAIT, DeliveryManager, DestinationWorker, LeaseKeeper
from rulesengine.runtime.journal import ACCEPTED, DELIVERED, SENDING, NewDelivery, Outcome, SQLiteJournal
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.storage import Storage

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def queue(journal, tmp_path, numbers, destination: str = "PEER") -> list[int]:
    """One CT per number, received and processed: one queued delivery each."""
    ids = []
    for number in numbers:
        path = str(another_ct(tmp_path, number))
        instance = journal.record(Arrival(source_kind="listener", sop_instance_uid=str(number)), path,
                                  Outcome("v1", "route", None, (), (destination,)), ACCEPTED)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        ids += journal.add_deliveries(instance, [NewDelivery(destination, path, CT_IMAGE, str(header.SOPInstanceUID),
                                                             str(header.file_meta.TransferSyntaxUID))])
    return ids


def workers_of(manager: DeliveryManager) -> list[DestinationWorker]:
    return [worker for group in manager._workers.values() for worker in group]


def test_one_process_at_a_time_sends_to_an_ordered_destination_and_another_takes_over(tmp_path, open_journal):
    """Two delivery processes (two managers, each with journal connections of its own and its
    own process id) on one journal: only one holds the destination; when it stops, the other
    takes over within a wait."""
    configure_pynetdicom()
    peer = StoreSCP(tmp_path / "peer").start()
    first_journal, second_journal = open_journal("a", 1), open_journal("a", 2)
    storage = Storage(str(tmp_path / "storage"))
    destination = DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST)
    first = second = None
    try:
        first = DeliveryManager(first_journal, storage)
        first.apply({"PEER": destination})
        [holder] = workers_of(first)
        wait_until(lambda: holder.exclusive is not None, timeout=10, what="the first process to hold PEER")
        second = DeliveryManager(second_journal, storage)
        second.apply({"PEER": destination})
        [waiting] = workers_of(second)
        ids = queue(first_journal, tmp_path, range(6))
        first.notify(["PEER"])
        second.notify(["PEER"])
        wait_until(lambda: all(first_journal.delivery(i).state == DELIVERED for i in ids), timeout=60,
                   what="six deliveries")
        assert waiting.exclusive is None and waiting.is_alive()  # it never held it: it waits
        assert [len(first_journal.attempts(i)) for i in ids] == [1] * 6
        assert len(peer.files()) == 6
        first.stop(timeout=10)
        assert not holder.is_alive() and holder.exclusive is None  # let go when it stopped
        wait_until(lambda: waiting.exclusive is not None, timeout=IDLE_WAIT * 10, what="the other to take over")
        more = queue(second_journal, tmp_path, range(6, 9))
        second.notify(["PEER"])
        wait_until(lambda: all(second_journal.delivery(i).state == DELIVERED for i in more), timeout=60,
                   what="three more deliveries, from the other process")
        assert len(peer.files()) == 9
    finally:
        for manager in (first, second):
            if manager is not None:
                manager.stop(timeout=10)
        peer.stop()


def test_a_destination_with_several_associations_is_sent_to_by_every_process(tmp_path, open_journal):
    configure_pynetdicom()
    peer = StoreSCP(tmp_path / "peer", extra=("--fork",)).start()
    journals = [open_journal("a", 1), open_journal("a", 2)]
    storage = Storage(str(tmp_path / "storage"))
    destination = DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST, max_associations=2)
    managers = []
    try:
        for journal in journals:
            managers.append(DeliveryManager(journal, storage))
            managers[-1].apply({"PEER": destination})
        assert all(not worker.ordered and worker.exclusive is None for m in managers for worker in workers_of(m))
        ids = queue(journals[0], tmp_path, range(8))
        wait_until(lambda: all(journals[0].delivery(i).state == DELIVERED for i in ids), timeout=60,
                   what="eight deliveries")
        assert [len(journals[0].attempts(i)) for i in ids] == [1] * 8
    finally:
        for manager in managers:
            manager.stop(timeout=10)
        peer.stop()


def test_a_batch_whose_leases_another_process_took_over_is_not_sent_further(tmp_path, caplog):
    """Process a claims three deliveries and starts sending (the peer takes 3 s to answer the
    first); meanwhile its leases expire (the clock is moved) and process b takes them over. The
    next renewal finds them gone: a finishes the send in flight and sends nothing more."""
    configure_pynetdicom()
    peer = StoreSCP(tmp_path / "peer", extra=("-v", "--sleep-during", "3")).start()
    path = str(tmp_path / "journal.sqlite")
    a, b = SQLiteJournal(path, node="a", process=1), SQLiteJournal(path, node="b", process=2)
    storage = Storage(str(tmp_path / "storage"))
    destination = DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST)
    try:
        ids = queue(a, tmp_path, range(3))
        keeper = LeaseKeeper(a)
        worker = DestinationWorker(destination, a, storage, threading.Event(), clock=lambda: 1000.0, leases=keeper)
        batch = a.claim("PEER", 3, now=1000.0)
        held = keeper.hold(batch)
        sending = threading.Thread(target=worker._send, args=(batch, held))
        with caplog.at_level(logging.WARNING, logger="rulesengine.delivery"):
            sending.start()
            log = tmp_path / f"storescp-{peer.port}.log"
            wait_until(lambda: "Received Store Request" in log.read_text(errors="replace"), timeout=20,
                       what="the first store to reach the peer")
            later = 1000.0 + a.lease_seconds + 1
            assert b.requeue_expired(now=later) == 3
            assert [d.id for d in b.claim("PEER", 3, now=later)] == ids
            assert keeper.tick(later) == (0, 0)  # none renewed: lost
            assert keeper.tick(later + 1) == (0, 0)  # and said once
            sending.join(30)
        assert not sending.is_alive()
        worker.sender.close()
        keeper.drop(batch)
        a.release(batch)  # what the worker does after a batch: nothing of b's is touched
        assert len(peer.files()) == 1  # the send in flight ended; the rest was left to b
        assert a.delivery(ids[0]).state == DELIVERED  # a late success counts: the instance arrived
        assert [a.delivery(i).state for i in ids[1:]] == [SENDING, SENDING]
        assert [a.lease(i).owner for i in ids[1:]] == ["b", "b"]
        lost = [r for r in caplog.records if "lost their lease" in r.getMessage()]
        assert len(lost) == 1 and "3 of 3" in lost[0].getMessage()
    finally:
        peer.stop()
        a.close()
        b.close()
