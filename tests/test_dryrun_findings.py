"""dry-run never gives up: each file it cannot handle is a finding with its reason, the run goes
on, and the exit status says some failed; and it prints rule warnings only with errors."""

from __future__ import annotations

from pathlib import Path

import pydicom
from helpers.files import SAMPLES, bundled, write
from helpers.cli import dicom_rules
from helpers.damaged import bad_value_length, corrupt_deflate, deeply_nested, with_command_element

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
