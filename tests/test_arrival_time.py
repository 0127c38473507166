"""The arrival time (Arrival.Date, Time, DateTime, Weekday): rules, tests that fix the clock,
and the router filling it from its clock."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest

import rulesengine
from rulesengine import Arrival, Document
from rulesengine.config import load_config
from rulesengine.lang.api import analyse
from rulesengine.lang.loader import load_program
from rulesengine.ruletest import load_suite, run_suite
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

from helpers.files import SAMPLES, write

OFF_HOURS = '''
rule "off hours to the night reader" {
  when Arrival.Weekday in ["Saturday", "Sunday"] or Arrival.Time >= "1800" or Arrival.Time < "0700"
  then route to NIGHT
}

fallback rule "day" {
  then route to DAY
}
'''


def at(text: str) -> Arrival:
    return Arrival(received_at=datetime.strptime(text, "%Y%m%d%H%M%S").timestamp())


def routed(source: str, arrival: Arrival) -> list[str]:
    decision = rulesengine.compile_source(source).evaluate(Document(arrival=arrival))
    assert decision.error is None, decision.error
    return list(decision.destinations)


@pytest.mark.parametrize("when,destination", [
    ("20240106120000", "NIGHT"),  # a Saturday
    ("20240107093000", "NIGHT"),  # a Sunday
    ("20240108180000", "NIGHT"),  # Monday, 18:00 sharp
    ("20240108175959", "DAY"),
    ("20240108065959", "NIGHT"),
    ("20240108070000", "DAY"),
])
def test_off_hours_by_weekday_and_time(when, destination):
    assert routed(OFF_HOURS, at(when)) == [destination]


def test_an_unknown_arrival_time_is_null():
    assert routed(OFF_HOURS, Arrival()) == ["DAY"]  # every comparison with null is false
    source = 'rule "r" { when missing Arrival.Date and missing Arrival.Weekday then route to A }'
    assert routed(source, Arrival()) == ["A"]


def test_the_fields_as_text():
    source = ('rule "r" { then { log Arrival.Date + " " + Arrival.Time + " " + Arrival.DateTime + " " + '
              'Arrival.Weekday\n log today() + " " + now()\n route to A } }')
    decision = rulesengine.compile_source(source).evaluate(Document(arrival=at("20240229235901")))
    assert [line.message for line in decision.log] == ["20240229 235901 20240229235901 Thursday",
                                                        "20240229 20240229235901"]


def test_the_fields_are_typed_for_lint():
    def codes(condition: str) -> list[str]:
        program = load_program(text=f'rule "r" {{ when {condition} then route to A }}\nrule "z" {{ then route to Z }}',
                               filename="t.rules")
        return [d.code for d in analyse(program).diagnostics]
    assert codes('Arrival.Time >= "1800"') == []
    assert codes('Arrival.Date >= "20240101" and Arrival.DateTime < "20240101120000"') == []
    assert codes("Arrival.Time >= 1800") == ["type-mismatch"]
    assert codes('Arrival.Time >= "2500"') == ["bad-value"]
    assert codes('Arrival.Date == "2024-01-06"') == ["bad-value"]
    assert codes('Arrival.Weekday == "Saturday"') == []
    assert codes('today() == "20240106" and now() >= "20240106120000"') == []  # typed DA and DT
    assert codes('Arrival.Hour == "18"') == ["unknown-field"]
    program = load_program(text='rule "r" { then { set Arrival.Time = "1200"\n route to A } }', filename="t.rules")
    assert [d.code for d in analyse(program).diagnostics] == ["read-only"]


def test_a_time_comparison_is_a_time_comparison():
    # as text "093000" is not "0930"; as times they are the same instant
    source = 'rule "r" { when Arrival.Time == "0930" then route to A }\nfallback rule "f" { then route to B }'
    assert routed(source, at("20240108093000")) == ["A"]
    assert routed(source, at("20240108093001")) == ["B"]


# ---- tests fix the clock --------------------------------------------------------------------

def run_tests(tmp_path, rules: str, tests: str):
    (tmp_path / "main.rules").write_text(rules)
    (tmp_path / "main_test.rules").write_text(tests)
    suite = load_suite(str(tmp_path / "main_test.rules"))
    return [d for d in suite.diagnostics if d.is_error], (run_suite(suite, None) if not suite.diagnostics else [])


def test_a_test_fixes_the_arrival_time_and_today(tmp_path):
    rules = OFF_HOURS + 'rule "stamp" { then set DataSet.StudyDescription = today() + " " + now() }\n'
    tests = '''
test "saturday noon" {
  with Arrival.DateTime = "20240106120000"
  expect route to NIGHT
  expect DataSet.StudyDescription == "20240106 20240106120000"
  expect Arrival.Weekday == "Saturday"
}

test "a monday morning, by date and time" {
  with Arrival.Date = "20240108", Arrival.Time = "0930"
  expect route to DAY
  expect Arrival.DateTime == "20240108093000"
}

test "a time alone is on the first of January 2000" {
  with Arrival.Time = "2230"
  expect route to NIGHT
  expect Arrival.Date == "20000101"
}
'''
    errors, results = run_tests(tmp_path, rules, tests)
    assert errors == [] and len(results) == 3
    assert all(result.passed for result in results), [f.message for r in results for f in r.failures]


@pytest.mark.parametrize("statement,code", [
    ('with Arrival.DateTime = "2024-01-06"', "bad-value"),
    ('with Arrival.Time = "7pm"', "bad-value"),
    ('with Arrival.Weekday = "Saturday"', "read-only"),
])
def test_a_wrong_arrival_time_in_a_test_is_a_finding(tmp_path, statement, code):
    errors, _ = run_tests(tmp_path, OFF_HOURS, f'test "t" {{\n  {statement}\n  expect route to DAY\n}}\n')
    assert [d.code for d in errors] == [code], [d.one_line() for d in errors]


def test_command_set_values_in_a_store_test(tmp_path):
    rules = ('rule "moved for WS1" { when CommandSet.MoveOriginatorApplicationEntityTitle == "WS1" '
             'then route to WS1_ARCHIVE }\nfallback rule "rest" { then route to PACS }\n')
    tests = ('test "moved" {\n  given CommandSet.MoveOriginatorApplicationEntityTitle = "WS1"\n'
             '  expect route to WS1_ARCHIVE\n}\n'
             'test "stored" {\n  expect route to PACS\n}\n')
    errors, results = run_tests(tmp_path, rules, tests)
    assert errors == [] and all(result.passed for result in results), results


# ---- the router fills the arrival time from its clock ---------------------------------------

@pytest.fixture
def router(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "router.yaml", "storage: var\nrules: main.rules\ndestinations:\n"
                                    "  NIGHT: {type: folder, path: night}\n  DAY: {type: folder, path: day}\n")
    write(tmp_path / "main.rules", OFF_HOURS)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    clock = [datetime(2024, 1, 6, 12, 0).timestamp()]  # a Saturday noon
    pipeline = Pipeline(storage, journal, RulesHolder(config, journal), lambda _names: None,
                        on_accepted=lambda _id: None, clock=lambda: clock[0])
    yield pipeline, clock
    journal.close()


def receive(pipeline: Pipeline, decide: bool) -> dict:
    path = pipeline.storage.temp_path()
    shutil.copyfile(SAMPLES / "ct_chest.dcm", path)
    result = pipeline.receive(path, Arrival(source_name="test", source_kind="folder"), decide=decide)
    pipeline.process(result.instance_id)
    return pipeline.journal.instance(result.instance_id)


@pytest.mark.parametrize("decide", [True, False])
def test_the_router_takes_the_arrival_time_from_its_clock(router, decide):
    pipeline, clock = router
    row = receive(pipeline, decide)  # decided at reception, or later from the journal
    assert row["received_at"] == clock[0]
    assert [d["destination"] for d in pipeline.journal.deliveries(limit=10)] == ["NIGHT"]
    clock[0] = datetime(2024, 1, 8, 10, 0).timestamp()  # a Monday morning
    receive(pipeline, decide)
    assert sorted(d["destination"] for d in pipeline.journal.deliveries(limit=10)) == ["DAY", "NIGHT"]


def test_dry_run_assumes_the_arrival_time_it_is_given(tmp_path):
    from helpers.cli import dicom_rules
    write(tmp_path / "t.rules", OFF_HOURS)
    sample = SAMPLES / "ct_head.dcm"
    assert "route to NIGHT" in dicom_rules("dry-run", "t.rules", sample, "--arrival", "20240106120000",
                                           cwd=tmp_path).stdout
    assert "route to DAY" in dicom_rules("dry-run", "t.rules", sample, "--arrival", "202401081000",
                                         cwd=tmp_path).stdout
    refused = dicom_rules("dry-run", "t.rules", sample, "--arrival", "2024-01-08", cwd=tmp_path)
    assert refused.returncode == 2 and "YYYYMMDDHHMMSS" in refused.stderr
