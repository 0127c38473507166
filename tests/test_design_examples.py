"""The examples of the language design (kept verbatim in tests/design/) parse and do what
the design says they do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rulesengine
from rulesengine import Arrival, Document

from helpers.files import ROOT, SAMPLES, bundled

DESIGN = Path(__file__).resolve().parent / "design"


@pytest.fixture
def design_rules(tmp_path) -> Path:
    """The example's folder: main.rules, its test, the profile it imports, a sites table, a sample."""
    for name in ("main.rules", "main_test.rules"):
        shutil.copy(DESIGN / name, tmp_path / name)
    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / "rules" / "profiles" / "basic-confidentiality.rules", tmp_path / "profiles")
    shutil.copytree(ROOT / "rules" / "tables", tmp_path / "tables")
    (tmp_path / "samples").mkdir()
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "samples" / "ct_small.dcm")
    return tmp_path / "main.rules"


def decide(ruleset, path, calling_aet="CT9", **values):
    document = Document.read(path, Arrival(calling_aet=calling_aet))
    for key, value in values.items():
        document.set(f"DataSet.{key}", value)
    return ruleset.evaluate(document), document


def test_the_example_has_no_findings(design_rules):
    # No warning either: the example is what people copy.
    assert [d.one_line() for d in rulesengine.check_file(design_rules)] == []


def test_unknown_modalities_are_rejected(design_rules):
    ruleset = rulesengine.compile_file(design_rules)
    decision, _ = decide(ruleset, SAMPLES / "ot_secondary.dcm")
    assert (decision.outcome, decision.reason) == ("reject", "modality not accepted")


def test_scanner_one_gets_the_prefix_and_issuer(design_rules):
    ruleset = rulesengine.compile_file(design_rules)
    decision, document = decide(ruleset, SAMPLES / "ct_head.dcm", calling_aet="CT1")
    assert document.get("DataSet.PatientID") == "H1-654321"
    assert document.get("DataSet.IssuerOfPatientID") == "HOSP1"
    decision, document = decide(ruleset, SAMPLES / "ct_head.dcm", calling_aet="CT2")
    assert document.get("DataSet.PatientID") == "654321"


def test_chest_ct_gets_a_research_copy_without_identity(design_rules):
    ruleset = rulesengine.compile_file(design_rules)
    decision, document = decide(ruleset, SAMPLES / "ct_chest.dcm")
    assert list(decision.destinations) == ["RESEARCH", "MAIN_PACS", "ARCHIVE"]
    research = decision.destinations["RESEARCH"]
    assert research.get("DataSet.PatientName").startswith("ANON^")
    assert research.get('DataSet.(0009,"ACME 1.1",10)') is None
    assert research.get("DataSet.PatientIdentityRemoved") == "YES"
    assert decision.destinations["MAIN_PACS"].get("DataSet.PatientName") == "DOE^JOHN"


def test_empty_scheduled_step_modalities_are_filled(design_rules):
    ruleset = rulesengine.compile_file(design_rules)
    _, document = decide(ruleset, SAMPLES / "ct_chest.dcm")
    assert document.get("DataSet.ScheduledProcedureStepSequence[*].Modality") == ["CT", "CT"]


def test_everything_else_goes_to_the_main_pacs_and_archive_and_stops(design_rules):
    ruleset = rulesengine.compile_file(design_rules)
    decision, _ = decide(ruleset, SAMPLES / "mr_knee.dcm")
    assert (decision.outcome, list(decision.destinations)) == ("route", ["MAIN_PACS", "ARCHIVE"])
    assert decision.ended_by.name == "everything else to the main PACS"


def test_the_example_tests_pass(design_rules):
    result = subprocess.run([sys.executable, "-m", "rulesengine", "test", str(design_rules.parent), "-v"],
                            capture_output=True, text=True, cwd=design_rules.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 tests, 2 passed, 0 failed" in result.stdout


@pytest.mark.parametrize("path,expected", [
    ("DataSet.PatientID", "123456"), ("DataSet.(0010,0020)", "123456"),
    ('DataSet.(0009,"ACME 1.1",10)', "INTERNAL-REF-42"),
    ("DataSet.ScheduledProcedureStepSequence[1].Modality", "CT"), ("DataSet.ImageType[3]", "AXIAL"),
    ("CommandSet.CommandField", 1), ("CommandSet.MessageID", 3),
    ("CommandSet.AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
    ("FileMeta.TransferSyntaxUID", "1.2.840.10008.1.2.1"), ("Association.CallingAET", "CT1"),
    ("Association.CalledAET", "ROUTER"), ("Association.PeerAddress", "127.0.0.1"), ("Source.Name", "main"),
])
def test_every_path_of_the_design_table_reads(path, expected):
    document = Document.read(SAMPLES / "ct_chest.dcm", Arrival("CT1", "ROUTER", "127.0.0.1", 104, "main"))
    document.command_set.CommandField = 1
    document.command_set.MessageID = 3
    document.command_set.AffectedSOPClassUID = document.dataset.SOPClassUID
    assert document.get(path) == expected


def test_star_paths_are_for_any_all_and_for_each():
    source = ('rule "a" {\n  when any issuer in DataSet.OtherPatientIDsSequence[*].IssuerOfPatientID: '
              'issuer == "HOSP2"\n  then route to A\n}\n')
    decision = rulesengine.compile_source(source).evaluate(Document.read(SAMPLES / "ct_chest.dcm"))
    assert list(decision.destinations) == ["A"]
