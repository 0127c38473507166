"""The document model: get, set, get_next, delete, blank on real DICOM files."""

from __future__ import annotations

import pydicom
import pytest

from rulesengine import Arrival, Document, DocumentReadError, PathError

from helpers.files import ROOT, SAMPLES, bundled


@pytest.fixture
def ct() -> Document:
    return Document.read(SAMPLES / "ct_chest.dcm")


def test_get_reads_values_by_vr(ct):
    assert ct.get("DataSet.PatientName") == "DOE^JOHN"  # PN as text
    assert ct.get("DataSet.Rows") == 128 and isinstance(ct.get("DataSet.Rows"), int)  # US
    assert ct.get("DataSet.SliceThickness") == 5.0  # DS as a number
    assert ct.get("DataSet.SeriesNumber") == 1  # IS as a number
    assert ct.get("DataSet.StudyDate") == "20040119"  # DA as text
    assert ct.get("DataSet.ImageType") == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert ct.get("DataSet.PixelSpacing") == (0.661468, 0.661468)
    assert isinstance(ct.get("DataSet.PixelData"), bytes)


def test_missing_empty_and_sequence_values(ct):
    assert ct.get("DataSet.PatientComments") is None
    assert ct.get("DataSet.ScheduledProcedureStepSequence[2].Modality") == ""
    assert ct.get("DataSet.ScheduledProcedureStepSequence[3].Modality") is None
    assert len(ct.get("DataSet.ScheduledProcedureStepSequence")) == 2


def test_get_next_walks_items_until_none(ct):
    seen, index = [], 1
    while (item := ct.get_next("DataSet.OtherPatientIDsSequence", index)) is not None:
        seen.append((item.path, item.get("PatientID"), item.get("IssuerOfPatientID")))
        index += 1
    assert seen == [("DataSet.OtherPatientIDsSequence[1]", "H1-777", "HOSP1"),
                    ("DataSet.OtherPatientIDsSequence[2]", "H2-888", "HOSP2")]
    assert ct.get_next("DataSet.ReferencedStudySequence", 1) is None
    item = ct.get_next("DataSet.OtherPatientIDsSequence", 2)
    item.set("IssuerOfPatientID", "HOSP9")
    assert ct.get("DataSet.OtherPatientIDsSequence[2].IssuerOfPatientID") == "HOSP9"


def test_set_converts_per_vr(ct):
    ct.set("DataSet.SeriesNumber", "12")
    ct.set("DataSet.SliceThickness", 2.5)
    ct.set("DataSet.Rows", 256)
    ct.set("DataSet.StudyDate", "20240131")
    ct.set("DataSet.ImageType", ["DERIVED", "SECONDARY"])
    ds = ct.dataset
    assert ds.SeriesNumber == 12 and ds["SeriesNumber"].VR == "IS"
    assert float(ds.SliceThickness) == 2.5
    assert ds.Rows == 256
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]


@pytest.mark.parametrize("path,value,words", [
    ("DataSet.StudyDate", "31.01.2024", "not a valid DA"),
    ("DataSet.StudyTime", "25:00", "not a valid TM"),
    ("DataSet.Rows", "many", "not a number"),
    ("DataSet.Rows", 70000, "between 0 and 65535"),
    ("DataSet.StudyInstanceUID", "1.2.03", "Invalid value for VR UI"),
    ("DataSet.StationName", "X" * 17, "exceeds the maximum length of 16"),
    ("DataSet.ScheduledProcedureStepSequence", "x", "a sequence"),
])
def test_set_refuses_values_invalid_for_the_vr(ct, path, value, words):
    before = ct.get(path)
    with pytest.raises(PathError, match=words):
        ct.set(path, value)
    assert ct.get(path) == before  # nothing half-written


def test_set_creates_sequences_items_and_private_blocks():
    document = Document()
    document.set("DataSet.ReferencedStudySequence[2].ReferencedSOPInstanceUID", "1.2.3")
    document.set('DataSet.(0011,"MY CREATOR",05)', "value")
    ds = document.dataset
    assert len(ds.ReferencedStudySequence) == 2 and ds.ReferencedStudySequence[1].ReferencedSOPInstanceUID == "1.2.3"
    block = ds.private_block(0x0011, "MY CREATOR")
    assert ds[block.get_tag(0x05)].value == "value" and ds[block.get_tag(0x05)].VR == "LO"


def test_star_and_any_depth_writes_touch_existing_items_only(ct):
    ct.set("DataSet.OtherPatientIDsSequence[*].TypeOfPatientID", "TEXT")
    assert ct.get("DataSet.OtherPatientIDsSequence[*].TypeOfPatientID") == ["TEXT", "TEXT"]
    ct.set("DataSet.**.IssuerOfPatientID", "X")
    assert ct.get("DataSet.**.IssuerOfPatientID") == ["X", "X"]
    assert ct.get("DataSet.ReferencedStudySequence") is None  # ** never creates


def test_delete_values_items_elements_and_masks(ct):
    changes = ct.delete("DataSet.ImageType[1]")
    assert ct.get("DataSet.ImageType") == ("PRIMARY", "AXIAL") and changes[0].old == "ORIGINAL"
    ct.delete("DataSet.OtherPatientIDsSequence[1]")
    assert ct.get("DataSet.OtherPatientIDsSequence[*].PatientID") == ["H2-888"]
    ct.delete("DataSet.(0009,xxxx)")
    assert not [e for e in ct.dataset if e.tag.group == 0x0009]
    assert ct.delete("DataSet.PatientComments") == []


def test_blank_keeps_the_element_present(ct):
    ct.blank("DataSet.PatientName")
    ct.blank("DataSet.OtherPatientIDsSequence")
    assert ct.get("DataSet.PatientName") == "" and ct.get("DataSet.OtherPatientIDsSequence") == ()


def test_arrival_facts_read_and_write():
    document = Document(arrival=Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1",
                                        peer_port=40000, source_name="main", source_kind="listener"))
    assert document.get("Association.PeerPort") == 40000
    document.set("Association.CallingAET", "MR1")
    assert document.arrival.calling_aet == "MR1" and document.get("Source.Kind") == "listener"


def test_copies_are_independent(ct):
    copy = ct.copy()
    copy.set("DataSet.PatientName", "OTHER")
    copy.set("DataSet.OtherPatientIDsSequence[1].PatientID", "Z")
    assert ct.get("DataSet.PatientName") == "DOE^JOHN"
    assert ct.get("DataSet.OtherPatientIDsSequence[1].PatientID") == "H1-777"


def test_write_keeps_file_meta_consistent(ct, tmp_path):
    ct.set("DataSet.SOPInstanceUID", "2.25.1234")
    ct.write(tmp_path / "out.dcm")
    again = pydicom.dcmread(tmp_path / "out.dcm")
    assert again.file_meta.MediaStorageSOPInstanceUID == "2.25.1234" == again.SOPInstanceUID


def test_non_ascii_switches_the_character_set_when_needed(tmp_path):
    document = Document.read(SAMPLES / "mr_knee.dcm")  # ISO_IR 100
    document.set("DataSet.PatientName", "Ærø^Åse")  # Latin-1 can hold it: no switch
    assert document.get("DataSet.SpecificCharacterSet") in ("ISO_IR 100", ("ISO_IR 100",))
    document.set("DataSet.StudyDescription", "頭部")  # it cannot: UTF-8
    assert document.get("DataSet.SpecificCharacterSet") in ("ISO_IR 192", ("ISO_IR 192",))
    document.write(tmp_path / "utf8.dcm")
    again = pydicom.dcmread(tmp_path / "utf8.dcm")
    assert (str(again.PatientName), again.StudyDescription) == ("Ærø^Åse", "頭部")


def test_bundled_character_set_files_decode():
    japanese = Document.read(SAMPLES / "mr_japanese.dcm")
    assert japanese.get("DataSet.PatientName") == "山田^太郎"


@pytest.mark.parametrize("name,words", [("not_dicom.dcm", "not a DICOM file"), ("truncated.dcm", "truncated")])
def test_unreadable_files_say_why(name, words):
    with pytest.raises(DocumentReadError, match=words):
        Document.read(ROOT / "examples" / "bad" / name)


def test_a_data_set_without_file_meta_is_read():
    document = Document.read(bundled("ExplVR_LitEndNoMeta.dcm"))
    assert document.get("DataSet.SOPInstanceUID")


@pytest.mark.parametrize("path,words", [("DataSet.PatientsName", "did you mean PatientName"),
                                        ("Patient.Name", "unknown name"), ("DataSet.", "bad path")])
def test_bad_paths_raise_path_error(ct, path, words):
    with pytest.raises(PathError, match=words):
        ct.get(path)


def test_copies_share_no_mutable_state(ct):
    copy = ct.copy()
    copy.set('DataSet.(0009,"ANOTHER CREATOR",01)', "x")
    copy.delete("DataSet.ImageType[1]")
    copy.set("DataSet.ScheduledProcedureStepSequence[3].Modality", "MR")
    copy.delete("DataSet.PixelData")
    assert ct.get('DataSet.(0009,"ANOTHER CREATOR",01)') is None
    assert ct.get("DataSet.ImageType") == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert len(ct.get("DataSet.ScheduledProcedureStepSequence")) == 2
    assert isinstance(ct.get("DataSet.PixelData"), bytes)
    assert copy.dataset.file_meta is copy.file_meta and copy.file_meta is not ct.file_meta


def test_writing_an_edited_header_copies_untouched_elements_as_they_were(tmp_path):
    """write() re-encodes only the elements an edit touched; every other element, nested
    sequences included, must come out exactly as it was read."""
    source = SAMPLES / "ct_chest.dcm"
    document = Document.read_header(source)
    document.set("DataSet.PatientName", "EDITED^NAME")
    document.set("DataSet.ScheduledProcedureStepSequence[2].Modality", "MR")
    document.delete("DataSet.AccessionNumber")
    document.set("DataSet.PatientComments", "added")
    target = tmp_path / "edited.dcm"
    document.write(target)
    before, after = pydicom.dcmread(source), pydicom.dcmread(target)
    assert str(after.PatientName) == "EDITED^NAME" and after.PatientComments == "added"
    assert "AccessionNumber" not in after
    assert [item.Modality for item in after.ScheduledProcedureStepSequence] == ["CT", "MR"]
    touched = {0x00100010, 0x00400100, 0x00080050, 0x00104000}
    for elem in before:
        if elem.tag not in touched:
            assert after[elem.tag].value == elem.value, elem.keyword
    assert after.PixelData == before.PixelData
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
