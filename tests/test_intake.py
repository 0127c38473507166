"""One intake decision for the listener, the watched folders and dry-run: what is taken, what is
refused and why, on real files (pydicom's bundled ones and damaged ones generated here); and
dry-run predicting what the router does with each of pydicom's files."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pydicom
import pytest
from helpers.bad_instances import _element, part10
from helpers.files import SAMPLES, bundled, write
from helpers.cli import dicom_rules
from pydicom.data import get_charset_files
from helpers.damaged import (SECONDARY_CAPTURE, bad_value_length, corrupt_deflate, deeply_nested, with_command_element,
                     with_other_file_meta, without)
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from rulesengine.config import load_config
from rulesengine.document import Arrival, DocumentReadError
from rulesengine.intake import RefusedAtIntake, file_meta_problem, needs_file_meta, read_instance
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

FOLDER = Arrival(source_name="inbox", source_kind="folder")
BUNDLED = Path(pydicom.__file__).parent / "data"


def several_uids(target: Path) -> Path:
    ds = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    ds.SOPClassUID = [ds.SOPClassUID, SECONDARY_CAPTURE]
    ds.SOPInstanceUID = [ds.SOPInstanceUID, generate_uid()]
    ds.save_as(target)
    return target


CT_HEAD_INSTANCE = str(pydicom.dcmread(SAMPLES / "ct_head.dcm").SOPInstanceUID)


def with_uid_bytes(target: Path, keyword: str, replace: bytes) -> Path:
    """ct_head.dcm with the data set's `keyword` UID's bytes replaced by `replace`, of the same
    length (a bit flipped on the way, a tool that wrote what is no UID): only the data set's
    copy, the file meta's stays right."""
    data = (SAMPLES / "ct_head.dcm").read_bytes()
    value = str(getattr(pydicom.dcmread(SAMPLES / "ct_head.dcm"), keyword)).encode()
    assert len(replace) in (len(value), len(value) + 1)  # a UI value is padded to an even length
    at = data.rindex(value)
    target.write_bytes(data[:at] + replace[:len(value)] + data[at + len(value):])
    return target


def bundled_files() -> list[Path]:
    """Every file pydicom ships in its test and character set folders."""
    return sorted(p for folder in ("test_files", "charset_files") for p in (BUNDLED / folder).rglob("*")
                  if p.is_file())


# ---- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: Path(bundled("DICOMDIR")), "a DICOMDIR (a media directory) is not an instance to route"),
    (lambda tmp: BUNDLED / "test_files" / "dicomdirtests" / "DICOMDIR-bigEnd",
     "a DICOMDIR (a media directory) is not an instance to route"),
    (lambda tmp: Path(bundled("priv_SQ.dcm")), "no SOP Class UID and no SOP Instance UID in the data set"),
    (lambda tmp: without(tmp / "x.dcm", "SOPInstanceUID"), "no SOP Instance UID in the data set"),
    (lambda tmp: without(tmp / "x.dcm", "SOPClassUID"), "no SOP Class UID in the data set"),
    # JPEG Baseline declared (explicit VR), the data set in implicit VR: no transfer syntax describes it
    (lambda tmp: Path(bundled("SC_rgb_jpeg.dcm")), "the data set is implicit VR; its transfer syntax is explicit VR"),
    (lambda tmp: with_other_file_meta(tmp / "x.dcm", source=Path(bundled("JPEG-lossy.dcm")), implicit=True),
     "the data set is implicit VR; its transfer syntax is explicit VR"),
    (lambda tmp: several_uids(tmp / "x.dcm"), "several SOP Class UIDs and SOP Instance UIDs in the data set"),
    # What a flipped bit makes of a UID: pynetdicom cannot propose it (its association thread dies)
    (lambda tmp: with_uid_bytes(tmp / "x.dcm", "SOPClassUID", "1\xae2.840.10008.5.1.4.1.1.2".encode("latin-1")),
     "the SOP Class UID is not a UID: '1®2.840.10008.5.1.4.1.1.2'"),
    (lambda tmp: with_uid_bytes(tmp / "x.dcm", "SOPClassUID", b"3.2.840.10008.5.1.4.1.1.2"),
     "the SOP Class UID is not a UID: '3.2.840.10008.5.1.4.1.1.2'"),
    (lambda tmp: with_uid_bytes(tmp / "x.dcm", "SOPInstanceUID", CT_HEAD_INSTANCE[:-1].encode() + b"x"),
     ("the SOP Instance UID is not a UID: '" + CT_HEAD_INSTANCE)[:61] + "..."),
], ids=["DICOMDIR", "big-endian DICOMDIR", "no SOP UIDs", "no SOP Instance UID", "no SOP Class UID",
        "bundled JPEG in implicit VR", "JPEG in implicit VR", "several UIDs", "a SOP class that is no UID",
        "a SOP class with a root arc over 2", "a SOP instance that is no UID"])
def test_files_the_router_cannot_route_are_refused_with_the_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(RefusedAtIntake) as refused:
        read_instance(path)
    assert refused.value.reason == reason
    assert str(refused.value) == f"{path}: {reason}"
    assert len(reason) <= 64  # it goes into a C-STORE response's Error Comment whole


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: Path(bundled("MR_truncated.dcm")),
     "the file is truncated: the pixel data declares 8192 bytes, 8130 remain"),
    (lambda tmp: Path(bundled("no_meta.dcm")), "not a DICOM file (no DICM header and no SOP instance found)"),
    (lambda tmp: deeply_nested(tmp / "x.dcm"), "cannot read: sequences nested too deeply"),
    (lambda tmp: corrupt_deflate(tmp / "x.dcm"), "cannot read: Error -3 while decompressing data: invalid block type"),
], ids=["truncated JPEG", "no meta, no UIDs", "nested 1000 deep", "corrupt deflate"])
def test_files_that_cannot_be_read_are_unreadable_with_the_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(DocumentReadError) as unreadable:
        read_instance(path)
    assert not isinstance(unreadable.value, RefusedAtIntake)
    assert str(unreadable.value) == f"{path}: {reason}"


# ---- data sets no strict parser reads --------------------------------------------------------------------
# pydicom reads each of these without complaint; DCMTK does not (storescp aborts the association,
# Orthanc fails the C-STORE without ever answering it). Built byte by byte after a valid head.

SEQUENCE, ITEM = (0x0008, 0x1115), (0xFFFE, 0xE000)


def _undefined(group: int, element: int, vr: str = "SQ") -> bytes:
    return struct.pack("<HH2sHL", group, element, vr.encode(), 0, 0xFFFFFFFF)


def _marker(element: int, length: int = 0) -> bytes:
    """An item (E000), item delimiter (E00D) or sequence delimiter (E0DD)."""
    return struct.pack("<HHL", 0xFFFE, element, length)


NAME = _element(0x0010, 0x0010, "PN", b"DAMAGED^DATA")
ITEM_OF_TEN = _element(0x0008, 0x1150, "UI", b"1.2.3.4\0") + struct.pack("<HH2sH", 0x0008, 0x1155, b"UI", 10)
# name -> (what follows a valid head, the reason, where it fails after the head; None: the data set's length)
DAMAGED = {
    # the last element header cut after its tag: pydicom drops the 3 bytes
    "cut in a header": (NAME + b"\x10\x00\x20", "the data set ends at byte {} with 3 byte(s), too few for an "
                        "element (cut short)", len(NAME)),
    # an element of an item longer than the item: pydicom reads what there is
    "longer than its item": (_element(*SEQUENCE, "SQ", _marker(0xE000, len(ITEM_OF_TEN) + 2) + ITEM_OF_TEN + b"1."),
                             "element (0008,1155) at byte {} declares 10 bytes, 2 remain in an item of the "
                             "sequence (0008,1115)", 12 + 8 + 16),
    # a stray item delimiter: pydicom and DCMTK end the data set there, and lose what follows
    "stray delimiter": (_marker(0xE00D) + NAME, "an item delimiter (FFFE,E00D) at byte {} where a data element of "
                        "the data set belongs", 0),
    # a sequence of defined length holding an element where an item belongs
    "no item": (_element(*SEQUENCE, "SQ", NAME), "element (0010,0010) at byte {} where an item of the sequence "
                "(0008,1115) belongs", 12),
    # a pixel data fragment cut short (pydicom stops before the pixel data)
    "fragment cut short": (_undefined(0x7FE0, 0x0010, "OB") + _marker(0xE000) + _marker(0xE000, 100) + b"\xff" * 10,
                           "an item of the encapsulated pixel data (7FE0,0010) at byte {} declares 100 bytes, "
                           "10 remain", 12 + 8),
    # a VR DICOM does not define: DCMTK reads a 4-byte length after it, pydicom a 2-byte one
    "unknown VR": (struct.pack("<HH2sH", 0x0010, 0x0020, b"QS", 4) + b"ABCD",
                   "element (0010,0020) at byte {} has the VR 'QS', which DICOM does not define (readers "
                   "disagree on the length after it)", 0),
    "odd length": (_element(0x0010, 0x0020, "LO", b"ODD"), "the data set is {} bytes long, an odd length (a value of "
                   "odd length, which DICOM does not allow and network peers refuse)", None),
}


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_data_set_no_strict_parser_reads_is_refused_with_where_it_fails(tmp_path, damage):
    tail, reason, at = DAMAGED[damage]
    head = part10(b"")
    data = head + tail
    path = tmp_path / "damaged.dcm"
    path.write_bytes(data)
    start = data.index(b"\x08\x00\x16\x00UI")  # the data set's first element

    with pytest.raises(DocumentReadError) as refused:
        read_instance(path)

    expected = reason.format(len(data) - start if at is None else len(head) + at)
    assert str(refused.value) == f"{path}: the data set is damaged: {expected}"


@pytest.mark.parametrize("tail", [
    # an undefined-length UN holds a sequence in Implicit VR Little Endian (PS3.5 6.2.2)
    _undefined(0x0009, 0x1010, "UN") + _marker(0xE000, 0xFFFFFFFF) + struct.pack("<HHL", 0x0009, 0x1011, 4) + b"ABCD"
    + _marker(0xE00D) + _marker(0xE0DD),
    # two odd-length values: an even data set, which DCMTK reads with a warning
    _element(0x0010, 0x0020, "LO", b"ODD") + _element(0x0010, 0x0030, "DA", b"2"),
    # nested sequences and items of defined and undefined lengths, encapsulated pixel data
    _element(*SEQUENCE, "SQ", _marker(0xE000, len(ITEM_OF_TEN) + 10) + ITEM_OF_TEN + b"1.2.3.4.5\0")
    + _undefined(0x0040, 0xA730) + _marker(0xE000, 0xFFFFFFFF) + _undefined(0x0040, 0xA730) + _marker(0xE0DD)
    + _marker(0xE00D) + _marker(0xE0DD) + _undefined(0x7FE0, 0x0010, "OB") + _marker(0xE000) + _marker(0xE000, 4)
    + b"\xff\xd8\xff\xd9" + _marker(0xE0DD),
], ids=["UN of undefined length", "odd values, even data set", "nesting and fragments"])
def test_a_well_formed_data_set_is_taken_however_it_is_laid_out(tmp_path, tail):
    path = tmp_path / "fine.dcm"
    path.write_bytes(part10(NAME + tail))
    assert read_instance(path).get("DataSet.PatientName") == "DAMAGED^DATA"


@pytest.mark.parametrize("name, syntax", [
    ("rtstruct.dcm", ImplicitVRLittleEndian), ("ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian),
    ("ExplVR_BigEndNoMeta.dcm", ExplicitVRBigEndian)])
def test_a_data_set_without_file_meta_that_names_its_instance_is_taken(name, syntax):
    document = read_instance(bundled(name))
    assert needs_file_meta(document)
    assert document.file_meta.TransferSyntaxUID == syntax
    assert document.get("DataSet.SOPInstanceUID") == pydicom.dcmread(bundled(name), force=True).SOPInstanceUID


# ---- the router keeps such a file as a proper DICOM file -----------------------------------------------


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "router.yaml", "storage: var\nrules: main.rules\ndestinations:\n"
                                    "  PACS: {type: folder, path: pacs}\n  ARCHIVE: {type: folder, path: archive}\n")
    write(tmp_path / "main.rules", ROUTE_AND_EDIT_A_COPY)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    rules = RulesHolder(config, journal)
    yield Pipeline(storage, journal, rules, lambda _names: None, on_accepted=lambda _id: None)
    journal.close()


ROUTE_AND_EDIT_A_COPY = """
rule "to both" {
  then {
    route to PACS
    copy to ARCHIVE {
      set DataSet.InstitutionName = "ARCHIVED"
    }
  }
}
"""


def take(pipeline: Pipeline, source) -> tuple[str, str | None]:
    """What the router does with a file in a watched folder: ("refused", reason), or the outcome
    once processed (route, quarantine) with the reason."""
    path = pipeline.storage.temp_path()
    shutil.copyfile(source, path)
    try:
        result = pipeline.intake(path, FOLDER)
    except DocumentReadError as exc:
        pipeline.storage.remove(path)
        return "refused", str(exc).replace(path + ": ", "")
    pipeline.process(result.instance_id)
    row = pipeline.journal.instance(result.instance_id)
    return row["outcome"], row["reason"]


@pytest.mark.parametrize("name", ["rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"])
def test_an_instance_without_file_meta_reaches_destinations_as_a_dicom_file(pipeline, name):
    original = pydicom.dcmread(bundled(name), force=True)
    assert take(pipeline, bundled(name)) == ("route", None)
    for delivery in pipeline.journal.deliveries(limit=10):
        copy = pydicom.dcmread(delivery["path"])  # a Part 10 file: no force needed
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert copy.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        for element in original:
            if element.keyword != "InstitutionName" or delivery["destination"] == "PACS":
                assert copy[element.tag].value == element.value, (delivery["destination"], element)
        if delivery["destination"] == "ARCHIVE":
            assert copy.InstitutionName == "ARCHIVED"


# ---- file meta that names another instance: kept with file meta made from the data set -----------------


def data_set_bytes(path) -> bytes:
    """Everything after the preamble and the file meta information, as pydicom finds it."""
    with open(path, "rb") as fp:
        read_preamble(fp, force=True)
        _read_file_meta_info(fp)
        return fp.read()


OTHER_FILE_META = {
    # name: (how the file is made, what the file meta names that the data set does not)
    "another instance": (lambda tmp: with_other_file_meta(tmp / "x.dcm", MediaStorageSOPInstanceUID=generate_uid()),
                         "SOP Instance UID"),
    "another SOP class": (lambda tmp: with_other_file_meta(tmp / "x.dcm", MediaStorageSOPClassUID=SECONDARY_CAPTURE),
                          "SOP Class UID"),
    # Explicit VR Little Endian declared, Implicit VR written: kept as Implicit VR Little Endian
    "explicit declared, implicit written": (
        lambda tmp: with_other_file_meta(tmp / "x.dcm", implicit=True, TransferSyntaxUID=ExplicitVRLittleEndian),
        "transfer syntax 1.2.840.10008.1.2.1, its data set is in 1.2.840.10008.1.2"),
    "all three": (lambda tmp: with_other_file_meta(tmp / "x.dcm", implicit=True, MediaStorageSOPClassUID="1.2.3",
                                                   MediaStorageSOPInstanceUID="1.2.3.4",
                                                   TransferSyntaxUID=ExplicitVRLittleEndian),
                  "SOP Class UID 1.2.3, its data set 1.2.840.10008.5.1.4.1.1.2; SOP Instance UID 1.2.3.4, its data "
                  "set"),
    # pydicom's own: the file meta names the instance whose UID ends in 17461, the data set is 17462
    # A transfer syntax that is no UID: the data set is described by the encoding it is found in
    "a garbled transfer syntax": (lambda tmp: with_other_file_meta(tmp / "x.dcm", TransferSyntaxUID="1.2.840.1\xae\xae08.1.2.1"),
                                  "transfer syntax 1.2.840.1\xae\xae08.1.2.1, its data set is in 1.2.840.10008.1.2.1"),
    "chrJapMulti.dcm": (lambda tmp: Path(get_charset_files("chrJapMulti.dcm")[0]), "SOP Instance UID"),
    "rtdose.dcm": (lambda tmp: Path(bundled("rtdose.dcm")), "SOP Instance UID"),  # implicit VR
    "rtdose_expb.dcm": (lambda tmp: Path(bundled("rtdose_expb.dcm")), "SOP Instance UID"),  # big endian
    "rtplan.dcm": (lambda tmp: Path(bundled("rtplan.dcm")), "SOP Instance UID"),
    "badVR.dcm": (lambda tmp: Path(bundled("badVR.dcm")), "SOP Instance UID"),
}


@pytest.mark.parametrize("name", list(OTHER_FILE_META))
def test_an_instance_whose_file_meta_names_another_is_kept_and_sent_as_its_data_set_names_it(pipeline, tmp_path,
                                                                                              name):
    """The router sends an instance from its file, in a C-STORE made from the file meta: the file
    meta must name the data set's own SOP class, instance and transfer syntax, or the peer gets a
    request that does not match the data set (Orthanc: 0xA900), or stores it under another name."""
    make, names = OTHER_FILE_META[name]
    source = make(tmp_path)
    original = pydicom.dcmread(source)
    document = read_instance(source)
    assert needs_file_meta(document)
    assert names in file_meta_problem(document)

    assert take(pipeline, source) == ("route", None)

    deliveries = {row["destination"]: row for row in pipeline.journal.deliveries(limit=10)}
    assert sorted(deliveries) == ["ARCHIVE", "PACS"]
    instance = pipeline.journal.instance(deliveries["PACS"]["instance_id"])
    assert (instance["sop_class_uid"], instance["sop_instance_uid"]) == (original.SOPClassUID, original.SOPInstanceUID)
    for destination, delivery in deliveries.items():
        assert (delivery["sop_class_uid"], delivery["sop_instance_uid"]) == (original.SOPClassUID,
                                                                             original.SOPInstanceUID)
        copy = pydicom.dcmread(delivery["path"])
        assert copy.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert copy.file_meta.TransferSyntaxUID == delivery["transfer_syntax"]
        assert copy.file_meta.TransferSyntaxUID == (
            ImplicitVRLittleEndian if "implicit written" in name or name == "all three"
            else ExplicitVRLittleEndian if name == "a garbled transfer syntax"
            else original.file_meta.TransferSyntaxUID)
        if destination == "PACS":  # nothing edited: the data set exactly as received, the file meta's own kept
            assert data_set_bytes(delivery["path"]) == data_set_bytes(source)
            assert copy.file_meta.get("SourceApplicationEntityTitle") == \
                original.file_meta.get("SourceApplicationEntityTitle")
        else:
            assert copy.InstitutionName == "ARCHIVED"
        for element in original:
            if element.keyword != "InstitutionName" and element.tag.element != 0:  # group lengths may go
                assert copy[element.tag].value == element.value, (destination, element)


def test_dry_run_writes_what_the_router_delivers_for_a_file_whose_meta_names_another_instance(pipeline, tmp_path):
    source = with_other_file_meta(tmp_path / "other.dcm", implicit=True, MediaStorageSOPInstanceUID=generate_uid(),
                                  TransferSyntaxUID=ExplicitVRLittleEndian)
    result = dicom_rules("dry-run", "main.rules", source, "--config", "router.yaml", "--out", "out")
    assert result.returncode == 0, result.stderr
    assert take(pipeline, source) == ("route", None)
    delivered = {row["destination"]: Path(row["path"]).read_bytes() for row in pipeline.journal.deliveries(limit=10)}
    assert (tmp_path / "out" / "PACS" / "other.dcm").read_bytes() == delivered["PACS"]
    assert (tmp_path / "out" / "ARCHIVE" / "other.dcm").read_bytes() == delivered["ARCHIVE"]


# ---- dry-run predicts the router ------------------------------------------------------------------------


def generated(folder: Path) -> list[Path]:
    folder.mkdir()
    return [deeply_nested(folder / "nested.dcm"), corrupt_deflate(folder / "deflate.dcm"),
            bad_value_length(folder / "rows.dcm"), with_command_element(folder / "command.dcm"),
            without(folder / "no-uid.dcm", "SOPInstanceUID"), SAMPLES / "ct_head.dcm"]


def test_dry_run_and_the_router_decide_alike_for_every_file_pydicom_ships(pipeline, tmp_path):
    inputs = bundled_files() + generated(tmp_path / "generated")
    result = dicom_rules("dry-run", "main.rules", *inputs, "--format", "json", "--config", "router.yaml")
    assert result.stdout, result.stderr
    predicted = {}
    for line in result.stdout.splitlines():
        report = json.loads(line)
        predicted[report["file"]] = ("refused", report["error"]) if report["outcome"] is None else (
            report["outcome"], report["reason"])
    assert sorted(predicted) == sorted(map(str, inputs))

    done = {str(path): take(pipeline, path) for path in inputs}
    disagree = {path: (predicted[path], done[path]) for path in done if predicted[path] != done[path]}
    assert disagree == {}
    outcomes = {outcome for outcome, _ in done.values()}
    assert outcomes == {"route", "refused", "quarantine"}  # each kind occurs
    assert result.returncode == 1  # some inputs were refused
    assert done[str(tmp_path / "generated" / "command.dcm")][1].startswith(
        "the copy for ARCHIVE cannot be written: Command Set elements")
    assert done[str(Path(bundled("rtstruct.dcm")))] == ("route", None)
