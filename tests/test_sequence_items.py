"""Sequence items: `append to PATH as NAME { ... }`, `delete each NAME in PATH where CONDITION`
and `copy PATH to PATH`: what they do (missing, empty, nested, at any depth, multi-valued,
private), what lint says about them, and how fmt prints them."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rulesengine import Document, RulesError
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program
from rulesengine.lang.formatter import format_source
from rulesengine.lang.syntax import parse

from helpers.evaluation import evaluate
from helpers.files import SAMPLES


def copy_for(source: str, document: Document | None = None, **values) -> Document:
    """What destination A receives from a rule that runs `source`'s actions, then routes to A."""
    decision = evaluate(f'rule "r" {{\n  then {{\n{source}\n    route to A\n  }}\n}}\n', document, **values)
    assert decision.error is None, decision.error
    return decision.destinations["A"]


def findings(source: str):
    try:
        return analyse(load_program(text=source, filename="t.rules")).diagnostics
    except RulesError as exc:  # a syntax error
        return exc.diagnostics


def codes(source: str) -> list[tuple[str, str]]:
    return [(d.code, d.severity.value) for d in findings(source)]


def code_item(value: str, meaning: str = "x") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


@pytest.fixture
def coded() -> Document:
    return make_coded()


def make_coded() -> Document:
    """A document whose DeidentificationMethodCodeSequence holds three items, the second empty of
    CodeValue; one item of ReferencedSeriesSequence nests a ReferencedInstanceSequence."""
    document = Document()
    ds = document.dataset
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3"
    empty = Dataset()
    empty.CodeValue = ""
    ds.DeidentificationMethodCodeSequence = Sequence([code_item("113100"), empty, code_item("113101")])
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3.4"
    series.ReferencedInstanceSequence = Sequence([Dataset(), Dataset()])
    series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID = "1.2.3.4.1"
    series.ReferencedInstanceSequence[1].ReferencedSOPInstanceUID = "1.2.3.4.2"
    ds.ReferencedSeriesSequence = Sequence([series])
    document.invalidate()
    return document


# ---- append --------------------------------------------------------------------------

APPEND_CODE = """    append to DataSet.DeidentificationMethodCodeSequence as code {
      set code.CodeValue = "113110"
      set code.CodingSchemeDesignator = "DCM"
      set code.CodeMeaning = "Retain UIDs Option"
    }"""


def test_append_creates_a_missing_sequence_with_its_item():
    copy = copy_for(APPEND_CODE)
    assert copy.get("DataSet.DeidentificationMethodCodeSequence[1].CodeValue") == "113110"
    assert copy.get("DataSet.DeidentificationMethodCodeSequence[1].CodeMeaning") == "Retain UIDs Option"
    assert len(copy.dataset.DeidentificationMethodCodeSequence) == 1


def test_append_adds_after_the_items_there_and_to_an_empty_sequence(coded):
    copy = copy_for(APPEND_CODE, coded)
    assert [item.CodeValue for item in copy.dataset.DeidentificationMethodCodeSequence] == [
        "113100", "", "113101", "113110"]
    coded.dataset.DeidentificationMethodCodeSequence = Sequence()
    coded.invalidate()
    assert [item.CodeValue for item in copy_for(APPEND_CODE, coded).dataset.DeidentificationMethodCodeSequence] \
        == ["113110"]


def test_append_reports_the_new_item_and_its_values():
    decision = evaluate(f'rule "r" {{\n  then {{\n{APPEND_CODE}\n    route to A\n  }}\n}}\n')
    edits = [(e.path, e.old, e.new) for e in decision.edits]
    assert edits[0] == ("DataSet.DeidentificationMethodCodeSequence[1]", None, "item")
    assert edits[1] == ("DataSet.DeidentificationMethodCodeSequence[1].CodeValue", None, "113110")


def test_append_inside_a_nested_item_creates_what_is_missing_on_the_way():
    copy = copy_for("""    append to DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence as ref {
      set ref.ReferencedSOPInstanceUID = "1.2.3.9"
    }""")
    assert copy.get("DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence[1].ReferencedSOPInstanceUID") \
        == "1.2.3.9"


def test_append_at_any_depth_adds_to_every_sequence_there_and_creates_none(coded):
    source = """    append to DataSet.**.ReferencedInstanceSequence as ref {
      set ref.ReferencedSOPInstanceUID = "1.2.3.9"
    }"""
    copy = copy_for(source, coded)
    uids = copy.get("DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence[*].ReferencedSOPInstanceUID")
    assert uids == ["1.2.3.4.1", "1.2.3.4.2", "1.2.3.9"]
    assert "ReferencedInstanceSequence" not in copy_for(source).dataset  # nothing to add to: nothing created


def test_append_in_a_for_each_item_and_a_nested_append():
    copy = copy_for("""    append to DataSet.ReferencedSeriesSequence as series {
      set series.SeriesInstanceUID = "1.2.3.4"
      append to series.ReferencedInstanceSequence as instance {
        set instance.ReferencedSOPInstanceUID = "1.2.3.4.1"
      }
    }""")
    assert copy.get("DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence[1].ReferencedSOPInstanceUID") \
        == "1.2.3.4.1"


def test_append_multi_valued_values_and_let_in_its_body():
    copy = copy_for("""    append to DataSet.OtherPatientIDsSequence as other {
      let issuer = "HOSP" + "1"
      set other.PatientID = DataSet.PatientID
      set other.IssuerOfPatientID = issuer
      set other.TypeOfPatientID = "TEXT"
    }
    append to DataSet.SourceImageSequence as source {
      set source.ReferencedFrameNumber = [1, 2, 3]
    }""", DataSet__PatientID="123")
    assert copy.get("DataSet.OtherPatientIDsSequence[1].PatientID") == "123"
    assert copy.get("DataSet.OtherPatientIDsSequence[1].IssuerOfPatientID") == "HOSP1"
    assert copy.get("DataSet.SourceImageSequence[1].ReferencedFrameNumber") == (1, 2, 3)


def test_append_in_a_copy_edits_the_copy_only():
    decision = evaluate(f'rule "r" {{\n  then {{\n    copy to A {{\n{APPEND_CODE}\n    }}\n    route to B\n  }}\n}}\n')
    assert decision.destinations["A"].get("DataSet.DeidentificationMethodCodeSequence[1].CodeValue") == "113110"
    assert decision.destinations["B"].get("DataSet.DeidentificationMethodCodeSequence") is None


def test_append_to_an_element_that_is_not_a_sequence_fails_at_run_time_with_the_path():
    # A private element the dictionary does not know: lint cannot tell, the document can.
    document = Document()
    document.set('DataSet.(0009,"ACME 1.1",10)', "text")
    decision = evaluate('rule "r" { then {\n'
                        '  append to DataSet.(0009,"ACME 1.1",10) as item { set item.CodeValue = "1" }\n'
                        '  route to A } }', document)
    assert decision.outcome == "quarantine"
    assert "is not a sequence (LO)" in decision.reason


# ---- delete each ... where -------------------------------------------------------------


def test_delete_each_removes_the_matching_items_and_keeps_the_others(coded):
    copy = copy_for('    delete each code in DataSet.DeidentificationMethodCodeSequence '
                    'where code.CodeValue == "113100"', coded)
    assert [item.CodeValue for item in copy.dataset.DeidentificationMethodCodeSequence] == ["", "113101"]


def test_delete_each_tells_empty_from_missing_values(coded):
    empty = copy_for("    delete each code in DataSet.DeidentificationMethodCodeSequence where empty code.CodeValue",
                     coded)
    assert [item.CodeValue for item in empty.dataset.DeidentificationMethodCodeSequence] == ["113100", "113101"]
    missing = copy_for("    delete each code in DataSet.DeidentificationMethodCodeSequence "
                       "where missing code.CodeMeaning", make_coded())
    assert [item.CodeValue for item in missing.dataset.DeidentificationMethodCodeSequence] == ["113100", "113101"]


def test_delete_each_every_item_leaves_an_empty_sequence_and_reports_items_by_their_numbers(coded):
    decision = evaluate('rule "r" { then {\n  delete each code in DataSet.DeidentificationMethodCodeSequence '
                        'where exists code.CodeValue\n  route to A } }', coded)
    copy = decision.destinations["A"]
    assert "DeidentificationMethodCodeSequence" in copy.dataset
    assert len(copy.dataset.DeidentificationMethodCodeSequence) == 0
    assert [(e.path, e.old, e.new) for e in decision.edits] == [
        (f"DataSet.DeidentificationMethodCodeSequence[{number}]", "item", None) for number in (1, 2, 3)]


def test_delete_each_on_a_missing_or_empty_sequence_does_nothing():
    decision = evaluate('rule "r" { then {\n  delete each code in DataSet.DeidentificationMethodCodeSequence '
                        'where exists code.CodeValue\n  route to A } }')
    assert decision.error is None and decision.edits == []
    document = Document()
    document.dataset.DeidentificationMethodCodeSequence = Sequence()
    document.invalidate()
    decision = evaluate('rule "r" { then {\n  delete each code in DataSet.DeidentificationMethodCodeSequence '
                        'where exists code.CodeValue\n  route to A } }', document)
    assert decision.error is None and decision.edits == []


def test_delete_each_at_any_depth_and_with_values_read_outside_the_item(coded):
    coded.set("DataSet.SOPInstanceUID", "1.2.3.4.2")
    copy = copy_for("    delete each ref in DataSet.**.ReferencedInstanceSequence "
                    "where ref.ReferencedSOPInstanceUID != DataSet.SOPInstanceUID", coded)
    assert copy.get("DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence[*].ReferencedSOPInstanceUID") \
        == ["1.2.3.4.2"]


def test_delete_each_with_a_multi_valued_condition():
    document = Document()
    first, second = Dataset(), Dataset()
    first.ReferencedFrameNumber = [1, 2]
    second.ReferencedFrameNumber = [3]
    document.dataset.SourceImageSequence = Sequence([first, second])
    document.invalidate()
    copy = copy_for("    delete each image in DataSet.SourceImageSequence where 2 in image.ReferencedFrameNumber",
                    document)
    assert len(copy.dataset.SourceImageSequence) == 1
    assert copy.dataset.SourceImageSequence[0].ReferencedFrameNumber == 3


def test_delete_each_inside_for_each_items(coded):
    copy = copy_for("""    for each series in DataSet.ReferencedSeriesSequence {
      delete each ref in series.ReferencedInstanceSequence where ref.ReferencedSOPInstanceUID endswith ".1"
    }""", coded)
    assert copy.get("DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence[*].ReferencedSOPInstanceUID") \
        == ["1.2.3.4.2"]


# ---- copy PATH to PATH -------------------------------------------------------------------


def test_copy_an_element_keeps_its_values_and_the_source():
    copy = copy_for("    copy DataSet.PatientID to DataSet.OtherPatientIDsSequence[1].PatientID",
                    DataSet__PatientID="123")
    assert copy.get("DataSet.OtherPatientIDsSequence[1].PatientID") == "123"
    assert copy.get("DataSet.PatientID") == "123"


def test_copy_of_a_missing_element_changes_nothing_and_of_an_empty_one_copies_it_empty():
    document = Document()
    document.set("DataSet.IssuerOfPatientID", "KEEP")
    copy = copy_for("    copy DataSet.PatientID to DataSet.IssuerOfPatientID", document)
    assert copy.get("DataSet.IssuerOfPatientID") == "KEEP"
    copy = copy_for("    copy DataSet.PatientID to DataSet.IssuerOfPatientID", DataSet__PatientID="")
    assert copy.get("DataSet.IssuerOfPatientID") == ""


def test_copy_a_multi_valued_element():
    copy = copy_for("    copy DataSet.ImageType to DataSet.SourceImageSequence[1].ImageType",
                    DataSet__ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    assert copy.get("DataSet.SourceImageSequence[1].ImageType") == ("ORIGINAL", "PRIMARY", "AXIAL")


def test_copy_an_item_appends_it_and_to_an_item_replaces_it(coded):
    copy = copy_for("    copy DataSet.DeidentificationMethodCodeSequence[3] "
                    "to DataSet.DeidentificationMethodCodeSequence", coded)
    assert [item.CodeValue for item in copy.dataset.DeidentificationMethodCodeSequence] == [
        "113100", "", "113101", "113101"]
    copy = copy_for("    copy DataSet.DeidentificationMethodCodeSequence[1] "
                    "to DataSet.DeidentificationMethodCodeSequence[2]", make_coded())
    assert [item.CodeValue for item in copy.dataset.DeidentificationMethodCodeSequence] == [
        "113100", "113100", "113101"]


def test_copy_every_item_and_a_whole_sequence_are_deep_copies(coded):
    copy = copy_for("    copy DataSet.DeidentificationMethodCodeSequence[*] to DataSet.ConceptNameCodeSequence\n"
                    '    set DataSet.ConceptNameCodeSequence[1].CodeValue = "CHANGED"', coded)
    assert [item.CodeValue for item in copy.dataset.ConceptNameCodeSequence] == ["CHANGED", "", "113101"]
    assert copy.dataset.DeidentificationMethodCodeSequence[0].CodeValue == "113100"  # the source is untouched
    copy = copy_for("    copy DataSet.ReferencedSeriesSequence "
                    "to DataSet.StudiesContainingOtherReferencedInstancesSequence[1].ReferencedSeriesSequence",
                    make_coded())
    assert copy.get("DataSet.StudiesContainingOtherReferencedInstancesSequence[1].ReferencedSeriesSequence[1]"
                    ".ReferencedInstanceSequence[2].ReferencedSOPInstanceUID") == "1.2.3.4.2"


def test_copy_a_sequence_over_one_replaces_its_items(coded):
    copy = copy_for("    copy DataSet.ReferencedSeriesSequence[1].ReferencedInstanceSequence "
                    "to DataSet.ReferencedImageSequence", coded)
    assert len(copy.dataset.ReferencedImageSequence) == 2
    copy = copy_for("    copy DataSet.ReferencedImageSequence to DataSet.ReferencedSeriesSequence[1]"
                    ".ReferencedInstanceSequence", make_coded())
    # A missing source copies nothing: the target keeps its items.
    assert len(copy.dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 2


def test_copy_from_and_to_loop_items_and_a_private_element():
    document = Document.read(SAMPLES / "ct_chest.dcm")
    copy = copy_for("""    for each step in DataSet.ScheduledProcedureStepSequence {
      copy DataSet.(0009,"ACME 1.1",10) to step.(0009,"ACME 1.1",10)
    }
    copy DataSet.(0009,"ACME 1.1",10) to DataSet.(0011,"ACME 1.1",20)""", document)
    assert copy.get('DataSet.ScheduledProcedureStepSequence[2].(0009,"ACME 1.1",10)') == "INTERNAL-REF-42"
    assert copy.get('DataSet.(0011,"ACME 1.1",20)') == "INTERNAL-REF-42"


def test_copy_to_a_destination_is_still_routing():
    decision = evaluate('rule "r" { then {\n  copy to RESEARCH\n  copy DataSet.PatientID to DataSet.IssuerOfPatientID\n'
                        '  route to A } }', DataSet__PatientID="123")
    assert sorted(decision.destinations) == ["A", "RESEARCH"]
    assert decision.destinations["A"].get("DataSet.IssuerOfPatientID") == "123"


# ---- lint ------------------------------------------------------------------------------

LINT_CASES = [
    # not a sequence
    ('rule "r" { then append to DataSet.PatientName as x { set x.CodeValue = "1" } }', "bad-target",
     "not a sequence (PN)"),
    ('rule "r" { then delete each x in DataSet.PatientName where exists x.CodeValue }', "bad-target",
     "not a sequence"),
    ('rule "r" { then append to DataSet.OtherPatientIDsSequence[1] as x { set x.PatientID = "1" } }',
     "bad-target", "without an index"),
    # unknown keywords, in the path and in the body
    ('rule "r" { then append to DataSet.DeidentificationMethodCodeSeq as x {} }', "unknown-keyword",
     "DeidentificationMethodCodeSequence"),
    ('rule "r" { then append to DataSet.DeidentificationMethodCodeSequence as x { set x.CodeValu = "1" } }',
     "unknown-keyword", "CodeValue"),
    ('rule "r" { then delete each x in DataSet.OtherPatientIDsSequence where x.PatientNam == "1" }',
     "unknown-keyword", "PatientName"),
    ('rule "r" { then copy DataSet.PatientID to DataSet.PatientIDD }', "unknown-keyword", "PatientID"),
    # VR mismatches on copy
    ('rule "r" { then copy DataSet.AccessionNumber to DataSet.PatientID }', "type-mismatch",
     "AccessionNumber is SH, PatientID is LO"),
    ('rule "r" { then copy DataSet.OtherPatientIDsSequence to DataSet.PatientID }', "type-mismatch",
     "cannot put a sequence into an element (LO)"),
    ('rule "r" { then copy DataSet.PatientID to DataSet.OtherPatientIDsSequence }', "type-mismatch",
     "cannot put an element (LO) into a sequence"),
    ('rule "r" { then copy DataSet.OtherPatientIDsSequence to DataSet.ReferencedImageSequence[1] }',
     "type-mismatch", "whole sequence"),
    ('rule "r" { then copy DataSet.ImageType[2] to DataSet.ImageType }', "bad-target", "one of its values"),
    ('rule "r" { then copy DataSet.**.PatientID to DataSet.PatientID }', "bad-target", "reaches many"),
    ('rule "r" { then copy DataSet.PatientID to Association.CallingAET }', "read-only", "cannot be edited"),
    ('rule "r" { then copy Association.CallingAET to DataSet.StationName }', "bad-target", "write set"),
    # names
    ('rule "r" { then for each x in DataSet.OtherPatientIDsSequence { append to x.OtherPatientIDsSequence '
     'as x {} } }', "duplicate-name", "already a name"),
    ('rule "r" { then { append to DataSet.OtherPatientIDsSequence as x {} set x.PatientID = "1" } }',
     "unknown-name", "x"),
    ('rule "r" { then append to Association.CallingAET as x {} }', "read-only", "cannot be edited"),
]


@pytest.mark.parametrize("source,code,words", LINT_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(LINT_CASES)])
def test_lint_finding(source, code, words):
    found = [d for d in findings(source) if d.code == code]
    assert found, [d.one_line() for d in findings(source)]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()
    assert found[0].is_error


def test_clean_uses_have_no_findings():
    source = f'rule "r" {{\n  then {{\n{APPEND_CODE}\n' \
             '    delete each code in DataSet.DeidentificationMethodCodeSequence where code.CodeValue == "113100"\n' \
             '    copy DataSet.PatientID to DataSet.OtherPatientIDsSequence[1].PatientID\n' \
             '    copy DataSet.ReferencedImageSequence[*] to DataSet.SourceImageSequence\n' \
             '    copy DataSet.(0009,"ACME 1.1",10) to DataSet.(0011,"ACME 1.1",20)\n' \
             '    route to A\n  }\n}\n'
    assert [d.one_line() for d in findings(source)] == []


def test_append_is_a_keyword():
    assert codes('rule "r" { then { let append = 1 route to A } }')[0][0] == "syntax"


# ---- fmt ---------------------------------------------------------------------------------

MESSY = '''rule "r" { then {
append   to DataSet.DeidentificationMethodCodeSequence as code{set code.CodeValue="113100"
set code.CodingSchemeDesignator="DCM"}
append to DataSet.OtherPatientIDsSequence as other {}
delete  each code in DataSet.DeidentificationMethodCodeSequence where code.CodeValue=="113100" or \
code.CodeValue=="113101" or code.CodeValue == "113102" or code.CodeValue == "113103"
copy   DataSet.PatientID   to DataSet.OtherPatientIDsSequence[1].PatientID
copy to A } }
'''
TIDY = '''rule "r" {
  then {
    append to DataSet.DeidentificationMethodCodeSequence as code {
      set code.CodeValue = "113100"
      set code.CodingSchemeDesignator = "DCM"
    }
    append to DataSet.OtherPatientIDsSequence as other {}
    delete each code in DataSet.DeidentificationMethodCodeSequence where code.CodeValue == "113100"
      or code.CodeValue == "113101"
      or code.CodeValue == "113102"
      or code.CodeValue == "113103"
    copy DataSet.PatientID to DataSet.OtherPatientIDsSequence[1].PatientID
    copy to A
  }
}
'''


def test_fmt_prints_the_sequence_item_actions_and_is_stable():
    formatted = format_source(MESSY, "t.rules")
    assert formatted == TIDY
    assert format_source(formatted, "t.rules") == formatted
    parse(formatted, "t.rules")


# ---- copy NAME to PATH: from a loop variable ---------------------------------------------


def test_copy_the_items_a_loop_chooses_and_an_element_it_walks(coded):
    copy = copy_for("""    for each code in DataSet.DeidentificationMethodCodeSequence {
      if code.CodeValue startswith "1131" {
        copy code to DataSet.ConceptNameCodeSequence
      }
    }
    for each uid in DataSet.**.ReferencedSOPInstanceUID {
      copy uid to DataSet.ReferencedImageSequence[1].ReferencedSOPInstanceUID
    }""", coded)
    assert [item.CodeValue for item in copy.dataset.ConceptNameCodeSequence] == ["113100", "113101"]
    assert copy.get("DataSet.ReferencedImageSequence[1].ReferencedSOPInstanceUID") == "1.2.3.4.2"  # the last one
    assert copy.dataset.DeidentificationMethodCodeSequence[0].CodeValue == "113100"


def test_copy_a_loop_item_in_place_of_an_item(coded):
    copy = copy_for("""    for each code in DataSet.DeidentificationMethodCodeSequence {
      if code.CodeValue == "113101" {
        copy code to DataSet.DeidentificationMethodCodeSequence[2]
      }
    }""", coded)
    assert [item.CodeValue for item in copy.dataset.DeidentificationMethodCodeSequence] == [
        "113100", "113101", "113101"]


@pytest.mark.parametrize("source,code,words", [
    ('rule "r" { then { let x = "1" copy x to DataSet.PatientID } }', "bad-target", "is a value"),
    ('rule "r" { then for each c in DataSet.OtherPatientIDsSequence { copy c to DataSet.PatientID } }',
     "type-mismatch", "an item into an element (LO)"),
    ('rule "r" { then for each e in DataSet.**.AccessionNumber { copy e to DataSet.PatientID } }',
     "type-mismatch", "e is SH, PatientID is LO"),
    ('rule "r" { then copy nothing to DataSet.PatientID }', "unknown-name", "nothing"),
])
def test_lint_of_copy_from_a_variable(source, code, words):
    found = [d for d in findings(source) if d.code == code]
    assert found, [d.one_line() for d in findings(source)]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()


def test_fmt_prints_copy_from_a_variable():
    source = ('rule "r" { then for each c in DataSet.OtherPatientIDsSequence {\n'
              'copy   c   to DataSet.ReferencedPatientSequence } }\n')
    assert "    copy c to DataSet.ReferencedPatientSequence\n" in format_source(source, "t.rules")
