"""`notify NOTIFIER "message"`: parsed, checked against the configuration's notifiers (file,
line, column, "did you mean"), formatted, highlighted, evaluated into the decision (a group
rule's once per group), shown by dry-run and expected by rule tests; nothing is sent here."""

from __future__ import annotations

import pytest
from helpers.cli import dicom_rules
from pydicom.data import get_testdata_file

import rulesengine
from rulesengine import Document
from rulesengine.config import load_config
from rulesengine.diagnostics import RulesError
from rulesengine.dryrun import GroupRun, group_json_report, group_text_report, text_report
from rulesengine.lang import nodes as n
from rulesengine.lang.formatter import format_source
from rulesengine.lang.highlight import lexemes
from rulesengine.lang.syntax import parse
from rulesengine.ruletest import load_suite, run_suite
from rulesengine.runtime.rules import rule_file_findings

DESTINATIONS = {"PACS": {}, "AI": {}}
NOTIFIERS = {"ops", "pager"}


def findings(source: str, notifiers=NOTIFIERS):
    program = rulesengine.lang.loader.load_program(text=source, filename="n.rules")
    return rulesengine.lang.api.analyse(program, DESTINATIONS, None, notifiers).diagnostics


def compiled(source: str):
    return rulesengine.compile_source(source, DESTINATIONS, notifiers=NOTIFIERS)


def document(**values) -> Document:
    doc = Document()
    for path, value in values.items():
        doc.set(path.replace("__", "."), value)
    return doc


# ---- syntax ------------------------------------------------------------------------------


def test_the_syntax_gives_notify_nodes_with_and_without_a_message():
    [rule] = parse('rule "r" { then notify ops "CT from " + DataSet.StationName notify pager route to PACS }').rules
    with_message, bare, route = rule.actions
    assert isinstance(with_message, n.NotifyAction) and with_message.notifier.value == "ops"
    assert (with_message.notifier.span.line, with_message.notifier.span.column) == (1, 24)
    assert with_message.message is not None
    assert bare.notifier.value == "pager" and bare.message is None
    assert isinstance(route, n.RouteAction)


def test_notify_stays_free_as_a_name_elsewhere():
    source = 'rule "r" { then let notify = "x" log notify route to PACS }'
    assert not [d for d in findings(source) if d.is_error]


@pytest.mark.parametrize("source, column", [
    ('rule "r" { then notify }', 24),  # no notifier named
    ('rule "r" { then notify "ops" }', 24),  # a notifier is a name, not a string
    ('rule "r" { then notify ops, pager }', 27),  # one notifier per action
])
def test_a_malformed_notify_is_a_syntax_error_at_its_column(source, column):
    [finding] = [d for d in findings(source) if d.is_error]
    assert (finding.code, finding.span.line, finding.span.column) == ("syntax", 1, column)


# ---- checks --------------------------------------------------------------------------------


def test_an_unknown_notifier_is_an_error_at_its_name_with_the_closest_known_one():
    source = 'rule "r" {\n  then\n    route to PACS\n    notify opps "x"\n    notify someone\n}\n'
    errors = [d for d in findings(source) if d.is_error]
    assert [(d.code, d.span.file, d.span.line, d.span.column) for d in errors] == [
        ("unknown-notifier", "n.rules", 4, 12), ("unknown-notifier", "n.rules", 5, 12)]
    assert errors[0].message == "unknown notifier 'opps'" and errors[0].hint == "did you mean ops?"
    assert errors[1].hint == "known notifiers: ops, pager"


def test_notifiers_are_not_checked_without_a_configuration_and_all_unknown_without_notifiers():
    source = 'rule "r" { then notify ops route to PACS }'
    assert not [d for d in findings(source, notifiers=None) if d.is_error]
    [error] = [d for d in findings(source, notifiers=set()) if d.is_error]
    assert error.hint == "known notifiers: none are configured"


def test_compiling_with_an_unknown_notifier_raises_with_the_finding():
    with pytest.raises(RulesError) as raised:
        compiled('rule "r" { then notify nobody route to PACS }')
    assert [d.code for d in raised.value.diagnostics] == ["unknown-notifier"]


@pytest.mark.parametrize("source, code", [
    ('block b { notify ops }', "block-action"),
    ('rule "r" { then copy to AI { notify ops } }', "block-action"),
    ('rule "r" on C-FIND { then notify ops route to PACS }', "wrong-message-action"),
    ('rule "r" on C-FIND { then on response { notify ops } route to PACS }', "response-action"),
    ('rule "r" { then notify ops DataSet.NoSuchKeyword route to PACS }', "unknown-keyword"),
])
def test_notify_where_it_makes_no_sense_is_an_error(source, code):
    assert code in [d.code for d in findings(source) if d.is_error]


def test_an_unknown_notifier_in_a_test_expectation_is_an_error(tmp_path):
    (tmp_path / "n.rules").write_text('rule "r" { then notify ops route to PACS }\n')
    (tmp_path / "n_test.rules").write_text('test "t" {\n  given DataSet.PatientID = "1"\n  expect notify opz\n}\n')
    suite = load_suite(str(tmp_path / "n_test.rules"), DESTINATIONS, notifiers=NOTIFIERS)
    [error] = [d for d in suite.diagnostics if d.is_error]
    assert (error.code, error.span.line, error.span.column, error.hint) == ("unknown-notifier", 3, 17,
                                                                          "did you mean ops?")


# ---- evaluation ----------------------------------------------------------------------------


def test_notify_puts_the_notifications_in_the_decision_with_their_message_and_rule():
    source = ('rule "stat" { when DataSet.StudyDescription contains "STAT" then notify pager '
              '"STAT study " + DataSet.StudyInstanceUID }\n'
              'rule "all" { then route to PACS notify ops }\n')
    decision = compiled(source).evaluate(document(DataSet__StudyDescription="STAT head",
                                                  DataSet__StudyInstanceUID="1.2.3"))
    assert [(note.notifier, note.message, note.rule) for note in decision.notifications] == [
        ("pager", "STAT study 1.2.3", "stat"), ("ops", None, "all")]
    assert decision.to_json()["notifications"] == [
        {"notifier": "pager", "message": "STAT study 1.2.3", "rule": "stat"},
        {"notifier": "ops", "message": None, "rule": "all"}]
    routine = compiled(source).evaluate(document(DataSet__StudyDescription="routine"))
    assert [note.notifier for note in routine.notifications] == ["ops"]


def test_a_document_dropped_or_quarantined_still_notifies():
    decision = compiled('rule "r" { then notify ops "dropped" drop }').evaluate(document())
    assert decision.outcome == "drop" and [note.message for note in decision.notifications] == ["dropped"]
    nothing = compiled('rule "r" { when DataSet.PatientID == "x" then notify ops route to PACS }')
    assert nothing.evaluate(document(DataSet__PatientID="y")).notifications == ()


def test_a_rule_that_fails_at_run_time_sends_nothing():
    ruleset = compiled('rule "r" { then notify ops route to PACS set DataSet.PatientID = 1 / DataSet.Rows }')
    decision = ruleset.evaluate(document(DataSet__Rows=0))
    assert decision.outcome == "quarantine" and "division by zero" in decision.error and not decision.notifications


# ---- dry-run and rule tests ---------------------------------------------------------------------


def test_dry_run_says_the_notification_that_would_be_sent():
    ruleset = compiled('rule "a" { then route to PACS notify ops "new " + DataSet.Modality }')
    report = text_report("x.dcm", ruleset.evaluate(document(DataSet__Modality="CT")), ruleset, explain=False)
    assert "  notify: ops 'new CT'   (rule 'a')" in report.splitlines()


def test_dry_run_of_a_group_rule_says_one_notification_for_the_group():
    source = ('rule "series" per series { complete after 1m then route to AI '
              'notify ops "series " + DataSet.SeriesInstanceUID }\n')
    ruleset = compiled(source)
    [rule] = ruleset.group_rules
    docs = [document(DataSet__StudyInstanceUID="1", DataSet__SeriesInstanceUID="1.1", DataSet__InstanceNumber=i,
                     DataSet__SOPInstanceUID=f"1.1.{i}") for i in (1, 2, 3)]
    decisions = rule.evaluate(docs)
    assert all(len(decision.notifications) == 1 for decision in decisions)  # each instance asked
    run = GroupRun(rule, ("1", "1.1"), ["a", "b", "c"], ["a", "b", "c"], decisions, None)
    report = group_text_report(run, ruleset, explain=False).splitlines()
    assert [line for line in report if "notify" in line] == ["  notify: ops 'series 1.1'   (rule 'series')"]
    as_json = group_json_report(run, ruleset, explain=False)
    assert as_json["group"]["notifications"] == [{"notifier": "ops", "message": "series 1.1", "rule": "series"}]
    assert all("notifications" not in entry for entry in as_json["decisions"])


def test_rule_tests_expect_notifications(tmp_path):
    (tmp_path / "n.rules").write_text(
        'rule "stat" { when DataSet.StudyDescription contains "STAT" then notify pager "STAT" }\n'
        'rule "all" { then route to PACS }\n')
    (tmp_path / "n_test.rules").write_text(
        'test "stat pages" {\n  given DataSet.StudyDescription = "STAT"\n  expect notify pager "STAT"\n'
        '  expect no notify ops\n}\n'
        'test "wrong message" {\n  given DataSet.StudyDescription = "STAT"\n  expect notify pager "stat"\n}\n'
        'test "routine pages" {\n  given DataSet.StudyDescription = "routine"\n  expect notify pager\n}\n'
        'test "stat does not" {\n  given DataSet.StudyDescription = "STAT"\n  expect no notify pager\n}\n')
    suite = load_suite(str(tmp_path / "n_test.rules"), DESTINATIONS, notifiers=NOTIFIERS)
    assert not suite.errors
    results = {result.name: result for result in run_suite(suite, None)}
    assert results["stat pages"].passed
    assert [f.message for f in results["wrong message"].failures] == [
        "expected a notification to pager saying 'stat'; notifications: pager 'STAT'"]
    assert [f.message for f in results["routine pages"].failures] == [
        "expected a notification to pager; notifications: none"]
    assert [(f.span.line, f.message) for f in results["stat does not"].failures] == [
        (16, "expected no notification to pager; notifications: pager 'STAT'")]


def test_rule_tests_of_a_group_rule_expect_its_notification(tmp_path):
    ct = get_testdata_file("CT_small.dcm")
    (tmp_path / "g.rules").write_text('rule "study" per study { complete after 5m then route to AI notify ops }\n')
    (tmp_path / "g_test.rules").write_text(f'test "t" {{\n  given file "{ct}"\n  expect notify ops\n'
                                           '  expect route to AI\n}\n')
    suite = load_suite(str(tmp_path / "g_test.rules"), DESTINATIONS, notifiers=NOTIFIERS)
    assert not suite.errors, suite.diagnostics
    [result] = run_suite(suite, None)
    assert result.passed, result.failures


# ---- fmt and highlighting ---------------------------------------------------------------------


def test_fmt_writes_notify_and_its_expectations_and_round_trips():
    source = 'rule "a" { then notify   ops   "x: "+DataSet.PatientID notify pager route to PACS }'
    formatted = format_source(source)
    assert formatted == ('rule "a" {\n  then {\n    notify ops "x: " + DataSet.PatientID\n    notify pager\n'
                         '    route to PACS\n  }\n}\n')
    assert format_source(formatted) == formatted
    test = 'test "t" { given DataSet.PatientID = "1"  expect notify ops   "x: 1" expect no   notify pager }'
    formatted = format_source(test)
    assert 'expect notify ops "x: 1"' in formatted and "expect no notify pager" in formatted
    assert format_source(formatted) == formatted


def test_notify_is_highlighted_as_a_keyword_only_where_it_is_one():
    source = 'rule "a" { then notify ops let notify = 1 }'
    kinds = {(lexeme.text, lexeme.column): lexeme.kind for lexeme in lexemes(source)}
    assert kinds[("notify", source.index("notify") + 1)] == "keyword"
    assert kinds[("ops", source.index("ops") + 1)] == "name"
    assert kinds[("notify", source.rindex("notify") + 1)] == "name"




# ---- the commands, given the configuration ----------------------------------------------------------


def test_lint_dry_run_test_and_check_config_know_the_notifiers_of_the_configuration(tmp_path):
    (tmp_path / "router.yaml").write_text(
        "storage: var\nrules: main.rules\ndestinations:\n  PACS: {type: folder, path: pacs}\n"
        'notifiers:\n  ops: {type: webhook, url: "http://127.0.0.1:9/hook"}\n', encoding="utf-8")
    (tmp_path / "main.rules").write_text('rule "all" {\n  then\n    route to PACS\n    notify opz "x"\n}\n',
                                         encoding="utf-8")
    config = tmp_path / "router.yaml"
    lint = dicom_rules("lint", "--config", config, tmp_path / "main.rules", cwd=tmp_path)
    assert lint.returncode == 1
    assert "main.rules:4:12: error unknown-notifier unknown notifier 'opz' (did you mean ops?)" in lint.stdout
    [finding] = [d for d in rule_file_findings(load_config(config)) if d.is_error]
    assert (finding.code, finding.span.line, finding.span.column) == ("unknown-notifier", 4, 12)
    (tmp_path / "main.rules").write_text('rule "all" {\n  then\n    route to PACS\n    notify ops "new " + '
                                         'DataSet.Modality\n}\n', encoding="utf-8")
    dry = dicom_rules("dry-run", "--config", config, tmp_path / "main.rules", get_testdata_file("CT_small.dcm"),
                      cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "  notify: ops 'new CT'   (rule 'all')" in dry.stdout
    (tmp_path / "main_test.rules").write_text('test "t" {\n  given DataSet.Modality = "MR"\n'
                                              '  expect notify ops "new MR"\n}\n', encoding="utf-8")
    tested = dicom_rules("test", "--config", config, tmp_path / "main_test.rules", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
