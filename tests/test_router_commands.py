"""Router commands that need no peer: `echo` on folder destinations, `send` into a folder."""

from __future__ import annotations

from pathlib import Path

import pydicom

from conftest import SAMPLES, dicom_rules

CONFIG = """
storage: var/storage
rules: main.rules
destinations:
  MISSING: {type: folder, path: out/missing}
  PRESENT: {type: folder, path: out/present, naming: "{PatientID}/{SOPInstanceUID}.dcm"}
  A_FILE: {type: folder, path: out/a-file}
"""


def make_config(tmp_path: Path) -> Path:
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PRESENT\n}\n', encoding="utf-8")
    (tmp_path / "out" / "present").mkdir(parents=True)
    (tmp_path / "out" / "a-file").write_text("not a folder")
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def test_echo_of_folder_destinations_says_whether_a_delivery_could_be_written(tmp_path):
    config = make_config(tmp_path)
    present = dicom_rules("echo", config, "PRESENT", cwd=tmp_path)
    assert (present.returncode, present.stdout.strip()) == (0, f"PRESENT: folder {tmp_path}/out/present is writable")
    missing = dicom_rules("echo", config, "MISSING", cwd=tmp_path)
    assert (missing.returncode, missing.stdout.strip()) == (
        0, f"MISSING: folder {tmp_path}/out/missing does not exist yet; the first delivery creates it in "
           f"{tmp_path}/out")
    a_file = dicom_rules("echo", config, "A_FILE", cwd=tmp_path)
    assert (a_file.returncode, a_file.stdout.strip()) == (1, f"A_FILE: folder {tmp_path}/out/a-file is not a folder")
    unknown = dicom_rules("echo", config, "NOPE", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no destination 'NOPE' in" in unknown.stderr and "A_FILE, MISSING, PRESENT" in unknown.stderr


def test_send_into_a_folder_destination_names_files_by_its_template(tmp_path):
    config = make_config(tmp_path)
    sent = dicom_rules("send", config, "PRESENT", SAMPLES / "ct_head.dcm", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("1 sent, 0 failed to PRESENT")
    source = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    written = tmp_path / "out" / "present" / source.PatientID / f"{source.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(written).SOPInstanceUID == source.SOPInstanceUID
