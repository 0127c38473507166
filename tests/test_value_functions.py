"""number(), hash_int(), days_between(), age(), pad(), hash() options and [n] on values."""

from __future__ import annotations

import re

import pytest

from rulesengine.lang.api import analyse
from rulesengine.lang.functions import Secrets
from rulesengine.lang.loader import load_program

from helpers.evaluation import evaluate


def logged(expression: str, **values):
    """What `log EXPRESSION` logs ("null" for null), and the decision's error."""
    decision = evaluate(f'rule "r" {{ then {{ log coalesce({expression}, "null")\n route to A }} }}', **values)
    return (decision.log[0].message if decision.log else None), decision.error


def value(expression: str, **values):
    result, error = logged(expression, **values)
    assert error is None, error
    return result


def errors(expression: str):
    program = load_program(text=f'rule "r" {{ then {{ log {expression}\n route to A }} }}', filename="t.rules")
    return [d for d in analyse(program).diagnostics if d.is_error]


# ---- number() ---------------------------------------------------------------------------

def test_number_converts_text_and_keeps_null():
    assert value('number("12") + 1') == "13"
    assert value('number(" 2.5 ") * 2') == "5"
    assert value("number(DataSet.PatientWeight)") == "null"  # missing
    assert value("number(DataSet.PatientID)", DataSet__PatientID="") == "null"  # empty
    assert value("number(DataSet.PatientID, 0)", DataSet__PatientID="") == "0"
    assert value('number("n/a", -1)') == "-1"
    assert value('number(split("1,x,3", ","), 0)') == '[1, 0, 3]'  # each value of several


def test_number_of_text_that_is_no_number_is_an_error_without_a_default():
    decision = evaluate('rule "r" { then { log number(DataSet.PatientID)\n route to A } }', DataSet__PatientID="N/A")
    assert decision.outcome == "quarantine" and "'N/A' is not a number" in decision.reason


# ---- hash() options ------------------------------------------------------------------------

@pytest.mark.parametrize("arguments,pattern", [
    ("", r"[0-9A-F]{16}"),
    (", 8", r"[0-9A-F]{8}"),
    (", 64", r"[0-9A-F]{64}"),
    (', 10, "decimal"', r"[0-9]{10}"),
    (', 77, "decimal"', r"[0-9]{77}"),
    (', 26, "base32"', r"[A-Z2-7]{26}"),
    (', 12, "hex"', r"[0-9A-F]{12}"),
])
def test_hash_lengths_and_alphabets(arguments, pattern):
    result = value(f"hash(DataSet.PatientID{arguments})", DataSet__PatientID="12345")
    assert re.fullmatch(pattern, result), result
    assert result == value(f"hash(DataSet.PatientID{arguments})", DataSet__PatientID="12345")  # stable
    assert result != value(f"hash(DataSet.PatientID{arguments})", DataSet__PatientID="12346")


def test_hash_options_keep_null_and_empty():
    assert value('hash(DataSet.PatientID, 10, "decimal")') == "null"
    assert value('hash(DataSet.PatientID, 10, "decimal")', DataSet__PatientID="") == ""
    assert value("hash(DataSet.PatientID, 8)") == value("substr(hash(DataSet.PatientID), 1, 8)") == "null"
    # the default stays what it always was: the first 16 hex digits
    assert value("hash(DataSet.PatientID, 8)", DataSet__PatientID="x") == \
        value("substr(hash(DataSet.PatientID), 1, 8)", DataSet__PatientID="x")


@pytest.mark.parametrize("expression,code,words", [
    ("hash(DataSet.PatientID, 65)", "bad-value", "1 to 64"),
    ('hash(DataSet.PatientID, 0, "decimal")', "bad-value", "1 to 77"),
    ('hash(DataSet.PatientID, 53, "base32")', "bad-value", "1 to 52"),
    ('hash(DataSet.PatientID, 10, "base64")', "bad-value", '"decimal"'),
    ("hash(DataSet.PatientID, 10, DataSet.Modality)", "bad-value", "written as a string"),
    ('hash(DataSet.PatientID, "10")', "bad-value", '"10"'),
    ("hash(DataSet.PatientID, DataSet.PatientName)", "type-mismatch", "number"),
    ('hash(DataSet.PatientID, 1, "hex", 2)', "arity", "1 to 3"),
])
def test_hash_option_findings(expression, code, words):
    found = errors(expression)
    assert found and found[0].code == code, [d.one_line() for d in found]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()


def test_a_computed_hash_length_is_checked_at_run_time():
    decision = evaluate('rule "r" { then { log hash(DataSet.PatientID, DataSet.Rows)\n route to A } }',
                        DataSet__PatientID="x", DataSet__Rows=100)
    assert decision.outcome == "quarantine" and "1 to 64" in decision.reason


# ---- hash_int() ----------------------------------------------------------------------------

def test_hash_int_is_a_keyed_whole_number_in_the_range():
    seen = {int(value("hash_int(DataSet.PatientID, -3, 3)", DataSet__PatientID=f"P{i}")) for i in range(200)}
    assert seen == set(range(-3, 4))
    one = value("hash_int(DataSet.PatientID, -30, 30)", DataSet__PatientID="P1")
    assert one == value("hash_int(DataSet.PatientID, -30, 30)", DataSet__PatientID="P1")
    assert value("hash_int(DataSet.PatientID, 5, 5)", DataSet__PatientID="P1") == "5"


def test_hash_int_depends_on_the_key():
    import rulesengine
    from rulesengine import Document
    source = 'rule "r" { then { log hash_int(DataSet.PatientID, 0, 1000000)\n route to A } }'
    results = set()
    for key in (b"one", b"two"):
        ruleset = rulesengine.compile_source(source, secrets=Secrets(hash_key=key))
        document = Document()
        document.set("DataSet.PatientID", "P1")
        results.add(ruleset.evaluate(document).log[0].message)
    assert len(results) == 2


def test_hash_int_of_null_and_empty_is_null():
    assert value("hash_int(DataSet.PatientID, -30, 30)") == "null"
    assert value("hash_int(DataSet.PatientID, -30, 30)", DataSet__PatientID="") == "null"
    assert value("shift_date(DataSet.StudyDate, hash_int(DataSet.PatientID, -30, 30))",
                 DataSet__StudyDate="20240101") == "null"


def test_a_per_patient_date_shift():
    shifted = {value("days_between(DataSet.StudyDate, shift_date(DataSet.StudyDate, "
                     "hash_int(DataSet.PatientID, -30, 30)))", DataSet__PatientID="P7", DataSet__StudyDate=date)
               for date in ("20240101", "20240615", "20191231")}
    assert len(shifted) == 1 and -30 <= int(shifted.pop()) <= 30  # the same shift for every study


@pytest.mark.parametrize("expression,code,words", [
    ("hash_int(DataSet.PatientID, 30, -30)", "bad-value", "is empty"),
    ("hash_int(DataSet.PatientID, 0.5, 3)", "type-mismatch", "whole number"),
    ('hash_int(DataSet.PatientID, "0", 3)', "type-mismatch", "whole number"),
    ("hash_int(DataSet.PatientID, DataSet.PatientName, 3)", "type-mismatch", "must be a number"),
    ("hash_int(DataSet.PatientID, 3)", "arity", "3 arguments"),
])
def test_hash_int_findings(expression, code, words):
    found = errors(expression)
    assert found and found[0].code == code, [d.one_line() for d in found]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()


# ---- days_between() and age() --------------------------------------------------------------

def test_days_between_dates():
    assert value('days_between("20240101", "20240301")') == "60"
    assert value('days_between("20240301", "20240101")') == "-60"
    assert value('days_between("20240101", "20240102120000")') == "1"  # a DT counts by its date
    assert value('days_between(DataSet.StudyDate, "20240101")') == "null"
    assert value('days_between(DataSet.StudyDate, "20240101")', DataSet__StudyDate="") == "null"
    assert value('days_between(DataSet.StudyDate, "20240101")', DataSet__StudyDate="20240101") == "0"


@pytest.mark.parametrize("birth,on,age", [
    ("19800515", "20240101", "043Y"),
    ("19800101", "20240101", "044Y"),
    ("20000229", "20240228", "023Y"),
    ("20230515", "20240514", "011M"),
    ("20231231", "20240131", "001M"),
    ("20240101", "20240115", "002W"),
    ("20240101", "20240107", "006D"),
    ("20240101", "20240101", "000D"),
    ("18000101", "20240101", "224Y"),
    ("00010101", "20240101", "999Y"),
    ("20240102", "20240101", "null"),
])
def test_age_in_the_dicom_as_form(birth, on, age):
    assert value(f'age("{birth}", "{on}")') == age


def test_age_of_what_is_no_date_is_null():
    assert value('age(DataSet.PatientID, "20240101")', DataSet__PatientID="2024") == "null"
    assert value('age(DataSet.PatientBirthDate, "20240101")') == "null"
    assert value('age(DataSet.PatientBirthDate, "20240101")', DataSet__PatientBirthDate="") == "null"


def test_age_writes_an_as_element():
    decision = evaluate('rule "r" { then { set DataSet.PatientAge = age(DataSet.PatientBirthDate, DataSet.StudyDate)\n'
                        ' route to A } }', DataSet__PatientBirthDate="19800515", DataSet__StudyDate="20240101")
    assert decision.destinations["A"].get("DataSet.PatientAge") == "043Y"


@pytest.mark.parametrize("expression,code,words", [
    ("days_between(DataSet.StudyDate, 5)", "type-mismatch", "dates"),
    ("age(DataSet.PatientBirthDate, DataSet.StudyTime)", "type-mismatch", "dates"),
    ("days_between(DataSet.StudyDate, DataSet.CalibrationDate)", "type-mismatch", "[n]"),
    ('days_between(DataSet.StudyDate, "2024-01-01")', "bad-value", "DA"),
    ("age(DataSet.PatientBirthDate)", "arity", "2 arguments"),
])
def test_date_function_findings(expression, code, words):
    found = errors(expression)
    assert found and found[0].code == code, [d.one_line() for d in found]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()


# ---- pad() ---------------------------------------------------------------------------------

def test_pad():
    assert value('pad("42", 6)') == "000042"
    assert value('pad("42", 4, " ")') == "  42"
    assert value('pad("1234567", 4)') == "1234567"
    assert value("pad(DataSet.PatientID, 4)") == "null"
    assert value("pad(DataSet.PatientID, 4)", DataSet__PatientID="") == "0000"
    assert value('pad(split("1,22", ","), 3)') == '["001", "022"]'


@pytest.mark.parametrize("expression,code,words", [
    ('pad("1", 4, "ab")', "bad-value", "one character"),
    ('pad("1", "4")', "type-mismatch", "number"),
    ('pad("1")', "arity", "2 to 3"),
])
def test_pad_findings(expression, code, words):
    found = errors(expression)
    assert found and found[0].code == code, [d.one_line() for d in found]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()


# ---- [n] on values ---------------------------------------------------------------------------

def test_an_index_on_values():
    assert value('split("DOE^JOHN^Q", "^")[2]') == "JOHN"
    assert value('split("1.2.840.113619", ".")[-1]') == "113619"
    assert value('split("a,b", ",")[3]') == "null"
    assert value('split("a,b", ",")[-3]') == "null"
    assert value('split(DataSet.PatientID, "^")[1]') == "null"  # missing
    assert value('split(DataSet.PatientID, "^")[1]', DataSet__PatientID="") == ""  # empty: one empty value
    assert value('lower("ONE")[1]') == "one"  # one value is value 1


def test_a_computed_index():
    types = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert value("(DataSet.ImageType)[len(DataSet.ImageType)]", DataSet__ImageType=types) == "AXIAL"
    assert value("(DataSet.ImageType)[DataSet.Rows - 1]", DataSet__ImageType=types, DataSet__Rows=3) == "PRIMARY"
    assert value("(DataSet.ImageType)[DataSet.Rows]", DataSet__ImageType=types) == "null"  # missing index
    decision = evaluate('rule "r" { then { let parts = split(DataSet.PatientID, "-")\n'
                        ' set DataSet.PatientID = parts[2] + parts[1]\n route to A } }', DataSet__PatientID="AB-12")
    assert decision.destinations["A"].get("DataSet.PatientID") == "12AB"


def test_index_zero_at_run_time():
    decision = evaluate('rule "r" { then { log (DataSet.ImageType)[DataSet.Rows]\n route to A } }',
                        DataSet__ImageType=["A"], DataSet__Rows=0)
    assert decision.outcome == "quarantine" and "numbered from 1" in decision.reason


@pytest.mark.parametrize("expression,code,words", [
    ('split("a,b", ",")[0]', "bad-index", "numbered from 1"),
    ('split("a,b", ",")[1.5]', "bad-index", "whole number"),
    ('split("a,b", ",")["1"]', "bad-index", "whole number"),
    ('split("a,b", ",")[DataSet.PatientID]', "type-mismatch", "one number"),
    ("(DataSet.ScheduledProcedureStepSequence)[1]", "type-mismatch", "DataSet.Seq[1]"),
])
def test_index_findings(expression, code, words):
    found = errors(expression)
    assert found and found[0].code == code, [d.one_line() for d in found]
    assert words in found[0].message + " " + (found[0].hint or ""), found[0].one_line()
