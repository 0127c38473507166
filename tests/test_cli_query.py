"""`dicom-rules query`: what it refuses before anything is sent (exit 2). The queries
themselves, against Orthanc and wlmscpfs, are in tests/integration/test_queries.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import dicom_rules

CONFIG = """storage: var
rules: main.rules
destinations:
  PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 104}
  ARCHIVE: {type: folder, path: out}
  WORKLISTS: {type: worklist, path: .}
"""


@pytest.fixture
def config(tmp_path) -> Path:
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to ARCHIVE\n}\n')
    (tmp_path / "router.yaml").write_text(CONFIG)
    return tmp_path / "router.yaml"


@pytest.mark.parametrize("args, message", [
    (["NOPE", "PatientID=1"], "no destination 'NOPE' in router.yaml (destinations: ARCHIVE, PACS, WORKLISTS)"),
    (["ARCHIVE", "PatientID=1"], "ARCHIVE is a folder destination: query sends a C-FIND over the network, to dicom destinations only"),
    (["WORKLISTS", "--model", "worklist"], "WORKLISTS is a worklist destination: query sends a C-FIND over the"),
    (["PACS", "PatientNaem=X"], "PatientNaem: 'PatientNaem' is not a DICOM keyword; did you mean PatientName"),
    (["PACS", "PatientID"], "'PatientID': a key is KEY=VALUE, or KEY= to have it returned"),
    (["PACS", "PatientID.Modality=CT"], "PatientID.Modality: PatientID is not a sequence"),
    (["PACS", "PatientID=1", "PatientID=2"], "PatientID is given twice"),
    (["PACS", "--model", "worklist", "--level", "STUDY"], "--level is for the patient and study models"),
    (["PACS", "--level", "PATIENT"], "the study root model has no PATIENT level: use --model patient"),
    (["PACS", "--timeout", "0"], "--timeout must be more than 0 seconds"),
    (["PACS", "PatientID=1", "-h"], "-h goes before CONFIG: dicom-rules query -h"),
])
def test_query_usage_errors_exit_2(config, args, message):
    result = dicom_rules("query", "router.yaml", *args, cwd=config.parent)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"dicom-rules: {message}"), result.stderr
    assert result.stdout == ""


def test_a_configuration_that_is_not_valid_exits_2(tmp_path):
    (tmp_path / "router.yaml").write_text("storage: var\nrules: main.rules\ndestinations: 12\n")
    result = dicom_rules("query", "router.yaml", "PACS", "PatientID=1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("dicom-rules: router.yaml"), result.stderr


def test_options_may_come_among_the_keys(config):
    result = dicom_rules("query", "router.yaml", "PACS", "PatientID=1", "--model", "worklist", "--level", "STUDY",
                         cwd=config.parent)
    assert result.returncode == 2 and "--level is for the patient and study models" in result.stderr
