"""What the router refuses at intake, as its senders meet it: a listener answers a failure status
with the reason in Error Comment (a hostile sender's pynetdicom, sending what DCMTK would not),
a watched folder moves the file to failed/ with the reason; and `dry-run` gives the same reasons.
Nothing refused is journaled, and the router goes on serving."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from helpers.bad_instances import _element, part10
from helpers.files import SAMPLES, bundled
from helpers.cli import dicom_rules
from helpers.damaged import with_command_element, with_other_file_meta
from helpers.invariants import assert_settled, journal_rows
from helpers.peers import DCMTK_ENV, require, storescu, wait_until
from pydicom.data import get_charset_files
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

ROUTE_ALL = 'rule "all" {\n  then route to PACS\n}\n'


def config(port: int | None = None) -> str:
    listener = f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n" if port else ""
    return (f"storage: var\nprocesses: 1\nrules: main.rules\n{listener}"
            "watch:\n  - {name: inbox, path: inbox, pattern: '*', settle_seconds: 0.2}\n"
            "destinations:\n  PACS: {type: folder, path: pacs}\n")


def send_file(port: int, path: Path) -> pydicom.Dataset:
    """C-STORE of a file as it is on disk, from its file meta, as pynetdicom sends it in chunks: a
    sender that does not look inside the data set."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


@pytest.fixture
def chunked_sending(monkeypatch):
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)


def test_a_listener_answers_a_failure_with_the_reason_for_what_it_cannot_route(router_factory, tmp_path, port,
                                                                              chunked_sending):
    router = router_factory(config(port), ROUTE_ALL, port)

    no_uids = send_file(port, Path(bundled("priv_SQ.dcm")))
    misencoded = send_file(port, Path(bundled("SC_rgb_jpeg.dcm")))  # JPEG Baseline, its data set implicit VR
    truncated = send_file(port, Path(bundled("MR_truncated.dcm")))

    assert no_uids.Status == 0xA900
    assert no_uids.ErrorComment == "no SOP Class UID and no SOP Instance UID in the data set"
    assert misencoded.Status == 0xA900
    assert misencoded.ErrorComment == "the data set is implicit VR; its transfer syntax is explicit VR"
    assert truncated.Status == 0xC000
    assert "pixel data declares 8192 bytes" in truncated.ErrorComment
    assert storescu(port, [SAMPLES / "ct_head.dcm"]).returncode == 0  # the router goes on serving
    wait_until(lambda: list((tmp_path / "pacs").rglob("*.dcm")), what="the good instance delivered")
    assert [row["sop_instance_uid"] for row in journal_rows(tmp_path / "var", "SELECT * FROM instances")] == [
        pydicom.dcmread(SAMPLES / "ct_head.dcm").SOPInstanceUID]
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert "instance from HOSTILE refused: no SOP Class UID and no SOP Instance UID in the data set" in output
    assert "Traceback" not in output
    assert assert_settled(tmp_path / "var") == {"delivered": 1}


def test_a_listener_refuses_a_data_set_no_destination_could_read(router_factory, tmp_path, port, chunked_sending):
    """pydicom reads both; DCMTK does not (storescp aborts, Orthanc never answers the C-STORE).
    Answered Success, each would fail at every destination after the sender counted it sent."""
    name = _element(0x0010, 0x0010, "PN", b"DAMAGED^DATA")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(part10(name + b"\x10\x00\x20"))  # the next element's header cut after 3 bytes
    stray = tmp_path / "stray.dcm"
    stray.write_bytes(part10(struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + name))  # an item delimiter, out of place
    router = router_factory(config(port), ROUTE_ALL, port)

    answers = [send_file(port, cut), send_file(port, stray)]

    assert [answer.Status for answer in answers] == [0xC000, 0xC000]
    assert answers[0].ErrorComment.startswith("the data set ends at byte ")
    assert answers[1].ErrorComment.startswith("an item delimiter (FFFE,E00D) at byte ")
    assert storescu(port, [SAMPLES / "ct_head.dcm"]).returncode == 0  # the router goes on serving
    wait_until(lambda: list((tmp_path / "pacs").rglob("*.dcm")), what="the good instance delivered")
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert "with 3 byte(s), too few for an element (cut short)" in output
    assert "Traceback" not in output
    assert assert_settled(tmp_path / "var") == {"delivered": 1}  # nothing of the two journaled


def test_a_watched_folder_fails_what_it_cannot_route_with_the_reason_dry_run_gives(router_factory, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sources = {"DICOMDIR": bundled("DICOMDIR"), "no-uids.dcm": bundled("priv_SQ.dcm"),
               "misencoded.dcm": bundled("SC_rgb_jpeg.dcm"), "truncated.dcm": bundled("MR_truncated.dcm"),
               "no-meta.dcm": bundled("rtstruct.dcm")}
    for name, source in sources.items():
        shutil.copyfile(source, inbox / name)
    router = router_factory(config(), ROUTE_ALL)

    failed = inbox / "failed"
    wait_until(lambda: len(list(failed.glob("*.reason.txt"))) == 4 and (inbox / "done" / "no-meta.dcm").exists(),
               what="every file sorted")
    wait_until(lambda: list((tmp_path / "pacs").rglob("*.dcm")), what="the instance without file meta delivered")
    reasons = {path.name.removesuffix(".reason.txt"): path.read_text(encoding="utf-8").strip()
               for path in failed.glob("*.reason.txt")}
    # The reason beside the file is dry-run's, word for word, and does not name the file again.
    predicted = dicom_rules("dry-run", "main.rules", *(inbox / "failed" / name for name in reasons), cwd=tmp_path)
    for name, reason in reasons.items():
        assert f"{inbox / 'failed' / name}\n  error: {reason}\n" in predicted.stdout + "\n", (name, reason)
    assert reasons["DICOMDIR"] == "a DICOMDIR (a media directory) is not an instance to route"
    assert reasons["no-uids.dcm"] == "no SOP Class UID and no SOP Instance UID in the data set"
    assert reasons["misencoded.dcm"] == "the data set is implicit VR; its transfer syntax is explicit VR"
    assert reasons["truncated.dcm"] == "the file is truncated: the pixel data declares 8192 bytes, 8130 remain"

    [delivered] = (tmp_path / "pacs").rglob("*.dcm")
    copy = pydicom.dcmread(delivered)  # a DICOM file with its file meta, though the original had none
    original = pydicom.dcmread(sources["no-meta.dcm"], force=True)
    assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert all(copy[element.tag].value == element.value for element in original)
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert "Traceback" not in output
    # one line per failed file, naming it once
    assert "watched folder inbox: DICOMDIR -> " in output
    assert f"{failed}: a DICOMDIR (a media directory) is not an instance to route" in output
    assert assert_settled(tmp_path / "var") == {"delivered": 1}


EDIT_AND_ROUTE = 'rule "all" {\n  then {\n    set DataSet.InstitutionName = "ROUTED"\n    route to PACS\n  }\n}\n'


def test_a_copy_that_cannot_be_written_fails_a_sync_store_and_is_not_kept(router_factory, tmp_path, port,
                                                                          chunked_sending):
    """Sync mode: the sender hears of it at once (and the journal says why); async mode keeps
    such an instance in the quarantine instead (tests/runtime/test_settled.py)."""
    sync = config(port).replace(f"port: {port}}}", f"port: {port}, mode: sync}}")
    router = router_factory(sync, EDIT_AND_ROUTE, port)
    response = send_file(port, with_command_element(tmp_path / "command.dcm"))

    assert response.Status == 0xA700
    assert response.ErrorComment.startswith("the copy for PACS cannot be written: Command Set")
    assert storescu(port, [SAMPLES / "ct_head.dcm"]).returncode == 0  # delivered before the answer
    assert router.stop() == 0
    assert "Traceback" not in router.log_path.read_text()
    assert assert_settled(tmp_path / "var") == {"delivered": 1, "rejected": 1}
    [refused] = journal_rows(tmp_path / "var", "SELECT reason FROM instances WHERE outcome='reject'")
    assert refused["reason"].startswith("sync: the copy for PACS cannot be written: Command Set elements")


# ---- file meta that names another instance than the data set ---------------------------------------------


def to_peers(storescp, orthanc) -> str:
    retry = "retry: {delay: 0.2, max_attempts: 2}, timeouts: {acse: 3, dimse: 3, network: 3}"  # a failure ends soon
    return ("storage: var\nprocesses: 1\nrules: main.rules\n"
            "watch:\n  - {name: inbox, path: inbox, pattern: '*', settle_seconds: 0.2}\n"
            "destinations:\n"
            f"  STORESCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {storescp.port}, {retry}}}\n"
            f"  ORTHANC: {{type: dicom, ae_title: {orthanc.ae_title}, host: 127.0.0.1, port: {orthanc.dicom_port}, "
            f"{retry}}}\n")


def test_a_watched_file_whose_meta_names_another_instance_reaches_storescp_and_orthanc_as_its_data_set(
        router_factory, tmp_path, storescp, orthanc):
    """The router sends a file in a C-STORE made from its file meta. chrJapMulti.dcm's file meta
    names the SOP Instance UID of chrKoreanMulti.dcm's data set: sent so, Orthanc refused it
    (0xA900: the request does not match the data set) and storescp stored both under one name.
    Kept with file meta made from the data set, each arrives as what its data set is."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sources = {"japanese.dcm": Path(get_charset_files("chrJapMulti.dcm")[0]),
               "korean.dcm": Path(get_charset_files("chrKoreanMulti.dcm")[0]),
               "implicit.dcm": with_other_file_meta(tmp_path / "implicit.dcm", implicit=True,
                                                    MediaStorageSOPInstanceUID=generate_uid(),
                                                    TransferSyntaxUID=ExplicitVRLittleEndian)}
    expected = {pydicom.dcmread(path).SOPInstanceUID for path in sources.values()}
    assert len(expected) == 3
    assert pydicom.dcmread(sources["japanese.dcm"]).file_meta.MediaStorageSOPInstanceUID == \
        pydicom.dcmread(sources["korean.dcm"]).SOPInstanceUID
    for name, source in sources.items():
        shutil.copyfile(source, inbox / name)
    router = router_factory(to_peers(storescp, orthanc), 'rule "all" {\n  then route to STORESCP, ORTHANC\n}\n')

    finished = wait_until(lambda: (rows := journal_rows(tmp_path / "var", "SELECT * FROM deliveries")) and
                          len(rows) == 6 and all(row["state"] in ("delivered", "dead") for row in rows) and rows,
                          what="six deliveries finished")
    assert {(row["destination"], row["state"], row["last_error"]) for row in finished} == {
        ("STORESCP", "delivered", None), ("ORTHANC", "delivered", None)}
    assert {row["sop_instance_uid"] for row in finished} == expected
    assert {instance["SOPInstanceUID"] for instance in orthanc.instances()} == expected
    stored = {}
    for path in storescp.files():
        copy = pydicom.dcmread(path)
        assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID, path.name
        assert path.name.endswith(copy.SOPInstanceUID)  # storescp names it by the request's UID
        stored[copy.SOPInstanceUID] = copy
    assert set(stored) == expected
    for source in sources.values():  # each stored as its own data set, none overwritten by another
        original = pydicom.dcmread(source)
        assert stored[original.SOPInstanceUID].PatientName == original.PatientName
    assert sorted(p.name for p in (inbox / "done").iterdir()) == sorted(sources)
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert output.count("kept with file meta information made from its data set") == 2  # korean.dcm's is right
    assert "Traceback" not in output
    assert assert_settled(tmp_path / "var") == {"delivered": 3}


# ---- a C-STORE naming a SOP class no service of the association serves ---------------------------------------


def raw_store(assoc, dataset: pydicom.Dataset, sop_class: str, context_id: int) -> C_STORE | None:
    """A C-STORE of `dataset` whose Affected SOP Class UID is `sop_class`, in presentation context
    `context_id` whatever its abstract syntax, as a broken sender sends it; the response, or None."""
    request = C_STORE()
    request.MessageID, request.Priority = 7, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = sop_class, dataset.SOPInstanceUID
    request.DataSet = io.BytesIO(encode(dataset, False, True))
    assoc._reactor_checkpoint.clear()  # as pynetdicom's send_c_store does: its reactor must not take the answer
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        assoc.dimse.send_msg(request, context_id)
        return assoc.dimse.get_msg(block=True)[1]
    finally:
        assoc._reactor_checkpoint.set()


def test_a_c_store_whose_sop_class_no_service_serves_is_answered_a_failure_and_the_association_goes_on(
        router_factory, tmp_path, port, monkeypatch):
    """pynetdicom aborted the association on a C-STORE whose Affected SOP Class UID is neither its
    presentation context's nor a storage class it knows (the '31' dcmsend sends for rtdose_rle.dcm,
    whose RLE pixel data DCMTK misreads), and left the data set it had received in a temporary file."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary))  # where the router's pynetdicom writes what it receives
    router = router_factory(config(port), ROUTE_ALL, port)
    ct = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(ct.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    [context] = assoc.accepted_contexts
    try:
        uids = ("31", "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.2.1.1")  # garbage, Verification, Q/R Find
        answers = [raw_store(assoc, ct, uid, context.context_id) for uid in uids]
        assert [(answer.Status, answer.ErrorComment) for answer in answers] == [
            (0x0122, f"no service for SOP Class UID {uid} on this association"[:64]) for uid in uids]
        assert assoc.is_established
        assert assoc.send_c_store(ct).Status == 0x0000  # the same association goes on
    finally:
        assoc.release()
    assert list(temporary.iterdir()) == []

    # DCMTK's dcmsend, sending rtdose_rle.dcm as DCMTK reads it
    report = tmp_path / "dcmsend-report.txt"
    subprocess.run([require("dcmsend"), "-aet", "CT1", "-aec", "ROUTER", "--create-report-file", str(report),
                    "127.0.0.1", str(port), bundled("rtdose_rle.dcm")], env=DCMTK_ENV, capture_output=True,
                   timeout=60)
    assert "DIMSE Status  : 0x0122 (Refused: SOPClassNotSupported)" in report.read_text()
    assert list(temporary.iterdir()) == []

    wait_until(lambda: list((tmp_path / "pacs").rglob("*.dcm")), what="the good instance delivered")
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert "C-STORE from HOSTILE (127.0.0.1) refused: SOP Class UID '31', in presentation context" in output
    assert "C-STORE from CT1 (127.0.0.1) refused: SOP Class UID '31'" in output
    assert "Traceback" not in output and "No supported service class" not in output
    assert assert_settled(tmp_path / "var") == {"delivered": 1}
