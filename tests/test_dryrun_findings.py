"""dry-run never gives up: each file it cannot handle is a finding with its reason, the run goes
on, and the exit status says some failed; and it prints rule warnings only with errors."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from helpers.files import SAMPLES, bundled, write
from helpers.cli import dicom_rules
from helpers.damaged import bad_value_length, corrupt_deflate, deeply_nested, with_command_element, without_file_meta

RULES = """
rule "hold tiny images" {
  when DataSet.Rows < 8
  then quarantine "too small to read"
}

rule "to both" {
  then {
    route to PACS
    copy to ARCHIVE {
      set DataSet.InstitutionName = "ARCHIVED"
    }
  }
}
"""


def reports(text: str) -> dict[str, list[str]]:
    """The text report of each input: its name -> its indented lines."""
    found: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("  "):
            lines.append(line.strip())
        else:
            lines = found[Path(line).name] = []
    return found


def test_dry_run_reports_every_file_it_cannot_handle_and_evaluates_the_rest(run_in):
    write(run_in / "main.rules", RULES)
    inputs = run_in / "inputs"
    inputs.mkdir()
    damaged = [deeply_nested(inputs / "a-nested.dcm"), corrupt_deflate(inputs / "b-deflate.dcm"),
               Path(bundled("SC_rgb_jpeg.dcm")), Path(bundled("no_meta.dcm")), bad_value_length(inputs / "c-rows.dcm"),
               with_command_element(inputs / "d-command.dcm")]
    good = [Path(bundled("rtstruct.dcm")), SAMPLES / "ct_head.dcm"]

    result = dicom_rules("dry-run", "main.rules", *damaged, *good, "--out", "out")  # no traceback, no internal error

    assert result.returncode == 1, result.stderr
    found = reports(result.stdout)
    assert list(found) == [path.name for path in damaged + good]
    assert found["a-nested.dcm"] == ["error: cannot read: sequences nested too deeply"]
    assert found["b-deflate.dcm"] == ["error: cannot read: Error -3 while decompressing data: invalid block type"]
    assert found["SC_rgb_jpeg.dcm"] == ["error: the data set is implicit VR; its transfer syntax is explicit VR"]
    assert found["no_meta.dcm"] == ["error: not a DICOM file (no DICM header and no SOP instance found)"]
    # Rows holds three bytes: the rule reading it fails on this file alone, which is quarantined.
    assert found["c-rows.dcm"][0].startswith("outcome: quarantine: main.rules:3: rule 'hold tiny images': Expected "
                                             "total bytes to be an even multiple of bytes per value.")
    assert found["d-command.dcm"][0] == ("outcome: quarantine: the copy for ARCHIVE cannot be written: Command Set "
                                         "elements (0000,eeee) are not allowed when using dcmwrite(), use "
                                         "write_dataset() instead")
    for name in ("rtstruct.dcm", "ct_head.dcm"):
        assert found[name][0] == "outcome: route to PACS, ARCHIVE"

    out = run_in / "out"
    # As the router: a quarantined input is kept whole, and none of its copies is left.
    assert sorted(p.name for p in (out / "_quarantine").iterdir()) == [
        "c-rows.dcm", "c-rows.dcm.reason.txt", "d-command.dcm", "d-command.dcm.reason.txt"]
    assert sorted(p.name for p in (out / "PACS").iterdir()) == ["ct_head.dcm", "rtstruct.dcm"]
    assert (out / "PACS" / "ct_head.dcm").read_bytes() == (SAMPLES / "ct_head.dcm").read_bytes()
    # A data set without file meta is written as the router keeps it: a DICOM file.
    copy = pydicom.dcmread(out / "PACS" / "rtstruct.dcm")
    assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID
    assert pydicom.dcmread(out / "ARCHIVE" / "rtstruct.dcm").InstitutionName == "ARCHIVED"


def test_dry_run_json_gives_each_unhandled_file_an_error_and_goes_on(run_in):
    write(run_in / "main.rules", RULES)
    result = dicom_rules("dry-run", "main.rules", deeply_nested(run_in / "nested.dcm"), SAMPLES / "ct_head.dcm",
                         "--format", "json")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and '"outcome": null' in lines[0] and '"outcome": "route"' in lines[1]


WARNS_ONLY = 'rule "ct" { when DataSet.Modality == "CT" then route to PACS }\n'


def test_dry_run_prints_rule_warnings_only_when_the_rules_have_errors(run_in):
    write(run_in / "w.rules", WARNS_ONLY)
    clean = dicom_rules("dry-run", "w.rules", SAMPLES / "ct_head.dcm")
    assert (clean.returncode, clean.stderr) == (0, "")
    assert clean.stdout.splitlines()[1] == "  outcome: route to PACS"

    write(run_in / "w.rules", WARNS_ONLY + 'rule "typo" { when DataSet.Modalty == "MR" then route to PACS }\n')
    broken = dicom_rules("dry-run", "w.rules", SAMPLES / "ct_head.dcm")
    assert broken.returncode == 1 and broken.stdout == ""
    assert "warning no-destination" in broken.stderr and "error unknown-keyword" in broken.stderr


EDITS_SOP_UIDS = """
rule "empty the instance UID of MR" {
  when DataSet.Modality == "MR"
  then blank DataSet.SOPInstanceUID
}

rule "drop the class UID of the archive's copy of CT" {
  when DataSet.Modality == "CT"
  then copy to ARCHIVE {
    delete DataSet.SOPClassUID
  }
}

rule "to the PACS" {
  then route to PACS
}
"""


def test_dry_run_out_reports_files_without_file_meta_or_sop_uids_and_goes_on(run_in):
    """A data set without file meta and without SOP UIDs is refused with what it lacks; a copy
    whose SOP UIDs a rule deleted or emptied cannot be sent: its input is quarantined with the
    destination and the UID named. Every other input is still evaluated and written."""
    write(run_in / "main.rules", EDITS_SOP_UIDS)
    inputs = run_in / "inputs"
    inputs.mkdir()
    no_uids = without_file_meta(inputs / "a-no-uids.dcm", "SOPClassUID", "SOPInstanceUID")
    no_instance = without_file_meta(inputs / "b-no-instance.dcm", "SOPInstanceUID")
    no_meta = without_file_meta(inputs / "c-no-meta.dcm")  # CT: the archive's copy loses its class UID
    mr = SAMPLES / "mr_knee.dcm"  # its instance UID emptied by a rule
    ot = SAMPLES / "ot_secondary.dcm"

    result = dicom_rules("dry-run", "main.rules", no_uids, no_instance, no_meta, mr, ot, "--out", "out")

    assert result.returncode == 1, result.stderr
    assert "internal error" not in result.stdout + result.stderr
    found = reports(result.stdout)
    assert list(found) == ["a-no-uids.dcm", "b-no-instance.dcm", "c-no-meta.dcm", "mr_knee.dcm", "ot_secondary.dcm"]
    assert found["a-no-uids.dcm"] == ["error: a data set without file meta information (no DICM header) and without "
                                      "SOP Class UID and SOP Instance UID: not an instance to route"]
    assert found["b-no-instance.dcm"] == ["error: a data set without file meta information (no DICM header) and "
                                          "without SOP Instance UID: not an instance to route"]
    assert found["c-no-meta.dcm"][0] == ("outcome: quarantine: the copy for ARCHIVE cannot be written: its data set "
                                         "has no SOP Class UID (a rule deleted it)")
    assert found["mr_knee.dcm"][0] == ("outcome: quarantine: the copy for PACS cannot be written: its SOP Instance "
                                       "UID is empty (a rule emptied it)")
    assert found["ot_secondary.dcm"][0] == "outcome: route to PACS"

    out = run_in / "out"
    assert sorted(p.name for p in (out / "_quarantine").iterdir()) == [
        "c-no-meta.dcm", "c-no-meta.dcm.reason.txt", "mr_knee.dcm", "mr_knee.dcm.reason.txt"]
    assert sorted(p.name for p in (out / "PACS").iterdir()) == ["ot_secondary.dcm"]  # no copy of a quarantined one
    assert not (out / "ARCHIVE").exists() or not any((out / "ARCHIVE").iterdir())
    # The quarantined input without file meta is kept as the router keeps it: with file meta made from its data set.
    kept = pydicom.dcmread(out / "_quarantine" / "c-no-meta.dcm")
    assert kept.file_meta.MediaStorageSOPInstanceUID == kept.SOPInstanceUID


def test_dry_run_json_reports_a_copy_without_sop_uids_as_a_quarantine_with_its_error(run_in):
    write(run_in / "main.rules", EDITS_SOP_UIDS)
    result = dicom_rules("dry-run", "main.rules", SAMPLES / "mr_knee.dcm", SAMPLES / "ct_head.dcm", "--out", "out",
                         "--format", "json")
    assert result.returncode == 1, result.stderr
    reports_json = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["outcome"], r["error"]) for r in reports_json] == [
        ("quarantine", "the copy for PACS cannot be written: its SOP Instance UID is empty (a rule emptied it)"),
        ("quarantine", "the copy for ARCHIVE cannot be written: its data set has no SOP Class UID (a rule deleted it)"),
    ]
