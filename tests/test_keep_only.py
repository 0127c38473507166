"""`keep only PATH, ...`: every element of the data set the list does not name is deleted."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import rulesengine
from rulesengine import Document, RulesError
from rulesengine.lang.api import analyse
from rulesengine.lang.formatter import format_source
from rulesengine.lang.loader import load_program

from helpers.evaluation import evaluate

UIDS = "DataSet.SOPClassUID, DataSet.SOPInstanceUID"


def run(actions: str, document: Document):
    decision = evaluate('rule "r" { then {\n' + actions + '\n route to A } }', document)
    assert decision.error is None, decision.error
    return decision, decision.destinations["A"]


def tags(ds: Dataset) -> list[str]:
    return [e.keyword or str(e.tag) for e in ds]


def nested_document() -> Document:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3"
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows, ds.Columns = 2, 2
    ds.add_new(0x60003000, "OW", b"\0\0")
    ds.add_new(0x60023000, "OW", b"\0\0")
    ds.private_block(0x0009, "ACME 1.1", create=True).add_new(0x10, "LO", "acme")
    ds.private_block(0x0009, "OTHER", create=True).add_new(0x01, "LO", "other")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D4000", "SRT", "Abdomen"
    code.private_block(0x0019, "ACME 1.1", create=True).add_new(0x10, "LO", "acme deep")
    item = Dataset()
    item.PatientID = "H1"
    item.IssuerOfPatientID = "HOSP1"
    item.PatientName = "DEEP^NAME"
    item.ContentSequence = [code]
    ds.OtherPatientIDsSequence = [item, Dataset()]
    ds.PixelData = b"\0" * 8
    return Document(ds)


def test_keeps_the_named_the_image_pixel_module_and_the_file_meta(ct_document):
    decision, doc = run(f"keep only DataSet.PatientID, {UIDS}", ct_document)
    assert tags(doc.dataset) == ["SOPClassUID", "SOPInstanceUID", "PatientID", "SamplesPerPixel",
                                 "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored",
                                 "HighBit", "PixelRepresentation", "PixelData"]
    assert doc.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert decision.edits[0].path == "DataSet elements not kept"


def test_missing_empty_and_multi_valued_elements_stay_as_they_are():
    _, doc = run(f"keep only DataSet.PatientID, DataSet.ImageType, DataSet.AccessionNumber, {UIDS}",
                 nested_document())
    assert doc.get("DataSet.PatientID") == "" and doc.get("DataSet.ImageType") == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert doc.get("DataSet.AccessionNumber") is None  # named and missing: not created
    assert doc.get("DataSet.PatientName") is None


def test_a_named_sequence_is_kept_whole():
    _, doc = run(f"keep only DataSet.OtherPatientIDsSequence, {UIDS}", nested_document())
    item = doc.dataset.OtherPatientIDsSequence[0]
    assert tags(item) == ["PatientName", "PatientID", "IssuerOfPatientID", "ContentSequence"]


def test_elements_inside_items_keep_only_those_at_every_level():
    _, doc = run(f"keep only DataSet.OtherPatientIDsSequence[*].IssuerOfPatientID, "
                 f"DataSet.OtherPatientIDsSequence[*].ContentSequence[*].CodeValue, {UIDS}", nested_document())
    item = doc.dataset.OtherPatientIDsSequence[0]
    assert tags(item) == ["IssuerOfPatientID", "ContentSequence"]
    assert tags(item.ContentSequence[0]) == ["CodeValue"]  # its private block went, creator too
    assert len(doc.dataset.OtherPatientIDsSequence) == 2  # items stay, even empty ones


def test_any_depth_names_in_every_item_of_every_kept_sequence():
    _, doc = run(f"keep only DataSet.**.PatientID, DataSet.OtherPatientIDsSequence, {UIDS}", nested_document())
    assert doc.get("DataSet.PatientID") == ""
    item = doc.dataset.OtherPatientIDsSequence[0]
    assert tags(item) == ["PatientID"]  # ** names elements inside: the sequence's items are filtered


def test_masks_private_blocks_and_selectors():
    _, doc = run(f'keep only DataSet.(60xx,3000), DataSet.(0009,"ACME 1.1",xx), DataSet.*[VR == "PN"], {UIDS}',
                 nested_document())
    assert doc.get('DataSet.(0009,"ACME 1.1",10)') == "acme"
    assert doc.get('DataSet.(0009,"OTHER",01)') is None
    assert [e.value for e in doc.dataset if e.tag.is_private_creator] == ["ACME 1.1"]
    assert 0x60003000 in doc.dataset and 0x60023000 in doc.dataset
    assert doc.get("DataSet.PatientName") == "DOE^JOHN"


def test_one_private_element_by_creator_keeps_its_creator():
    _, doc = run(f'keep only DataSet.(0009,"OTHER",01), {UIDS}', nested_document())
    assert doc.get('DataSet.(0009,"OTHER",01)') == "other"
    assert [e.value for e in doc.dataset if e.tag.is_private_creator] == ["OTHER"]


def test_private_blocks_at_depth_by_any_depth():
    _, doc = run(f'keep only DataSet.**.(0019,"ACME 1.1",xx), DataSet.OtherPatientIDsSequence, {UIDS}',
                 nested_document())
    assert tags(doc.dataset.OtherPatientIDsSequence[0]) == []  # ContentSequence is not named: gone, block too
    _, doc = run(f'keep only DataSet.**.(0019,"ACME 1.1",xx), DataSet.**.ContentSequence, '
                 f'DataSet.OtherPatientIDsSequence, {UIDS}', nested_document())
    code = doc.dataset.OtherPatientIDsSequence[0].ContentSequence[0]
    assert [e.value for e in code] == ["ACME 1.1", "acme deep"]


def test_several_keep_only_each_filter_what_is_left():
    _, doc = run(f"keep only DataSet.PatientName, DataSet.PatientID, {UIDS}\n"
                 f" keep only DataSet.PatientID, {UIDS}", nested_document())
    assert doc.get("DataSet.PatientName") is None and doc.get("DataSet.PatientID") == ""


def test_a_later_action_may_delete_the_pixel_module():
    _, doc = run(f"keep only {UIDS}\n delete DataSet.PixelData", nested_document())
    assert doc.get("DataSet.Rows") == 2 and "PixelData" not in doc.dataset


def test_in_a_block_and_a_copy(ct_document):
    ruleset = rulesengine.compile_source(
        f'block minimal {{\n keep only DataSet.PatientID, {UIDS}\n}}\n'
        f'rule "r" {{ then copy to RESEARCH {{\n  apply minimal\n}} }}\n'
        f'rule "s" {{ then copy to OTHER {{\n  keep only DataSet.Modality, {UIDS}\n}} }}')
    decision = ruleset.evaluate(ct_document)
    assert decision.destinations["RESEARCH"].get("DataSet.Modality") is None
    assert decision.destinations["OTHER"].get("DataSet.Modality") == "CT"
    assert ct_document.get("DataSet.PatientName") == "DOE^JOHN"  # the original is untouched


def test_pydicom_files_with_private_data_and_sequences():
    for name in ("CT_small.dcm", "rtplan.dcm", "nested_priv_SQ.dcm"):
        document = Document(dcmread(get_testdata_file(name)))
        _, doc = run(f"keep only DataSet.**.*[VR == \"UI\"], DataSet.(0009,\"GEMS_IDEN_01\",xx)", document)
        for elem in doc.dataset.iterall():
            assert elem.VR in ("UI", "SQ") or elem.tag.group % 2 or elem.tag in (
                0x00280002, 0x00280004, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102, 0x00280103,
                0x7FE00010, 0x00280008, 0x00280006, 0x00280034, 0x00280106, 0x00280107), (name, elem)


# ---- lint -------------------------------------------------------------------------------

def findings(source: str):
    return [d for d in analyse(load_program(text=source)).diagnostics if d.code != "no-destination"]


def test_warns_when_the_sop_uids_are_not_kept():
    found = findings('rule "r" { then keep only DataSet.PatientID }')
    assert [(d.code, d.severity) for d in found] == [("not-kept", "warning")]
    assert "SOPClassUID and SOPInstanceUID" in found[0].message
    assert found[0].hint == "add DataSet.SOPClassUID, DataSet.SOPInstanceUID to the list"
    assert findings(f'rule "r" {{ then keep only DataSet.PatientID, {UIDS} }}') == []
    assert findings('rule "r" { then keep only DataSet.(0008,001x) }') == []  # a mask names both


@pytest.mark.parametrize("path, message", [
    ("FileMeta.TransferSyntaxUID", "keep only names elements of the data set, not FileMeta"),
    ("DataSet.OtherPatientIDsSequence[1].PatientID", "write OtherPatientIDsSequence[*]"),
    ("DataSet.ImageType[1]", "keeps whole elements"),
    ("DataSet.**.OtherPatientIDsSequence[*].PatientID", "** goes before the last element only"),
])
def test_bad_paths(path, message):
    found = [d for d in findings(f'rule "r" {{ then keep only {path}, {UIDS} }}') if d.is_error]
    assert [d.code for d in found] == ["bad-path"] and message in found[0].message + (found[0].hint or "")


def test_unknown_keyword_in_the_list():
    found = findings(f'rule "r" {{ then keep only DataSet.PatientNam, {UIDS} }}')
    assert [d.code for d in found] == ["unknown-keyword"] and "PatientName" in found[0].hint


def test_keep_and_only_stay_free_as_names():
    ruleset = rulesengine.compile_source('rule "r" { then {\n let keep = "a"\n let only = keep\n log only\n'
                                         ' route to A } }')
    assert ruleset.evaluate(Document()).log[0].message == "a"


def test_a_block_mask_cannot_be_set():
    with pytest.raises(RulesError):
        rulesengine.compile_source('rule "r" { then set DataSet.(0009,"ACME",xx) = "x" }')


def test_formatting():
    formatted = format_source('rule "r" { then keep only  DataSet.PatientID ,DataSet.(0009,"A",XX),'
                              'DataSet.**.*[VR=="UI"] }')
    assert 'then keep only DataSet.PatientID, DataSet.(0009,"A",xx), DataSet.**.*[VR == "UI"]\n' in formatted
    assert format_source(formatted) == formatted
