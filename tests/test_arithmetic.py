"""Arithmetic: - * / % and the minus sign, beside + (sums and joined text)."""

from __future__ import annotations

import pytest

from rulesengine.lang import nodes as n
from rulesengine.lang.api import analyse
from rulesengine.lang.formatter import format_source
from rulesengine.lang.loader import load_program
from rulesengine.lang.syntax import parse

from helpers.evaluation import evaluate


def value_of(expression: str, **values):
    """What `log EXPRESSION` logs, and the decision's error."""
    decision = evaluate(f'rule "r" {{ then {{ log coalesce({expression}, "null")\n route to A }} }}', **values)
    return decision.log[0].message if decision.log else None, decision.error


def findings(source: str):
    return analyse(load_program(text=source, filename="t.rules")).diagnostics


def expression_findings(expression: str):
    return [d for d in findings(f'rule "r" {{ then {{ log {expression}\n route to A }} }}') if d.is_error]


@pytest.mark.parametrize("expression,expected", [
    ("7 - 2", "5"),
    ("2 + 3 * 4", "14"),
    ("(2 + 3) * 4", "20"),
    ("10 - 4 - 3", "3"),
    ("24 / 4 / 2", "3"),
    ("7 / 2", "3.5"),
    ("-7 % 3", "2"),
    ("7 % -3", "-2"),
    ("-(2 * 3)", "-6"),
    ("- 2 * -3", "6"),
    ("2.5 * 2", "5"),
    ("1 + 2 + \"x\"", "3x"),
    ("\"x\" + 1 + 2", "x12"),
    ("\"x\" + (5 - 2)", "x3"),
])
def test_operators_precedence_and_order(expression, expected):
    assert value_of(expression) == (expected, None)


def test_paths_and_numeric_text():
    assert value_of("DataSet.Rows-1", DataSet__Rows=512) == ("511", None)
    assert value_of("DataSet.InstanceNumber * 2", DataSet__InstanceNumber="21") == ("42", None)
    assert value_of("DataSet.SliceThickness / 2", DataSet__SliceThickness="2.5") == ("1.25", None)
    assert value_of("-DataSet.Rows", DataSet__Rows=3) == ("-3", None)


def test_missing_and_empty_operands_give_null():
    assert value_of("DataSet.Rows - 1") == ("null", None)
    assert value_of("DataSet.InstanceNumber * 2", DataSet__InstanceNumber="") == ("null", None)
    assert value_of("-DataSet.Rows") == ("null", None)
    assert value_of("10 / DataSet.Rows") == ("null", None)


def test_multi_valued_operands():
    # one value of an element of several is a number; several are an error at run time
    assert value_of("DataSet.PixelSpacing[1] * 2", DataSet__PixelSpacing=["0.5", "0.5"]) == ("1", None)
    assert value_of("DataSet.PixelSpacing[2] * 2", DataSet__PixelSpacing=["0.5"]) == ("null", None)
    # several values where lint could not tell: an error at run time
    decision = evaluate('rule "r" { then { log coalesce(DataSet.PatientID, 0) * 2\n route to A } }',
                        DataSet__PatientID="ABC")
    assert decision.outcome == "quarantine" and "'ABC' is not a number" in decision.reason


@pytest.mark.parametrize("expression,words", [
    ("10 / DataSet.Rows", "division by zero"),
    ("10 % DataSet.Rows", "division by zero"),
])
def test_division_by_zero_quarantines_with_the_reason(expression, words):
    decision = evaluate(f'rule "r" {{ then {{ log {expression}\n route to A }} }}', DataSet__Rows=0)
    assert decision.outcome == "quarantine"
    assert words in decision.reason and "rule 'r'" in decision.reason


def test_text_that_is_no_number_quarantines_with_the_reason():
    decision = evaluate('rule "r" { then { log coalesce(DataSet.PatientID, 0) - 1\n route to A } }',
                        DataSet__PatientID="ABC")
    assert decision.outcome == "quarantine"
    assert "'ABC' is not a number" in decision.reason


@pytest.mark.parametrize("expression,words", [
    ("DataSet.PatientID - 1", "number(DataSet.PatientID)"),
    ("DataSet.StudyDate - 30", "days_between"),
    ("DataSet.PixelSpacing * 2", "[n]"),
    ("\"a\" * 2", "number("),
    ("-DataSet.PatientName", "numbers"),
    ("DataSet.Rows / 0", "division by zero"),
    ("DataSet.Rows % 0", "division by zero"),
    ("DataSet.ScheduledProcedureStepSequence - 1", "numbers"),
    ("(DataSet.Rows > 1) * 2", "condition"),
])
def test_lint_type_mismatches(expression, words):
    errors = expression_findings(expression)
    assert errors and errors[0].code == "type-mismatch", [d.one_line() for d in errors]
    assert words in errors[0].message + " " + (errors[0].hint or ""), errors[0].one_line()


def test_a_sum_of_numbers_is_a_number_to_lint():
    assert findings('rule "r" { when DataSet.Rows - 1 > 10 then { set DataSet.Columns = DataSet.Rows * 2\n'
                    ' route to A } }\nrule "z" { then route to Z }') == []
    mismatch = findings('rule "r" { then { set DataSet.StudyDate = DataSet.Rows - 1\n route to A } }')
    assert [d.code for d in mismatch] == ["type-mismatch"]


def test_division_is_not_a_regular_expression():
    rule = parse('rule "r" { when DataSet.Rows / 2 / 4 > 1 and DataSet.PatientID matches /a\\/b/ then drop }')
    condition = rule.items[0].when
    left = condition.operands[0].left
    assert isinstance(left, n.Arithmetic) and left.op == "/" and isinstance(left.left, n.Arithmetic)
    assert condition.operands[1].regex.pattern == "a/b"
    call = parse('rule "r" { then log replace(DataSet.PatientID, /x/, "y") }').items[0].actions[0].message
    assert isinstance(call.args[1], n.RegexLit)


def test_a_negative_literal_stays_a_literal():
    value = parse('rule "r" { then log -7 }').items[0].actions[0].message
    assert isinstance(value, n.NumberLit) and value.value == -7 and value.text == "-7"
    assert findings('rule "r" { when DataSet.StudyDate == -1 then drop }')[0].code == "type-mismatch"


@pytest.mark.parametrize("source,expected", [
    ("DataSet.Rows-1", "DataSet.Rows - 1"),
    ("a - b + c", "a - b + c"),
    ("(a - b) + c", "a - b + c"),
    ("a + (b - c)", "a + (b - c)"),
    ("a - (b - c)", "a - (b - c)"),
    ("(a + b) + c", "(a + b) + c"),
    ("a + b * c", "a + b * c"),
    ("(a + b) * c", "(a + b) * c"),
    ("a * (b / c)", "a * (b / c)"),
    ("- 7", "-7"),
    ("-(a * b)", "-(a * b)"),
    ("a/b/c", "a / b / c"),
])
def test_fmt_keeps_meaning_with_the_fewest_parentheses(source, expected):
    formatted = format_source(f'rule "r" {{ then log {source} }}')
    assert formatted == f'rule "r" {{\n  then log {expected}\n}}\n'
    assert format_source(formatted) == formatted


def test_fmt_finds_braces_after_divisions():
    source = 'rule "r" { when DataSet.Rows / 2 > 1 then { if DataSet.Rows / 2 > 3 { log DataSet.Rows / 4 } } }'
    assert format_source(source) == ('rule "r" {\n  when DataSet.Rows / 2 > 1\n  then if DataSet.Rows / 2 > 3 {\n'
                                     '    log DataSet.Rows / 4\n  }\n}\n')


def test_long_chains_and_deep_minus_signs_are_too_deep_not_a_crash():
    def codes(expression: str) -> list[str]:
        return [d.code for d in findings(f'rule "r" {{ then {{ log {expression}\n route to A }} }}')]
    assert codes(" - ".join(["1"] * 90)) == []
    assert value_of(" - ".join(["1"] * 90)) == (str(1 - 89), None)
    assert codes(" - ".join(["1"] * 5000)) == ["too-deep"]
    assert codes(" / ".join(["1"] * 5000)) == ["too-deep"]
    assert codes(" + ".join(["1"] * 5000)) == []  # a chain of + is not nesting
    assert codes("-" * 5000 + "DataSet.Rows") == ["too-deep"]
    assert codes("-(" * 5000 + "DataSet.Rows" + ")" * 5000) == ["too-deep"]
