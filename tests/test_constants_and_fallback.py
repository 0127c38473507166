"""Named constants (`const NAME = LITERAL`) and the fallback rule (`fallback rule "..."`)."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Document
from rulesengine.lang.api import analyse
from rulesengine.lang.formatter import format_source
from rulesengine.lang.loader import load_program
from rulesengine.ruletest import load_suite, run_suite

from helpers.evaluation import evaluate


def findings(source: str):
    return analyse(load_program(text=source, filename="t.rules")).diagnostics


def codes(source: str) -> list[str]:
    return [d.code for d in findings(source)]


# ---- constants: semantics ------------------------------------------------------------

CONSTANTS = '''
const SITES = ["NORTH", "SOUTH"]
const DATE_SHIFT = -30
const PSEUDONYM = "ANON"
rule "r" {
  when DataSet.InstitutionName in SITES
  then {
    set DataSet.PatientName = PSEUDONYM
    set DataSet.StudyDate = shift_date(DataSet.StudyDate, DATE_SHIFT)
    route to A
  }
}
rule "rest" { then route to B }
'''


def test_a_constant_is_used_where_its_literal_would_be():
    decision = evaluate(CONSTANTS, DataSet__InstitutionName="SOUTH", DataSet__StudyDate="20240131")
    document = decision.destinations["A"]
    assert document.get("DataSet.PatientName") == "ANON"
    assert document.get("DataSet.StudyDate") == "20240101"


def test_constants_with_missing_empty_and_multi_valued_elements():
    assert "B" in evaluate(CONSTANTS).destinations  # missing: `in` is false
    assert "B" in evaluate(CONSTANTS, DataSet__InstitutionName="").destinations
    decision = evaluate(CONSTANTS, DataSet__InstitutionName="NORTH")
    assert decision.destinations["A"].get("DataSet.StudyDate") == ""  # shift_date(null) is null: set empties
    source = 'const TYPES = ["ORIGINAL", "PRIMARY"]\nrule "r" { when DataSet.ImageType == TYPES then route to A }'
    assert "A" in evaluate(source, DataSet__ImageType=["ORIGINAL", "PRIMARY"]).destinations


def test_an_imported_files_constants_serve_its_own_blocks(tmp_path):
    (tmp_path / "lib.rules").write_text('const MARK = "LIB"\nblock mark { set DataSet.PatientComments = MARK }\n')
    main = tmp_path / "main.rules"
    main.write_text('import "lib.rules" as lib\nconst MARK = "MAIN"\n'
                    'rule "r" { then { apply lib.mark\n set DataSet.StudyDescription = MARK\n route to A } }\n')
    ruleset = rulesengine.compile_file(str(main))
    document = ruleset.evaluate(Document()).destinations["A"]
    assert document.get("DataSet.PatientComments") == "LIB"
    assert document.get("DataSet.StudyDescription") == "MAIN"


# ---- constants: findings ---------------------------------------------------------------

@pytest.mark.parametrize("source,code,words", [
    ('const A = DataSet.PatientID\nrule "r" { then route to A }', "bad-constant", "a string, a number"),
    ('const A = lower("x")\nrule "r" { then route to X }', "bad-constant", "list of those"),
    ('const A = 1\nconst A = 2\nrule "r" { then route to X }', "duplicate-name", "twice"),
    ('const b = 1\nblock b { delete private }\nrule "r" { then route to X }', "duplicate-name", "twice"),
    ('const D = "yesterday"\nrule "r" { then { set DataSet.StudyDate = D\n route to X } }', "bad-value",
     "constant D"),
    ('const D = "2024-01-01"\nrule "r" { when DataSet.StudyDate < D then route to X }', "bad-value", "constant D"),
    ('const N = "512"\nrule "r" { when DataSet.Rows == N then route to X }', "type-mismatch", "constant N"),
    ('const X = 1\nrule "r" { then { let X = 2\n route to Y } }', "duplicate-name", "already"),
])
def test_constant_findings(source, code, words):
    matching = [d for d in findings(source) if d.code == code]
    assert matching, [d.one_line() for d in findings(source)]
    assert words in matching[0].message + " " + (matching[0].hint or ""), matching[0].one_line()


def test_a_bad_constant_is_reported_once_at_its_definition():
    found = findings('const A = DataSet.PatientID\nrule "r" { then { set DataSet.PatientName = A\n route to X } }')
    assert [(d.code, d.span.line) for d in found if d.is_error] == [("bad-constant", 1)]


def test_const_and_fallback_are_keywords():
    assert "syntax" in codes('rule "r" { then route to fallback }')
    assert "syntax" in codes('rule "r" { then { let const = 1\n route to X } }')


# ---- the fallback rule -----------------------------------------------------------------

FALLBACK = '''
rule "ct" { when DataSet.Modality == "CT" then route to PACS }
rule "junk" { when DataSet.Modality == "OT" then drop }
rule "halt" { when DataSet.Modality == "XX" then stop }
fallback rule "unrouted" { when exists DataSet.Modality then route to ARCHIVE }
'''


def fired(decision) -> list[str]:
    return [rule.name for rule in decision.rules_fired]


def test_the_fallback_runs_only_when_nothing_was_decided():
    decision = evaluate(FALLBACK, DataSet__Modality="CT")
    assert list(decision.destinations) == ["PACS"] and fired(decision) == ["ct"]
    decision = evaluate(FALLBACK, DataSet__Modality="OT")
    assert decision.outcome == "drop" and fired(decision) == ["junk"]
    decision = evaluate(FALLBACK, DataSet__Modality="MR")
    assert list(decision.destinations) == ["ARCHIVE"] and fired(decision) == ["unrouted"]
    decision = evaluate(FALLBACK, DataSet__Modality="XX")  # stop ends the rules, not the fallback
    assert list(decision.destinations) == ["ARCHIVE"] and fired(decision) == ["halt", "unrouted"]


def test_a_fallback_that_does_not_match_leaves_the_no_destination_policy():
    decision = evaluate(FALLBACK)  # missing Modality: the fallback's condition is false
    assert decision.outcome == "quarantine" and decision.unrouted and fired(decision) == []
    decision = evaluate(FALLBACK, DataSet__Modality="")  # empty: exists is true
    assert list(decision.destinations) == ["ARCHIVE"]


def test_the_fallback_runs_after_the_rules_wherever_it_is_written():
    source = ('fallback rule "f" { then { set DataSet.PatientComments = "fallback"\n route to F } }\n'
              'rule "r" { when DataSet.ImageType == "ORIGINAL" then route to A }\n')
    assert list(evaluate(source, DataSet__ImageType="ORIGINAL").destinations) == ["A"]
    document = evaluate(source, DataSet__ImageType=["ORIGINAL", "PRIMARY"]).destinations["F"]  # not == one value
    assert document.get("DataSet.PatientComments") == "fallback"


def test_a_fallback_for_requests():
    source = ('rule "find" on C-FIND { when DataSet.Modality == "CT" then route to PACS }\n'
              'fallback rule "other finds" on C-FIND { then route to ARCHIVE }\n'
              'rule "store" { then route to PACS }\n')
    ruleset = rulesengine.compile_source(source)
    document = Document()
    document.set("DataSet.Modality", "MR")
    assert list(ruleset.evaluate(document, message="C-FIND").destinations) == ["ARCHIVE"]
    assert list(ruleset.evaluate(Document()).destinations) == ["PACS"]


def test_one_fallback_per_message():
    source = 'fallback rule "a" { then route to A }\nfallback rule "b" { then route to B }\n'
    assert "duplicate-fallback" in codes(source)
    source = 'fallback rule "a" { then route to A }\nfallback rule "b" on C-FIND { then route to B }\n'
    assert "duplicate-fallback" not in codes(source)


def test_lint_counts_the_fallback_as_a_destination():
    routed = 'rule "ct" { when DataSet.Modality == "CT" then route to A }\n'
    assert "no-destination" in codes(routed)
    assert "no-destination" not in codes(routed + 'fallback rule "f" { then route to B }\n')
    assert "no-destination" in codes(routed + 'fallback rule "f" { when DataSet.Rows > 1 then route to B }\n')
    stop = 'rule "s" { when DataSet.Modality == "XX" then stop }\nfallback rule "f" { then route to B }\n'
    assert "no-destination" not in codes(stop)
    # written first, it neither makes the rules after it unreachable nor shadows them
    assert codes('fallback rule "f" { then drop }\n' + routed) == []


def test_expect_fired_names_the_fallback(tmp_path):
    (tmp_path / "main.rules").write_text(FALLBACK)
    (tmp_path / "main_test.rules").write_text(
        'test "unrouted" {\n  given DataSet.Modality = "MR"\n  expect route to ARCHIVE\n  expect fired "unrouted"\n}\n'
        'test "routed" {\n  given DataSet.Modality = "CT"\n  expect not fired "unrouted"\n}\n')
    suite = load_suite(str(tmp_path / "main_test.rules"))
    assert not [d for d in suite.diagnostics if d.is_error]
    results = run_suite(suite, None)
    assert len(results) == 2 and all(result.passed for result in results), results


def test_fmt_prints_constants_together_and_the_fallback_keyword():
    source = ('const A = 1\n\n\nconst B = [ "x","y" ]\nconst C = -7\nfallback   rule "f" on C-FIND {\nthen route to X }\n')
    expected = ('const A = 1\nconst B = ["x", "y"]\nconst C = -7\n\n'
                'fallback rule "f" on C-FIND {\n  then route to X\n}\n')
    assert format_source(source) == expected
    assert format_source(expected) == expected


def test_a_test_file_names_the_constants_of_its_rule_file(tmp_path):
    (tmp_path / "main.rules").write_text(CONSTANTS)
    (tmp_path / "main_test.rules").write_text(
        'test "shifted" {\n  given DataSet.InstitutionName = "NORTH", DataSet.StudyDate = "20240131"\n'
        '  expect DataSet.PatientName == PSEUDONYM\n'
        '  expect DataSet.StudyDate == shift_date("20240131", DATE_SHIFT)\n'
        '  expect DataSet.InstitutionName in SITES\n}\n'
        'test "wrong" {\n  given DataSet.InstitutionName = "EAST"\n  expect DataSet.PatientName == PSEUDONYM\n}\n')
    suite = load_suite(str(tmp_path / "main_test.rules"))
    assert not [d for d in suite.diagnostics if d.is_error]
    results = run_suite(suite, None)
    assert [result.passed for result in results] == [True, False]
