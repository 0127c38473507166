"""What the router refuses at intake, as its senders meet it: a listener answers a failure status
with the reason in Error Comment (a hostile sender's pynetdicom, sending what DCMTK would not),
a watched folder moves the file to failed/ with the reason; and `dry-run` gives the same reasons.
Nothing refused is journaled, and the router goes on serving."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pydicom
import pytest
from bad_instances import _element, part10
from conftest import SAMPLES, bundled, dicom_rules
from damaged import with_command_element
from invariants import assert_settled, journal_rows
from peers import storescu, wait_until
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

ROUTE_ALL = 'rule "all" {\n  then route to PACS\n}\n'


def config(port: int | None = None) -> str:
    listener = f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n" if port else ""
    return (f"storage: var\nrules: main.rules\n{listener}"
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
    truncated = send_file(port, Path(bundled("SC_rgb_jpeg.dcm")))

    assert no_uids.Status == 0xA900
    assert no_uids.ErrorComment == "no SOP Class UID and no SOP Instance UID in the data set"
    assert truncated.Status == 0xC000
    assert "pixel data declares 65535 bytes" in truncated.ErrorComment
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
               "truncated.dcm": bundled("SC_rgb_jpeg.dcm"), "no-meta.dcm": bundled("rtstruct.dcm")}
    for name, source in sources.items():
        shutil.copyfile(source, inbox / name)
    router = router_factory(config(), ROUTE_ALL)

    failed = inbox / "failed"
    wait_until(lambda: len(list(failed.glob("*.reason.txt"))) == 3 and (inbox / "done" / "no-meta.dcm").exists(),
               what="every file sorted")
    wait_until(lambda: list((tmp_path / "pacs").rglob("*.dcm")), what="the instance without file meta delivered")
    reasons = {path.name.removesuffix(".reason.txt"): path.read_text(encoding="utf-8").strip()
               for path in failed.glob("*.reason.txt")}
    predicted = dicom_rules("dry-run", "main.rules", *(inbox / "failed" / name for name in reasons), cwd=tmp_path)
    for name, reason in reasons.items():
        assert reason.removeprefix(f"{name}: ") in predicted.stdout, (name, reason, predicted.stdout)
    assert reasons["DICOMDIR"] == "DICOMDIR: a DICOMDIR (a media directory) is not an instance to route"
    assert reasons["no-uids.dcm"] == "no-uids.dcm: no SOP Class UID and no SOP Instance UID in the data set"
    assert "truncated" in reasons["truncated.dcm"]

    [delivered] = (tmp_path / "pacs").rglob("*.dcm")
    copy = pydicom.dcmread(delivered)  # a DICOM file with its file meta, though the original had none
    original = pydicom.dcmread(sources["no-meta.dcm"], force=True)
    assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert all(copy[element.tag].value == element.value for element in original)
    assert router.stop() == 0
    assert "Traceback" not in router.log_path.read_text()
    assert assert_settled(tmp_path / "var") == {"delivered": 1}


EDIT_AND_ROUTE = 'rule "all" {\n  then {\n    set DataSet.InstitutionName = "ROUTED"\n    route to PACS\n  }\n}\n'


def test_a_copy_that_cannot_be_written_fails_a_sync_store_and_is_not_kept(router_factory, tmp_path, port,
                                                                          chunked_sending):
    """Sync mode: the sender hears of it at once (and the journal says why); async mode keeps
    such an instance in the quarantine instead (tests/test_runtime_settled.py)."""
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
