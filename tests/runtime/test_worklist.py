"""The worklist folder source (runtime/worklist.py): files read once and kept, read again
when they change, dropped when removed, broken ones skipped and logged once; queries
answered from what was read. The folder is looked at again only when the injected clock
says a rescan is due, so no test sleeps. Then the worklist destination in the router:
`echo` and `send` on it, and no delivery queue for it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rulesengine.config import FolderDestination, WorklistDestination
from rulesengine.runtime.delivery import DeliveryManager
from rulesengine.runtime.destinations import ItemError, WorklistRefusal, sender_for
from rulesengine.runtime.storage import Storage
from rulesengine.runtime.worklist import WorklistFolder, folder_state, read_worklist_file

from helpers.cli import dicom_rules
from helpers.clock import StoppedClock
from helpers.files import SAMPLES

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def worklist_item(step_id: str, patient: str = "DOE^JOHN", modality: str = "CT", date: str = "20260302",
                  station: str = "CT1") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient
    ds.PatientID = "P-" + step_id
    ds.AccessionNumber = "A-" + step_id
    step = Dataset()
    step.ScheduledStationAETitle = station
    step.Modality = modality
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepStartTime = "090000"
    step.ScheduledProcedureStepID = step_id
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def write_item(folder: Path, name: str, ds: Dataset, meta: bool = True) -> Path:
    path = folder / name
    if meta:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = WORKLIST_FIND
        ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
        ds.save_as(path, enforce_file_format=True)
    else:  # a bare data set, implicit VR, as some worklist writers leave them
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path


def query(**step) -> Dataset:
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.AccessionNumber = ""
    item = Dataset()
    item.ScheduledProcedureStepID = ""
    for keyword, value in step.items():
        setattr(item, keyword, value)
    identifier.ScheduledProcedureStepSequence = [item]
    return identifier


def step_ids(responses) -> list[str]:
    return [r.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID for r in responses]


def test_every_wl_file_is_an_item_and_queries_match_on_them(tmp_path):
    write_item(tmp_path, "a.wl", worklist_item("S1", modality="CT"))
    write_item(tmp_path, "b.WL", worklist_item("S2", modality="MR"))
    write_item(tmp_path, "c.wl", worklist_item("S3", modality="CT", date="20260310"), meta=False)
    write_item(tmp_path, "d.dcm", worklist_item("S4"))  # not a worklist file
    write_item(tmp_path, ".e.wl", worklist_item("S5"))  # hidden: being written
    (tmp_path / "sub").mkdir()
    write_item(tmp_path / "sub", "f.wl", worklist_item("S6"))  # subfolders are not read
    (tmp_path / "lockfile").touch()
    folder = WorklistFolder(tmp_path)
    assert step_ids(folder.find(query())) == ["S1", "S2", "S3"]
    assert step_ids(folder.find(query(Modality="CT"))) == ["S1", "S3"]
    assert step_ids(folder.find(query(ScheduledProcedureStepStartDate="20260305-"))) == ["S3"]
    response = folder.find(query(Modality="MR"))[0]
    assert response.AccessionNumber == "A-S2" and response.SpecificCharacterSet == "ISO_IR 100"
    assert response.ScheduledProcedureStepSequence[0].Modality == "MR"


def test_changed_files_are_read_again_removed_ones_dropped_unchanged_ones_left_alone(tmp_path):
    clock = StoppedClock(0)
    for number in range(50):
        write_item(tmp_path, f"{number:03}.wl", worklist_item(f"S{number}"))
    folder = WorklistFolder(tmp_path, clock=clock, rescan_seconds=1)
    assert len(folder.find(query())) == 50
    assert folder.reads == 50

    write_item(tmp_path, "007.wl", worklist_item("S7", modality="MR", patient="LONGER^NAME^THAN^BEFORE"))
    os.unlink(tmp_path / "010.wl")
    write_item(tmp_path, "new.wl", worklist_item("NEW"))
    assert len(folder.find(query())) == 50  # not yet due: what was read is answered
    clock.advance(1)
    responses = folder.find(query())
    assert len(responses) == 50 and "S10" not in step_ids(responses) and "NEW" in step_ids(responses)
    assert step_ids(folder.find(query(Modality="MR"))) == ["S7"]
    assert folder.reads == 52  # the changed file and the new one, nothing else

    clock.advance(1)
    folder.find(query())
    assert folder.reads == 52


def test_a_file_replaced_by_rename_with_the_same_size_and_time_is_read_again(tmp_path):
    path = write_item(tmp_path, "a.wl", worklist_item("S1", modality="CT"))
    folder = WorklistFolder(tmp_path, clock=StoppedClock(0))
    assert step_ids(folder.find(query(Modality="CT"))) == ["S1"]
    stat = path.stat()
    replacement = write_item(tmp_path, ".a.tmp", worklist_item("S1", modality="MR"))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert replacement.stat().st_size == stat.st_size
    os.replace(replacement, path)
    folder.refresh()
    assert step_ids(folder.find(query(Modality="MR"))) == ["S1"]


def test_broken_files_are_skipped_and_logged_once_until_they_change(tmp_path, caplog):
    write_item(tmp_path, "good.wl", worklist_item("S1"))
    (tmp_path / "text.wl").write_text("not DICOM at all\n")
    (tmp_path / "empty.wl").write_bytes(b"")
    good = (tmp_path / "good.wl").read_bytes()
    (tmp_path / "cut.wl").write_bytes(good[: len(good) // 2])
    (tmp_path / "preamble_only.wl").write_bytes(b"\0" * 128 + b"DICM")
    clock = StoppedClock(0)
    caplog.set_level(logging.WARNING, logger="rulesengine.worklist")
    folder = WorklistFolder(tmp_path, clock=clock)
    assert step_ids(folder.find(query())) == ["S1"]
    broken = folder.broken()
    assert set(broken) == {"text.wl", "empty.wl", "cut.wl", "preamble_only.wl"}
    assert all(reason for reason in broken.values())
    logged = [r.getMessage() for r in caplog.records if r.name == "rulesengine.worklist"]
    assert len(logged) == 4 and all("skipped" in line for line in logged)

    clock.advance(5)
    folder.find(query())
    folder.refresh()
    assert len([r for r in caplog.records if r.name == "rulesengine.worklist"]) == 4  # once, not at every look

    write_item(tmp_path, "text.wl", worklist_item("S2"))  # mended
    folder.refresh()
    assert step_ids(folder.find(query())) == ["S1", "S2"]
    assert "text.wl" not in folder.broken()


def test_a_value_that_cannot_be_read_is_found_at_reading_not_in_a_query(tmp_path):
    ds = worklist_item("S1")
    ds.Rows = 1
    path = write_item(tmp_path, "bad.wl", ds)
    data = path.read_bytes()
    rows = b"\x28\x00\x10\x00US\x02\x00\x01\x00"
    assert rows in data
    path.write_bytes(data.replace(rows, b"\x28\x00\x10\x00US\x01\x00\x01"))  # a US of one byte
    folder = WorklistFolder(tmp_path)
    assert folder.find(query()) == []
    assert "bad.wl" in folder.broken()


def test_a_missing_or_unreadable_folder_answers_what_it_had(tmp_path, caplog):
    items = tmp_path / "items"
    items.mkdir()
    write_item(items, "a.wl", worklist_item("S1"))
    clock = StoppedClock(0)
    folder = WorklistFolder(items, clock=clock)
    assert len(folder.find(query())) == 1
    os.rename(items, tmp_path / "gone")
    clock.advance(1)
    assert len(folder.find(query())) == 1
    assert "cannot be read" in caplog.text
    assert WorklistFolder(tmp_path / "never").find(query()) == []


def test_folder_state_says_whether_it_can_be_read_and_counts_the_files(tmp_path):
    assert folder_state(str(tmp_path / "nope")) == (False, "does not exist")
    (tmp_path / "file").touch()
    assert folder_state(str(tmp_path / "file")) == (False, "is not a folder")
    write_item(tmp_path, "a.wl", worklist_item("S1"))
    write_item(tmp_path, "b.wl", worklist_item("S2"))
    assert folder_state(str(tmp_path)) == (True, "is readable and holds 2 worklist files")
    (tmp_path / "sub").mkdir()
    write_item(tmp_path / "sub", "one.wl", worklist_item("S1"))
    assert folder_state(str(tmp_path / "sub")) == (True, "is readable and holds 1 worklist file")


def test_read_worklist_file_reads_implicit_bare_data_sets(tmp_path):
    path = write_item(tmp_path, "a.wl", worklist_item("S1"), meta=False)
    assert read_worklist_file(str(path)).ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "S1"
    assert ImplicitVRLittleEndian  # the syntax a bare data set is read in


# ---- the worklist destination in the router's commands and delivery ---------------------------------


CONFIG = """
storage: var/storage
rules: main.rules
destinations:
  OUT: {type: folder, path: out}
  WL: {type: worklist, path: worklists}
"""


def test_echo_of_a_worklist_destination_counts_its_files_and_send_to_it_is_a_usage_error(tmp_path):
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to OUT\n}\n', encoding="utf-8")
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    worklists = tmp_path / "worklists"
    worklists.mkdir()
    for name in ("a.wl", "b.wl", "notes.txt"):
        (worklists / name).write_bytes(b"")
    echo = dicom_rules("echo", config, "WL", cwd=tmp_path)
    assert (echo.returncode, echo.stdout.strip()) == (
        0, f"WL: worklist folder {worklists} is readable and holds 2 worklist files")
    sent = dicom_rules("send", config, "WL", SAMPLES / "ct_head.dcm", cwd=tmp_path)
    assert sent.returncode == 2
    assert "WL is a worklist destination: it answers worklist queries and takes no instances" in sent.stderr
    assert sorted(os.listdir(worklists)) == ["a.wl", "b.wl", "notes.txt"]
    worklists.rename(tmp_path / "moved")  # unlike a folder destination's, a worklist folder is never made
    gone = dicom_rules("echo", config, "WL", cwd=tmp_path)
    assert gone.returncode == 2  # the configuration itself is refused
    assert f"destinations.WL.path: the worklist folder {worklists} does not exist" in gone.stderr


def test_a_worklist_destination_gets_no_delivery_queue_and_refuses_what_is_routed_there(tmp_path):
    storage = Storage(str(tmp_path / "storage"))
    journal = storage.journal()
    manager = DeliveryManager(journal, storage)
    worklist = WorklistDestination(name="WL", path=str(tmp_path))
    manager.apply({"WL": worklist, "OUT": FolderDestination(name="OUT", path=str(tmp_path / "out"))})
    try:
        assert set(manager._workers) == {"OUT"}
    finally:
        manager.stop()
        journal.close()
    sender = sender_for(worklist)
    assert isinstance(sender, WorklistRefusal)
    with pytest.raises(ItemError, match="WL is a worklist"):
        sender.send(None)
