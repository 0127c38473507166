"""Edges of the language where two paths must agree: the fast and the traced evaluation
(function result types), coverage and --explain attribution, tables the csv module refuses,
fmt and byte order marks, a broken import reported once, can_reject, and --config's policy."""

from __future__ import annotations

import dataclasses

import pytest

import rulesengine
from rulesengine import Document
from rulesengine.explain import explain_lines
from rulesengine.lang.api import check_file, compile_file
from rulesengine.lang.formatter import format_source
from rulesengine.lang.functions import Secrets, make_uid
from rulesengine.lang.loader import load_program
from rulesengine.lang.ruleset import Predicate
from rulesengine.ruletest import coverage_lines, load_suite, run_suite

from helpers.files import SAMPLES, write
from helpers.cli import dicom_rules


def route_if(condition: str) -> str:
    return f'rule "r" {{\n  when {condition}\n  then route to YES\n}}\nrule "else" {{\n  then route to NO\n}}\n'


def decisions(source: str, document: Document, **kwargs) -> tuple[bool, bool]:
    """Whether the condition held in the fast variant (the router) and the traced one (dry-run --explain)."""
    ruleset = rulesengine.compile_source(source, **kwargs)
    fast = ruleset.evaluate(document)
    traced = ruleset.evaluate(document, trace=True)
    assert fast.error is None and traced.error is None
    return "YES" in fast.destinations, "YES" in traced.destinations


# ---- 1. the fast variant decides as the traced one ---------------------------------------

UID_OF_XA = make_uid(Secrets())("XA")


@pytest.mark.parametrize("condition, holds", [
    ('substr(DataSet.OtherPatientIDs, 1, 1) == "X"', True),
    ('substr(DataSet.OtherPatientIDs, 1, 1) in ["X", "Y"]', True),
    ('replace(DataSet.OtherPatientIDs, /A/, "") == "X"', True),
    (f'uid(DataSet.OtherPatientIDs) == "{UID_OF_XA}"', True),
    (f'uid(DataSet.OtherPatientIDs) in ["{UID_OF_XA}", "1.2"]', True),
    ('coalesce(DataSet.PatientID, 0) == "0"', True),
    ('coalesce(DataSet.OtherPatientIDs, "Y") == "XA"', True),
    ('coalesce(DataSet.PatientID, 0) + 1 == "1"', True),  # numbers add up: not text
])
def test_fast_and_traced_variants_agree_on_function_results(condition, holds):
    document = Document()
    document.set("DataSet.OtherPatientIDs", ["XA"])
    assert decisions(route_if(condition), document) == (holds, holds)


def test_fast_and_traced_variants_agree_on_a_lookup_with_a_number_default(tmp_path):
    write(tmp_path / "sites.csv", "aet,name\nCT1,Main\n")
    source = 'table sites from "sites.csv"\n' + route_if('lookup(sites.name, DataSet.PatientID, 0) == "0"')
    assert decisions(source, Document(), filename=str(tmp_path / "r.rules")) == (True, True)


def test_text_functions_of_several_values_give_several_values():
    # `<` compares single values: a function of several values is no single value.
    with pytest.raises(rulesengine.RulesError, match="compares single values"):
        rulesengine.compile_source(route_if('substr(DataSet.OtherPatientIDs, 1, 1) < "X"'))
    rulesengine.compile_source(route_if('substr(DataSet.PatientID, 1, 1) < "X"'))


# ---- 2. coverage and --explain name the right rule or block --------------------------------

BLOCK_RULES = '''\
block tidy {
  if DataSet.Modality == "CT" {
    set DataSet.StudyDescription = "ct"
  }
}

rule "a" {
  when DataSet.PatientID == "1"
  then {
    apply tidy
    route to A
  }
}

rule "b" {
  then route to B
}
'''

BLOCK_TESTS = '''\
test "patient 1" {
  given DataSet.PatientID = "1", DataSet.Modality = "MR"
  expect route to A
}
'''


def test_branches_in_a_block_belong_to_the_block(run_in):
    write(run_in / "r.rules", BLOCK_RULES)
    write(run_in / "r_test.rules", BLOCK_TESTS)
    ruleset = compile_file("r.rules")
    in_block = [b for b in ruleset.branches if b.span.line <= 4]
    assert in_block and all(b.rule is None and b.block == "tidy" for b in in_block)
    suite = load_suite("r_test.rules")
    lines = coverage_lines(suite, run_suite(suite, None))
    assert "  r.rules:2: this if condition was never false (block tidy)" not in lines  # it was false
    assert "  r.rules:2: the if branch never ran (block tidy)" in lines
    assert not any("rule 'b'" in line for line in lines)


def test_a_block_no_test_ran_lists_no_branches(run_in):
    write(run_in / "r.rules", BLOCK_RULES)
    write(run_in / "r_test.rules", 'test "other" {\n  given DataSet.PatientID = "2"\n  expect route to B\n}\n')
    suite = load_suite("r_test.rules")
    lines = coverage_lines(suite, run_suite(suite, None))
    assert "  r.rules:7: rule 'a' never fired" in lines
    assert not any("block tidy" in line or "rule 'b'" in line for line in lines)


COPY_RULES = '''\
rule "a" {
  then copy to A {
    if DataSet.Modality == "CT" {
      set DataSet.StudyDescription = "ct"
    }
  }
}

rule "b" {
  when DataSet.PatientID == "nobody"
  then route to B
}
'''


def test_conditions_in_a_copy_are_explained_under_the_rule_of_the_copy():
    ruleset = rulesengine.compile_source(COPY_RULES)
    document = Document()
    document.set("DataSet.Modality", "CT")
    decision = ruleset.evaluate(document, trace=True)
    texts = {ruleset.predicates[e.predicate].text: e.rule for e in decision.trace}
    assert texts == {'DataSet.Modality == "CT"': 0, 'DataSet.PatientID == "nobody"': 1}
    lines = explain_lines(ruleset, decision)
    assert lines[:2] == ["rule 'a' (line 1): fired",
                         '    DataSet.Modality == "CT"  -> true  (DataSet.Modality is "CT")']


def test_predicates_name_no_rule():
    assert "rule" not in {f.name for f in dataclasses.fields(Predicate)}


# ---- 3. a table the csv module rejects is a finding ----------------------------------------

def test_a_table_with_a_field_too_large_for_csv_is_a_finding(run_in):
    write(run_in / "big.csv", "key,value\nA," + "x" * 200_000 + "\n")
    write(run_in / "r.rules", 'table big from "big.csv"\n\nrule "r" {\n  then route to A\n}\n')
    findings = check_file("r.rules")
    assert [(d.code, d.span.line) for d in findings if d.is_error] == [("table", 1)]
    assert "cannot be read as CSV: field larger than field limit" in findings[0].message
    result = dicom_rules("lint", "r.rules")
    assert result.returncode == 1


# ---- 4. fmt reads past a byte order mark, as the loader does ---------------------------------

def test_fmt_accepts_a_byte_order_mark_and_keeps_it(run_in):
    formatted = format_source('rule "r" { then route to A }\n', "r.rules")
    (run_in / "clean.rules").write_bytes(b"\xef\xbb\xbf" + formatted.encode("utf-8"))
    assert dicom_rules("lint", "clean.rules").returncode == 0
    assert dicom_rules("fmt", "--check", "clean.rules").returncode == 0
    (run_in / "messy.rules").write_bytes(b"\xef\xbb\xbf" + b'rule "r" {   then route to A }\n')
    result = dicom_rules("fmt", "messy.rules")
    assert result.returncode == 0, result.stderr
    assert (run_in / "messy.rules").read_bytes() == b"\xef\xbb\xbf" + formatted.encode("utf-8")


# ---- 5. a broken file imported twice is reported once --------------------------------------

def test_a_broken_import_is_reported_once_without_follow_on_errors(run_in):
    write(run_in / "broken.rules", 'block x {\n  log "a" +\n}\n')
    write(run_in / "lib.rules", 'import "broken.rules" as c\n\nblock y {\n  apply c.x\n}\n')
    write(run_in / "main.rules", 'import "broken.rules" as c\nimport "lib.rules" as l\n\n'
          'rule "r" {\n  then {\n    apply c.x\n    apply l.y\n    route to A\n  }\n}\n')
    program = load_program("main.rules")
    assert [d.code for d in program.diagnostics] == ["syntax"]
    assert [(d.code, d.span.file) for d in check_file("main.rules")] == [("syntax", "broken.rules")]


# ---- 6. can_reject is worked out once -----------------------------------------------------

def test_can_reject_is_computed_once():
    ruleset = rulesengine.compile_source('rule "r" {\n  when DataSet.Modality == "OT"\n  then reject "no"\n}\n')
    assert ruleset.can_reject
    ruleset.program = None  # a second answer must not walk the rules again
    assert ruleset.can_reject


# ---- 7. --config brings its no_destination policy ----------------------------------------

DROP_CONFIG = '''\
storage: var
rules: r.rules
no_destination: drop
destinations:
  PACS:
    type: dicom
    ae_title: PACS
    host: 127.0.0.1
    port: 104
'''

UNROUTED = 'rule "r" {\n  when DataSet.Modality == "XX"\n  then route to PACS\n}\n'


def test_dry_run_with_config_applies_its_no_destination_policy(run_in):
    write(run_in / "r.rules", UNROUTED)
    write(run_in / "router.yaml", DROP_CONFIG)
    without = dicom_rules("dry-run", "r.rules", SAMPLES / "ct_head.dcm")
    assert "  outcome: quarantine: no rule routed this document" in without.stdout
    result = dicom_rules("dry-run", "r.rules", SAMPLES / "ct_head.dcm", "--config", "router.yaml")
    assert result.returncode == 0, result.stderr
    assert "  outcome: drop: no rule routed this document" in result.stdout


def test_test_with_config_applies_its_no_destination_policy(run_in):
    write(run_in / "r.rules", UNROUTED)
    write(run_in / "router.yaml", DROP_CONFIG)
    write(run_in / "r_test.rules", 'test "unrouted" {\n  given DataSet.Modality = "CT"\n  expect drop\n}\n')
    assert dicom_rules("test", "r.rules").returncode == 1
    result = dicom_rules("test", "r.rules", "--config", "router.yaml")
    assert result.returncode == 0, result.stdout
