"""The Retain Safe Private option: `keep only private PATH, ...` and the block
`retain_safe_private` of rules/profiles/basic-confidentiality-options.rules, generated from
PS3.15 Table E.3.10-1 (data/ps3-15-safe-private.csv)."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
from collections import Counter
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

import rulesengine
from rulesengine import Document
from rulesengine.lang.api import analyse
from rulesengine.lang.formatter import format_source
from rulesengine.lang.loader import load_program

from helpers.evaluation import evaluate
from helpers.files import PROFILE_OPTIONS, ROOT, SAFE_PRIVATE_TABLE, SAMPLES

CT_CHEST = SAMPLES / "ct_chest.dcm"
# The digest pymedphys records for the rows of its 2026d transcription (see the SOURCE note).
ROWS_SHA256 = "7acb26dbab0e3124c02d075cbf8c5510354a20ded9f89ee4765976a905d92f63"


def safe_rows() -> list[dict[str, str]]:
    with open(SAFE_PRIVATE_TABLE, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def run(actions: str, document: Document):
    decision = evaluate('rule "r" { then {\n' + actions + '\n route to A } }', document)
    assert decision.error is None, decision.error
    return decision.destinations["A"].dataset


def findings(source: str):
    return [d for d in analyse(load_program(text=source)).diagnostics if d.code != "no-destination"]


# ---- the table ----------------------------------------------------------------------


def test_the_table_is_the_2026d_table_character_for_character():
    rows = safe_rows()
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == ROWS_SHA256
    assert len(rows) == 479
    creators = Counter(row["private_creator"] for row in rows)
    assert creators["Philips Imaging DD 001"] == 184 and creators["SIEMENS Ultrasound SC2000"] == 40
    assert len({(row["tag"].lower(), row["private_creator"]) for row in rows}) == 479  # no row twice


# ---- the generated block --------------------------------------------------------------


def _block(name: str) -> list[str]:
    text = PROFILE_OPTIONS.read_text(encoding="utf-8")
    start = text.index(f"block {name} {{\n")
    return text[start:text.index("\n}\n", start)].splitlines()[1:]


def test_the_block_keeps_each_row_of_the_table_in_order_and_records_the_option():
    lines = _block("retain_safe_private")
    kept = [m.groups() for m in re.finditer(r'DataSet\.\*\*\.\(([0-9A-F]{4}),"([^"]+)",([0-9A-F]{2})\)',
                                            "\n".join(lines))]
    rows = safe_rows()
    assert kept == [(row["tag"][1:5].upper(), row["private_creator"], row["tag"][8:10].upper()) for row in rows]
    listed = [line for line in lines if line.startswith("  #   (")]
    assert [line.split()[1] for line in listed] == [row["tag"] for row in rows]  # the row-by-row comment
    assert sum(line.startswith("  keep only private ") for line in lines) == 1  # one list: not an intersection
    assert '    set code.CodeValue = "113111"' in lines


# ---- keep only private ------------------------------------------------------------------


def private_document() -> Document:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3"
    ds.PatientName = "DOE^JOHN"
    ds.add_new(0x00190001, "LO", "no block")  # (gggg,0000-000F): in no block
    acqu = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    acqu.add_new(0x23, "DS", "5.0")  # safe
    acqu.add_new(0x10, "LO", "unsafe")
    ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x01, "LO", "GE_GENESIS_FF")
    stack_item = Dataset()
    stack_item.SliceThickness = "3"
    philips = stack_item.private_block(0x2001, "Philips Imaging DD 001", create=True)
    philips.add_new(0x2D, "SS", 12)  # safe, inside a safe sequence
    philips.add_new(0x02, "IS", "1")  # safe
    stack_item.private_block(0x2001, "Philips Imaging DD 005", create=True).add_new(0x01, "LO", "unsafe")
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x5F, "SQ", [stack_item])  # Stack Sequence: safe
    referenced = Dataset()
    referenced.ReferencedSOPInstanceUID = "1.2.4"
    referenced.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x24, "DS", "1.5")  # safe, deep
    referenced.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"CSA!")
    ds.ReferencedImageSequence = [referenced]
    ds.Rows, ds.Columns = 1, 1
    ds.PixelData = b"\0\0"
    return Document(ds)


SAFE_FEW = ('keep only private DataSet.**.(0019,"GEMS_ACQU_01",23), DataSet.**.(0019,"GEMS_ACQU_01",24),\n'
            '  DataSet.**.(2001,"Philips Imaging DD 001",5F), DataSet.**.(2001,"Philips Imaging DD 001",2D)')


def test_keeps_the_named_private_elements_at_any_depth_and_every_public_element():
    document = private_document()
    before = copy.deepcopy(document.dataset)
    ds = run(SAFE_FEW, document)
    assert [str(e.tag) for e in ds] == ["(0008,0016)", "(0008,0018)", "(0008,1140)", "(0010,0010)",
                                        "(0019,0010)", "(0019,1023)", "(0028,0010)", "(0028,0011)",
                                        "(2001,0010)", "(2001,105F)", "(7FE0,0010)"]
    assert ds[0x00191023].value == before[0x00191023].value
    item = ds[0x2001105F].value[0]
    assert [str(e.tag) for e in item] == ["(0018,0050)", "(2001,0010)", "(2001,102D)"]  # DD 005 and xx02 gone
    assert item[0x2001102D].value == 12
    referenced = ds.ReferencedImageSequence[0]
    assert [str(e.tag) for e in referenced] == ["(0008,1155)", "(0019,0010)", "(0019,1024)"]
    assert ds.PixelData == before.PixelData and ds.PatientName == before.PatientName


def test_a_whole_block_and_top_level_names_keep_nothing_at_depth():
    ds = run('keep only private DataSet.(0009,"GEMS_IDEN_01",xx), DataSet.(0019,"GEMS_ACQU_01",10)',
             private_document())
    # (0019,0001) is in no block; the Stack Sequence is not named, so its creator goes with it.
    assert [str(e.tag) for e in ds if e.tag.is_private] == ["(0009,0010)", "(0009,1001)", "(0019,0010)",
                                                            "(0019,1010)"]
    assert [str(e.tag) for e in ds.ReferencedImageSequence[0]] == ["(0008,1155)"]


def test_nothing_named_removes_every_private_element_and_leaves_sequences_of_public_ones():
    ds = run('keep only private DataSet.(0009,"NOBODY",01)', private_document())
    assert not [e for e in ds.iterall() if e.tag.is_private]
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.4"


def test_public_paths_and_selectors_are_errors_in_a_private_list():
    found = findings('rule "r" { then keep only private DataSet.PatientName, DataSet.(0009,"A",01) }')
    assert [(d.code, d.severity) for d in found] == [("bad-path", "error")]
    assert "private elements by their creator, not PatientName" in found[0].message
    found = findings('rule "r" { then keep only private DataSet.**.*[private] }')
    assert [d.code for d in found] == ["bad-path"]
    # No SOP UID warning: public elements are all kept.
    assert findings('rule "r" { then keep only private DataSet.(0009,"A",01) }') == []


def test_private_stays_a_keyword_and_formatting_keeps_the_form():
    formatted = format_source('rule "r" { then keep only   private DataSet.(0009,"A",XX) ,DataSet.**.(0019,"B",2d) }')
    assert 'then keep only private DataSet.(0009,"A",xx), DataSet.**.(0019,"B",2D)\n' in formatted
    assert format_source(formatted) == formatted
    with pytest.raises(rulesengine.RulesError):
        rulesengine.compile_source('rule "r" { then keep only private }')


# ---- the option on a real instance ------------------------------------------------------

COMPOSED = """\
import "profiles/basic-confidentiality-options.rules" as deid
rule "r" {
  then {
    copy to OUT {
%s
    }
  }
}
"""
RULES_PATH = ROOT / "rules" / "safe_private_check.rules"  # never written: names the imports' folder
GROUPS = ("core", "device_identity", "uids", "institution_identity", "patient_characteristics", "dates",
          "descriptors")


def _composed(last: str) -> Dataset:
    body = "\n".join(f"      apply deid.{block}" for block in (*GROUPS, last))
    ruleset = rulesengine.compile_source(COMPOSED % body, filename=str(RULES_PATH))
    decision = ruleset.evaluate(Document.read(str(CT_CHEST)))
    assert decision.error is None, decision.error
    return decision.destinations["OUT"].dataset


def test_a_ge_ct_keeps_its_safe_private_attributes_and_loses_the_rest():
    original = dcmread(CT_CHEST)
    safe = _composed("retain_safe_private")
    basic = _composed("private_attributes")
    private = {str(e.tag): e.value for e in safe if e.tag.is_private}
    assert private == {
        "(0019,0010)": "GEMS_ACQU_01",
        "(0019,1023)": original[0x00191023].value,  # Table Speed
        "(0019,1024)": original[0x00191024].value,  # Mid Scan Time
        "(0019,1027)": original[0x00191027].value,  # Rotation Speed
        "(0025,0010)": "GEMS_SERS_01",
        "(0025,1007)": original[0x00251007].value,  # Images in Series
        "(0043,0010)": "GEMS_PARM_01",
        "(0043,1027)": original[0x00431027].value,  # Scan Pitch Ratio
    }
    # The public elements are those of the basic profile; the option is recorded after it.
    assert [e for e in safe if not e.tag.is_private and e.keyword != "DeidentificationMethodCodeSequence"] == \
        [e for e in basic if e.keyword != "DeidentificationMethodCodeSequence"]
    assert [item.CodeValue for item in safe.DeidentificationMethodCodeSequence] == ["113100", "113111"]
    assert not [e for e in basic if e.tag.is_private]
