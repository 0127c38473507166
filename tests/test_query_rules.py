"""Rules for requests (C-FIND, C-MOVE, C-GET, N-CREATE, N-SET): the messages a rule handles,
what makes sense for each, destinations that cannot answer, per-message evaluation, `on
response` edits, and tests of requests and responses."""

from __future__ import annotations

import pytest

import rulesengine
from rulesengine import Arrival, Document, RulesError
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program
from rulesengine.lang.ruleset import ResponseEditError
from rulesengine.lang.syntax import parse

from helpers.cli import dicom_rules
from helpers.files import ROOT, write

DICOM = {"type": "dicom", "answers": ["C-STORE", "C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET"]}
FOLDER = {"type": "folder", "answers": ["C-STORE"]}
WORKLIST = {"type": "worklist", "answers": ["C-FIND"]}
DESTINATIONS = {"PACS": DICOM, "FILES": FOLDER, "MWL": WORKLIST, "OTHER": {}}

PREFIX_RULES = '''
rule "strip the prefix" on C-FIND, C-MOVE {
  when DataSet.PatientID startswith "H1-"
  then {
    let prefix = "H1-"
    set DataSet.PatientID = replace(DataSet.PatientID, /^H1-/, "")
    route to PACS
    on response {
      if DataSet.PatientID == "hidden" {
        drop
      }
      set DataSet.PatientID = prefix + DataSet.PatientID
    }
  }
}

rule "mark responses" on C-FIND {
  then on response {
    set DataSet.InstitutionName = "seen " + DataSet.PatientID
  }
}

rule "low priority" on C-FIND {
  when CommandSet.Priority == 2
  then reject "low priority queries are refused"
}

rule "instances" {
  then route to FILES
}
'''


def findings(source: str, destinations=None):
    program = load_program(text=source, filename="t.rules")
    return analyse(program, destinations).diagnostics


def codes(source: str, destinations=None) -> list[str]:
    return [d.code for d in findings(source, destinations)]


def only(source: str, code: str, destinations=None):
    found = [d for d in findings(source, destinations) if d.code == code]
    assert found, f"no {code}: {[d.one_line() for d in findings(source, destinations)]}"
    return found[0]


def request(message_values: dict | None = None, command: dict | None = None, calling_aet: str = "CT1") -> Document:
    document = Document(arrival=Arrival(calling_aet=calling_aet))
    for keyword, value in (message_values or {}).items():
        document.set(f"DataSet.{keyword}", value)
    for keyword, value in (command or {}).items():
        setattr(document.command_set, keyword, value)
    return document


def response(**values) -> Document:
    document = Document()
    for keyword, value in values.items():
        document.set(f"DataSet.{keyword}", value)
    document.command_set.Status = 0xFF00
    return document


# ---- the `on` clause ----------------------------------------------------------------


def test_a_rule_names_the_messages_it_handles_and_without_on_handles_c_store():
    rule_file = parse('rule "q" on C-FIND, N-SET { then route to A }\nrule "s" { then route to A }')
    assert [rule.handles for rule in rule_file.rules] == [("C-FIND", "N-SET"), ("C-STORE",)]


@pytest.mark.parametrize("written,suggested", [("c-find", "C-FIND"), ("C-FINDE", "C-FIND"), ("N-CRATE", "N-CREATE")])
def test_an_unknown_message_is_an_error_with_a_suggestion(written, suggested):
    finding = only(f'rule "q" on {written} {{ then route to A }}', "unknown-message")
    assert finding.is_error and finding.span.column == 13
    assert f"did you mean {suggested}?" == finding.hint


def test_a_message_named_twice_is_a_warning():
    finding = only('rule "q" on C-FIND, C-FIND { then route to A }', "duplicate-message")
    assert not finding.is_error


def test_on_without_a_message_is_a_syntax_error_that_says_what_was_expected():
    with pytest.raises(RulesError) as caught:
        parse('rule "q" on { then route to A }')
    assert "a message such as C-FIND" in str(caught.value)


def test_the_new_words_stay_free_as_names():
    source = ('rule "r" {\n  then {\n    let response = "x"\n    let on = response\n    log on\n'
              '    route to message, dropped\n  }\n}\n')
    assert not [d for d in findings(source) if d.is_error]


# ---- what makes sense per message ---------------------------------------------------------


@pytest.mark.parametrize("action,word", [
    ("copy to PACS", "copy to"),
    ("quarantine", "quarantine"),
    ('quarantine "why"', "quarantine"),
    ("route back to PACS", "route back to"),
])
def test_actions_for_instances_only_are_errors_in_request_rules(action, word):
    finding = only(f'rule "q" on C-FIND {{ then {action} }}', "wrong-message-action")
    assert finding.is_error and finding.message.startswith(f"{word} makes no sense for C-FIND")


def test_drop_answers_a_find_with_no_matches_and_is_an_error_for_other_requests():
    assert "wrong-message-action" not in codes('rule "q" on C-FIND { then drop }')
    finding = only('rule "q" on C-FIND, C-MOVE { then drop }', "wrong-message-action")
    assert "C-MOVE" in finding.message and "C-FIND" not in finding.message.split(":")[0]
    assert "wrong-message-action" in codes('rule "q" on N-SET { when exists DataSet.PatientID then { if '
                                           'DataSet.PatientID == "x" { drop } } }')


def test_on_response_in_a_rule_for_instances_is_an_error():
    finding = only('rule "s" { then on response { set DataSet.PatientID = "x" } }', "wrong-message-action")
    assert "C-STORE" in finding.message and "on response" in finding.message
    assert "wrong-message-action" in codes('rule "s" on C-FIND, C-STORE { then on response { } }')


@pytest.mark.parametrize("action", ["route to PACS", "copy to PACS", "reject", 'reject "no"', "quarantine", "stop"])
def test_deciding_inside_on_response_is_an_error(action):
    finding = only(f'rule "q" on C-FIND {{ then {{ route to PACS\n on response {{ {action} }} }} }}',
                   "response-action")
    assert finding.is_error


def test_on_response_is_misplaced_in_blocks_and_inside_itself():
    assert "misplaced-on-response" in codes('block b { on response { drop } }\n'
                                            'rule "q" on C-FIND { then { apply b\n route to PACS } }')
    assert "misplaced-on-response" in codes('rule "q" on C-FIND { then on response { on response { drop } } }')


def test_a_clean_request_rule_file_has_no_errors():
    assert not [d.one_line() for d in findings(PREFIX_RULES, DESTINATIONS) if d.is_error]


def test_blocks_stay_message_agnostic():
    source = ('block tidy { delete DataSet.OtherPatientIDs }\n'
              'rule "q" on C-FIND { then { apply tidy\n route to PACS\n on response { apply tidy } } }\n'
              'rule "s" { then { apply tidy\n route to PACS } }\n')
    assert not [d for d in findings(source) if d.is_error]


# ---- destinations that cannot answer ------------------------------------------------------


@pytest.mark.parametrize("message,destination,answers", [
    ("C-FIND", "FILES", "folder"), ("C-MOVE", "MWL", "worklist"), ("N-CREATE", "FILES", "folder"),
    ("C-STORE", "MWL", "worklist"),
])
def test_a_route_to_a_destination_that_cannot_answer_is_an_error(message, destination, answers):
    finding = only(f'rule "q" on {message} {{ then route to {destination} }}', "cannot-answer", DESTINATIONS)
    assert finding.is_error
    assert finding.message.startswith(f"{destination} cannot answer {message}: it is a {answers} destination")


@pytest.mark.parametrize("message,destination", [("C-FIND", "MWL"), ("C-GET", "PACS"), ("C-FIND", "OTHER"),
                                                 ("C-STORE", "FILES")])
def test_destinations_that_answer_or_are_not_known_to_answer_raise_nothing(message, destination):
    assert "cannot-answer" not in codes(f'rule "q" on {message} {{ then route to {destination} }}', DESTINATIONS)


def test_the_configuration_says_what_each_type_of_destination_answers():
    from rulesengine.config import DESTINATION_ANSWERS, load_config
    infos = load_config(str(ROOT / "examples" / "router.yaml"), secrets=False).destination_infos()
    assert infos and all(info["answers"] == {"C-STORE"} for info in infos.values() if info["type"] == "folder")
    assert DESTINATION_ANSWERS["worklist"] == {"C-FIND"}
    assert DESTINATION_ANSWERS["dicom"] >= {"C-STORE", "C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET"}


# ---- lint per message -----------------------------------------------------------------------


def test_a_rule_for_queries_does_not_shadow_or_block_rules_for_instances():
    source = 'rule "q" on C-FIND { then drop }\nrule "s" { when DataSet.Modality == "CT" then route to A }\n' \
             'rule "rest" { then route to B }'
    assert "unreachable" not in codes(source)
    assert "unreachable" in codes('rule "q" on C-FIND { then drop }\nrule "q2" on C-FIND { then route to A }')


def test_a_rule_for_several_messages_is_reported_once():
    source = 'rule "q" on C-FIND, C-MOVE { then reject }\nrule "later" on C-FIND, C-MOVE { then route to A }'
    assert codes(source).count("unreachable") == 1


# ---- evaluation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefix_rules():
    return rulesengine.compile_source(PREFIX_RULES, DESTINATIONS)


def test_only_the_rules_for_the_message_run(prefix_rules):
    stored = prefix_rules.evaluate(request({"PatientID": "H1-1"}))
    assert [r.name for r in stored.rules_fired] == ["instances"] and list(stored.destinations) == ["FILES"]
    assert stored.message == "C-STORE" and not stored.response_edits
    found = prefix_rules.evaluate(request({"PatientID": "H1-1"}), message="C-FIND")
    assert [r.name for r in found.rules_fired] == ["strip the prefix", "mark responses"]


def test_a_request_is_edited_in_place_and_routed(prefix_rules):
    document = request({"PatientID": "H1-123"})
    decision = prefix_rules.evaluate(document, message="C-MOVE")
    assert decision.outcome == "route" and list(decision.destinations) == ["PACS"]
    assert document.get("DataSet.PatientID") == "123"
    assert decision.destinations["PACS"] is document
    assert [(e.path, e.old, e.new) for e in decision.edits] == [("DataSet.PatientID", "H1-123", "123")]


def test_responses_are_edited_by_every_rule_that_fired_in_order(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "H1-123"}), message="C-FIND")
    answer = response(PatientID="123")
    assert prefix_rules.edit_response(decision, answer) is True
    assert answer.get("DataSet.PatientID") == "H1-123"
    assert answer.get("DataSet.InstitutionName") == "seen H1-123"  # the second rule ran after the first
    assert [c.new for c in decision.response_changes] == ["H1-123", "seen H1-123"]


def test_a_dropped_response_is_not_returned_and_later_rules_do_not_see_it(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "H1-123"}), message="C-FIND")
    hidden = response(PatientID="hidden")
    assert prefix_rules.edit_response(decision, hidden) is False
    assert hidden.get("DataSet.InstitutionName") is None
    assert prefix_rules.edit_response(decision, response(PatientID="7")) is True  # each response on its own


def test_a_rule_that_did_not_fire_does_not_edit_responses(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "123"}), message="C-FIND")
    assert decision.outcome == "reject"  # no rule routed it: no response will come to edit
    assert not decision.response_edits and prefix_rules.edit_response(decision, response(PatientID="1"))
    ruleset = rulesengine.compile_source(PREFIX_RULES + 'rule "all" on C-FIND { then route to PACS }')
    decision = ruleset.evaluate(request({"PatientID": "123"}), message="C-FIND")
    answer = response(PatientID="123")
    assert ruleset.edit_response(decision, answer)
    assert answer.get("DataSet.PatientID") == "123"
    assert answer.get("DataSet.InstitutionName") == "seen 123"


def test_reject_reads_the_command_set_and_gives_its_reason(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "1"}, {"Priority": 2}), message="C-FIND")
    assert (decision.outcome, decision.reason) == ("reject", "low priority queries are refused")
    assert not decision.response_edits  # a rejected request has no responses to edit


def test_a_request_no_rule_routes_or_handles_is_rejected(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "1"}), message="C-GET")
    assert (decision.outcome, decision.reason) == ("reject", "no rule routed this C-GET")
    assert decision.rules_fired == []


def test_drop_answers_a_find_with_no_matches():
    ruleset = rulesengine.compile_source('rule "q" on C-FIND { when missing DataSet.PatientID then drop }\n'
                                         'rule "r" on C-FIND { then route to PACS }')
    assert ruleset.evaluate(request(), message="C-FIND").outcome == "drop"
    assert ruleset.evaluate(request({"PatientID": "1"}), message="C-FIND").outcome == "route"


def test_what_the_runtime_asks_of_a_rule_set(prefix_rules):
    assert prefix_rules.messages == {"C-STORE", "C-FIND", "C-MOVE"}
    assert prefix_rules.can_reject_for("C-FIND") and not prefix_rules.can_reject_for("C-MOVE")
    assert not prefix_rules.can_reject and not prefix_rules.can_reject_for("C-STORE")
    only_queries = rulesengine.compile_source('rule "q" on C-FIND { then route to PACS }')
    assert only_queries.messages == {"C-FIND"}
    assert only_queries.evaluate(request()).outcome == "quarantine"  # no rule for instances: the policy


def test_a_reject_for_instances_is_still_seen():
    ruleset = rulesengine.compile_source('rule "s" { then reject "no" }')
    assert ruleset.can_reject and ruleset.can_reject_for("C-STORE") and not ruleset.can_reject_for("C-FIND")


def test_command_set_values_of_a_retrieval_are_read():
    ruleset = rulesengine.compile_source(
        'rule "m" on C-MOVE { when CommandSet.MoveDestination == "WS1" and CommandSet.CommandField == 33 '
        'then route to PACS }')
    decision = ruleset.evaluate(request(command={"MoveDestination": "WS1", "CommandField": 0x21}), message="C-MOVE")
    assert decision.outcome == "route"
    assert ruleset.evaluate(request(command={"MoveDestination": "WS2"}), message="C-MOVE").outcome == "reject"


def test_command_set_stays_read_only_for_rules():
    assert "read-only" in codes('rule "q" on C-FIND { then { set CommandSet.Priority = 1\n route to PACS } }')
    assert "read-only" in codes('rule "q" on C-FIND { then on response { set CommandSet.Status = 0 } }')


def test_responses_see_their_own_command_set():
    ruleset = rulesengine.compile_source(
        'rule "q" on C-FIND { then { route to PACS\n on response { if CommandSet.Status == 0 { drop } } } }')
    decision = ruleset.evaluate(request(), message="C-FIND")
    assert ruleset.edit_response(decision, response(PatientID="1"))  # pending: kept
    final = Document()
    final.command_set.Status = 0
    assert not ruleset.edit_response(decision, final)


def test_a_failing_request_rule_rejects_and_a_failing_response_edit_raises():
    ruleset = rulesengine.compile_source(
        'rule "q" on C-FIND { then { set DataSet.StudyDate = DataSet.PatientID\n route to PACS } }\n'
        'rule "r" on C-MOVE { then { route to PACS\n on response { set DataSet.StudyDate = DataSet.PatientID } } }')
    failed = ruleset.evaluate(request({"PatientID": "not a date"}), message="C-FIND")
    assert failed.error and failed.outcome == "reject"  # a request is answered, never kept
    assert "rule 'q'" in failed.reason
    decision = ruleset.evaluate(request(), message="C-MOVE")
    with pytest.raises(ResponseEditError) as caught:
        ruleset.edit_response(decision, response(PatientID="not a date"))
    assert "rule 'r'" in str(caught.value) and str(caught.value).startswith("<rules>:4: ")


def test_traced_response_edits_count_for_coverage(prefix_rules):
    decision = prefix_rules.evaluate(request({"PatientID": "H1-1"}), trace=True, message="C-FIND")
    before = set(decision.branches)
    prefix_rules.edit_response(decision, response(PatientID="hidden"))
    assert decision.branches > before


def test_the_code_for_instances_holds_only_the_rules_for_instances(prefix_rules):
    code = prefix_rules.generated_code(constants=False)
    store = code.split("\ndef evaluate_C_FIND(")[0]
    assert "def evaluate(doc, ev):" in store and "ev.fire(3)" in store
    assert "ev.fire(0)" not in store and "on_response" not in store
    assert "def evaluate_C_FIND(doc, ev):" in code and "def evaluate_C_MOVE(doc, ev):" in code
    assert "def evaluate_C_GET" not in code


def test_files_without_request_rules_compile_as_before():
    ruleset = rulesengine.compile_source('rule "s" { when DataSet.Modality == "CT" then route to A }')
    assert ruleset.messages == {"C-STORE"}
    assert "def evaluate_" not in ruleset.generated_code()


# ---- tests of requests --------------------------------------------------------------------


def test_the_query_example_passes_its_tests_and_lints_clean():
    result = dicom_rules("test", "--coverage", "examples/queries/", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
    assert "8/8 rules fired, 2/2 branches taken" in result.stdout  # the branches of on response count
    lint = dicom_rules("lint", "--strict", "examples/queries/", cwd=ROOT)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _run_tests(tmp_path, rules: str, tests: str):
    write(tmp_path / "q.rules", rules)
    write(tmp_path / "q_test.rules", tests)
    return dicom_rules("test", str(tmp_path / "q_test.rules"), cwd=tmp_path)


def test_response_expectations_that_fail_say_why(tmp_path):
    result = _run_tests(tmp_path, PREFIX_RULES, '''
test "wrong" {
  given message C-FIND
  given DataSet.PatientID = "H1-5"
  expect route to FILES
  given response DataSet.PatientID = "5"
  expect response DataSet.PatientID == "5"
  expect response dropped
  given response DataSet.PatientID = "hidden"
  expect response DataSet.PatientID == "H1-hidden"
}
''')
    assert result.returncode == 1
    out = result.stdout
    assert "expected a route to FILES" in out
    assert 'expected DataSet.PatientID == "5" in the response, but DataSet.PatientID is "H1-5"' in out
    assert "expected the response to be dropped, but it is returned" in out
    assert "expected a response, but a rule dropped it" in out


def test_request_tests_pass_with_command_sets_and_outcomes(tmp_path):
    result = _run_tests(tmp_path, PREFIX_RULES, '''
test "refused" {
  given message C-FIND
  given DataSet.PatientID = "1", CommandSet.Priority = 2
  expect reject "low priority queries are refused"
  expect CommandSet.CommandField == 32
}

test "responses" {
  given message C-FIND
  given DataSet.PatientID = "H1-5"
  given response DataSet.PatientID = "hidden"
  expect response dropped
  given response DataSet.PatientID = "5", CommandSet.Status = 0
  expect response DataSet.PatientID == "H1-5" and CommandSet.Status == 0
  expect DataSet.PatientID == "5"
}

test "a response gets a pending status unless given one" {
  given message C-FIND
  given DataSet.PatientID = "9"
  given response DataSet.PatientID = "9"
  expect response CommandSet.Status == 65280 and CommandSet.CommandField == 32800
}
''')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 0 failed" in result.stdout


@pytest.mark.parametrize("statements,words", [
    ('given DataSet.PatientID = "1"\n  given response DataSet.PatientID = "1"\n  expect response exists '
     'DataSet.PatientID', "a stored instance gets no response"),
    ('given message C-FIND\n  expect response dropped', "checks the last response given before it"),
    ('given message C-FIND\n  given message C-MOVE\n  expect drop', "one `given message` per test"),
    ('given message C-FOUND\n  expect drop', "unknown message 'C-FOUND'"),
])
def test_lint_checks_request_statements(tmp_path, statements, words):
    write(tmp_path / "q.rules", PREFIX_RULES)
    write(tmp_path / "q_test.rules", f'test "t" {{\n  {statements}\n}}\n')
    result = dicom_rules("lint", str(tmp_path / "q_test.rules"), cwd=tmp_path)
    assert result.returncode == 1
    assert words in result.stdout + result.stderr


# ---- dry-run ------------------------------------------------------------------------------


def _query_file(path, **values):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    dataset = Dataset()
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.preamble = b"\0" * 128
    dataset.save_as(path, enforce_file_format=False)
    return path


def test_dry_run_evaluates_a_file_as_a_request(tmp_path):
    query = _query_file(tmp_path / "query.dcm", PatientID="H1-123", QueryRetrieveLevel="PATIENT")
    rules = ROOT / "examples" / "queries" / "queries.rules"
    result = dicom_rules("dry-run", "--message", "C-FIND", "--explain", rules, query, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:3] == ["  message: C-FIND", "  outcome: route to ARCHIVE"]
    assert 'DataSet.PatientID: "H1-123" -> "123"' in result.stdout
    assert "MPPS to the RIS" not in result.stdout  # rules for other messages are not evaluated
    as_instance = dicom_rules("dry-run", "--format", "json", rules, query, cwd=tmp_path)
    assert '"message"' not in as_instance.stdout  # an instance's report is as it was


def test_dry_run_reports_a_request_no_rule_routes_as_rejected(tmp_path):
    write(tmp_path / "q.rules", 'rule "q" on C-FIND { when exists DataSet.PatientID then route to PACS }\n')
    query = _query_file(tmp_path / "query.dcm", PatientName="D*")
    result = dicom_rules("dry-run", "--message", "C-FIND", "--format", "json", "q.rules", query, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"outcome": "reject", "reason": "no rule routed this C-FIND"' in result.stdout
    assert '"message": "C-FIND"' in result.stdout


def test_dry_run_refuses_an_unknown_message(tmp_path):
    write(tmp_path / "q.rules", 'rule "q" on C-FIND { then route to PACS }\n')
    result = dicom_rules("dry-run", "--message", "C-FOUND", "q.rules", "x.dcm", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_a_request_no_rule_routes_is_said_to_be_answered_with_a_failure():
    finding = only('rule "q" on C-FIND { when exists DataSet.PatientID then route to PACS }', "no-destination")
    assert finding.message == "a C-FIND that no rule routes, drops or rejects is answered with a failure"


def test_deeply_nested_response_edits_still_drop_the_response():
    depth = 60  # past the depth at which generated code moves into functions of its own
    body = "drop"
    for level in range(depth):
        body = f"if DataSet.PatientID != \"{level}\" {{\n{body}\n}}"
    chain = " else ".join(f'if DataSet.PatientID == "c{i}" {{ set DataSet.PatientName = "n{i}" }}'
                          for i in range(150))  # an else-if chain longer than one function holds
    ruleset = rulesengine.compile_source(
        f'rule "q" on C-FIND {{ then {{ route to PACS\n on response {{ {chain}\n{body} }} }} }}')
    decision = ruleset.evaluate(request(), message="C-FIND")
    assert ruleset.edit_response(decision, response(PatientID="0")) is True
    assert ruleset.edit_response(decision, response(PatientID="x")) is False
    named = response(PatientID="c149")
    assert ruleset.edit_response(decision, named) is False and named.get("DataSet.PatientName") == "n149"


def test_a_rule_whose_only_action_is_on_response_is_formatted_on_the_then_line():
    from rulesengine.lang.formatter import format_source
    text = 'rule "q" on C-FIND { then on response { set DataSet.PatientName = "X" } }'
    formatted = format_source(text)
    assert formatted == ('rule "q" on C-FIND {\n  then on response {\n    set DataSet.PatientName = "X"\n'
                         '  }\n}\n')
    assert format_source(formatted) == formatted


def test_a_destination_that_cannot_answer_several_messages_is_one_finding():
    found = [d for d in findings('rule "q" on C-FIND, C-MOVE, C-GET { then route to FILES, PACS }', DESTINATIONS)
             if d.code == "cannot-answer"]
    assert [d.message for d in found] == [
        "FILES cannot answer C-FIND, C-MOVE, C-GET: it is a folder destination, which answers C-STORE"]
