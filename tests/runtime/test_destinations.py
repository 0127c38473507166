"""Senders: a folder destination, and C-STORE to real peers (DCMTK's storescp, pynetdicom)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import threading
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from helpers.arrivals import Received
from helpers.clock import StoppedClock
from helpers.files import SAMPLES, bundled
from helpers.peers import StoreSCP, free_port, wait_until
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (
    CTImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from helpers.dataset_values import differences
from helpers.deliveries import FAST, another_ct, delivery, destination_for, spool_copy
from helpers.large_instances import tail_digest, write_large_instance

from rulesengine.config import DicomDestination, FolderDestination, Retry, Timeouts
from rulesengine.runtime.destinations import (
    DicomSender,
    FolderSender,
    ItemError,
    LinkError,
    sender_for,
)
from rulesengine.runtime.delivery import DeliveryManager
from rulesengine.runtime.journal import (
    DEAD,
    DELIVERED,
    QUEUED,
    RETRYING,
    Delivery,
    NewDelivery,
    Outcome,
)
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.storage import Storage


@pytest.fixture(autouse=True)
def pynetdicom_as_the_router_sets_it():
    """The router sends from files in chunks (Router.start); put pynetdicom back afterwards."""
    saved = (pynetdicom_config.STORE_SEND_CHUNKED_DATASET, pynetdicom_config.STORE_RECV_CHUNKED_DATASET)
    configure_pynetdicom()
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET, pynetdicom_config.STORE_RECV_CHUNKED_DATASET = saved


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pixel_bytes(path) -> bytes:
    return pydicom.dcmread(path).PixelData


def storescp_log(peer: StoreSCP) -> str:
    return (peer.folder.parent / f"storescp-{peer.port}.log").read_text(errors="replace")


# ---- folders --------------------------------------------------------------------------------------


def test_folder_sender_writes_the_file_under_the_naming_template(tmp_path):
    source = spool_copy(tmp_path, SAMPLES / "ct_head.dcm")
    header = pydicom.dcmread(source, stop_before_pixels=True)
    folder = tmp_path / "pacs"
    sender = sender_for(FolderDestination("PACS", str(folder), naming="{PatientID}/{StudyDate}/{SOPInstanceUID}.dcm"))
    assert isinstance(sender, FolderSender)

    sender.open([])
    written = sender.send(delivery(source))
    sender.close()

    expected = folder / str(header.PatientID) / str(header.StudyDate) / f"{header.SOPInstanceUID}.dcm"
    assert written == str(expected)
    assert digest(expected) == digest(source)
    assert source.exists()  # the spool file is the journal's to release
    every = [p for p in folder.rglob("*")]
    assert sorted(p for p in every if p.is_file()) == [expected]  # no temporary file left behind


def test_folder_sender_replaces_an_earlier_file_of_the_same_name(tmp_path):
    folder = tmp_path / "archive"
    sender = FolderSender(FolderDestination("ARCHIVE", str(folder), naming="{PatientID}.dcm"))
    sender.open([])
    first = spool_copy(tmp_path, SAMPLES / "ct_head.dcm", "first.dcm")
    second = tmp_path / "spool" / "second.dcm"
    ds = pydicom.dcmread(first)
    ds.InstitutionName = "SECOND"
    ds.save_as(second, enforce_file_format=True)

    sender.send(delivery(first))
    target = sender.send(delivery(second, 2))

    assert digest(target) == digest(second)
    assert os.listdir(folder) == [os.path.basename(target)]


def test_folder_sender_creates_the_destination_folder(tmp_path):
    folder = tmp_path / "not" / "yet" / "there"
    sender = FolderSender(FolderDestination("F", str(folder)))
    sender.open([])
    assert folder.is_dir()


def test_folder_sender_reports_an_unwritable_destination_as_item_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sender = FolderSender(FolderDestination("F", str(blocker / "sub")))
    with pytest.raises(ItemError, match="cannot write"):
        sender.send(delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm")))


# ---- DICOM: storescp ------------------------------------------------------------------------------


def test_a_batch_goes_over_one_association(tmp_path, storescp_factory):
    peer = storescp_factory()
    files = [spool_copy(tmp_path, SAMPLES / name) for name in ("ct_head.dcm", "ct_chest.dcm", "mr_knee.dcm")]
    items = [delivery(path, number) for number, path in enumerate(files, 1)]
    sender = sender_for(destination_for(peer))
    assert isinstance(sender, DicomSender)

    sender.open(items)
    statuses = [sender.send(item) for item in items]
    sender.close()

    assert statuses == ["0x0000"] * 3
    assert storescp_log(peer).count("Association Acknowledged") == 1
    received = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in peer.files()}
    assert set(received) == {item.sop_instance_uid for item in items}
    for item in items:
        assert pixel_bytes(received[item.sop_instance_uid]) == pixel_bytes(item.path)


def test_the_association_is_kept_for_the_next_batch_until_the_batch_size(tmp_path, storescp_factory):
    peer = storescp_factory()
    items = [delivery(another_ct(tmp_path, number), number) for number in (1, 2, 3)]
    sender = DicomSender(destination_for(peer, batch=2))

    statuses = []
    sender.open(items[:1])
    statuses.append(sender.send(items[0]))
    sender.open(items[1:2])  # the open association carries it
    statuses.append(sender.send(items[1]))
    sender.open(items[2:])  # two sent: a new association
    statuses.append(sender.send(items[2]))
    sender.close()

    assert statuses == ["0x0000"] * 3
    assert len(peer.files()) == 3
    assert storescp_log(peer).count("Association Acknowledged") == 2


def test_explicit_vr_is_converted_for_a_peer_that_accepts_only_implicit(tmp_path, storescp_factory, monkeypatch):
    peer = storescp_factory("+xi")  # implicit VR little endian only
    source = spool_copy(tmp_path, SAMPLES / "ct_head.dcm")
    item = delivery(source)
    assert item.transfer_syntax == ExplicitVRLittleEndian
    sender = DicomSender(destination_for(peer))
    conversions = tmp_path / "conversions"  # where the router's converted copies go: its spool
    conversions.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(conversions))

    sender.open([item])
    assert {cx.transfer_syntax[0] for cx in sender.assoc.accepted_contexts} == {ImplicitVRLittleEndian}
    status = sender.send(item)
    assert list(conversions.iterdir()) == []  # a converted copy is gone once sent, not kept for the batch
    sender.close()

    assert status == "0x0000"
    [received] = peer.files()
    stored = pydicom.dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    original = pydicom.dcmread(source)
    assert stored.SOPInstanceUID == original.SOPInstanceUID and stored.PatientID == original.PatientID
    assert stored.PixelData == original.PixelData
    assert digest(source) == digest(SAMPLES / "ct_head.dcm")  # the spool file is sent as a converted copy
    assert os.listdir(source.parent) == [source.name]


def test_a_compressed_instance_the_peer_does_not_accept_is_an_item_error(tmp_path, storescp_factory):
    peer = storescp_factory("+x=")  # uncompressed transfer syntaxes only
    compressed = delivery(spool_copy(tmp_path, bundled("JPEG2000.dcm")), 1)
    plain = delivery(spool_copy(tmp_path, SAMPLES / "ot_secondary.dcm"), 2)
    assert compressed.transfer_syntax == JPEG2000 and compressed.sop_class_uid == plain.sop_class_uid
    sender = DicomSender(destination_for(peer))

    sender.open([compressed, plain])
    with pytest.raises(ItemError, match="cannot be converted without decompressing"):
        sender.send(compressed)
    assert sender.send(plain) == "0x0000"  # the association goes on with the next item
    sender.close()

    [received] = peer.files()
    assert pydicom.dcmread(received, stop_before_pixels=True).SOPInstanceUID == plain.sop_instance_uid


def test_a_compressed_instance_goes_as_is_to_a_peer_that_accepts_it(tmp_path, storescp_factory):
    peer = storescp_factory()  # +xa: every transfer syntax
    source = spool_copy(tmp_path, bundled("SC_rgb_jpeg_dcmtk.dcm"))
    item = delivery(source)
    sender = DicomSender(destination_for(peer))
    sender.open([item])
    assert sender.send(item) == "0x0000"
    sender.close()
    [received] = peer.files()
    stored = pydicom.dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == item.transfer_syntax
    assert stored.PixelData == pydicom.dcmread(source).PixelData


def test_a_compressed_instance_after_an_uncompressed_one_of_the_same_class_is_delivered(tmp_path,
                                                                                      storescp_factory):
    peer = storescp_factory()  # +xa: the peer accepts JPEG 2000
    plain = delivery(spool_copy(tmp_path, SAMPLES / "ot_secondary.dcm"), 1)
    compressed = delivery(spool_copy(tmp_path, bundled("JPEG2000.dcm")), 2)
    sender = DicomSender(destination_for(peer))

    sender.open([plain])
    assert sender.send(plain) == "0x0000"
    sender.open([compressed])  # the next batch the worker claims
    status = sender.send(compressed)
    sender.close()

    assert status == "0x0000"
    assert len(peer.files()) == 2


def test_echo_answers_success(storescp_factory):
    peer = storescp_factory()
    assert DicomSender(destination_for(peer)).echo() == "0x0000"


def test_a_closed_port_is_a_link_error(tmp_path):
    destination = DicomDestination("DOWN", "NOBODY", "127.0.0.1", free_port(), timeouts=FAST)
    sender = DicomSender(destination)
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    with pytest.raises(LinkError, match="NOBODY@127.0.0.1"):
        sender.open([item])
    with pytest.raises(LinkError):
        sender.send(item)  # nothing open
    with pytest.raises(LinkError):
        sender.echo()
    sender.close()


# ---- DICOM: pynetdicom as the peer ----------------------------------------------------------------


class PynetdicomPeer:
    """A pynetdicom SCP on a free port: counts associations, answers C-STORE with `status`."""

    def __init__(self, ae_title: str = "PEER", status: int = 0x0000, syntaxes=(ExplicitVRLittleEndian,
                                                                               ImplicitVRLittleEndian)):
        self.ae_title = ae_title
        self.status = status
        self.port = free_port()
        self.associations = 0
        self.stored: list[str] = []
        self.syntaxes: list[str] = []  # the transfer syntax of each C-STORE
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        for sop_class in (CTImageStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class, list(syntaxes))
        ae.add_supported_context(Verification)
        self.ae = ae
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_ESTABLISHED, self._established), (evt.EVT_C_STORE, self._store)])

    def _established(self, event) -> None:
        with self._lock:
            self.associations += 1

    def _store(self, event):
        with self._lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
            self.syntaxes.append(str(event.context.transfer_syntax))
        return self.status

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pynetdicom_peer():
    peers: list[PynetdicomPeer] = []

    def start(**options) -> PynetdicomPeer:
        peer = PynetdicomPeer(**options)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


def pynetdicom_destination(peer: PynetdicomPeer, ae_title: str | None = None, **options) -> DicomDestination:
    return DicomDestination("PEER", ae_title or peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST, **options)


def test_one_association_for_a_batch_counted_by_the_peer(tmp_path, pynetdicom_peer):
    peer = pynetdicom_peer()
    items = [delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm", f"{n}.dcm"), n) for n in range(1, 6)]
    sender = DicomSender(pynetdicom_destination(peer))
    sender.open(items)
    assert [sender.send(item) for item in items] == ["0x0000"] * 5
    sender.close()
    assert peer.associations == 1
    assert len(peer.stored) == 5


def test_a_failure_status_is_an_item_error(tmp_path, pynetdicom_peer):
    peer = pynetdicom_peer(status=0xA700)
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    sender = DicomSender(pynetdicom_destination(peer))
    sender.open([item])
    with pytest.raises(ItemError, match="0xA700"):
        sender.send(item)
    assert sender.assoc.is_established  # the link is fine: only this instance was refused
    sender.close()


def test_a_warning_status_counts_as_delivered(tmp_path, pynetdicom_peer):
    peer = pynetdicom_peer(status=0xB000)
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    sender = DicomSender(pynetdicom_destination(peer))
    sender.open([item])
    assert sender.send(item).startswith("0xB000")
    sender.close()


def test_a_rejected_association_is_a_link_error(tmp_path, pynetdicom_peer):
    peer = pynetdicom_peer()
    sender = DicomSender(pynetdicom_destination(peer, ae_title="SOMEONE_ELSE"))
    with pytest.raises(LinkError, match="rejected"):
        sender.open([delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))])
    assert peer.stored == []


def test_implicit_vr_is_proposed_so_that_an_implicit_only_peer_accepts_the_association(tmp_path,
                                                                                      pynetdicom_peer):
    peer = pynetdicom_peer(syntaxes=(ImplicitVRLittleEndian,))
    item = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"))
    sender = DicomSender(pynetdicom_destination(peer))
    sender.open([item])
    try:
        accepted = [(cx.abstract_syntax, cx.transfer_syntax) for cx in sender.assoc.accepted_contexts]
        assert accepted == [(CTImageStorage, [ImplicitVRLittleEndian])]
    finally:
        sender.close()


# ---- a large instance -------------------------------------------------------------------------------

MB = 1 << 20


def peak_growth(action) -> tuple[int, object]:
    """The peak of Python allocations while `action` runs, above where they started."""
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, result


def send_one(sender: DicomSender, item: Delivery) -> str:
    sender.open([item])
    try:
        return sender.send(item)
    finally:
        sender.close()


def test_a_60_mb_instance_is_sent_from_its_file(tmp_path, storescp_factory):
    peer = storescp_factory()
    big = tmp_path / "spool" / "big.dcm"
    big.parent.mkdir()
    pixels = write_large_instance(big)
    growth, status = peak_growth(lambda: send_one(DicomSender(destination_for(peer)), delivery(big)))
    assert status == "0x0000"
    assert growth < 25 * MB, f"Python allocations peaked {growth / MB:.1f} MB above the start"
    [received] = peer.files()
    assert tail_digest(received) == pixels


def test_a_60_mb_instance_converted_for_an_implicit_only_peer_never_enters_memory(tmp_path, storescp_factory):
    peer = storescp_factory("+xi")
    big = tmp_path / "spool" / "big.dcm"
    big.parent.mkdir()
    write_large_instance(big)
    growth, status = peak_growth(lambda: send_one(DicomSender(destination_for(peer)), delivery(big)))
    assert status == "0x0000"
    assert growth < 25 * MB, f"Python allocations peaked {growth / MB:.1f} MB above the start"
    [received] = peer.files()
    assert pydicom.dcmread(received, stop_before_pixels=True).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert os.path.getsize(received) > 60_000_000


def test_a_paused_destination_stays_paused_after_a_restart_so_nothing_overtakes(tmp_path):
    """A destination that was unreachable pauses its whole queue. A restart during the pause
    must not let an instance received after the restart go before those waiting."""
    storage = Storage(str(tmp_path / "storage"))
    nobody = DicomDestination("PACS", "NOBODY", "127.0.0.1", free_port(), retry=Retry(delay=60, max_attempts=5),
                              timeouts=Timeouts(connect=2, acse=2, dimse=2, network=2))

    def queue(number: int) -> int:
        received = Received("listener", "main", "CT1", "ROUTER", None, "1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{number}")
        path = str(SAMPLES / "ct_head.dcm")
        instance = journal.record(received, path, Outcome("v1", "route", None, ("all",), ("PACS",)), "accepted")
        [delivery_id] = journal.add_deliveries(instance, [NewDelivery("PACS", path, received.sop_class_uid,
                                                                      received.sop_instance_uid, None)])
        return delivery_id

    journal = storage.journal()
    first, second = queue(1), queue(2)
    manager = DeliveryManager(journal, storage)
    manager.apply({"PACS": nobody})
    wait_until(lambda: journal.delivery(first).state == RETRYING, timeout=10, what="the first attempt")
    manager.stop()
    assert journal.delivery(first).state == RETRYING and journal.delivery(first).attempts == 1
    journal.close()

    journal = storage.journal()  # the restart
    third = queue(3)
    clock = StoppedClock()  # now stays where the restart happened, whatever the machine's speed
    restarted = DeliveryManager(journal, storage, clock)
    restarted.apply({"PACS": nobody})
    try:
        # The worker claims with the first read; the second comes only after that claim returned.
        wait_until(lambda: clock.reads >= 2, timeout=10, what="the worker to claim what it considers due")
        assert [(journal.delivery(d).state, journal.delivery(d).attempts) for d in (first, second, third)] == [
            (RETRYING, 1), (QUEUED, 0), (QUEUED, 0)]
        # A changed destination starts afresh: its first delivery is attempted at once.
        restarted.apply({"PACS": dataclasses.replace(nobody, ae_title="STILL_NOBODY")})
        wait_until(lambda: journal.delivery(first).attempts == 2, timeout=10, what="an attempt at once")
        assert (journal.delivery(third).state, journal.delivery(third).attempts) == (QUEUED, 0)
    finally:
        restarted.stop()
        journal.close()


def test_a_deflated_instance_is_inflated_for_a_peer_that_does_not_accept_deflate(tmp_path, storescp_factory):
    peer = storescp_factory("+xi")
    source = spool_copy(tmp_path, bundled("image_dfl.dcm"))
    item = delivery(source)
    assert item.transfer_syntax == DeflatedExplicitVRLittleEndian
    assert send_one(DicomSender(destination_for(peer)), item) == "0x0000"
    [received] = peer.files()
    stored = pydicom.dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert stored.PixelData == pydicom.dcmread(source).PixelData


def test_a_deflated_instance_goes_deflated_to_a_peer_that_accepts_deflate(tmp_path, storescp_factory):
    """storescp takes Deflated Explicit VR Little Endian; pydicom's image_dfl.dcm has an odd
    length of deflated data, on which DCMTK aborts ("Odd Fragment Length"): it is padded."""
    peer = storescp_factory()
    source = spool_copy(tmp_path, bundled("image_dfl.dcm"))
    item = delivery(source)
    sender = DicomSender(destination_for(peer))
    sender.open([item])
    assert sender.send(item) == "0x0000"
    sender.close()
    [received] = peer.files()
    stored, original = pydicom.dcmread(received), pydicom.dcmread(source)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert differences(original, stored) == []
    assert stored.PixelData == original.PixelData


def test_a_big_endian_instance_reaches_an_implicit_only_peer_with_the_values_of_its_little_endian_twin(
        tmp_path, storescp_factory):
    peer = storescp_factory("+xi")
    item = delivery(spool_copy(tmp_path, bundled("MR_small_bigendian.dcm")))
    assert item.transfer_syntax == ExplicitVRBigEndian
    assert send_one(DicomSender(destination_for(peer)), item) == "0x0000"
    [received] = peer.files()
    stored = pydicom.dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    twin = pydicom.dcmread(bundled("MR_small.dcm"))  # the same instance, little endian
    assert [d for d in differences(twin, stored) if "(FFFC,FFFC)" not in d] == []
    assert stored.PixelData == twin.PixelData


def test_a_big_endian_instance_goes_as_it_is_to_a_peer_that_accepts_big_endian(tmp_path, storescp_factory):
    peer = storescp_factory()  # uncompressed syntaxes, big endian among them
    source = spool_copy(tmp_path, bundled("MR_small_bigendian.dcm"))
    item = delivery(source)
    assert send_one(DicomSender(destination_for(peer)), item) == "0x0000"
    [received] = peer.files()
    stored = pydicom.dcmread(received)
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert differences(pydicom.dcmread(source), stored) == []


def test_an_explicit_vr_instance_stays_explicit_with_a_peer_whose_first_choice_is_implicit(tmp_path,
                                                                                           pynetdicom_peer):
    """pynetdicom as a peer takes, in a context proposing both, the first of its own list:
    Implicit VR. Each syntax in a context of its own lets it take Explicit VR as well, and the
    instance keeps the VR of its private elements."""
    peer = pynetdicom_peer(syntaxes=(ImplicitVRLittleEndian, ExplicitVRLittleEndian))
    explicit = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"), 1)
    ds = pydicom.dcmread(SAMPLES / "ct_chest.dcm")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(tmp_path / "spool" / "implicit.dcm")
    implicit = delivery(tmp_path / "spool" / "implicit.dcm", 2)
    sender = DicomSender(pynetdicom_destination(peer))
    sender.open([explicit, implicit])
    assert [sender.send(explicit), sender.send(implicit)] == ["0x0000", "0x0000"]
    sender.close()
    assert peer.syntaxes == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]  # each as it is


def test_an_instance_without_a_sop_class_is_refused_alone(tmp_path, storescp_factory):
    peer = storescp_factory()
    good = delivery(spool_copy(tmp_path, SAMPLES / "ct_head.dcm"), 1)
    classless = dataclasses.replace(delivery(spool_copy(tmp_path, SAMPLES / "mr_knee.dcm"), 2), sop_class_uid=None)
    sender = DicomSender(destination_for(peer))
    sender.open([classless, good])
    with pytest.raises(ItemError, match="has no SOP Class UID"):
        sender.send(classless)
    assert sender.send(good) == "0x0000"
    sender.close()


def test_a_folder_destination_that_cannot_be_created_is_unreachable_not_broken(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    sender = FolderSender(FolderDestination("OUT", str(blocker / "out")))
    with pytest.raises(LinkError, match=r"folder .*a-file/out cannot be created: Not a directory"):
        sender.open([])


def test_an_unexpected_error_fails_one_delivery_and_the_destination_goes_on(tmp_path, storescp_factory):
    """An instance without a SOP class alone in a batch: pynetdicom refuses to request an
    association with no presentation context. That delivery fails; the next one arrives."""
    peer = storescp_factory()
    storage = Storage(str(tmp_path / "storage"))
    journal = storage.journal()
    classless, good = (spool_copy(tmp_path, SAMPLES / name) for name in ("mr_knee.dcm", "ct_head.dcm"))
    ids = []
    for number, (path, sop_class) in enumerate([(classless, None), (good, "1.2.840.10008.5.1.4.1.1.2")], 1):
        received = Received("listener", "main", "CT1", "ROUTER", None, sop_class, f"1.2.3.{number}")
        instance = journal.record(received, str(path), Outcome("v1", "route", None, ("all",), ("PEER",)), "accepted")
        ids += journal.add_deliveries(instance, [NewDelivery("PEER", str(path), sop_class, f"1.2.3.{number}",
                                                             ExplicitVRLittleEndian)])
    manager = DeliveryManager(journal, storage)
    manager.apply({"PEER": destination_for(peer, batch=1, retry=Retry(delay=60, max_attempts=1))})
    try:
        wait_until(lambda: journal.delivery(ids[1]).state == DELIVERED, timeout=20, what="the second delivery")
        failed = journal.delivery(ids[0])
        assert (failed.state, failed.attempts) == (DEAD, 1)
        assert failed.last_error.startswith("unexpected error")
        assert len(peer.files()) == 1
    finally:
        manager.stop()
        journal.close()
