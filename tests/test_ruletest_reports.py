"""What `dicom-rules test` says when it cannot run a file's tests, and how it shows values:
a rule file that does not compile is said to, with its findings and a failing status
(never a quiet "0 tests"); dates and times read back as they were written."""

from __future__ import annotations

import json

import rulesengine
from rulesengine import Document
from rulesengine.explain import explain_lines

from helpers.files import SAMPLES, write
from helpers.cli import dicom_rules

ROUTES = 'rule "ct" {\n  when DataSet.Modality == "CT"\n  then route to PACS\n}\n'
BROKEN = 'rule "ct" {\n  when DataSet.Modality == "CT"\n  then route to\n}\n'  # no destination: a syntax error
TESTS = 'test "ct goes to the pacs" {\n  given DataSet.Modality = "CT"\n  expect route to PACS\n}\n'


def test_a_rule_file_that_does_not_compile_is_said_to_and_fails(run_in):
    write(run_in / "routing.rules", BROKEN)
    write(run_in / "routing_test.rules", TESTS)
    result = dicom_rules("test", "routing_test.rules")
    assert result.returncode == 1
    assert "routing.rules:4:1: error syntax" in result.stderr  # the findings
    assert "routing_test.rules: its tests did not run: routing.rules does not compile (1 error above)" \
        in result.stderr
    assert result.stdout.strip() == "0 tests, 0 passed, 0 failed, 1 test file not run (see above)"


def test_a_broken_file_among_good_ones_is_counted_and_fails_the_run(run_in):
    write(run_in / "good" / "routing.rules", ROUTES)
    write(run_in / "good" / "routing_test.rules", TESTS)
    write(run_in / "bad" / "routing.rules", BROKEN)
    write(run_in / "bad" / "routing_test.rules", TESTS)
    write(run_in / "odd" / "routing.rules", ROUTES)
    write(run_in / "odd" / "routing_test.rules", TESTS.replace("expect route to PACS", "expect fired \"nobody\""))
    result = dicom_rules("test", ".")
    assert result.returncode == 1
    assert "bad/routing_test.rules: its tests did not run: bad/routing.rules does not compile" in result.stderr
    assert "odd/routing_test.rules: its tests did not run: it has 1 error (above)" in result.stderr
    assert result.stdout.strip().endswith("1 test, 1 passed, 0 failed, 2 test files not run (see above)")


def test_reports_for_ci_name_why_a_file_did_not_run(run_in):
    write(run_in / "routing.rules", BROKEN)
    write(run_in / "routing_test.rules", TESTS)
    result = dicom_rules("test", "--format", "json", "routing_test.rules")
    assert result.returncode == 1
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == "(not run: routing.rules does not compile (1 error above))"
    assert entry["passed"] is False and entry["failures"][0]["line"] == 4


DATES = '''\
test "dates and times as written" {
  given DataSet.AcquisitionDateTime = "20240101120000", DataSet.AcquisitionTime = "1200",
        DataSet.StudyDate = "20240101"
  expect DataSet.AcquisitionDateTime == "20240101120001"
  expect DataSet.AcquisitionTime == "1201"
  expect DataSet.AcquisitionDateTime > "2025"
  expect DataSet.StudyDate != "20240101"
}

test "times compare as instants" {
  given DataSet.AcquisitionTime = "0930", DataSet.AcquisitionDateTime = "202401011200"
  expect DataSet.AcquisitionTime == "093000"
  expect DataSet.AcquisitionDateTime == "20240101120000.000"
  expect DataSet.AcquisitionDateTime < "20240101120000.5"
}
'''


def test_dates_and_times_read_back_with_the_precision_they_were_written_with(run_in):
    write(run_in / "routing.rules", ROUTES)
    write(run_in / "routing_test.rules", DATES)
    result = dicom_rules("test", "routing_test.rules")
    assert result.returncode == 1
    assert ".000000" not in result.stdout
    assert 'but DataSet.AcquisitionDateTime is "20240101120000"' in result.stdout
    assert 'but DataSet.AcquisitionTime is "1200"' in result.stdout
    assert 'expected DataSet.AcquisitionDateTime > "2025", but DataSet.AcquisitionDateTime is "20240101120000"' \
        in result.stdout
    assert 'but DataSet.StudyDate is "20240101"' in result.stdout
    assert "2 tests, 1 passed, 1 failed" in result.stdout  # the second test: equal as instants


def test_explain_shows_times_as_the_document_holds_them():
    ruleset = rulesengine.compile_source(
        'rule "late" {\n  when DataSet.StudyTime > "1200" and DataSet.AcquisitionDateTime >= "2000"\n'
        '  then route to A\n}\n')
    document = Document.read(SAMPLES / "ct_chest.dcm")
    document.set("DataSet.StudyTime", "0930")
    document.set("DataSet.AcquisitionDateTime", "19991231235959.5")
    text = "\n".join(explain_lines(ruleset, ruleset.evaluate(document, trace=True)))
    assert '"0930"' in text and ".000000" not in text
