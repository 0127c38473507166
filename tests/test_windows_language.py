"""`route to NAME during WINDOW`, `copy to NAME during WINDOW` and `urgent`: parsed, checked
against the configuration's windows (file, line, column), formatted, highlighted, evaluated;
`during` and `urgent` stay free as names where they cannot be keywords."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Document
from rulesengine.diagnostics import RulesError
from rulesengine.dryrun import diff_lines, fingerprint, text_report
from rulesengine.lang import nodes as n
from rulesengine.lang.formatter import format_source
from rulesengine.lang.highlight import lexemes
from rulesengine.lang.syntax import parse

DESTINATIONS = {"PACS": {}, "ARCHIVE": {}, "AI": {}}
WINDOWS = {"night", "weekend"}


def findings(source: str, windows=WINDOWS, destinations=DESTINATIONS):
    return rulesengine.lang.api.analyse(rulesengine.lang.loader.load_program(text=source, filename="w.rules"),
                                        destinations, windows).diagnostics


def decide(source: str, **values):
    document = Document()
    for path, value in values.items():
        document.set(path.replace("__", "."), value)
    return rulesengine.compile_source(source, DESTINATIONS, windows=WINDOWS).evaluate(document)


# ---- syntax ------------------------------------------------------------------------------


def test_the_syntax_gives_windows_and_urgency_nodes():
    [rule] = parse('rule "r" { then urgent route to PACS, AI during night copy back to ARCHIVE during weekend '
                   '{ delete DataSet.PatientName } copy to AI }').rules
    urgent, route, copy, plain_copy = rule.actions
    assert isinstance(urgent, n.UrgentAction)
    assert [d.value for d in route.destinations] == ["PACS", "AI"] and route.window.value == "night"
    assert (route.window.span.line, route.window.span.column) == (1, 49)
    assert copy.back and copy.window.value == "weekend" and len(copy.body) == 1
    assert plain_copy.window is None


@pytest.mark.parametrize("source", [
    'rule "r" { then let urgent = 1 let during = urgent + 1 log during route to PACS }',
    'rule "r" { when DataSet.PatientID == "x" then for each during in DataSet.OtherPatientIDsSequence '
    '{ log during.PatientID } route to PACS }',
])
def test_during_and_urgent_stay_free_as_names_elsewhere(source):
    assert not [d for d in findings(source) if d.is_error]


@pytest.mark.parametrize("source, column", [
    ('rule "r" { then route to PACS during }', 38),  # no window named
    ('rule "r" { then route to PACS during night, weekend }', 43),  # one window per route
    ('rule "r" { then route during night to PACS }', 23),  # during comes after the destinations
    ('rule "r" { then urgent PACS }', 24),  # urgent takes nothing
])
def test_misplaced_during_and_urgent_are_syntax_errors_at_their_column(source, column):
    [finding] = [d for d in findings(source) if d.is_error]
    assert (finding.code, finding.span.line, finding.span.column) == ("syntax", 1, column)


# ---- checks --------------------------------------------------------------------------------


def test_an_unknown_window_is_an_error_at_its_name_with_the_closest_known_one():
    source = 'rule "r" {\n  then\n    route to PACS during nigth\n    copy to AI during someday\n}\n'
    errors = [d for d in findings(source) if d.is_error]
    assert [(d.code, d.span.file, d.span.line, d.span.column) for d in errors] == [
        ("unknown-window", "w.rules", 3, 26), ("unknown-window", "w.rules", 4, 23)]
    assert errors[0].message == "unknown window 'nigth'" and errors[0].hint == "did you mean night?"
    assert errors[1].hint == "known windows: night, weekend"


def test_windows_are_not_checked_without_a_configuration_and_all_unknown_without_windows():
    source = 'rule "r" { then route to PACS during night }'
    assert not [d for d in findings(source, windows=None) if d.is_error]
    [error] = [d for d in findings(source, windows=set()) if d.is_error]
    assert error.hint == "known windows: none are configured"


def test_compiling_with_an_unknown_window_raises_with_the_finding():
    with pytest.raises(RulesError) as raised:
        rulesengine.compile_source('rule "r" { then route to PACS during lunch }', DESTINATIONS, windows=WINDOWS)
    assert [d.code for d in raised.value.diagnostics] == ["unknown-window"]


@pytest.mark.parametrize("source, code", [
    ('block b { urgent }', "block-action"),
    ('rule "r" { then copy to AI { urgent } }', "block-action"),
    ('rule "r" on C-FIND { then urgent route to PACS }', "wrong-message-action"),
    ('rule "r" on C-FIND { then route to PACS during night }', "wrong-message-action"),
    ('rule "r" on C-MOVE { then route to PACS during night }', "wrong-message-action"),
    ('rule "r" on C-FIND { then on response { urgent } route to PACS }', "response-action"),
])
def test_urgency_and_windows_where_they_make_no_sense_are_errors(source, code):
    assert code in [d.code for d in findings(source) if d.is_error]


# ---- evaluation ----------------------------------------------------------------------------


def test_urgent_marks_the_decision_and_windows_follow_their_routes():
    source = ('rule "stat" { when DataSet.StudyDescription contains "STAT" then urgent }\n'
              'rule "all" { then route to PACS route to ARCHIVE during night copy to AI during weekend '
              '{ set DataSet.PatientName = "anon" } }\n')
    stat = decide(source, DataSet__StudyDescription="STAT head")
    assert stat.urgent and stat.windows == {"ARCHIVE": "night", "AI": "weekend"}
    assert list(stat.destinations) == ["PACS", "ARCHIVE", "AI"]
    assert stat.to_json()["urgent"] is True and stat.to_json()["windows"] == {"ARCHIVE": "night", "AI": "weekend"}
    routine = decide(source, DataSet__StudyDescription="routine")
    assert not routine.urgent and "urgent" not in routine.to_json()


def test_a_route_without_a_window_wins_and_the_first_window_of_a_destination_stays():
    source = ('rule "a" { then route to PACS during night route to PACS route to ARCHIVE during night '
              'route to ARCHIVE during weekend route to AI route to AI during night }')
    decision = decide(source)
    assert decision.windows == {"ARCHIVE": "night"}


def test_nothing_routed_means_no_urgency_and_no_window():
    decision = decide('rule "a" { then urgent route to PACS during night drop }')
    assert decision.outcome == "drop" and not decision.urgent and not decision.windows


def test_a_skipped_destination_has_no_window():
    document = Document()
    document.set("DataSet.PatientID", "1")
    ruleset = rulesengine.compile_source('rule "a" { then route to PACS during night route to AI }', DESTINATIONS,
                                         windows=WINDOWS)
    decision = ruleset.evaluate(document)
    assert decision.windows == {"PACS": "night"}


def test_dry_run_and_diff_say_urgency_and_windows():
    source = 'rule "a" { then urgent route to PACS route to ARCHIVE during night }'
    ruleset = rulesengine.compile_source(source, DESTINATIONS, windows=WINDOWS)
    decision = ruleset.evaluate(Document())
    report = text_report("x.dcm", decision, ruleset, explain=False)
    assert "  outcome: route to PACS, ARCHIVE (during night)" in report.splitlines()
    assert "  urgent: its deliveries go before the others in each queue" in report.splitlines()
    before = rulesengine.compile_source('rule "a" { then route to PACS route to ARCHIVE }', DESTINATIONS)
    lines = diff_lines(fingerprint(before.evaluate(Document())), fingerprint(decision))
    assert lines == ["  urgent: no -> yes", "  window of ARCHIVE: none -> night"]


# ---- fmt and highlighting ---------------------------------------------------------------------


def test_fmt_writes_one_action_a_line_and_round_trips():
    source = 'rule "a" { then urgent   route to PACS,AI  during   night copy to ARCHIVE during weekend { delete DataSet.PatientName } }'
    formatted = format_source(source)
    assert formatted == ('rule "a" {\n  then {\n    urgent\n    route to PACS, AI during night\n'
                         '    copy to ARCHIVE during weekend {\n      delete DataSet.PatientName\n    }\n  }\n}\n')
    assert format_source(formatted) == formatted


def test_during_and_urgent_are_highlighted_as_keywords_only_where_they_are_keywords():
    source = 'rule "a" { then urgent route to PACS during night let during = 1 }'
    kinds = {(lexeme.text, lexeme.column): lexeme.kind for lexeme in lexemes(source)}
    assert kinds[("urgent", source.index("urgent") + 1)] == "keyword"
    assert kinds[("during", source.index("during") + 1)] == "keyword"
    assert kinds[("night", source.index("night") + 1)] == "name"
    assert kinds[("during", source.rindex("during") + 1)] == "name"
