"""Private blocks by creator: `delete private "CREATOR"`, `delete private ["A", "B"]`,
`delete private except [...]`; a private element named by its plain tag is an error."""

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


def blocks_document() -> Document:
    """ACME in 0009 (top level and two levels deep, in another block number), OTHER in 0009 and
    0029, an element of no block, and a private element whose creator element is missing."""
    ds = Dataset()
    ds.PatientName = "DOE^JOHN"
    ds.private_block(0x0009, "OTHER", create=True).add_new(0x01, "LO", "other 9")
    ds.private_block(0x0009, "ACME 1.1", create=True).add_new(0x10, "LO", "acme top")
    ds.private_block(0x0029, "OTHER", create=True).add_new(0x01, "LO", "other 29")
    ds.add_new(0x00290001, "UL", 7)  # reserved element number: no block
    deep = Dataset()
    deep.private_block(0x0009, "ACME 1.1", create=True).add_new(0x10, "LO", "acme deep")
    deep.add_new(0x00331010, "LO", "orphan")  # no (0033,0010) creator
    item = Dataset()
    item.PatientID = "H1"
    item.ContentSequence = [deep]
    ds.OtherPatientIDsSequence = [item]
    return Document(ds)


def run(action: str, document: Document | None = None):
    decision = evaluate('rule "r" { then {\n' + action + '\n route to A } }', document or blocks_document())
    assert decision.error is None, decision.error
    return decision, decision.destinations["A"]


def private_values(doc: Document) -> list:
    return sorted(str(v) for v in doc.get("DataSet.**.*[private]"))


def creators(doc: Document) -> list[str]:
    found = []
    for ds in [doc.dataset, *[i for e in doc.dataset.iterall() if e.VR == "SQ" for i in e.value]]:
        found += [e.value for e in ds if e.tag.is_private_creator]
    return sorted(found)


def test_one_creator_at_every_depth_with_its_creator_elements():
    decision, doc = run('delete private "ACME 1.1"')
    assert private_values(doc) == ["7", "orphan", "other 29", "other 9"]
    assert "ACME 1.1" not in creators(doc) and creators(doc) == ["OTHER", "OTHER"]
    assert [e.path for e in decision.edits] == ["DataSet private block 'ACME 1.1'",
                                               "DataSet.OtherPatientIDsSequence[1].ContentSequence[1] "
                                               "private block 'ACME 1.1'"]
    assert doc.get("DataSet.PatientName") == "DOE^JOHN"


def test_a_creator_in_several_groups_and_a_list_of_creators():
    _, doc = run('delete private "OTHER"')
    assert private_values(doc) == ["7", "acme deep", "acme top", "orphan"]
    _, doc = run('delete private ["OTHER", "ACME 1.1"]')
    assert private_values(doc) == ["7", "orphan"] and creators(doc) == []


def test_except_keeps_only_the_named_blocks():
    decision, doc = run('delete private except ["ACME 1.1"]')
    assert private_values(doc) == ["acme deep", "acme top"]  # no block, orphans and OTHER are gone
    assert creators(doc) == ["ACME 1.1", "ACME 1.1"]
    assert doc.get('DataSet.(0009,"ACME 1.1",10)') == "acme top"
    assert "DataSet private elements of no block" in [e.path for e in decision.edits]


def test_a_creator_read_from_the_document_and_trailing_spaces():
    document = blocks_document()
    document.dataset.StudyDescription = "ACME 1.1 "  # a padded value names the same creator
    _, doc = run("delete private DataSet.StudyDescription", document)
    assert "ACME 1.1" not in creators(doc)


def test_a_missing_or_empty_creator_list():
    decision, doc = run("delete private DataSet.StudyDescription")  # missing: nothing named, nothing deleted
    assert not decision.edits
    _, doc = run("delete private except DataSet.StudyDescription")  # keeps nothing
    assert private_values(doc) == [] and creators(doc) == []
    _, doc = run("delete private except []")
    assert private_values(doc) == []


def test_a_multi_valued_element_names_several_creators():
    document = blocks_document()
    document.dataset.OtherPatientIDs = ["OTHER", "ACME 1.1"]
    _, doc = run("delete private DataSet.OtherPatientIDs", document)
    assert creators(doc) == []


def test_an_unknown_creator_changes_nothing():
    decision, doc = run('delete private "NOBODY"')
    assert not decision.edits and len(private_values(doc)) == 6


def test_pydicom_files_with_private_data():
    doc = Document(dcmread(get_testdata_file("CT_small.dcm")))
    _, after = run('delete private except ["GEMS_IDEN_01"]', doc)
    assert {e.value for e in after.dataset if e.tag.is_private_creator} == {"GEMS_IDEN_01"}
    assert after.get('DataSet.(0009,"GEMS_IDEN_01",01)') == "GE_GENESIS_FF"
    nested = Document(dcmread(get_testdata_file("nested_priv_SQ.dcm")))
    _, kept = run('delete private "Nested SQ"', nested)
    assert 0x00010001 in kept.dataset  # element (0001,0001) is of no block: a creator names nothing
    _, gone = run('delete private except ["Nested SQ"]', Document(dcmread(get_testdata_file("nested_priv_SQ.dcm"))))
    assert 0x00010001 not in gone.dataset and 0x7FE00010 in gone.dataset


def test_a_constant_like_creator_from_let():
    _, doc = run('let vendor = "ACME 1.1"\n delete private vendor')
    assert "ACME 1.1" not in creators(doc)


# ---- lint -------------------------------------------------------------------------------

def findings(source: str):
    return [d for d in analyse(load_program(text=source)).diagnostics if d.code != "no-destination"]


def test_a_creator_must_be_text():
    found = findings('rule "r" { then delete private 7 }')
    assert [(d.code, d.severity) for d in found] == [("type-mismatch", "error")]
    assert "GEMS_IDEN_01" in found[0].hint


def test_an_empty_creator_is_an_error():
    found = findings('rule "r" { then delete private ["A", ""] }')
    assert [d.code for d in found] == ["bad-value"]


def test_a_private_element_by_plain_tag_is_an_error_with_the_creator_hint():
    found = findings('rule "r" { when DataSet.(0009,1010) == "x" then drop }')
    assert [(d.code, d.severity) for d in found] == [("private-by-tag", "error")]
    assert found[0].hint == 'name its creator: (0009,"CREATOR",10)'
    with pytest.raises(RulesError):
        rulesengine.compile_source('rule "r" { then delete DataSet.(0029,1001) }')


def test_a_creator_element_by_tag_stays_allowed():
    assert findings('rule "r" { when DataSet.(0009,0010) == "GEMS_IDEN_01" then drop }') == []


def test_except_is_reserved():
    with pytest.raises(RulesError):
        rulesengine.compile_source('rule "r" { then let except = 1 }')


@pytest.mark.parametrize("text, expected", [
    ('delete private  "A"', 'delete private "A"'),
    ('delete private except[ "A","B" ]', 'delete private except ["A", "B"]'),
    ("delete private", "delete private"),
    ("delete private DataSet.Manufacturer", "delete private DataSet.Manufacturer"),
])
def test_formatting(text, expected):
    formatted = format_source(f'rule "r" {{ then {text} }}')
    assert f"then {expected}\n" in formatted and format_source(formatted) == formatted


def test_a_block_mask_blanks_and_deletes_every_element_of_the_block_where_it_is():
    _, doc = run('blank DataSet.**.(0009,"ACME 1.1",xx)')
    assert doc.get('DataSet.(0009,"ACME 1.1",10)') == ""
    assert doc.get('DataSet.OtherPatientIDsSequence[1].ContentSequence[1].(0009,"ACME 1.1",10)') == ""
    assert doc.get('DataSet.(0009,"OTHER",01)') == "other 9"
    _, doc = run('delete DataSet.(0009,"ACME 1.1",xx)')
    assert doc.get('DataSet.**.(0009,"ACME 1.1",xx)') == ["acme deep"]  # the top level only
    assert doc.get('DataSet.(0009,"NOBODY",xx)') == []
