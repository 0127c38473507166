"""Long chains and deep nesting: the compiled code must not depend on Python's own limits
(200 nested parentheses, 100 levels of indentation, the recursion limit). Chains of any
length compile and run, fast and traced; nesting up to the language's limit does too, and
deeper nesting is one clear finding at its position, never a RecursionError."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Arrival, Document, RulesError
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program
from rulesengine.cli import main
from rulesengine.lang.syntax import MAX_NESTING

from helpers.files import SAMPLES, write
from helpers.cli import dicom_rules

LENGTHS = [200, 1_000, 5_000]


def document(**values) -> Document:
    doc = Document(arrival=Arrival(calling_aet="CT1"))
    for path, value in values.items():
        doc.set(f"DataSet.{path}", value)
    return doc


def both(source, doc_values):
    """The fast decision (the router) and the traced one (dry-run --explain, test), each on a fresh
    document made of `doc_values` (a dict of values, or a function making the document).
    `source` is rule text or a compiled rule set."""
    ruleset = rulesengine.compile_source(source) if isinstance(source, str) else source
    make = doc_values if callable(doc_values) else lambda: document(**doc_values)
    fast_doc, traced_doc = make(), make()
    fast, traced = ruleset.evaluate(fast_doc), ruleset.evaluate(traced_doc, trace=True)
    assert fast.error is None and traced.error is None, (fast.error, traced.error)
    return (fast, fast_doc), (traced, traced_doc)


def a_when(condition: str) -> str:
    """Rules that route to A when the condition holds, and to B otherwise."""
    return f'rule "a" {{\n  when {condition}\n  then {{\n    route to A\n    stop\n  }}\n}}\n' \
           'rule "b" {\n  then route to B\n}\n'


def only_error(source: str):
    findings = [d for d in analyse(load_program(text=source, filename="deep.rules")).diagnostics if d.is_error]
    assert len(findings) == 1, findings
    return findings[0]


# ---- chains ---------------------------------------------------------------------------------

@pytest.mark.parametrize("terms", LENGTHS)
def test_a_sum_of_many_terms_adds_then_joins_from_the_left(terms):
    # 1 + 1 + ... is a number until text joins it: "<terms-1>x" then the PatientID.
    expression = " + ".join(["1"] * (terms - 2) + ['"x"', "DataSet.PatientID"])
    source = f'rule "sum" {{\n  then {{\n    set DataSet.PatientComments = {expression}\n    route to A\n  }}\n}}\n'
    for decision, doc in both(source, {"PatientID": "P7"}):
        assert list(decision.destinations) == ["A"]
        assert doc.get("DataSet.PatientComments") == f"{terms - 2}x" + "P7"


@pytest.mark.parametrize("terms", LENGTHS)
def test_a_long_and_chain_holds_only_when_every_term_does(terms):
    condition = " and ".join(f'DataSet.PatientID != "P{i}"' for i in range(terms))
    source = rulesengine.compile_source(a_when(condition))
    for decision, _ in both(source, {"PatientID": "Q"}):
        assert list(decision.destinations) == ["A"]
    for decision, _ in both(source, {"PatientID": f"P{terms - 1}"}):
        assert list(decision.destinations) == ["B"]


@pytest.mark.parametrize("terms", LENGTHS)
def test_a_long_or_chain_holds_when_its_last_term_does(terms):
    condition = " or ".join(f'DataSet.PatientID == "P{i}"' for i in range(terms))
    source = a_when(condition)
    (fast, _), (traced, _) = both(source, {"PatientID": f"P{terms - 1}"})
    assert list(fast.destinations) == list(traced.destinations) == ["A"]
    assert len(traced.trace) == terms  # every comparison was made, and recorded


@pytest.mark.parametrize("arms", LENGTHS)
def test_a_long_else_if_chain_takes_the_right_arm(arms):
    chain = " else ".join(f'if DataSet.PatientID == "P{i}" {{\n    route to D{i}\n  }}' for i in range(arms))
    source = f'rule "map" {{\n  then {chain} else {{\n    route to OTHER\n  }}\n}}\n'
    ruleset = rulesengine.compile_source(source)
    for patient, expected in [("P0", "D0"), (f"P{arms // 2 + 1}", f"D{arms // 2 + 1}"),
                              (f"P{arms - 1}", f"D{arms - 1}"), ("nobody", "OTHER")]:
        assert list(ruleset.evaluate(document(PatientID=patient)).destinations) == [expected]
        traced = ruleset.evaluate(document(PatientID=patient), trace=True)
        assert list(traced.destinations) == [expected]
    # The traced run records each else it passed through, as coverage reports them.
    last = ruleset.evaluate(document(PatientID=f"P{arms - 1}"), trace=True)
    descriptions = [ruleset.branches[i].description for i in last.branches]
    assert descriptions.count("the else branch never ran") == arms - 1


# ---- nesting up to the limit ------------------------------------------------------------------

def nested_calls(levels: int) -> str:
    return "lower(upper(" * (levels // 2) + "DataSet.PatientName" + "))" * (levels // 2)


def test_calls_nested_to_the_limit_compile_and_run():
    source = f'rule "r" {{\n  then {{\n    set DataSet.PatientComments = {nested_calls(MAX_NESTING - 2)} + "!"\n' \
             '    route to A\n  }\n}\n'
    for _, doc in both(source, {"PatientName": "Doe^Jane"}):
        assert doc.get("DataSet.PatientComments") == "doe^jane!"


def test_parentheses_alone_do_not_count_as_nesting():
    source = 'rule "r" {\n  when ' + "(" * 5_000 + 'DataSet.PatientID == "P"' + ")" * 5_000 + \
             '\n  then route to A\n}\n'
    for decision, _ in both(source, {"PatientID": "P"}):
        assert list(decision.destinations) == ["A"]


def test_nots_and_groups_nested_to_the_limit():
    nots = a_when("not " * MAX_NESTING + 'DataSet.PatientID == "P"')
    for decision, _ in both(nots, {"PatientID": "P"}):  # an even number of nots
        assert list(decision.destinations) == ["A"]
    depth = MAX_NESTING // 2  # each level is an `and` holding an `or`
    groups = a_when('(DataSet.PatientID != "x" and (DataSet.Modality == "none" or ' * depth +
                    'DataSet.PatientID == "P"' + "))" * depth)
    for decision, _ in both(groups, {"PatientID": "P", "Modality": "CT"}):
        assert list(decision.destinations) == ["A"]


def test_quantifiers_nested_deep_see_every_loop_variable():
    levels = 60
    head = "".join(f"any v{i} in DataSet.ImageType: (" for i in range(levels))
    inner = " and ".join(f'v{i} == "ORIGINAL"' for i in (0, levels // 2, levels - 1))
    source = a_when(f'{head}{inner}{")" * levels}')
    for decision, _ in both(source, {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}):
        assert list(decision.destinations) == ["A"]


@pytest.mark.parametrize("word, outcome", [("FOLLOW", "drop"), ("NEVER", "route")])
def test_blocks_nested_to_the_limit_keep_lets_and_loop_variables(word, outcome):
    depth = MAX_NESTING - 2  # the for each and the if inside are levels too
    opening = "".join(f'if DataSet.PatientID != "x{i}" {{\n' for i in range(depth))
    source = ('rule "deep" {\n  then {\n    let id = DataSet.PatientID\n'
              '    for each step in DataSet.ScheduledProcedureStepSequence {\n' + opening +
              '      set DataSet.PatientComments = id + "/" + step.ScheduledProcedureStepDescription\n'
              f'      if step.ScheduledProcedureStepDescription contains "{word}" {{\n        drop\n      }}\n'
              + "}\n" * depth + '    }\n    route to A\n  }\n}\n')
    chest = lambda: Document.read(SAMPLES / "ct_chest.dcm")  # noqa: E731
    for decision, doc in both(source, chest):
        assert decision.outcome == outcome  # a drop ends evaluation from the innermost body
        assert doc.get("DataSet.PatientComments") == "123456/CHEST CT FOLLOW-UP"


def test_a_copy_with_deeply_nested_edits():
    depth = MAX_NESTING - 1
    body = "".join(f'if exists DataSet.PatientID {{\n' for _ in range(depth)) + \
        'set DataSet.PatientName = "ANON"\n' + "}\n" * depth
    source = f'rule "r" {{\n  then copy to RESEARCH {{\n{body}  }}\n}}\n'
    for decision, doc in both(source, {"PatientID": "P", "PatientName": "Doe"}):
        assert decision.destinations["RESEARCH"].get("DataSet.PatientName") == "ANON"
        assert doc.get("DataSet.PatientName") == "Doe"


# ---- deeper than the limit: one finding, where it starts ---------------------------------------------

@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 1_000, 20_000])
def test_calls_nested_too_deep_are_one_finding(levels):
    source = f'rule "r" {{\n  then set DataSet.PatientID = {"lower(" * levels}DataSet.PatientID{")" * levels}\n}}\n'
    finding = only_error(source)
    assert finding.code == "too-deep"
    assert f"more than {MAX_NESTING} levels" in finding.message
    column = len("  then set DataSet.PatientID = ") + len("lower(") * MAX_NESTING + 1
    assert (finding.span.file, finding.span.line, finding.span.column) == ("deep.rules", 2, column)


@pytest.mark.parametrize("construct", ["not", "list", "if", "for each", "any"])
def test_every_kind_of_nesting_has_the_limit(construct):
    levels = 3_000
    if construct == "not":
        source = 'rule "r" {\n  when ' + "not " * levels + 'DataSet.PatientID == "P"\n  then drop\n}\n'
    elif construct == "list":
        source = 'rule "r" {\n  when DataSet.PatientID in ' + "[" * levels + '"P"' + "]" * levels + '\n  then drop\n}\n'
    elif construct == "if":
        source = 'rule "r" {\n  then ' + "if exists DataSet.PatientID { " * levels + "drop" + " }" * levels + "\n}\n"
    elif construct == "for each":
        source = 'rule "r" {\n  then ' + "for each s in DataSet.ReferencedStudySequence { " * levels + "drop" + \
                 " }" * levels + "\n}\n"
    else:
        source = 'rule "r" {\n  when ' + "any v in DataSet.ImageType: " * levels + 'v == "P"\n  then drop\n}\n'
    assert only_error(source).code == "too-deep"


def test_lint_dry_run_test_and_fmt_report_deep_nesting_as_a_finding(run_in, capsys):
    deep = "lower(" * 2_000 + "DataSet.PatientID" + ")" * 2_000
    write(run_in / "deep.rules", f'rule "r" {{\n  then {{\n    set DataSet.PatientID = {deep}\n    route to A\n  }}\n}}\n')
    write(run_in / "deep_test.rules", 'test "t" {\n  expect route to A\n}\n')
    for args in (["lint", "deep.rules"], ["dry-run", "deep.rules", str(SAMPLES / "ct_chest.dcm")],
                 ["test", "deep_test.rules"], ["fmt", "--check", "deep.rules"]):
        status = main(args)
        output = "".join(capsys.readouterr())
        assert status == 1, (args, output)
        assert "internal error" not in output and "Traceback" not in output
        assert "deep.rules:3:" in output and "nested more than 100 levels" in output, (args, output)


def test_dry_run_of_a_sum_of_200_terms_routes(run_in):
    # The reported case: lint passed, then dry-run and run failed with "too many nested parentheses".
    total = " + ".join(f'"{i % 10}"' for i in range(200))
    write(run_in / "sum.rules", f'rule "r" {{\n  then {{\n    set DataSet.StudyComments = {total}\n    route to A\n  }}\n}}\n')
    assert dicom_rules("lint", "sum.rules").returncode == 0
    result = dicom_rules("dry-run", "sum.rules", SAMPLES / "ct_chest.dcm")
    assert result.returncode == 0, result.stderr
    assert "A" in result.stdout


def test_compile_file_of_deep_rules_raises_rules_error_not_recursion_error(tmp_path):
    path = write(tmp_path / "deep.rules", 'rule "r" {\n  then ' + "if exists DataSet.PatientID { " * 5_000 +
                 "drop" + " }" * 5_000 + "\n}\n")
    with pytest.raises(RulesError) as caught:
        rulesengine.compile_file(path)
    assert [d.code for d in caught.value.diagnostics] == ["too-deep"]
