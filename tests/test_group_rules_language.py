"""Group rules (`rule "..." per series|study { ... }`), the language side: the syntax, the
checks (with file:line:col), the formatter and the router's refusal until it runs them."""

from __future__ import annotations

import pytest
from helpers.files import write

from rulesengine.diagnostics import RulesError
from rulesengine.lang import nodes as n
from rulesengine.lang.api import check_file, compile_source
from rulesengine.lang.formatter import format_source
from rulesengine.lang.groups import quiet_seconds
from rulesengine.lang.highlight import lexemes
from rulesengine.lang.syntax import parse

PLAN_EXAMPLE = '''rule "AI: brain MR with two series" per study {
  complete after 10m  # quiet time since the group's last arrival
  complete when any(DataSet.SeriesDescription matches /Axial T2/)
    and any(DataSet.SeriesDescription matches /Sag T1/)
  late refire
  when DataSet.Modality == "MR" and count() >= 20
  then route to AI
}
'''


def findings(tmp_path, text: str, name: str = "main.rules") -> list[tuple[str, int, int, str]]:
    """(code, line, column, message) of each finding of a rule file."""
    path = write(tmp_path / name, text)
    return [(d.code, d.span.line if d.span else 0, d.span.column if d.span else 0, d.message)
            for d in check_file(path)]


def errors(tmp_path, text: str) -> list[tuple[str, int, int, str]]:
    path = write(tmp_path / "main.rules", text)
    return [(d.code, d.span.line, d.span.column, d.message) for d in check_file(path) if d.is_error]


# ---- syntax ---------------------------------------------------------------------------------


def test_the_plan_example_parses_into_a_group_rule_with_its_clauses_in_order():
    rule = parse(PLAN_EXAMPLE, "main.rules").rules[0]
    assert rule.is_group and rule.level.value == "study"
    assert [type(c).__name__ for c in rule.clauses] == ["CompleteAfter", "CompleteWhen", "LatePolicy"]
    assert rule.clause(n.CompleteAfter).text == "10m"
    assert rule.clause(n.LatePolicy).policy.value == "refire"
    complete = rule.clause(n.CompleteWhen).condition
    assert [(a.kind, a.span.line, a.span.column) for a in complete.operands] == [("any", 3, 17), ("any", 4, 9)]
    count = rule.when.operands[1].left
    assert isinstance(count, n.Aggregate) and (count.kind, count.argument) == ("count", None)


def test_the_words_of_group_rules_stay_free_as_names_elsewhere():
    ruleset = compile_source('rule "r" {\n  when DataSet.Modality == "CT"\n  then {\n    let per = "a"\n'
                             '    let complete = per + "b"\n    let late = complete\n    let after = late\n'
                             '    log after\n    route to X\n  }\n}\n')
    assert ruleset.group_rules == ()


def test_highlighting_shows_the_group_words_as_keywords_and_the_duration_as_a_number():
    kinds = {lexeme.text: lexeme.kind for lexeme in lexemes(PLAN_EXAMPLE)}
    assert [kinds[w] for w in ("per", "complete", "after", "late", "any")] == ["keyword"] * 5
    assert kinds["10m"] == "number" and kinds["count"] == "name" and kinds["refire"] == "name"


# ---- checks -------------------------------------------------------------------------------------


def test_the_plan_example_has_no_findings(tmp_path):
    assert findings(tmp_path, PLAN_EXAMPLE) == []


def test_an_aggregate_outside_a_group_rule_is_an_error_at_its_name(tmp_path):
    text = 'rule "r" {\n  when DataSet.Modality == "MR" and count() > 2\n  then route to X\n}\n'
    assert errors(tmp_path, text) == [
        ("aggregate-outside-group", 2, 37, "count() reads the instances of a group: it is for group rules only, "
                                           "not an instance rule")]
    block = 'block b {\n  if any(DataSet.Rows > 1) {\n    set DataSet.PatientID = "x"\n  }\n}\n'
    assert [e[:3] for e in errors(tmp_path, block)] == [("aggregate-outside-group", 2, 6)]


def test_reject_in_a_group_rule_is_an_error(tmp_path):
    text = 'rule "g" per series {\n  when count() > 1\n  then reject "no"\n}\n'
    assert [e[:3] for e in errors(tmp_path, text)] == [("group-reject", 3, 8)]


@pytest.mark.parametrize("clause, word", [("complete after 5m", "complete after"),
                                          ("complete when DataSet.Rows > 1", "complete when"),
                                          ("late drop", "late")])
def test_group_clauses_in_an_instance_rule_are_errors(tmp_path, clause, word):
    text = f'rule "r" {{\n  {clause}\n  then route to X\n}}\n'
    assert errors(tmp_path, text) == [("group-clause", 2, 3, f"{word} is for group rules only")]


@pytest.mark.parametrize("duration, message", [
    ("10", "10: a duration needs its unit (s, m, h or d)"),
    ("10w", "unknown unit 'w' in 10w: write s, m, h or d"),
    ("0s", "complete after 0s would fire each group at its first instance; write at least 1s (or complete when "
           "CONDITION)"),
    ("0.0m", "complete after 0.0m would fire each group at its first instance; write at least 1s (or complete "
             "when CONDITION)"),
    ("31d", "complete after 31d is longer than 30d: a group's instances wait in the spool until it fires"),
    ("9" * 400 + "d", f"complete after {'9' * 400}d is longer than 30d: a group's instances wait in the spool "
                      "until it fires"),
])
def test_bad_durations_are_errors_at_the_duration(tmp_path, duration, message):
    text = f'rule "g" per study {{\n  complete after {duration}\n  then route to X\n}}\n'
    assert errors(tmp_path, text) == [("bad-duration", 2, 18, message)]


def test_durations_in_each_unit():
    assert [quiet_seconds(text) for text in ("90s", "10m", "1.5h", "2d", "30d")] == [
        90, 600, 5400, 172800, 2592000]


def test_per_patient_and_a_misspelt_late_policy_are_named_with_their_position(tmp_path):
    text = 'rule "g" per patient {\n  then route to X\n}\nrule "h" per serie {\n  late quarantien\n  then route to X\n}\n'
    assert errors(tmp_path, text) == [
        ("unknown-group-level", 1, 14, "unknown group level 'patient': a group rule is per series or per study"),
        ("unknown-group-level", 4, 14, "unknown group level 'serie': a group rule is per series or per study"),
        ("unknown-late-policy", 5, 8, "unknown late policy 'quarantien': late refire, quarantine, drop")]
    assert [d.hint for d in check_file(write(tmp_path / "main.rules", text)) if d.is_error][1:] == [
        "did you mean per series?", "did you mean late quarantine?"]


def test_an_aggregate_nested_in_an_aggregate_is_an_error(tmp_path):
    text = 'rule "g" per study {\n  when any(count() > 2)\n  then route to X\n}\n'
    assert errors(tmp_path, text) == [
        ("nested-aggregate", 2, 12, "count() inside another aggregate: an aggregate's argument reads one instance "
                                    "at a time")]


def test_paths_inside_aggregates_are_checked_against_the_dictionary(tmp_path):
    text = ('rule "g" per study {\n  complete when any(DataSet.SeriesDescripton matches /T2/)\n'
            '  when distinct(DataSet.Modality) contains "MR" and all(DataSet.Rows == "x")\n  then route to X\n}\n')
    found = errors(tmp_path, text)
    assert [f[:3] for f in found] == [("unknown-keyword", 2, 29), ("type-mismatch", 3, 73)]
    assert "SeriesDescripton" in found[0][3]


def test_distinct_takes_a_path_and_count_a_condition(tmp_path):
    text = ('rule "g" per study {\n  when count(DataSet.Rows) > 1 and "a" in distinct("a")\n'
            '  then route to X\n}\n')
    assert [e[:3] for e in errors(tmp_path, text)] == [("not-a-condition", 2, 14), ("type-mismatch", 2, 52)]


@pytest.mark.parametrize("header, code", [('rule "g" on C-FIND per study', "group-rule-message"),
                                          ('fallback rule "g" per study', "group-rule-fallback")])
def test_group_rules_on_requests_or_as_fallback_are_refused(tmp_path, header, code):
    assert [e[0] for e in errors(tmp_path, f'{header} {{\n  then route to X\n}}\n')] == [code]


def test_a_clause_written_twice_is_an_error(tmp_path):
    text = 'rule "g" per series {\n  late drop\n  complete after 1m\n  late refire\n  then route to X\n}\n'
    assert errors(tmp_path, text) == [("duplicate-clause", 4, 3, "late is written twice (line 2)")]


def test_lint_says_a_study_rule_reads_a_series_attribute_of_its_first_instance_only(tmp_path):
    text = ('rule "g" per study {\n  when DataSet.SeriesDescription == "T2" and any(DataSet.SeriesNumber == 2)\n'
            '  then route to X\n}\n')
    assert findings(tmp_path, text) == [
        ("first-instance", 2, 8, "DataSet.SeriesDescription outside an aggregate reads the first instance of the "
                                 "study only; its SeriesDescription may differ from series to series")]
    assert findings(tmp_path, text.replace("per study", "per series")) == []


def test_group_rules_are_left_out_of_the_instance_rules_lint(tmp_path):
    # An instance rule after a group rule without `when` that drops is reachable: they run apart.
    text = 'rule "g" per study {\n  then drop\n}\nrule "r" {\n  then route to X\n}\n'
    assert findings(tmp_path, text) == []


# ---- formatter -------------------------------------------------------------------------------


MESSY = '''# a study rule
rule   "AI"   per    study {
  # waits
  complete after 10m   # trailing
  complete when any(DataSet.SeriesDescription matches /Axial T2/) and any(DataSet.SeriesDescription matches /Sag T1/) and count() > 3
  late   quarantine
  when DataSet.Modality=="MR" and count(DataSet.Rows>1) >= 2 and "T2" in distinct(DataSet.SeriesDescription)
  then route to AI
}
'''

FORMATTED = '''# a study rule
rule "AI" per study {
  # waits
  complete after 10m  # trailing
  complete when any(DataSet.SeriesDescription matches /Axial T2/)
    and any(DataSet.SeriesDescription matches /Sag T1/)
    and count() > 3
  late quarantine
  when DataSet.Modality == "MR"
    and count(DataSet.Rows > 1) >= 2
    and "T2" in distinct(DataSet.SeriesDescription)
  then route to AI
}
'''


def test_fmt_lays_out_a_group_rule_keeps_its_comments_and_is_idempotent():
    assert format_source(MESSY) == FORMATTED
    assert format_source(FORMATTED) == FORMATTED
    assert format_source(PLAN_EXAMPLE) == PLAN_EXAMPLE


def test_fmt_round_trips_aggregates_inside_other_expressions():
    text = ('rule "g" per series {\n  when not any(DataSet.Rows > 1 or DataSet.Columns > 1) and count() * 2 > 3\n'
            '  then {\n    log "n: " + count(exists DataSet.PatientID)\n    route to X\n  }\n}\n')
    assert format_source(text) == text
    assert parse(format_source(text)).rules[0].when.operands[0].operand.kind == "any"


# ---- the router runs them (runtime/groups.py; tests/runtime/test_groups.py) ------------------------


def test_a_reload_to_group_rules_puts_them_in_place(run_in):
    from rulesengine.config import load_config
    from rulesengine.runtime.rules import RulesHolder
    write(run_in / "router.yaml", "storage: var\nprocesses: 1\nrules: main.rules\n"
                                  "destinations:\n  AI: {type: folder, path: out}\n")
    write(run_in / "main.rules", 'rule "all" {\n  then route to AI\n}\n')
    holder = RulesHolder(load_config(run_in / "router.yaml"))
    assert holder.current.group_rules == ()
    write(run_in / "main.rules", PLAN_EXAMPLE)
    assert holder.reload()
    assert [(rule.name, rule.level) for rule in holder.current.group_rules] == [
        (rule.name, rule.level) for rule in compile_source(PLAN_EXAMPLE).group_rules]


def test_compiling_a_group_rule_with_errors_raises_with_every_finding():
    with pytest.raises(RulesError) as caught:
        compile_source('rule "g" per study {\n  complete after 0s\n  then reject\n}\n')
    assert sorted(d.code for d in caught.value.diagnostics) == ["bad-duration", "group-reject"]
