"""Delivery failures told apart: a destination that cannot be reached (its whole queue waits)
from one instance that fails while the destination works (that instance is retried on its
own schedule, the queue goes on), each said in words, against real peers over TCP."""

from __future__ import annotations

import dataclasses

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from helpers.arrivals import Received
from helpers.files import SAMPLES
from helpers.peers import free_port, wait_until
from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian
from helpers.deliveries import FAST, another_ct, delivery, destination_for, spool_copy
from helpers.strict_peer import StrictPeer

from rulesengine.config import DicomDestination, Retry, Timeouts
from rulesengine.runtime.delivery import DeliveryManager
from rulesengine.runtime.destinations import DicomSender, ItemError, LinkError
from rulesengine.runtime.journal import DEAD, DELIVERED, RETRYING, NewDelivery, Outcome
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.storage import Storage

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # a private storage SOP class DCMTK's storescp does not know


@pytest.fixture(autouse=True)
def pynetdicom_as_the_router_sets_it():
    configure_pynetdicom()


class Clock:
    """The delivery workers' clock, moved by the test instead of waiting for backoffs."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def strict_peer():
    peers: list[StrictPeer] = []

    def start(**options) -> StrictPeer:
        peers.append(StrictPeer(**options))
        return peers[-1]

    yield start
    for peer in peers:
        peer.stop()


def uid_of(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def queue(journal, paths, destination: str = "PEER") -> list[int]:
    """Journal the files as received and routed to `destination`; their delivery ids, in order."""
    ids = []
    for path in paths:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        received = Received("listener", "main", "CT1", "ROUTER", None, str(header.SOPClassUID),
                            str(header.SOPInstanceUID))
        instance = journal.record(received, str(path), Outcome("v1", "route", None, ("all",), (destination,)),
                                  "accepted")
        ids += journal.add_deliveries(instance, [NewDelivery(destination, str(path), received.sop_class_uid,
                                                             received.sop_instance_uid,
                                                             str(header.file_meta.TransferSyntaxUID))])
    return ids


@pytest.fixture
def journal(tmp_path):
    storage = Storage(str(tmp_path / "storage"))
    journal = storage.journal()
    journal.storage = storage
    yield journal
    journal.close()


@pytest.fixture
def deliveries(journal):
    """Start delivery workers for some destinations (with a clock); stopped at the end."""
    managers: list[DeliveryManager] = []

    def start(destinations: dict, clock=time.time) -> DeliveryManager:
        manager = DeliveryManager(journal, journal.storage, clock)
        manager.apply(destinations)
        managers.append(manager)
        return manager

    yield start
    for manager in managers:
        manager.stop()


def states(journal, ids) -> list[tuple[str, int]]:
    return [(journal.delivery(i).state, journal.delivery(i).attempts) for i in ids]


# ---- one instance fails, the queue goes on ----------------------------------------------------------


def test_an_instance_the_peer_aborts_on_fails_alone_and_the_queue_behind_it_is_delivered(tmp_path, strict_peer,
                                                                                          journal, deliveries):
    cts = [another_ct(tmp_path, number) for number in range(1, 6)]
    uids = [uid_of(path) for path in cts]  # delivered files leave the spool
    bad = uids[1]
    peer = strict_peer(abort_on={bad})
    ids = queue(journal, cts)
    # With the default retry the queue would wait about 64 minutes in all if this were taken for
    # "destination unreachable"; 10 minutes here.
    deliveries({"PEER": peer.destination(retry=Retry(delay=600, max_attempts=3))})

    good = [ids[0], *ids[2:]]
    wait_until(lambda: all(journal.delivery(i).state == DELIVERED for i in good), timeout=20,
               what="the four instances around the one the peer aborts on")
    failed = journal.delivery(ids[1])
    assert (failed.state, failed.attempts) == (RETRYING, 1)
    assert failed.last_error == f"instance failed: aborted by the peer while sending {bad}; the destination answers C-ECHO"
    assert journal.postponed_until("PEER") == 0.0  # the destination is not paused
    assert peer.aborted == [bad]
    assert sorted(peer.stored) == sorted(uid for uid in uids if uid != bad)


def test_the_aborted_instance_is_retried_on_its_own_schedule_until_dead(tmp_path, strict_peer, journal,
                                                                          deliveries):
    first, bad_path, later = (another_ct(tmp_path, number) for number in (1, 2, 3))
    first_uid, bad, later_uid = (uid_of(path) for path in (first, bad_path, later))
    peer = strict_peer(abort_on={bad})
    clock = Clock()
    ids = queue(journal, [first, bad_path])
    manager = deliveries({"PEER": peer.destination(retry=Retry(delay=60, multiplier=1, max_attempts=3))}, clock)
    wait_until(lambda: states(journal, ids) == [(DELIVERED, 1), (RETRYING, 1)], timeout=20,
               what="the first delivered, the aborted one waiting")

    # Queued while the aborted instance waits its 60 s: sent at once.
    [later_id] = queue(journal, [later])
    manager.notify(["PEER"])
    wait_until(lambda: journal.delivery(later_id).state == DELIVERED, timeout=20, what="the later instance")
    assert states(journal, ids[1:]) == [(RETRYING, 1)]

    for attempt in (2, 3):
        clock.advance(60)
        manager.notify(["PEER"])
        wait_until(lambda: journal.delivery(ids[1]).attempts == attempt, timeout=20, what=f"attempt {attempt}")
    wait_until(lambda: journal.delivery(ids[1]).state == DEAD, timeout=10, what="dead after three attempts")
    assert journal.delivery(ids[1]).last_error.startswith(f"instance failed: aborted by the peer while sending {bad}")
    assert peer.aborted == [bad] * 3
    assert sorted(peer.stored) == sorted([first_uid, later_uid])


def private_class_instance(tmp_path: Path) -> Path:
    """ct_head as an instance of a private storage SOP class, as a Siemens scanner sends them."""
    ds = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SIEMENS_CSA_NON_IMAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}.99"
    target = tmp_path / "spool" / "private.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return target


def test_an_instance_whose_association_the_peer_refuses_fails_alone(tmp_path, storescp_factory, journal,
                                                                     deliveries):
    """DCMTK's storescp accepts no presentation context for a SOP class it does not know: an
    association proposed for that instance alone (batch 1) has nothing to carry."""
    peer = storescp_factory()
    private = private_class_instance(tmp_path)
    cts = [another_ct(tmp_path, number) for number in (1, 2)]
    ct_uids = [uid_of(path) for path in cts]
    ids = queue(journal, [private, *cts])
    deliveries({"PEER": destination_for(peer, batch=1, retry=Retry(delay=600, max_attempts=3))})

    wait_until(lambda: all(journal.delivery(i).state == DELIVERED for i in ids[1:]), timeout=20,
               what="the two CT instances behind the private one")
    refused = journal.delivery(ids[0])
    assert (refused.state, refused.attempts) == (RETRYING, 1)
    assert refused.last_error == (
        f"instance failed: association for {uid_of(private)} ({SIEMENS_CSA_NON_IMAGE} in {ExplicitVRLittleEndian}): "
        f"association with STORESCP@127.0.0.1:{peer.port} not established: the peer accepted none of the "
        "presentation contexts proposed")
    assert journal.postponed_until("PEER") == 0.0
    assert sorted(uid_of(path) for path in peer.files()) == sorted(ct_uids)


def test_an_instance_a_peer_rejects_every_association_for_fails_alone(tmp_path, strict_peer, journal, deliveries):
    """The peer rejects, without a reason, any association that proposes the instance's SOP
    class; it answers C-ECHO. The instances around it go, on associations without it."""
    peer = strict_peer(refuse_classes={SIEMENS_CSA_NON_IMAGE})
    private = private_class_instance(tmp_path)
    first, last = (another_ct(tmp_path, number) for number in (1, 2))
    uids = [uid_of(path) for path in (first, private, last)]
    ids = queue(journal, [first, private, last])
    deliveries({"PEER": peer.destination(retry=Retry(delay=600, max_attempts=3))})

    wait_until(lambda: states(journal, ids) == [(DELIVERED, 1), (RETRYING, 1), (DELIVERED, 1)], timeout=20,
               what="both CT instances delivered, the private one waiting")
    assert journal.delivery(ids[1]).last_error == (
        f"instance failed: association for {uids[1]} ({SIEMENS_CSA_NON_IMAGE} in {ExplicitVRLittleEndian}): "
        f"association with PEER@127.0.0.1:{peer.port} not established: rejected by the peer's DICOM application "
        "(permanent): no reason given; the destination answers C-ECHO")
    assert journal.postponed_until("PEER") == 0.0
    assert peer.stored == [uids[0], uids[2]]


def test_dcmtk_storescp_aborting_a_store_is_that_instance_failure(tmp_path, storescp_factory):
    peer = storescp_factory("--abort-after")  # aborts after each C-STORE request, answers C-ECHO
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    sender = DicomSender(destination_for(peer))
    sender.open([item])
    with pytest.raises(ItemError) as failure:
        sender.send(item)
    assert str(failure.value) == (f"aborted by the peer while sending {item.sop_instance_uid}; "
                                  "the destination answers C-ECHO")
    assert sender.assoc is None  # the next instance gets a new association
    sender.close()


# ---- the destination cannot be reached: said exactly ----------------------------------------------------


def test_a_closed_port_is_connection_refused_and_the_queue_waits(tmp_path, journal, deliveries):
    port = free_port()
    destination = DicomDestination("PEER", "NOBODY", "127.0.0.1", port, timeouts=FAST, retry=Retry(delay=600, cap=600))
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    refused = f"association with NOBODY@127.0.0.1:{port} not established: connection refused"
    with pytest.raises(LinkError) as failure:
        DicomSender(destination).open([item])
    assert str(failure.value) == refused
    with pytest.raises(LinkError) as failure:
        DicomSender(destination).echo()
    assert str(failure.value) == refused

    ids = queue(journal, [another_ct(tmp_path, number) for number in (1, 2)])
    deliveries({"PEER": destination})
    wait_until(lambda: journal.delivery(ids[0]).attempts == 1, timeout=20, what="the first attempt")
    assert journal.delivery(ids[0]).last_error == f"destination unreachable: {refused}"
    assert journal.postponed_until("PEER") > time.time() + 500  # the whole queue waits
    assert states(journal, ids[1:]) == [("queued", 0)]


def test_a_peer_that_accepts_the_connection_and_never_answers_is_no_answer_within_the_timeout(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes connections; nobody reads
        port = silent.getsockname()[1]
        destination = DicomDestination("SILENT", "SILENT", "127.0.0.1", port,
                                       timeouts=Timeouts(connect=5, acse=1, dimse=5, network=5))
        item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
        expected = f"association with SILENT@127.0.0.1:{port} not established: no answer within 1 s"
        with pytest.raises(LinkError) as failure:
            DicomSender(destination).open([item])
        assert str(failure.value) == expected
        with pytest.raises(LinkError) as failure:
            DicomSender(destination).echo()
        assert str(failure.value) == expected


def test_a_request_that_fails_leaves_no_connection_open(tmp_path):
    """pynetdicom's association thread dies when it cannot encode a request (here a SOP class that
    is no UID, as a damaged journal row could hold) and leaves the connection open: a peer that
    serves one connection at a time (Orthanc's acceptor) would then wait on it. The router closes
    it: the peer reads the end of the connection, not a request."""
    with socket.create_server(("127.0.0.1", 0)) as peer:
        port = peer.getsockname()[1]
        destination = DicomDestination("PEER", "PEER", "127.0.0.1", port,
                                       timeouts=Timeouts(connect=5, acse=1, dimse=5, network=5))
        item = dataclasses.replace(delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm")),
                                   sop_class_uid="1\xae2.840.10008.5.1.4.1.1.2")
        with pytest.raises(LinkError):
            DicomSender(destination).open([item])
        connection, _ = peer.accept()
        with connection:
            connection.settimeout(10)
            assert connection.recv(65536) == b""  # closed, nothing sent


def test_a_connection_that_cannot_be_made_in_time_is_a_connection_timeout():
    """A listener whose accept queue is full drops new connections' SYNs: connecting times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        waiting = []
        try:
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                waiting.append(filler)
            destination = DicomDestination("FULL", "FULL", "127.0.0.1", port,
                                           timeouts=Timeouts(connect=1, acse=5, dimse=5, network=5))
            with pytest.raises(LinkError) as failure:
                DicomSender(destination).echo()
            assert str(failure.value) == (f"association with FULL@127.0.0.1:{port} not established: "
                                          "connection timed out after 1 s")
        finally:
            for filler in waiting:
                filler.close()


def test_an_unknown_host_name_is_said_so():
    destination = DicomDestination("PACS", "PACS", "pacs.nonexistent.invalid", 104, timeouts=FAST)
    with pytest.raises(LinkError, match=r"^association with PACS@pacs.nonexistent.invalid:104 not established: "
                                        r"the host name pacs.nonexistent.invalid cannot be resolved \(.+\)$"):
        DicomSender(destination).echo()


def test_a_peer_that_closes_every_connection_unanswered_is_unreachable(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as closer:
        port = closer.getsockname()[1]

        def close_each() -> None:
            while True:
                try:
                    connection, _ = closer.accept()
                except OSError:
                    return  # the test is over
                connection.close()

        threading.Thread(target=close_each, daemon=True).start()
        destination = DicomDestination("CLOSER", "CLOSER", "127.0.0.1", port, timeouts=FAST)
        item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
        closed = (f"association with CLOSER@127.0.0.1:{port} not established: the peer closed the connection "
                  "before answering the association request")
        with pytest.raises(LinkError) as failure:
            DicomSender(destination).open([item])
        assert str(failure.value) == f"{closed}; then C-ECHO: {closed}"


# ---- the peer's reasons for rejecting an association ------------------------------------------------------


def test_a_rejection_gives_the_peers_reason(tmp_path, strict_peer):
    peer = strict_peer(callers=["ROUTER"])
    at = f"127.0.0.1:{peer.port}"
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    with pytest.raises(LinkError) as failure:
        DicomSender(peer.destination(ae_title="WRONG")).open([item])
    assert str(failure.value) == (
        f"association with WRONG@{at} not established: rejected by the peer's DICOM application (permanent): "
        "called AE title not recognised; it does not answer to 'WRONG' (ae_title)")
    with pytest.raises(LinkError) as failure:
        DicomSender(peer.destination(calling_ae_title="STRANGER")).echo()
    assert str(failure.value) == (
        f"association with PEER@{at} not established: rejected by the peer's DICOM application (permanent): "
        "calling AE title not recognised; it does not accept calls from 'STRANGER' (calling_ae_title)")
    assert peer.stored == []


def test_a_peer_at_its_association_limit_is_unreachable_for_now(tmp_path, strict_peer):
    peer = strict_peer(max_associations=1)
    holder = DicomSender(peer.destination())
    holder.open([delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))])
    try:
        with pytest.raises(LinkError) as failure:
            DicomSender(peer.destination()).echo()
        assert str(failure.value) == (
            f"association with PEER@127.0.0.1:{peer.port} not established: rejected by the peer's presentation "
            "layer (transient: it may accept later): local limit exceeded")
    finally:
        holder.close()


def test_dcmtk_storescp_refusing_every_association_is_unreachable_with_its_reason(tmp_path, storescp_factory):
    peer = storescp_factory("--refuse")
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    rejected = (f"association with STORESCP@127.0.0.1:{peer.port} not established: rejected by the peer's DICOM "
                "application (permanent): no reason given")
    with pytest.raises(LinkError) as failure:
        DicomSender(destination_for(peer)).echo()
    assert str(failure.value) == rejected
    with pytest.raises(LinkError) as failure:  # the C-ECHO is refused too: the destination, not the instance
        DicomSender(destination_for(peer)).open([item])
    assert str(failure.value) == f"{rejected}; then C-ECHO: {rejected}"
