"""`dicom-rules run` in its own process, fed what a broken modality or a tired operator
gives it: bad files in a watched folder, a CD copied in whole, values that make poor file
names, a destination that is down. Each file ends in one place, once; the log says so in a
line or two, without a traceback."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pydicom
import pytest
from helpers.bad_instances import bad_meta_group_length, bit_flipped, bundled, cd_tree, deeply_nested, garbage, truncated
from helpers.peers import free_port, storescu, wait_until
from pydicom.uid import generate_uid

SAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "samples"
ROUTE_ALL = 'rule "all" {\n  then route to OUT\n}\n'


def journal(storage: Path, query: str) -> list[tuple]:
    db = sqlite3.connect(storage / "journal.sqlite", timeout=10)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def sop_instance_uids(folder: Path) -> list[str]:
    return sorted(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                  for path in folder.rglob("*.dcm"))


def bad_batch() -> dict[str, bytes]:
    """Files that cannot be routed, each for its own reason."""
    batch = {
        "deep-1000.dcm": deeply_nested(1000),
        "bad-meta-length.dcm": bad_meta_group_length(),
        "empty.dcm": b"",
        "truncated-ct.dcm": truncated(bundled("CT_small.dcm")),
        "truncated-mr.dcm": truncated(bundled("MR_small.dcm"), keep=0.3),
        "truncated-rtplan.dcm": bundled("rtplan_truncated.dcm").read_bytes(),
        "no-meta.dcm": bundled("no_meta.dcm").read_bytes(),
    }
    for seed in range(4):
        batch[f"garbage-{seed}.dcm"] = garbage(2048 + 1000 * seed, seed)
    return batch


def flipped_batch() -> dict[str, bytes]:
    """Real files with bits flipped in their headers: some still read, most do not."""
    sources = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "image_dfl.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]
    return {f"flipped-{seed}-{name}": bit_flipped(bundled(name), seed, flips=1 + seed * 4)
            for seed in range(3) for name in sources}


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")  # reading what the flipped files became
def test_bad_files_in_a_watched_folder_fail_once_each_with_a_line_and_no_traceback(router_factory, tmp_path):
    down = free_port()  # a DICOM destination nobody listens on
    config = f"""
storage: var
processes: 1
rules: main.rules
watch:
  - {{name: inbox, path: inbox, settle_seconds: 0.3}}
destinations:
  OUT: {{type: folder, path: out}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {down}, retry: {{delay: 0.1, max_attempts: 2}}}}
"""
    router = router_factory(config, 'rule "all" {\n  then route to OUT, DOWN\n}\n')
    inbox = tmp_path / "inbox"
    bad, flipped = bad_batch(), flipped_batch()
    staging = tmp_path / "staging"
    staging.mkdir()
    for name, data in {**bad, **flipped}.items():
        (staging / name).write_bytes(data)
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)
    everything = sorted({**bad, **flipped})

    def sorted_out():
        taken = files_under(inbox / "done") + [name for name in files_under(inbox / "failed")
                                               if not name.endswith(".reason.txt")]
        return sorted(taken) == everything and not [p for p in inbox.iterdir() if p.is_file()]

    wait_until(sorted_out, timeout=90, what="every file moved to done/ or failed/")
    # A good file dropped last, and seen at its destination: everything before it was handled.
    shutil.copyfile(SAMPLES / "ct_head.dcm", inbox / "last.dcm")
    wait_until(lambda: (inbox / "done" / "last.dcm").exists() and (tmp_path / "out").exists()
               and str(pydicom.dcmread(SAMPLES / "ct_head.dcm").SOPInstanceUID) in sop_instance_uids(tmp_path / "out"),
               timeout=60, what="the last file delivered")
    wait_until(lambda: {s for (s,) in journal(tmp_path / "var", "SELECT state FROM deliveries "
                                                                 "WHERE destination = 'DOWN'")} == {"dead"},
               timeout=60, what="every delivery to DOWN dead after its two attempts")
    states = journal(tmp_path / "var", "SELECT state FROM deliveries WHERE destination = 'DOWN'")

    failed = files_under(inbox / "failed")
    for name in bad:
        assert name in failed and f"{name}.reason.txt" in failed, name
    for name in everything:
        assert (name in failed) != (name in files_under(inbox / "done")), name
        if name in failed:
            assert (inbox / "failed" / f"{name}.reason.txt").read_text().strip(), name
    assert "sequences nested too deeply" in (inbox / "failed" / "deep-1000.dcm.reason.txt").read_text()

    log = router.output()
    assert "Traceback" not in log and " ERROR " not in log, log
    lines = log.splitlines()
    for name in failed:
        if not name.endswith(".reason.txt"):
            assert sum(f" {name} -> " in line for line in lines) == 1, name  # taken once, said once
    assert not [line for line in lines if " pynetdicom" in line or "Warning" in line], log
    # each destination of one association says once which process sends to it
    sending = [line for line in lines if "this process sends to it" in line]
    assert len(sending) == 2, sending
    down_lines = [line for line in lines if "DOWN" in line and "rulesengine.delivery" in line and line not in sending]
    assert len(down_lines) <= 2 * len(states), down_lines  # one line per attempt at most
    # At most a couple of lines per file: the instance's own line, its failure or its deliveries.
    start_and_stop = 8 + len(sending)
    assert len(lines) <= start_and_stop + 2 * (len(everything) + 1) + len(down_lines), log


def test_a_cd_copied_into_a_watched_folder_is_routed_and_its_dicomdir_is_not(router_factory, tmp_path):
    config = """
storage: var
processes: 1
rules: main.rules
watch:
  - {name: inbox, path: inbox, settle_seconds: 0.3}
destinations:
  OUT: {type: folder, path: out}
"""
    router = router_factory(config, ROUTE_ALL)
    inbox = tmp_path / "inbox"
    instances = cd_tree(tmp_path / "cd")
    shutil.copytree(tmp_path / "cd", inbox / "PATIENT CD")  # `cp -r`: folders, then files one by one

    expected = sorted(str(pydicom.dcmread(tmp_path / "cd" / path).SOPInstanceUID) for path in instances)
    wait_until(lambda: (tmp_path / "out").exists() and sop_instance_uids(tmp_path / "out") == expected,
               timeout=90, what="the CD's 50 instances delivered")
    wait_until(lambda: sorted(p.name for p in inbox.iterdir()) == ["done", "failed"], timeout=30,
               what="the CD's folder emptied and removed")
    assert files_under(inbox / "done") == [f"PATIENT CD/{path}" for path in instances]
    assert files_under(inbox / "failed") == ["PATIENT CD/DICOMDIR", "PATIENT CD/DICOMDIR.reason.txt"]
    reason = (inbox / "failed" / "PATIENT CD" / "DICOMDIR.reason.txt").read_text()
    assert "DICOMDIR" in reason
    assert len(journal(tmp_path / "var", "SELECT id FROM instances")) == len(instances)  # the DICOMDIR is none
    assert "Traceback" not in router.output()


def instance(folder: Path, name: str, **values) -> Path:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name, enforce_file_format=True)
    return folder / name


def test_a_folder_destination_never_writes_two_instances_to_one_file(router_factory, tmp_path, port):
    """Before, ".", "..", "..." and " .. " all became UNKNOWN.dcm, and two instances of one
    patient one file; a name cut at 200 bytes lost its .dcm."""
    config = f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  BY_PATIENT: {{type: folder, path: by-patient, naming: "{{PatientID}}.dcm"}}
  LONG: {{type: folder, path: long, naming: "{{StudyDescription}}{{SeriesDescription}}{{ImageComments}}.dcm"}}
"""
    router = router_factory(config, 'rule "all" {\n  then route to BY_PATIENT, LONG\n}\n', port)
    sent = tmp_path / "sent"
    sources = [instance(sent, f"{i}.dcm", PatientID=value, StudyDescription="S" * 64, SeriesDescription="R" * 64,
                        ImageComments=f"{i}" * 100)
               for i, value in enumerate([".", "..", "...", " .. ", "P1", "P1"])]
    for round_number in (1, 2):  # the second time, every instance arrives again
        result = storescu(port, sources)
        assert result.returncode == 0, result.stderr
        wait_until(lambda: len(journal(tmp_path / "var", "SELECT id FROM deliveries WHERE state = 'delivered'"))
                   == 2 * len(sources) * round_number, timeout=60, what=f"round {round_number} delivered")

        for folder in ("by-patient", "long"):
            names = files_under(tmp_path / folder)
            assert len(names) == len(sources), (folder, names)
            assert all(name.endswith(".dcm") and not name.startswith(".") for name in names), names
            assert sop_instance_uids(tmp_path / folder) == sorted(
                str(pydicom.dcmread(path).SOPInstanceUID) for path in sources)
    by_patient = files_under(tmp_path / "by-patient")
    assert "P1.dcm" in by_patient and not any(name.startswith("UNKNOWN") for name in by_patient)
    assert all(len(name.encode()) <= 200 for name in files_under(tmp_path / "long"))
    assert not re.search(r"Traceback|ERROR", router.output())
