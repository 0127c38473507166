"""Selecting elements by their own properties: `DataSet.*[FILTER]`, `DataSet.**.*[FILTER]`."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import rulesengine
from rulesengine import Document, RulesError
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program

from helpers.evaluation import evaluate


def edited(actions: str, document: Document) -> Document:
    decision = evaluate('rule "r" { then {\n' + actions + '\n route to A } }', document)
    assert decision.error is None, decision.error
    return decision.destinations["A"]


def nested_document() -> Document:
    """Private blocks of two creators in groups 0009 and 0029, at the top level and inside items."""
    ds = Dataset()
    ds.PatientName = "DOE^JOHN"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    block = ds.private_block(0x0009, "ACME 1.1", create=True)
    block.add_new(0x10, "LO", "top")
    block = ds.private_block(0x0029, "OTHER", create=True)
    block.add_new(0x01, "DA", "20200101")
    item = Dataset()
    item.PatientID = "H1"
    item.ReferringPhysicianName = "DR^WHO"
    inner = item.private_block(0x0009, "ACME 1.1", create=True)
    inner.add_new(0x10, "LO", "deep")
    deeper = Dataset()
    deeper.PersonName = "NESTED^NAME"
    deeper.ContentDate = "20010101"
    item.ContentSequence = [deeper]
    ds.OtherPatientIDsSequence = [item, Dataset()]
    return Document(ds)


# ---- reading -------------------------------------------------------------------------

def test_vr_selects_at_the_top_level_and_at_any_depth():
    doc = nested_document()
    assert doc.get('DataSet.*[VR == "PN"]') == ["DOE^JOHN"]
    assert doc.get('DataSet.**.*[VR == "PN"]') == ["DOE^JOHN", "DR^WHO", "NESTED^NAME"]


def test_missing_and_empty_elements_and_several_values():
    doc = nested_document()
    # StudyDate (0008,0020) is present and empty: read as "", as every fanning path reads it
    assert doc.get('DataSet.*[Keyword endswith "Date"]') == ["", "19700101"]
    assert doc.get('DataSet.*[VR == "AE"]') == []  # nothing selected: an empty list, not null
    # an element of several values is one entry, as with DataSet.**.ImageType
    assert doc.get('DataSet.*[Keyword == "ImageType"]') == [("ORIGINAL", "PRIMARY")]
    assert not rulesengine.compile_source('rule "r" { when any v in DataSet.*[VR == "AE"]: v == "x" then drop }') \
        .evaluate(doc).outcome == "drop"


def test_private_public_creator_group_and_tag():
    doc = nested_document()
    assert doc.get("DataSet.*[private]") == ["top", "20200101"]  # never the creator elements
    assert doc.get("DataSet.**.*[private]") == ["top", "20200101", "deep"]
    assert doc.get('DataSet.**.*[Creator == "ACME 1.1"]') == ["top", "deep"]
    assert doc.get('DataSet.*[Group == "0029"]') == ["20200101"]
    assert doc.get('DataSet.*[Tag == "(0010,0010)"]') == ["DOE^JOHN"]
    assert doc.get('DataSet.*[public and VR == "DA"]') == ["", "19700101"]
    assert doc.get('DataSet.*[Keyword == ""]') == ["top", "20200101"]  # private: no keyword
    assert doc.get('DataSet.*[Creator == "ACME 1.1" or VR matches /^P/]') == ["top", "DOE^JOHN"]  # in tag order


def test_creator_is_null_for_public_elements():
    doc = nested_document()
    assert doc.get('DataSet.*[Creator != "X" and public]') == []  # null compares false both ways


def test_file_meta_is_never_selected(ct_document):
    decision = evaluate('rule "r" { then {\n delete DataSet.**.*\n route to A } }', ct_document)
    assert not [e for e in decision.edits if "(0002," in e.path or "TransferSyntax" in e.path]
    after = decision.destinations["A"]
    assert len(after.dataset) == 0 and after.file_meta.MediaStorageSOPInstanceUID


# ---- editing ---------------------------------------------------------------------------

def test_blank_every_person_name_at_any_depth():
    doc = edited('blank DataSet.**.*[VR == "PN"]', nested_document())
    assert doc.get("DataSet.PatientName") == ""
    assert doc.get("DataSet.OtherPatientIDsSequence[1].ContentSequence[1].PersonName") == ""
    assert doc.get("DataSet.OtherPatientIDsSequence[1].PatientID") == "H1"


def test_delete_by_keyword_pattern_keeps_the_rest():
    doc = edited('delete DataSet.**.*[Keyword endswith "Date"]', nested_document())
    assert doc.get("DataSet.PatientBirthDate") is None and doc.get("DataSet.StudyDate") is None
    assert doc.get("DataSet.OtherPatientIDsSequence[1].ContentSequence[1].ContentDate") is None
    assert doc.get('DataSet.(0029,"OTHER",01)') == "20200101"  # private: no keyword


def test_set_every_date_writes_present_elements_only():
    doc = edited('set DataSet.**.*[VR == "DA"] = "19000101"', nested_document())
    assert doc.get("DataSet.PatientBirthDate") == "19000101"
    assert doc.get("DataSet.StudyDate") == "19000101"  # present and empty: set
    assert doc.get('DataSet.(0029,"OTHER",01)') == "19000101"
    assert doc.get("DataSet.OtherPatientIDsSequence[1].ContentSequence[1].ContentDate") == "19000101"
    assert doc.get("DataSet.AcquisitionDate") is None  # absent: not created


def test_set_passes_over_sequences():
    doc = edited('set DataSet.*[public and not (VR in ["DA", "CS"])] = "X"', nested_document())
    assert doc.get("DataSet.PatientName") == "X"
    assert len(doc.get("DataSet.OtherPatientIDsSequence")) == 2  # a sequence is not set


def test_a_value_wrong_for_a_selected_vr_quarantines():
    decision = evaluate('rule "r" { then {\n set DataSet.*[Group == "0010"] = "X"\n route to A } }',
                        nested_document())
    assert decision.error is not None and "PatientBirthDate" in str(decision.error)


def test_for_each_and_any_over_selected_elements():
    decision = evaluate('rule "r" { then {\n for each e in DataSet.**.*[VR == "PN"] { set e = upper(e) + "!" }\n'
                        ' route to A } }', nested_document())
    doc = decision.destinations["A"]
    assert doc.get("DataSet.**.*[VR == \"PN\"]") == ["DOE^JOHN!", "DR^WHO!", "NESTED^NAME!"]
    ruleset = rulesengine.compile_source('rule "r" { when any v in DataSet.**.*[private]: v == "deep" '
                                         'then route to YES }')
    assert "YES" in ruleset.evaluate(nested_document()).destinations


def test_log_of_a_selection():
    decision = evaluate('rule "r" { then {\n log DataSet.*[VR == "PN"]\n route to A } }', nested_document())
    assert "DOE^JOHN" in decision.log[0].message


def test_pydicom_file_with_private_data():
    doc = Document(dcmread(get_testdata_file("CT_small.dcm")))
    private_before = len(doc.get("DataSet.*[private]"))
    assert private_before > 100
    after = edited('delete DataSet.*[Creator == "GEMS_IMAG_01"]', doc)
    creators = [e.value for e in after.dataset if e.tag.is_private_creator]
    assert "GEMS_IMAG_01" not in creators and "GEMS_IDEN_01" in creators  # an emptied block goes whole
    assert after.get('DataSet.*[Creator == "GEMS_IMAG_01"]') == []
    assert 0 < len(after.get("DataSet.*[private]")) < private_before


def test_implicit_vr_file_selects_by_dictionary_vr():
    ds = dcmread(get_testdata_file("MR_small_implicit.dcm"))
    doc = Document(ds)
    names = doc.get('DataSet.*[VR == "PN"]')
    assert str(ds.PatientName) in names
    assert len(names) == len([e for e in ds if e.VR == "PN"])


def test_the_compiled_rule_set_reads_everything_for_a_selector():
    ruleset = rulesengine.compile_source('rule "a" { when any v in DataSet.*[VR == "PN"]: v == "x" then drop }')
    assert ruleset.tags_read is None


# ---- lint -------------------------------------------------------------------------------

class _Findings:
    def __init__(self, diagnostics):
        self.diagnostics = diagnostics


def lint_source(source: str) -> _Findings:
    return _Findings(analyse(load_program(text=source)).diagnostics)


def findings(source: str) -> list[tuple[str, str, str]]:
    return [(d.severity, d.code, d.message) for d in lint_source(source).diagnostics if d.code != "no-destination"]


def errors(filter_text: str) -> list:
    return [d for d in lint_source(f'rule "r" {{ then delete DataSet.*[{filter_text}] }}').diagnostics
            if d.is_error]


@pytest.mark.parametrize("filter_text, message, hint", [
    ('VR == "XX"', "'XX' is not a value representation", "two capital letters"),
    ('VR in ["PN", "pn"]', "'pn' is not a value representation", "did you mean PN?"),
    ('Vr == "PN"', "a filter knows no 'Vr'", "did you mean VR?"),
    ('Modality == "CT"', "a filter knows no 'Modality'", "a filter reads VR, Keyword"),
    ('Group == "18"', "'18' is not a group", 'Group == "0018"'),
    ("Group == 18", "Group is text; 18 is a number", 'Group == "18"'),
    ('Tag == "00100010"', "is not a tag", 'Tag == "(0010,0010)"'),
    ("VR", "VR is not a condition on the element", 'VR == "..."'),
    ('DataSet.Modality == "CT"', "not paths", None),
    ('lower(Keyword) == "x"', "a filter compares only properties and literals", None),
    ('private == "x"', "private is a condition, not a value", "*[private]"),
])
def test_bad_filters_are_errors_with_hints(filter_text, message, hint):
    found = errors(filter_text)
    assert found and found[0].code == "bad-filter" and message in found[0].message, found
    if hint:
        assert hint in (found[0].hint or ""), found[0].hint


def test_bad_regex_in_a_filter():
    found = errors("Keyword matches /(/")
    assert found and found[0].code == "bad-regex"


def test_nothing_follows_a_selector():
    found = errors('VR == "SQ"').__class__  # a valid filter: no findings
    assert not errors('VR == "SQ"') and found is list
    diags = lint_source('rule "r" { then delete DataSet.*[VR == "SQ"].PatientID }').diagnostics
    assert [d.code for d in diags if d.is_error] == ["bad-path"]


def test_a_selector_on_an_arrival_root_is_an_error():
    diags = lint_source('rule "r" { when any v in Association.*: v == "x" then drop }').diagnostics
    assert [d.code for d in diags if d.is_error] == ["bad-path"]


def test_a_literal_set_to_a_fixed_vr_is_checked():
    assert findings('rule "r" { then set DataSet.**.*[VR == "DA"] = "19000101" }') == []
    found = findings('rule "r" { then set DataSet.**.*[VR == "DA" and private] = "yesterday" }')
    assert found and found[0][1] == "bad-value"


def test_private_outside_a_filter_is_an_unknown_name():
    with pytest.raises(RulesError):
        rulesengine.compile_source('rule "r" { when private then drop }')
    found = [d for d in lint_source('rule "r" { when VR == "PN" then drop }').diagnostics if d.is_error]
    assert found[0].code == "unknown-name" and found[0].hint == \
        "VR is read in a selector's filter only, e.g. DataSet.**.*[VR == \"...\"]"


def test_compile_fails_on_a_bad_filter():
    with pytest.raises(RulesError) as exc:
        rulesengine.compile_source('rule "r" { then delete DataSet.*[VR == "XX"] }')
    assert "bad-filter" in [d.code for d in exc.value.diagnostics]


def test_the_read_only_roots_select_their_own_groups(ct_document):
    assert "1.2.840.10008.1.2.1" in ct_document.get("FileMeta.*")
    ct_document.command_set.MessageID = 7
    assert ct_document.get('CommandSet.*[Keyword == "MessageID"]') == [7]
    diags = lint_source('rule "r" { then delete FileMeta.* }').diagnostics
    assert [d.code for d in diags if d.is_error] == ["read-only"]
