"""Regular expressions run in linear time (RE2): a pattern a rule file writes cannot be
turned against the router by the values a sender chooses, and what RE2 cannot do is a
lint error with its reason and position, never a surprise at run time."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Arrival, Document
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program
from rulesengine.lang.regex import RegexError, compile_regex

from helpers.cli import dicom_rules
from helpers.files import write

# Against 31 characters a backtracking engine takes about 33 s for this pattern, and
# doubles with every character more; RE2 takes microseconds for 10,000.
PATHOLOGICAL = 'rule "evil" {\n  when DataSet.PatientID matches /^(a+)+$/\n  then reject "no"\n}\n' \
               'rule "rest" {\n  then route to PACS\n}\n'
LONG_ALMOST = "a" * 9_999 + "!"


def regexes_of(source: str) -> list:
    analysis = analyse(load_program(text=source))
    assert not analysis.errors, analysis.errors
    return list(analysis.regexes.values())


def test_every_compiled_regex_is_an_re2_pattern():
    source = PATHOLOGICAL + 'rule "r" {\n  then set DataSet.PatientName = replace(DataSet.PatientName, /(a+)+b/, "x")\n}\n'
    found = regexes_of(source)
    assert len(found) == 2
    for regex in found:
        assert type(regex.compiled).__module__ == "re2", type(regex.compiled)


@pytest.mark.parametrize("trace", [False, True], ids=["fast", "traced"])
def test_the_pathological_pattern_against_a_long_value_completes(trace):
    ruleset = rulesengine.compile_source(PATHOLOGICAL)
    assert type(ruleset.analysis.regexes[next(iter(ruleset.analysis.regexes))].compiled).__module__ == "re2"
    document = Document(arrival=Arrival(calling_aet="CT1"))
    document.set("DataSet.PatientID", "a" * 63 + "!")  # LO holds 64 characters
    decision = ruleset.evaluate(document, trace=trace)
    assert decision.outcome == "route" and list(decision.destinations) == ["PACS"]
    document.set("DataSet.PatientID", "a" * 64)
    assert ruleset.evaluate(document, trace=trace).outcome == "reject"


def test_a_value_of_10000_characters_is_matched_and_replaced():
    regex = compile_regex("^(a+)+$")
    assert not regex.found(LONG_ALMOST)
    assert regex.found("a" * 10_000)
    nested = compile_regex("(a|aa)+b")
    assert nested.sub("x", LONG_ALMOST) == LONG_ALMOST
    assert compile_regex("(x+x+)+y").sub("-", "x" * 10_000 + "y") == "-"


def test_a_long_text_element_through_replace_in_a_rule():
    ruleset = rulesengine.compile_source(
        'rule "r" {\n  then {\n    set DataSet.StudyComments = replace(DataSet.StudyComments, /(a+)+$/, "<\\\\1>")\n'
        '    route to A\n  }\n}\n')
    document = Document()
    document.set("DataSet.StudyComments", "b" + "a" * 10_000)  # LT holds 10,240 characters
    decision = ruleset.evaluate(document)
    assert decision.error is None
    assert document.get("DataSet.StudyComments") == "b<" + "a" * 10_000 + ">"


# (pattern, words of the message, the construct the finding points at)
UNSUPPORTED = [
    (r"^(\d+)-\1$", "backreference \\1", r"\1"),
    (r"(?P<id>\d+)-(?P=id)", "backreference (?P=name)", "(?P="),
    (r"^H(?=1)", "lookahead", "(?="),
    (r"^H(?!1)", "negative lookahead", "(?!"),
    (r"(?<=H)1", "lookbehind", "(?<="),
    (r"(?<!H)1", "negative lookbehind", "(?<!"),
    (r"(?>a+)b", "atomic group", "(?>"),
    (r"a++b", "possessive quantifier ++", "++"),
    (r"a{2}+b", "possessive quantifier {2}+", "{2}+"),
    (r"(a)?(?(1)b|c)", "conditional", "(?("),
    (r"x\12", "backreference \\12", r"\12"),
    (r"a{,3}", "{,n}", "{,3}"),
    (r"a\/b(?=c)", "lookahead", "(?="),  # columns count the \/ as written
]
RULE_PREFIX = 'rule "r" { when DataSet.PatientID matches /'


@pytest.mark.parametrize("pattern, words, construct", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_what_re2_lacks_is_a_lint_error_with_its_reason_and_position(pattern, words, construct):
    source = f'{RULE_PREFIX}{pattern}/ then drop }}'
    findings = [d for d in analyse(load_program(text=source, filename="t.rules")).diagnostics if d.is_error]
    assert len(findings) == 1, findings
    finding = findings[0]
    assert finding.code == "bad-regex"
    assert words in finding.message
    assert "linear" in finding.message or finding.hint
    column = len(RULE_PREFIX) + pattern.index(construct) + 1
    assert (finding.span.file, finding.span.line, finding.span.column) == ("t.rules", 1, column)


def test_lint_reports_a_backreference_on_the_command_line_without_noise(run_in):
    write(run_in / "backref.rules", 'rule "twice" {\n  when DataSet.PatientID matches /^(\\d+)-\\1$/\n'
          '  then drop\n}\n')
    result = dicom_rules("lint", "backref.rules")
    assert result.returncode == 1
    assert "backref.rules:2:42: error bad-regex bad regular expression: a backreference \\1 is not supported" \
        in result.stdout
    assert "re2.cc" not in result.stderr  # RE2 logs nothing of its own
    assert "1 error," in result.stderr


def test_a_bad_pattern_is_located_where_written():
    source = 'rule "r" { when DataSet.PatientID matches /ab(c/ then drop }'
    finding = next(d for d in analyse(load_program(text=source)).diagnostics if d.code == "bad-regex")
    assert "missing )" in finding.message


@pytest.mark.parametrize("replacement, words", [
    ("\\\\3", "refers to group 3; the pattern has 2 groups"),
    ("\\\\g<nobody>", "no group named 'nobody'"),
    ("\\\\q", "unknown escape \\q"),
])
def test_a_replacement_naming_a_missing_group_is_a_lint_error(replacement, words):
    source = f'rule "r" {{ then set DataSet.PatientName = replace(DataSet.PatientName, /(\\w+) (\\w+)/, "{replacement}") }}'
    findings = [d for d in analyse(load_program(text=source)).diagnostics if d.is_error]
    assert [d.code for d in findings] == ["bad-regex"], findings
    assert words in findings[0].message


def test_a_computed_replacement_naming_a_missing_group_quarantines_at_run_time():
    ruleset = rulesengine.compile_source(
        'rule "r" {\n  then {\n    set DataSet.PatientName = replace(DataSet.PatientName, /(\\w+)/, DataSet.PatientID)\n'
        '    route to A\n  }\n}\n')
    document = Document()
    document.set("DataSet.PatientName", "DOE")
    document.set("DataSet.PatientID", "\\2")
    decision = ruleset.evaluate(document)
    assert decision.outcome == "quarantine"
    assert "refers to group 2" in decision.error


# ---- the semantics the language documents ---------------------------------------------------

@pytest.mark.parametrize("pattern, flags, text, expected", [
    ("^ct$", "i", "CT", True),
    ("^ct$", "", "CT", False),
    ("^b$", "m", "a\nb", True),
    ("^b$", "", "a\nb", False),
    ("a.b", "s", "a\nb", True),
    ("a.b", "", "a\nb", False),
    ("^ [0-9]{3} - [0-9]{2} $  # an id", "x", "123-45", True),
    ("^[ ]a$", "x", " a", True),          # spaces in a class stay
    ("^a\\ b$", "x", "a b", True),        # an escaped space stays
    ("^\\d+$", "", "123", True),
    ("^\\d+$", "", "\u0661\u0662", False),  # \d is ASCII ...
    ("^\\p{Nd}+$", "", "\u0661\u0662", True),  # ... \p{Nd} is any digit
    ("^\\pL+$", "", "Genève", True),
    ("^[[:alpha:]]+$", "", "abc", True),
    ("^gen[eè]ve$", "i", "GENÈVE", True),  # case folding beyond ASCII
    ("^(?P<a>x)(?<b>y)$", "", "xy", True),
    ("a\\z", "", "ba", True),
    ("\\x{00E9}", "", "é", True),
])
def test_documented_syntax_and_flags(pattern, flags, text, expected):
    assert compile_regex(pattern, flags).found(text) is expected


def test_replace_keeps_text_beyond_ascii_and_expands_groups():
    regex = compile_regex(r"(?P<last>\pL+)\^(\pL+)")
    assert regex.sub(r"\2 \g<last> \g<1> \\", "MÜLLER^RENÉ") == "RENÉ MÜLLER MÜLLER \\"
    assert compile_regex("(a)|b").sub(r"[\1]", "ab") == "[a][]"  # a group that took no part is empty
    with pytest.raises(RegexError):
        compile_regex("(a)").sub(r"\2", "a")


def test_a_multi_valued_element_matches_when_one_value_does(ct_document):
    ruleset = rulesengine.compile_source('rule "r" { when DataSet.ImageType matches /^AX(IAL)?$/ then route to A }')
    assert list(ruleset.evaluate(ct_document).destinations) == ["A"]
