"""The delivery loop's leases (delivery.LeaseKeeper): the batches its workers send are renewed,
however long a send takes, and what any node's expired lease held goes back to the queue. The
journal's side (claim, renew_leases, requeue_expired) is tested on both backends by
test_journal.py; the clock is given, never waited for."""

from __future__ import annotations

import socket

import pydicom
import pytest
from helpers.deliveries import spool_copy
from helpers.files import SAMPLES
from helpers.peers import wait_until

from rulesengine.arrival import Arrival
from rulesengine.config import DicomDestination, Timeouts
from rulesengine.runtime.delivery import DeliveryManager, LeaseKeeper
from rulesengine.runtime.journal import (ACCEPTED, DELIVERED, QUEUED, RETRYING, SENDING, Lease, NewDelivery, Outcome,
                                         SQLiteJournal)
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.storage import Storage

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def queue(journal, count: int) -> list[int]:
    ids = []
    for number in range(count):
        instance_id = journal.record(Arrival(source_kind="listener", sop_instance_uid=f"1.2.3.{number}"),
                                     f"/spool/in/{number}.dcm", Outcome("v1", "route", None, (), ("PACS",)), ACCEPTED)
        ids += journal.add_deliveries(instance_id, [NewDelivery("PACS", f"/spool/in/{number}.dcm", CT_IMAGE,
                                                                f"1.2.3.{number}", "1.2.840.10008.1.2.1")])
    return ids


@pytest.fixture
def nodes(tmp_path):
    path = str(tmp_path / "journal.sqlite")
    opened = [SQLiteJournal(path, node="a"), SQLiteJournal(path, node="b")]
    yield opened
    for journal in opened:
        journal.close()


def test_the_keeper_renews_the_batches_held_and_lets_go_of_those_dropped(nodes):
    a, _b = nodes
    queue(a, 3)
    keeper = LeaseKeeper(a, clock=lambda: 0.0)
    sending = a.claim("PACS", 2, now=1000.0)
    keeper.hold(sending)
    for now in (1020.0, 1040.0, 1060.0, 1080.0):  # a send far longer than one lease
        assert keeper.tick(now) == (2, 0)
    assert [a.lease(d.id) for d in sending] == [Lease("a", 1080.0 + a.lease_seconds, a.process)] * 2
    keeper.drop(sending)
    assert keeper.tick(1100.0) == (0, 0)
    assert keeper.tick(1080.0 + a.lease_seconds + 1) == (0, 2)  # no longer renewed: expired, queued again
    assert [a.delivery(d.id).state for d in sending] == [QUEUED, QUEUED]


def test_the_keeper_takes_over_what_a_dead_node_held(nodes):
    a, b = nodes
    ids = queue(a, 2)
    a.claim("PACS", 2, now=1000.0)  # node a dies with them
    keeper = LeaseKeeper(b)
    assert keeper.tick(1000.0 + a.lease_seconds / 2) == (0, 0)
    assert [b.delivery(i).state for i in ids] == [SENDING, SENDING]
    assert keeper.tick(1000.0 + a.lease_seconds + 1) == (0, 2)
    assert [b.delivery(i).state for i in ids] == [QUEUED, QUEUED]


def test_the_manager_runs_a_keeper_and_stops_it(tmp_path):
    storage = Storage(str(tmp_path / "storage"))
    journal = storage.journal()
    try:
        manager = DeliveryManager(journal, storage)
        assert manager.leases.is_alive()
        manager.stop(timeout=5)
        manager.leases.join(5)
        assert not manager.leases.is_alive()
    finally:
        journal.close()


def test_a_send_that_lasts_longer_than_a_lease_keeps_it_and_gives_it_up_when_it_ends(tmp_path):
    """A destination that takes the connection and never answers: the send lasts until its
    timeout. Meanwhile the keeper's rounds renew the lease, so no round takes the delivery back."""
    configure_pynetdicom()
    storage = Storage(str(tmp_path / "storage"))
    journal = storage.journal()
    path = spool_copy(tmp_path, SAMPLES / "ct_head.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    instance = journal.record(Arrival(source_kind="listener"), str(path),
                              Outcome("v1", "route", None, (), ("SILENT",)), ACCEPTED)
    [delivery_id] = journal.add_deliveries(instance, [NewDelivery("SILENT", str(path), str(header.SOPClassUID),
                                                                  str(header.SOPInstanceUID),
                                                                  str(header.file_meta.TransferSyntaxUID))])
    manager = None
    try:
        with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes connections; nobody reads
            destination = DicomDestination("SILENT", "SILENT", "127.0.0.1", silent.getsockname()[1],
                                           timeouts=Timeouts(connect=5, acse=30, dimse=5, network=5))
            manager = DeliveryManager(journal, storage)
            manager.apply({"SILENT": destination})
            wait_until(manager.leases.held, timeout=10, what="the send to start")
            claimed_until = journal.lease(delivery_id).expires_at
            for rounds in range(1, 6):  # five rounds, a hundred seconds later each: the send goes on
                now = claimed_until + 100 * rounds
                assert manager.leases.tick(now) == (1, 0)
                assert journal.lease(delivery_id) == Lease(journal.node, now + journal.lease_seconds, journal.process)
                assert journal.delivery(delivery_id).state == SENDING
        # the peer went away: the attempt fails, and the delivery holds no lease any more
        wait_until(lambda: journal.delivery(delivery_id).state == RETRYING, timeout=20, what="the attempt to fail")
        assert journal.lease(delivery_id) is None
        assert manager.leases.held() == []
    finally:
        if manager is not None:
            manager.stop(timeout=5)
        journal.close()


def test_a_batch_partly_sent_is_renewed_for_the_rest_and_not_taken_for_lost(nodes):
    a, b = nodes
    queue(a, 3)
    keeper = LeaseKeeper(a)
    batch = a.claim("PACS", 3, now=1000.0)
    held = keeper.hold(batch)
    held.finishing(batch[0])  # as the worker does before it journals an outcome
    a.delivered(batch[0], 1000.0)
    assert keeper.tick(1020.0) == (2, 0) and not held.lost.is_set()
    assert keeper.held() == batch[1:]
    # the rest's leases expire (this process stalled) and node b takes one over: lost, said once
    later = 1020.0 + a.lease_seconds + 1
    assert b.requeue_expired(now=later) == 2
    b.claim("PACS", 1, now=later)
    assert keeper.tick(later) == (0, 0) and held.lost.is_set()
    a.release(batch[1:])  # the worker's last step: b's claim stands, the other is queued
    assert [a.delivery(d.id).state for d in batch] == [DELIVERED, SENDING, QUEUED]
    assert a.lease(batch[1].id).owner == "b"
