"""The dicom-rules command line, end to end: each command runs as a subprocess.

Every call goes through `dicom_rules()`, which fails the test when a Python
traceback or an "internal error" line shows up in the output: a user must only
ever see findings and messages, whatever they type.
"""

from __future__ import annotations

import argparse

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydicom import dcmread

import rulesengine

from helpers.files import ROOT, SAMPLES, write
from helpers.cli import dicom_rules

BAD = ROOT / "examples" / "bad"


# Rule files used by several tests; each is small enough to read at a glance.

CLEAN = '''\
rule "ct to pacs" {
  when DataSet.Modality == "CT"
  then route to PACS
}

rule "everything else to the archive" {
  then route to ARCHIVE
}
'''

# A misspelt keyword on line 2, column 16.
MISSPELT = '''\
rule "ct to pacs" {
  when DataSet.Modalty == "CT"
  then route to PACS
}

rule "everything else to the archive" {
  then route to ARCHIVE
}
'''

# Valid, but the second rule can never run: a warning, not an error.
UNREACHABLE = '''\
rule "drop everything" {
  then drop
}

rule "never runs" {
  when DataSet.Modality == "CT"
  then route to PACS
}
'''

# Routes to ARCHVE: only an error when the known destinations are given.
TYPO_DESTINATION = '''\
rule "ct to pacs" {
  when DataSet.Modality == "CT"
  then route to PACS
}

rule "everything else to the archive" {
  then route to ARCHVE
}
'''

ROUTER_CONFIG = '''\
storage: var
rules: clean.rules
destinations:
  PACS:
    type: dicom
    ae_title: CT1
    host: 127.0.0.1
    port: 104
  ARCHIVE:
    type: dicom
    ae_title: ARCHIVE
    host: 127.0.0.1
    port: 104
'''


# ---- general -------------------------------------------------------------------------


def test_version_prints_the_package_version(run_in):
    result = dicom_rules("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"dicom-rules {rulesengine.__version__}"


def test_no_subcommand_is_a_usage_error(run_in):
    result = dicom_rules()
    assert result.returncode == 2
    assert "the following arguments are required: COMMAND" in result.stderr


@pytest.mark.parametrize("args, complaint", [
    (["lint", "--bogus", "x.rules"], "unrecognized arguments: --bogus"),
    (["lint", "--format", "xml", "x.rules"], "invalid choice: 'xml'"),
    (["test", "--run", "(", "."], "--run: bad regular expression"),
])
def test_a_bad_option_is_a_usage_error(run_in, args, complaint):
    result = dicom_rules(*args)
    assert result.returncode == 2
    assert complaint in result.stderr
    assert result.stdout == ""


# ---- lint ----------------------------------------------------------------------------


def test_lint_of_a_clean_file_exits_0_and_prints_no_findings(run_in):
    write(run_in / "clean.rules", CLEAN)
    result = dicom_rules("lint", "clean.rules")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.strip() == "0 errors, 0 warnings"


def test_lint_error_shows_position_code_source_line_and_caret(run_in):
    write(run_in / "misspelt.rules", MISSPELT)
    result = dicom_rules("lint", "misspelt.rules")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    finding = "misspelt.rules:2:16: error unknown-keyword unknown DICOM keyword 'Modalty' (did you mean Modality?)"
    assert finding in lines
    at = lines.index(finding)
    # The source line, then carets under exactly the misspelt word.
    assert lines[at + 1] == '      when DataSet.Modalty == "CT"'
    assert lines[at + 2] == "    " + " " * 15 + "^" * len("Modalty")
    assert result.stderr.strip() == "1 error, 0 warnings"


def test_lint_warnings_alone_exit_0_and_1_with_strict(run_in):
    write(run_in / "unreachable.rules", UNREACHABLE)
    relaxed = dicom_rules("lint", "unreachable.rules")
    assert relaxed.returncode == 0
    assert relaxed.stdout.startswith("unreachable.rules:5:6: warning unreachable rule 'never runs' can never run")
    assert relaxed.stderr.strip() == "0 errors, 1 warning"

    strict = dicom_rules("lint", "--strict", "unreachable.rules")
    assert strict.returncode == 1
    assert strict.stdout == relaxed.stdout


def test_lint_json_is_an_array_of_findings(run_in):
    write(run_in / "misspelt.rules", MISSPELT)
    result = dicom_rules("lint", "--format", "json", "misspelt.rules")
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    assert isinstance(findings, list)
    errors = [f for f in findings if f["severity"] == "error"]
    assert errors == [{
        "file": "misspelt.rules", "line": 2, "column": 16, "end_line": 2, "end_column": 23,
        "severity": "error", "code": "unknown-keyword", "message": "unknown DICOM keyword 'Modalty'",
        "hint": "did you mean Modality?",
    }]
    assert "error" not in result.stderr  # no text summary mixed into machine output


def test_lint_json_of_a_clean_file_is_an_empty_array(run_in):
    write(run_in / "clean.rules", CLEAN)
    result = dicom_rules("lint", "--format", "json", "clean.rules")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_lint_github_prints_workflow_annotations(run_in):
    write(run_in / "misspelt.rules", MISSPELT)
    write(run_in / "unreachable.rules", UNREACHABLE)
    result = dicom_rules("lint", "--format", "github", "misspelt.rules", "unreachable.rules")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert ("::error file=misspelt.rules,line=2,col=16,endLine=2,endColumn=23,title=unknown-keyword::"
            "unknown DICOM keyword 'Modalty' (did you mean Modality?)") in lines
    assert any(line.startswith("::warning file=unreachable.rules,line=5,col=6,") for line in lines)
    assert all(line.startswith(("::error ", "::warning ")) for line in lines)


def test_lint_github_escapes_commas_in_file_names(run_in):
    write(run_in / "a,b.rules", MISSPELT)
    result = dicom_rules("lint", "--format", "github", "a,b.rules")
    assert "::error file=a%2Cb.rules,line=2,col=16," in result.stdout


def test_lint_searches_folders_recursively_and_checks_test_files(run_in):
    write(run_in / "tree" / "top.rules", CLEAN)
    write(run_in / "tree" / "sub" / "misspelt.rules", MISSPELT)
    write(run_in / "tree" / "sub" / "deeper" / "fine.rules", CLEAN)
    write(run_in / "tree" / "sub" / "deeper" / "fine_test.rules", 'test "broken" {\n  expect route to\n}\n')
    write(run_in / "tree" / ".hidden" / "ignored.rules", "this is not a rule file")
    result = dicom_rules("lint", "tree")
    assert result.returncode == 1
    reported = sorted({line.split(":")[0] for line in result.stdout.splitlines() if not line.startswith(" ")})
    assert reported == [os.path.join("tree", "sub", "deeper", "fine_test.rules"),
                        os.path.join("tree", "sub", "misspelt.rules")]
    assert "error syntax unexpected '}'" in result.stdout
    assert result.stderr.strip() == "2 errors, 0 warnings"


def test_lint_destinations_option_makes_unknown_destinations_errors(run_in):
    write(run_in / "typo.rules", TYPO_DESTINATION)
    unchecked = dicom_rules("lint", "typo.rules")
    assert unchecked.returncode == 0  # without known destinations, any name is accepted

    checked = dicom_rules("lint", "--destinations", "PACS,ARCHIVE", "typo.rules")
    assert checked.returncode == 1
    assert ("typo.rules:7:17: error unknown-destination unknown destination 'ARCHVE' (did you mean ARCHIVE?)"
            in checked.stdout.splitlines())
    assert "loop" not in checked.stdout  # names alone carry no AE titles


def test_lint_config_makes_unknown_destinations_errors_and_finds_loops(run_in):
    write(run_in / "typo.rules", TYPO_DESTINATION)
    write(run_in / "router.yaml", ROUTER_CONFIG)
    result = dicom_rules("lint", "--config", "router.yaml", "typo.rules")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "typo.rules:7:17: error unknown-destination unknown destination 'ARCHVE' (did you mean ARCHIVE?)" in lines
    # PACS has the AE title CT1, and the rule does not exclude documents sent by CT1.
    loop = [line for line in lines if " warning loop " in line]
    assert len(loop) == 1
    assert loop[0].startswith("typo.rules:3:17: warning loop this route can send a document back to its sender: "
                              "PACS is AE title CT1")
    assert result.stderr.strip() == "1 error, 1 warning"


def test_lint_with_a_missing_config_file_is_a_usage_error(run_in):
    write(run_in / "clean.rules", CLEAN)
    result = dicom_rules("lint", "--config", "missing.yaml", "clean.rules")
    assert result.returncode == 2
    assert result.stderr.startswith("dicom-rules: missing.yaml: cannot read")


def test_lint_of_a_missing_path_is_a_usage_error_naming_it(run_in):
    result = dicom_rules("lint", "nowhere.rules")
    assert result.returncode == 2
    assert result.stderr.strip() == "dicom-rules: nowhere.rules: no such file or folder"
    assert result.stdout == ""


def test_lint_of_the_repository_rules_has_no_errors():
    result = dicom_rules("lint", "rules/", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip().startswith("0 errors, ")
    assert " error " not in result.stdout


def test_lint_of_the_worked_example_is_clean():
    result = dicom_rules("lint", "rules/main.rules", "rules/main_test.rules", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


# ---- dry-run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_dry_run(tmp_path_factory):
    """The worked example over the samples, as sent by CT1, with every copy written out."""
    out = tmp_path_factory.mktemp("dry-run") / "out"
    result = dicom_rules("dry-run", "rules/main.rules", "examples/samples", "--calling-aet", "CT1", "--out", out,
                         cwd=ROOT)
    return result, out


def report_of(text: str, name: str) -> str:
    """The part of a text report about one input file."""
    blocks = re.split(r"\n(?=\S)", text)
    matching = [block for block in blocks if block.splitlines()[0].endswith(name)]
    assert len(matching) == 1, text
    return matching[0]


def main_rules_line(text: str) -> int:
    """The line of rules/main.rules holding `text`, so the tests survive edits elsewhere in the file."""
    lines = (ROOT / "rules" / "main.rules").read_text(encoding="utf-8").splitlines()
    (number,) = [i for i, line in enumerate(lines, 1) if text in line]
    return number


def test_dry_run_text_names_outcome_destinations_rules_and_edits(main_dry_run):
    result, _ = main_dry_run
    assert result.returncode == 0
    prefix, institution, main_pacs = (main_rules_line(f'rule "{name}"') for name in (
        "prefix patient id from scanner 1", "name the institution of known senders",
        "everything else to the main PACS"))
    set_id = main_rules_line('set DataSet.PatientID = "H1-"')
    set_issuer = main_rules_line('set DataSet.IssuerOfPatientID = "HOSP1"')
    head = report_of(result.stdout, "ct_head.dcm").splitlines()
    assert head[0] == "examples/samples/ct_head.dcm"
    assert head[1] == "  outcome: route to MAIN_PACS, ARCHIVE"
    assert head[2] == (f"  rules fired: 'prefix patient id from scanner 1' (line {prefix}), "
                       f"'name the institution of known senders' (line {institution}), "
                       f"'everything else to the main PACS' (line {main_pacs})")
    assert head[3] == "  edits:"
    assert (f'    DataSet.PatientID: "654321" -> "H1-654321"   (rule \'prefix patient id from scanner 1\', '
            f'line {set_id})') in head
    assert (f'    DataSet.IssuerOfPatientID: (absent) -> "HOSP1"   (rule \'prefix patient id from scanner 1\', '
            f'line {set_issuer})') in head


def test_dry_run_reports_every_sample_and_the_rejection_reason(main_dry_run):
    result, _ = main_dry_run
    files = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert files == [f"examples/samples/{name}" for name in
                     ("ct_chest.dcm", "ct_head.dcm", "mr_japanese.dcm", "mr_knee.dcm", "ot_secondary.dcm",
                      "sr_report.dcm")]
    rejected = report_of(result.stdout, "ot_secondary.dcm").splitlines()
    reject = main_rules_line('rule "reject unknown modality"')
    assert rejected[1:] == ["  outcome: reject: modality not accepted: OT",
                            f"  rules fired: 'reject unknown modality' (line {reject})"]
    # The chest CT also gets a de-identified copy; its edits are marked with the destination.
    chest = report_of(result.stdout, "ct_chest.dcm")
    assert "  outcome: route to RESEARCH, MAIN_PACS, ARCHIVE" in chest
    assert '    [RESEARCH] DataSet.PatientIdentityRemoved: (absent) -> "YES"' in chest


def test_dry_run_out_writes_each_destination_copy_with_the_edits(main_dry_run):
    _, out = main_dry_run
    written = sorted(str(p.relative_to(out)).replace(os.sep, "/") for p in out.rglob("*") if p.is_file())
    routed = ["ct_chest.dcm", "ct_head.dcm", "mr_japanese.dcm", "mr_knee.dcm", "sr_report.dcm"]
    assert written == (sorted(f"ARCHIVE/{n}" for n in routed) + sorted(f"MAIN_PACS/{n}" for n in routed)
                       + ["RESEARCH/ct_chest.dcm"])  # the rejected OT image is written nowhere

    head = dcmread(out / "MAIN_PACS" / "ct_head.dcm")
    assert head.PatientID == "H1-654321"
    assert head.IssuerOfPatientID == "HOSP1"
    assert dcmread(out / "ARCHIVE" / "ct_head.dcm").PatientID == "H1-654321"

    main_copy = dcmread(out / "MAIN_PACS" / "ct_chest.dcm")
    research = dcmread(out / "RESEARCH" / "ct_chest.dcm")
    assert main_copy.PatientName == "DOE^JOHN"  # de-identification touches the research copy only
    assert research.PatientIdentityRemoved == "YES"
    assert str(research.PatientName).startswith("ANON^")
    assert research.PatientID.startswith("ANON-")
    assert research.SOPInstanceUID != main_copy.SOPInstanceUID

    japanese = dcmread(out / "MAIN_PACS" / "mr_japanese.dcm")
    assert str(japanese.PatientName) == "山田^太郎"


def test_dry_run_json_prints_one_object_per_input():
    result = dicom_rules("dry-run", "rules/main.rules", "examples/samples", "--calling-aet", "CT1",
                         "--format", "json", cwd=ROOT)
    assert result.returncode == 0
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 6
    for report in reports:
        assert {"file", "outcome", "rules_fired", "edits", "destinations"} <= set(report)
    by_name = {Path(r["file"]).name: r for r in reports}
    head = by_name["ct_head.dcm"]
    assert (head["outcome"], head["destinations"]) == ("route", ["MAIN_PACS", "ARCHIVE"])
    assert {"path": "DataSet.PatientID", "old": "654321", "new": "H1-654321"}.items() <= head["edits"][0].items()
    assert [r["name"] for r in head["rules_fired"]] == [
        "prefix patient id from scanner 1", "name the institution of known senders", "everything else to the main PACS"]
    rejected = by_name["ot_secondary.dcm"]
    assert (rejected["outcome"], rejected["reason"], rejected["destinations"]) == \
        ("reject", "modality not accepted: OT", [])
    assert by_name["mr_japanese.dcm"]["file"] == "examples/samples/mr_japanese.dcm"


def test_dry_run_explain_shows_each_condition_with_its_values():
    result = dicom_rules("dry-run", "rules/main.rules", "examples/samples/ot_secondary.dcm",
                         "examples/samples/mr_knee.dcm", "--explain", cwd=ROOT)
    assert result.returncode == 0
    reject = main_rules_line('rule "reject unknown modality"')
    last = main_rules_line('rule "everything else to the main PACS"')
    rejected = report_of(result.stdout, "ot_secondary.dcm")
    assert ('        DataSet.Modality not in ["CT", "MR", "CR", "DX", "US", "SR"]  -> true  '
            '(DataSet.Modality is "OT")') in rejected
    assert (f"    rule 'everything else to the main PACS' (line {last}): not reached, "
            "evaluation ended at rule 'reject unknown modality'") in rejected
    knee = report_of(result.stdout, "mr_knee.dcm")
    assert f"    rule 'reject unknown modality' (line {reject}): did not fire" in knee
    assert '        DataSet.Modality == "CT"  -> false  (DataSet.Modality is "MR")' in knee
    assert f"    rule 'everything else to the main PACS' (line {last}): fired" in knee


def test_dry_run_explain_json_gives_a_list_literal_as_a_list():
    result = dicom_rules("dry-run", "rules/main.rules", "examples/samples/ot_secondary.dcm", "--explain",
                         "--format", "json", cwd=ROOT)
    (event,) = json.loads(result.stdout)["explain"]
    assert event["left"] == "OT"
    assert sorted(event["right"]) == ["CR", "CT", "DX", "MR", "SR", "US"]


def test_dry_run_quarantine_goes_to_the_quarantine_folder_with_its_reason(run_in):
    write(run_in / "hold.rules", '''\
rule "hold MR" {
  when DataSet.Modality == "MR"
  then quarantine "MR waits for review"
}

rule "everything else to the PACS" {
  then route to PACS
}
''')
    result = dicom_rules("dry-run", "hold.rules", SAMPLES / "mr_knee.dcm", SAMPLES / "ct_head.dcm", "--out", "out")
    assert result.returncode == 0  # quarantine is a decision, not a failure
    assert "  outcome: quarantine: MR waits for review" in result.stdout
    quarantined = run_in / "out" / "_quarantine" / "mr_knee.dcm"
    assert quarantined.read_bytes() == (SAMPLES / "mr_knee.dcm").read_bytes()  # the original, untouched
    assert (run_in / "out" / "_quarantine" / "mr_knee.dcm.reason.txt").read_text(encoding="utf-8") == \
        "MR waits for review\n"
    assert sorted(p.name for p in (run_in / "out").iterdir()) == ["PACS", "_quarantine"]
    assert dcmread(run_in / "out" / "PACS" / "ct_head.dcm").PatientID == "654321"


def test_dry_run_rule_failing_at_run_time_quarantines_and_exits_1(run_in):
    # PatientID "654321" is not an age string (AS): the assignment fails on this document only.
    write(run_in / "age.rules", '''\
rule "age from id" {
  then {
    set DataSet.PatientAge = DataSet.PatientID
    route to PACS
  }
}
''')
    result = dicom_rules("dry-run", "age.rules", SAMPLES / "ct_head.dcm", "--out", "out")
    assert result.returncode == 1
    assert "  outcome: quarantine: age.rules:3: rule 'age from id': DataSet.PatientAge:" in result.stdout
    assert (run_in / "out" / "_quarantine" / "ct_head.dcm.reason.txt").is_file()
    assert not (run_in / "out" / "PACS").exists()


def test_dry_run_reports_unreadable_inputs_and_goes_on():
    result = dicom_rules("dry-run", "rules/main.rules", "examples/bad", "examples/samples/ct_head.dcm", cwd=ROOT)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "examples/bad/not_dicom.dcm",
        "  error: not a DICOM file (no DICM header and no SOP instance found)",
        "examples/bad/truncated.dcm",
        "  error: the file is truncated: element (0010,0030) declares 8 bytes, 4 remain",
    ]
    assert lines[4:6] == ["examples/samples/ct_head.dcm", "  outcome: route to MAIN_PACS, ARCHIVE"]


def test_dry_run_json_reports_unreadable_inputs_with_an_error():
    result = dicom_rules("dry-run", "rules/main.rules", "examples/bad/not_dicom.dcm", "--format", "json", cwd=ROOT)
    assert result.returncode == 1
    (report,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["file"] == "examples/bad/not_dicom.dcm"
    assert report["outcome"] is None
    assert report["error"].startswith("not a DICOM file")


def test_dry_run_with_a_broken_rule_file_prints_findings_and_exits_1(run_in):
    write(run_in / "misspelt.rules", MISSPELT)
    result = dicom_rules("dry-run", "misspelt.rules", SAMPLES / "ct_head.dcm")
    assert result.returncode == 1
    assert result.stdout == ""  # no document is evaluated with broken rules
    assert ("misspelt.rules:2:16: error unknown-keyword unknown DICOM keyword 'Modalty' (did you mean Modality?)"
            in result.stderr.splitlines())
    assert "                   ^^^^^^^" in result.stderr.splitlines()


@pytest.mark.parametrize("args, message", [
    (["dry-run", "nowhere.rules", "x.dcm"], "dicom-rules: nowhere.rules: no such rule file"),
    (["dry-run", "clean.rules", "nowhere.dcm"], "dicom-rules: nowhere.dcm: no such file or folder"),
])
def test_dry_run_missing_file_is_a_usage_error(run_in, args, message):
    write(run_in / "clean.rules", CLEAN)
    result = dicom_rules(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == message


def test_dry_run_config_keeps_documents_from_going_back_to_their_sender(run_in):
    write(run_in / "clean.rules", CLEAN)
    write(run_in / "router.yaml", ROUTER_CONFIG)
    result = dicom_rules("dry-run", "clean.rules", SAMPLES / "ct_head.dcm", "--config", "router.yaml",
                         "--calling-aet", "CT1")
    assert result.returncode == 0
    assert "  outcome: route to ARCHIVE" in result.stdout
    assert "  not sent to PACS: it came from CT1, the AE title of PACS" in result.stdout


# ---- diff -----------------------------------------------------------------------------

# Differs from CLEAN in its first rule only: MR is held back instead of CT going to the PACS.
CHANGED = '''\
rule "ct to pacs" {
  when DataSet.Modality == "MR"
  then {
    set DataSet.InstitutionName = "MR CENTRE"
    quarantine "MR on hold"
  }
}

rule "everything else to the archive" {
  then route to ARCHIVE
}
'''


def test_diff_prints_only_documents_whose_decision_changes(run_in):
    write(run_in / "old.rules", CLEAN)
    write(run_in / "new.rules", CHANGED)
    result = dicom_rules("diff", "old.rules", "new.rules", SAMPLES)
    assert result.returncode == 1
    reports = {block.splitlines()[0]: block.splitlines()[1:] for block in re.split(r"\n(?=\S)", result.stdout.strip())}
    assert sorted(Path(name).name for name in reports) == ["ct_chest.dcm", "ct_head.dcm", "mr_japanese.dcm",
                                                           "mr_knee.dcm"]
    assert reports[str(SAMPLES / "ct_head.dcm")] == ["  destinations: -PACS"]
    assert reports[str(SAMPLES / "mr_knee.dcm")] == ["  outcome: route -> quarantine (MR on hold)",
                                                     "  destinations: -ARCHIVE",
                                                     '  + DataSet.InstitutionName = "MR CENTRE"']
    assert result.stderr.strip() == "4 of 6 documents change"


def test_diff_json_gives_old_and_new_decisions(run_in):
    write(run_in / "old.rules", CLEAN)
    write(run_in / "new.rules", CHANGED)
    result = dicom_rules("diff", "old.rules", "new.rules", SAMPLES / "mr_knee.dcm", "--format", "json")
    assert result.returncode == 1
    (change,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert change["old"] == {"outcome": "route", "reason": None, "destinations": ["ARCHIVE"], "edits": []}
    assert change["new"]["outcome"] == "quarantine"
    assert change["new"]["edits"] == [["", "DataSet.InstitutionName", '"MR CENTRE"']]


def test_diff_of_identical_rules_prints_nothing_and_exits_0(run_in):
    write(run_in / "old.rules", CLEAN)
    write(run_in / "same.rules", CLEAN)
    result = dicom_rules("diff", "old.rules", "same.rules", SAMPLES)
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.strip() == "0 of 6 documents change"


def test_diff_with_an_unreadable_input_exits_2(run_in):
    # Not exit 1: with a document it could not read, diff cannot say whether the change is safe.
    write(run_in / "old.rules", CLEAN)
    result = dicom_rules("diff", "old.rules", "old.rules", BAD / "not_dicom.dcm", SAMPLES / "ct_head.dcm")
    assert result.returncode == 2
    assert result.stdout.splitlines() == [str(BAD / "not_dicom.dcm"),
                                          "  error: not a DICOM file (no DICM header and no SOP instance found)"]


# ---- test -----------------------------------------------------------------------------

ROUTE_TESTS = '''\
test "ct goes to the pacs" {
  given DataSet.Modality = "CT"
  expect route to PACS
}

test "mr goes to the pacs" {
  given DataSet.Modality = "MR"
  expect route to PACS
}

test "the patient id is kept" {
  given DataSet.Modality = "CT", DataSet.PatientID = "X1"
  expect DataSet.PatientID == "X2"
}
'''


@pytest.fixture
def suite(run_in) -> Path:
    """route.rules with three tests: the first passes, the other two fail."""
    write(run_in / "suite" / "route.rules", CLEAN)
    write(run_in / "suite" / "route_test.rules", ROUTE_TESTS)
    return run_in / "suite"


def test_the_repository_rule_tests_pass_on_the_worked_example():
    result = dicom_rules("test", "rules/main_test.rules", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"(\d+) tests, \1 passed, 0 failed", result.stdout.strip()), result.stdout


def test_the_repository_rule_tests_pass():
    result = dicom_rules("test", "rules/", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"(\d+) tests, \1 passed, 0 failed", result.stdout.strip()), result.stdout


def test_failing_tests_print_fail_position_and_actual_value(suite):
    result = dicom_rules("test", "suite")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "FAIL  suite/route_test.rules:6: mr goes to the pacs",
        "      suite/route_test.rules:8:3: expected a route to PACS; destinations: ARCHIVE; outcome: route",
        "FAIL  suite/route_test.rules:11: the patient id is kept",
        '      suite/route_test.rules:13:3: expected DataSet.PatientID == "X2", but DataSet.PatientID is "X1"',
        "3 tests, 1 passed, 2 failed",
    ]


def test_run_selects_tests_by_regex(suite):
    result = dicom_rules("test", "suite", "--run", "^ct ", "-v")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["ok    suite/route_test.rules:1: ct goes to the pacs",
                                          "1 test, 1 passed, 0 failed"]


def test_test_json_lists_every_test_with_its_failures(suite):
    result = dicom_rules("test", "suite", "--format", "json")
    assert result.returncode == 1
    results = json.loads(result.stdout)
    assert [(r["name"], r["line"], r["passed"]) for r in results] == [
        ("ct goes to the pacs", 1, True), ("mr goes to the pacs", 6, False), ("the patient id is kept", 11, False)]
    assert results[2]["failures"] == [{"line": 13, "column": 3,
                                       "message": 'expected DataSet.PatientID == "X2", but DataSet.PatientID is "X1"'}]


def test_test_junit_is_valid_xml_with_suites_cases_and_failures(suite):
    result = dicom_rules("test", "suite", "--format", "junit")
    assert result.returncode == 1
    root = ET.fromstring(result.stdout.encode("utf-8"))
    assert root.tag == "testsuites"
    (testsuite,) = root.findall("testsuite")
    assert (testsuite.get("tests"), testsuite.get("failures")) == ("3", "2")
    cases = testsuite.findall("testcase")
    assert [case.get("name") for case in cases] == ["ct goes to the pacs", "mr goes to the pacs",
                                                    "the patient id is kept"]
    assert [len(case.findall("failure")) for case in cases] == [0, 1, 1]
    failure = cases[2].find("failure")
    assert failure.get("message") == 'expected DataSet.PatientID == "X2", but DataSet.PatientID is "X1"'
    assert failure.text.startswith("suite/route_test.rules:13:3: ")


def test_coverage_lists_rules_no_test_fired(suite):
    result = dicom_rules("test", "suite", "--run", "^mr ", "--coverage")
    assert result.returncode == 1  # the selected test fails
    lines = result.stdout.splitlines()
    assert "coverage of suite/route.rules: 1/2 rules fired, 0/0 branches taken" in lines
    assert "  suite/route.rules:1: rule 'ct to pacs' never fired" in lines
    assert not any("everything else to the archive" in line for line in lines)


def test_a_test_file_without_its_rule_file_is_an_error(run_in):
    write(run_in / "lonely_test.rules", ROUTE_TESTS)
    result = dicom_rules("test", "lonely_test.rules")
    assert result.returncode == 1
    assert ("lonely_test.rules:1:1: error test-file lonely_test.rules tests lonely.rules, which does not exist"
            in result.stderr.splitlines())
    linted = dicom_rules("lint", "lonely_test.rules")
    assert linted.returncode == 1
    assert "error test-file lonely_test.rules tests lonely.rules, which does not exist" in linted.stdout


def test_test_without_test_files_exits_1(run_in):
    write(run_in / "clean.rules", CLEAN)
    result = dicom_rules("test", "clean.rules")
    assert result.returncode == 1
    assert result.stderr.strip() == "no *_test.rules files found"


def test_a_test_that_applies_a_block_runs(run_in):
    write(run_in / "tidy.rules", '''\
block tidy {
  set DataSet.InstitutionName = "TIDY"
}

rule "everything to the archive" {
  then route to ARCHIVE
}
''')
    write(run_in / "tidy_test.rules", '''\
test "tidy names the institution" {
  given DataSet.Modality = "CT"
  apply tidy
  expect DataSet.InstitutionName == "TIDY"
}
''')
    result = dicom_rules("test", ".")
    assert result.returncode == 0
    assert result.stdout.strip() == "1 test, 1 passed, 0 failed"


# ---- dict -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["PatientID", "0010,0020", "(0010,0020)", "00100020"])
def test_dict_finds_an_element_by_keyword_or_tag(run_in, query):
    result = dicom_rules("dict", query)
    assert result.returncode == 0
    assert result.stdout.split() == ["(0010,0020)", "PatientID", "LO", "VM", "1", "Patient", "ID"]


def test_dict_shows_name_vr_and_vm(run_in):
    result = dicom_rules("dict", "PatientName")
    assert result.returncode == 0
    assert re.fullmatch(r"\(0010,0010\)  PatientName +PN +VM 1 +Patient's Name\n", result.stdout)


def test_dict_finds_elements_by_words_of_their_name(run_in):
    result = dicom_rules("dict", "patient", "birth")
    assert result.returncode == 0
    keywords = [line.split()[1] for line in result.stdout.splitlines()]
    assert {"PatientBirthDate", "PatientBirthTime", "PatientBirthName"} <= set(keywords)
    assert all("Birth" in keyword for keyword in keywords)


def test_dict_json(run_in):
    result = dicom_rules("dict", "PatientID", "--format", "json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == [{"tag": "(0010,0020)", "keyword": "PatientID", "name": "Patient ID",
                                          "vr": "LO", "vm": "1", "retired": False}]


def test_dict_accepts_the_tag_masks_rules_accept(capsys):
    # `delete DataSet.(60xx,3000)` is valid in a rule; dict finds what it names.
    from rulesengine.cli import main
    assert main(["dict", "(60xx,3000)"]) == 0
    assert re.fullmatch(r"\(60xx,3000\)  OverlayData +OB or OW +VM 1 +Overlay Data\n", capsys.readouterr().out)
    assert main(["dict", "--format", "json", "60XX,3000"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"tag": "(60xx,3000)", "keyword": "OverlayData",
                                                    "name": "Overlay Data", "vr": "OB or OW", "vm": "1",
                                                    "retired": False}]
    assert main(["dict", "(0010,00xx)"]) == 0  # a mask over single elements: every one it covers
    tags = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert tags[:3] == ["(0010,0010)", "(0010,0020)", "(0010,0021)"]
    assert all(re.fullmatch(r"\(0010,00[0-9A-F]{2}\)", tag) for tag in tags)
    assert main(["dict", "OverlayData"]) == 0  # the keyword of a repeating group shows its mask
    assert capsys.readouterr().out.startswith("(60xx,3000)  OverlayData")
    assert main(["dict", "(7Exx,3000)"]) == 1


def test_dict_unknown_name_exits_1_and_suggests_keywords(run_in):
    result = dicom_rules("dict", "PatientsName")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("nothing in the dictionary matches 'PatientsName'; did you mean PatientName")


# ---- docs/cli.md ---------------------------------------------------------------------


def test_the_reference_page_lists_every_finding_code():
    # The codes as the sources raise them, and the rows of the table in docs/cli.md.
    raised = set()
    for source in (ROOT / "rulesengine").rglob("*.py"):
        raised.update(re.findall(r'\b(?:error|warning|_error|_warn|NodeError)\(\s*"([a-z][a-z-]*)"',
                                 source.read_text(encoding="utf-8")))
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z][a-z-]*)` \| (?:error|warning|error, warning) \|", page, re.M))
    assert raised, "no finding codes found in the sources"
    assert sorted(raised - listed) == [], "codes missing from docs/cli.md"
    assert sorted(listed - raised) == [], "docs/cli.md lists codes that do not exist"



def test_the_reference_page_has_a_section_and_a_table_row_for_every_command():
    from rulesengine.cli import build_parser
    parser = build_parser()
    commands = set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,3} ([a-z-]+)$", page, re.M))
    rows = set(re.findall(r"^\| `([a-z-]+)` +\|", page, re.M))
    assert sorted(commands - headings) == [], "commands without a section in docs/cli.md"
    assert sorted(commands - rows) == [], "commands missing from the table of docs/cli.md"


# ---- behaviour added after review -------------------------------------------------------

def test_run_matching_no_test_fails(run_in):
    write(run_in / "r.rules", 'rule "all" { then route to PACS }\n')
    write(run_in / "r_test.rules", 'test "one" {\n  given DataSet.Modality = "CT"\n  expect route to PACS\n}\n')
    result = dicom_rules("test", ".", "--run", "zzz")
    assert result.returncode == 1 and "no test matches --run 'zzz'" in result.stderr


def test_a_broken_test_file_is_a_failing_entry_in_json_and_junit(run_in):
    write(run_in / "r.rules", 'rule "all" { then route to PACS }\n')
    write(run_in / "r_test.rules", 'test "one" {\n  expect DataSet.Modalty == "CT"\n}\n')
    result = dicom_rules("test", ".", "--format", "json")
    (entry,) = json.loads(result.stdout)
    assert result.returncode == 1 and not entry["passed"] and "Modalty" in entry["failures"][0]["message"]
    junit_run = dicom_rules("test", ".", "--format", "junit")
    assert junit_run.returncode == 1
    suite = ET.fromstring(junit_run.stdout).find("testsuite")
    assert suite.get("failures") == "1"
    assert "Modalty" in suite.find("testcase/failure").get("message")


def test_dict_ignores_case_of_a_keyword():
    result = dicom_rules("dict", "patientname")
    assert result.returncode == 0 and "PatientName" in result.stdout


def test_a_rule_file_that_is_not_utf8_is_reported_with_a_position(run_in):
    (run_in / "latin.rules").write_bytes('rule "a" {\n  then log "M\u00fcller"\n}\n'.encode("latin-1"))
    result = dicom_rules("lint", "latin.rules")
    assert result.returncode == 1
    assert result.stdout.startswith("latin.rules:2:14: error encoding")
