"""The storage folder (spool, quarantine, sweep) and the file names of folder destinations."""

from __future__ import annotations

import json
import os
import time
import shutil
import tempfile
import threading
from pathlib import Path

import pydicom
import pytest
from helpers.arrivals import Received
from helpers.files import SAMPLES
from pydicom.dataset import Dataset

from rulesengine.config import FolderDestination
from rulesengine.runtime.destinations import FolderSender, check_naming, render_name
from rulesengine.runtime.journal import (
    ACCEPTED,
    SENDING,
    Delivery,
    NewDelivery,
    Outcome,
)
from rulesengine.runtime.storage import Storage, move_durably, safe_name


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(str(tmp_path / "storage"))


def received_file(storage: Storage, sample: str = "ct_head.dcm") -> str:
    """A sample as a listener leaves it: a file in the spool's temporary folder."""
    path = storage.temp_path()
    shutil.copyfile(SAMPLES / sample, path)
    return path


def quarantined_files(storage: Storage) -> list[Path]:
    return sorted(p for p in Path(storage.quarantine_dir).rglob("*") if p.is_file())


# ---- layout and spool ----------------------------------------------------------------------------


def test_storage_creates_its_folders(tmp_path):
    storage = Storage(str(tmp_path / "new" / "storage"))
    for folder in ("spool/tmp", "spool/in", "spool/out", "quarantine"):
        assert (tmp_path / "new" / "storage" / folder).is_dir()
    assert storage.journal_path == str(tmp_path / "new" / "storage" / "journal.sqlite")
    journal = storage.journal()
    try:
        assert os.path.isfile(storage.journal_path)
    finally:
        journal.close()


def test_temp_paths_are_new_names_in_the_spool_tmp_folder(storage):
    names = {storage.temp_path() for _ in range(100)}
    assert len(names) == 100
    assert all(os.path.dirname(name) == storage.tmp and name.endswith(".dcm") for name in names)


def test_accept_moves_the_received_file_into_spool_in(storage):
    original = (SAMPLES / "ct_head.dcm").read_bytes()
    received = received_file(storage)

    accepted = storage.accept(received)

    assert os.path.dirname(accepted) == storage.incoming
    assert not os.path.exists(received)  # moved, not copied
    assert Path(accepted).read_bytes() == original
    assert os.listdir(storage.tmp) == []


def test_accept_names_the_file_with_its_arrival_facts(storage):
    received = Received("listener", "main", "CT1", "ROUTER", "127.0.0.1:40123", "1.2.840.10008.5.1.4.1.1.2",
                        "1.2.3.4")
    accepted = storage.accept(received_file(storage), received)

    assert os.path.dirname(accepted) == storage.incoming
    assert Path(accepted).read_bytes() == (SAMPLES / "ct_head.dcm").read_bytes()
    # the SOP UIDs are in the file itself; the name carries how it arrived
    assert storage.facts_from_name(accepted) == Received("listener", "main", "CT1", "ROUTER", "127.0.0.1:40123")


def test_arrival_facts_in_names_survive_odd_values(storage):
    received = Received("folder", "inbox.v2", "ÄE/..\\x", "", "[::1]:104")
    accepted = storage.accept(received_file(storage), received)
    assert os.path.dirname(accepted) == storage.incoming
    assert storage.facts_from_name(accepted) == received


def test_a_name_without_facts_reads_as_unknown(storage):
    accepted = storage.accept(received_file(storage))
    assert storage.facts_from_name(accepted) == Received("unknown", None)
    assert storage.facts_from_name(os.path.join(storage.incoming, "x.not-base64!.dcm")) == Received("unknown", None)


def test_accept_works_whatever_the_arrival_facts(storage):
    received = Received("listener", "radiology-main-building-" * 4, "A" * 16, "B" * 16,
                        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff:65535")
    accepted = storage.accept(received_file(storage), received)
    assert os.path.dirname(accepted) == storage.incoming
    assert storage.facts_from_name(accepted).calling_aet == "A" * 16


def test_accept_never_reuses_a_name(storage):
    accepted = {storage.accept(received_file(storage)) for _ in range(20)}
    assert len(accepted) == 20
    assert sorted(os.listdir(storage.incoming)) == sorted(os.path.basename(p) for p in accepted)


def test_copy_in_leaves_the_source_and_returns_a_spool_copy(storage, tmp_path):
    source = tmp_path / "watched" / "mr.dcm"
    source.parent.mkdir()
    shutil.copyfile(SAMPLES / "mr_knee.dcm", source)
    copied = storage.copy_in(str(source))
    assert os.path.dirname(copied) == storage.tmp
    assert Path(copied).read_bytes() == source.read_bytes()
    assert source.exists()


def test_move_durably_creates_the_target_folder_and_replaces_atomically(tmp_path):
    source = tmp_path / "a.tmp"
    source.write_bytes(b"new")
    target = tmp_path / "deep" / "er" / "a.dcm"
    assert move_durably(str(source), str(target)) == str(target)
    assert target.read_bytes() == b"new" and not source.exists()


def test_output_paths_name_instance_and_destination_safely(storage):
    assert storage.output_path(7, "PACS") == os.path.join(storage.outgoing, "7-PACS.dcm")
    hostile = storage.output_path(8, "../../etc/passwd")
    assert os.path.dirname(hostile) == storage.outgoing


def test_safe_name_keeps_only_portable_characters():
    assert safe_name("1.2.840.10008.5") == "1.2.840.10008.5"
    assert safe_name("../a b/c") == ".._a_b_c"
    assert safe_name("") == "_"
    assert len(safe_name("9" * 200)) == 64


# ---- quarantine ---------------------------------------------------------------------------------


def test_quarantine_keeps_the_file_with_a_json_of_why(storage):
    received = received_file(storage)
    facts = {"sop_instance_uid": "1.2.3.4", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "source": "main",
             "calling_aet": "CT1", "peer": "127.0.0.1:4000", "rules_version": "abc"}

    target = storage.quarantine(received, "no PatientID", facts)

    assert Path(target).parent.parent == Path(storage.quarantine_dir)
    assert os.path.basename(target) == "1.2.3.4.dcm"
    assert Path(target).read_bytes() == (SAMPLES / "ct_head.dcm").read_bytes()
    assert not os.path.exists(received)
    info = json.loads(Path(target + ".json").read_text(encoding="utf-8"))
    assert info["reason"] == "no PatientID"
    assert {key: info[key] for key in facts} == facts
    assert "quarantined_at" in info



def test_quarantine_never_overwrites_an_earlier_instance_with_the_same_uid(storage):
    first = storage.quarantine(received_file(storage, "ct_head.dcm"), "first", {"sop_instance_uid": "1.2.3"})
    second = storage.quarantine(received_file(storage, "mr_knee.dcm"), "second", {"sop_instance_uid": "1.2.3"})

    assert first != second
    assert Path(first).read_bytes() == (SAMPLES / "ct_head.dcm").read_bytes()
    assert Path(second).read_bytes() == (SAMPLES / "mr_knee.dcm").read_bytes()
    assert json.loads(Path(first + ".json").read_text())["reason"] == "first"
    assert json.loads(Path(second + ".json").read_text())["reason"] == "second"


def test_quarantine_leftovers_of_a_crash_never_take_the_reason_of_a_new_instance(storage):
    """A crash can leave a .json without its instance (it is written first), or an instance of
    an older release without its .json: a new quarantine of the same UID takes another name, and
    the listing gives it its own reason."""
    day = Path(storage.quarantine_dir) / time.strftime("%Y%m%d")
    day.mkdir(parents=True, exist_ok=True)
    (day / "1.2.9.dcm.json").write_text('{"reason": "a crash left this"}')
    (day / "1.2.8.dcm").write_bytes(b"an instance without its .json")
    first = storage.quarantine(received_file(storage), "new one", {"sop_instance_uid": "1.2.9"})
    second = storage.quarantine(received_file(storage), "another", {"sop_instance_uid": "1.2.8"})
    assert os.path.basename(first) != "1.2.9.dcm" and os.path.basename(second) != "1.2.8.dcm"
    reasons = {os.path.basename(path): info.get("reason") for path, info in storage.quarantined()}
    assert reasons[os.path.basename(first)] == "new one" and reasons[os.path.basename(second)] == "another"
    assert (day / "1.2.9.dcm.json").read_text() == '{"reason": "a crash left this"}'  # left as found


def test_quarantine_names_are_safe_and_uids_are_optional(storage):
    hostile = storage.quarantine(received_file(storage), "odd", {"sop_instance_uid": "../../escape"})
    assert Path(hostile).parent.parent == Path(storage.quarantine_dir)
    nameless = storage.quarantine(received_file(storage), "no uid", {"sop_instance_uid": None})
    assert Path(nameless).parent.parent == Path(storage.quarantine_dir)
    assert json.loads(Path(nameless + ".json").read_text())["sop_instance_uid"] is None


def test_concurrent_quarantines_of_one_uid_keep_every_instance(storage):
    """Two associations (a modality resending) can quarantine the same SOP Instance UID at once."""
    for _ in range(3):
        sources = []
        for number in range(8):
            path = storage.temp_path()
            Path(path).write_bytes(b"instance %d " % number * 1000)
            sources.append(path)
        start = threading.Barrier(len(sources))
        targets: list[str] = []

        def quarantine(source, start=start, targets=targets):
            start.wait()
            targets.append(storage.quarantine(source, "duplicate", {"sop_instance_uid": "1.2.3.99"}))

        threads = [threading.Thread(target=quarantine, args=(source,)) for source in sources]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(set(targets)) == len(sources)
    kept = [p for p in quarantined_files(storage) if p.suffix == ".dcm"]
    assert len(kept) == 3 * 8  # no round replaced another's files
    assert len({p.read_bytes() for p in kept}) == 8


# ---- sweep --------------------------------------------------------------------------------------


def test_sweep_removes_temporary_and_finished_files_and_returns_unknown_received_ones(storage):
    needed_in = storage.accept(received_file(storage))
    unknown_in = storage.accept(received_file(storage))
    needed_out = storage.output_path(1, "PACS")
    finished_out = storage.output_path(2, "PACS")
    for path in (needed_out, finished_out):
        shutil.copyfile(SAMPLES / "ct_head.dcm", path)
    half_received = received_file(storage)
    quarantined = storage.quarantine(received_file(storage), "kept", {"sop_instance_uid": "1.2.3"})
    os.makedirs(os.path.join(storage.outgoing, "a-folder"))

    removed, unknown = storage.sweep({needed_in, needed_out})

    assert removed == 2  # the half-received file and the copy nobody needs
    assert not os.path.exists(half_received) and not os.path.exists(finished_out)
    # a received file the journal does not name may have been answered: it is kept, to be journaled again
    assert unknown == [unknown_in]
    assert os.path.exists(unknown_in)
    assert os.path.exists(needed_in) and os.path.exists(needed_out)
    assert os.path.exists(quarantined) and os.path.exists(quarantined + ".json")
    assert os.path.isdir(os.path.join(storage.outgoing, "a-folder"))
    assert storage.sweep({needed_in, needed_out, unknown_in}) == (0, [])


def test_sweep_with_the_journal_keeps_what_deliveries_need(storage):
    journal = storage.journal()
    try:
        outcome = Outcome("v1", "route", None, ("all",), ("PACS",))
        accepted = storage.accept(received_file(storage))
        journal.record(Received("file", None), accepted, None, ACCEPTED)
        processed = storage.accept(received_file(storage))
        processed_id = journal.record(Received("file", None), processed, None, ACCEPTED)
        journal.add_deliveries(processed_id, [NewDelivery("PACS", processed, None, None, None)], outcome)
        delivered_copy = storage.output_path(3, "PACS")
        shutil.copyfile(SAMPLES / "ct_head.dcm", delivered_copy)
        delivered_id = journal.record(Received("file", None), None, None, ACCEPTED)
        journal.add_deliveries(delivered_id, [NewDelivery("PACS", delivered_copy, None, None, None)], outcome)
        claimed = journal.claim("PACS", 10)
        journal.delivered(next(d for d in claimed if d.path == delivered_copy), 0.0)
        journal.release([d for d in claimed if d.path != delivered_copy])

        assert storage.sweep(journal.paths_in_use()) == (1, [])
        assert os.path.exists(accepted) and os.path.exists(processed)
        assert not os.path.exists(delivered_copy)
    finally:
        journal.close()


def test_a_converted_copy_left_by_a_crash_is_removed_not_received_again(storage):
    """A copy converted for a destination is written to the spool's temporary folder, which a
    start empties: left there by a crash, it is never taken for a received instance."""
    from rulesengine.runtime.transcode import convert
    received = Received("listener", "main", "CT1", "ROUTER", "127.0.0.1:40123")
    spooled = storage.accept(received_file(storage), received)
    previous = tempfile.tempdir
    storage.use_for_temporary_files()
    try:
        converted = convert(spooled, "1.2.840.10008.1.2")
    finally:
        tempfile.tempdir = previous
    assert os.path.dirname(converted) == storage.tmp

    _, unknown = storage.sweep({spooled})  # the spooled file is still queued for delivery

    assert converted not in unknown and unknown == []
    assert not os.path.exists(converted)


def test_remove_ignores_a_missing_file(storage):
    storage.remove(os.path.join(storage.incoming, "never-there.dcm"))


# ---- folder destination names -------------------------------------------------------------------


def dataset(**values) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def inside(folder: Path, relative: str) -> bool:
    """Does `relative`, joined to `folder`, name something inside it (after resolving)?"""
    target = (folder / relative).resolve()
    return target != folder.resolve() and folder.resolve() in target.parents


def test_render_name_fills_in_data_set_values():
    ds = dataset(PatientID="123456", StudyDate="20240102")
    assert render_name("{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm", ds) == os.path.join(
        "123456", "1.2.3", "1.2.3.4.dcm")
    assert render_name("{StudyDate}-{PatientID}.dcm", ds) == "20240102-123456.dcm"


def test_render_name_joins_multiple_values():
    ds = dataset(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    assert render_name("{ImageType}/{SOPInstanceUID}.dcm", ds) == os.path.join(
        "ORIGINAL_PRIMARY_AXIAL", "1.2.3.4.dcm")


HOSTILE_VALUES = [
    "../../../etc/passwd",
    "..",
    ".",
    "/etc/cron.d/x",
    "a/../../b",
    "..\\..\\windows\\system32",
    "C:\\temp\\x",
    "line\nbreak\r\x00nul\x1bescape",
    "   ",
    "...",
    ".hidden",
    "~/x",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("template", ["{PatientID}.dcm", "{PatientID}/{SOPInstanceUID}.dcm",
                                      "{StudyInstanceUID}/{PatientID}/{PatientID}"])
def test_hostile_values_never_escape_the_folder(tmp_path, template, value):
    folder = tmp_path / "destination"
    rendered = render_name(template, dataset(PatientID=value))
    assert not os.path.isabs(rendered)
    assert inside(folder, rendered), rendered
    parts = rendered.split(os.sep)
    assert len(parts) == template.count("/") + 1  # a value adds no folder level
    for part in parts:
        assert part not in ("", ".", "..") and not part.startswith(".")
        assert not any(ch in part for ch in "/\\\x00\n\r\x1b")


@pytest.mark.parametrize("template", ["/etc/{PatientID}.dcm", "../{PatientID}.dcm", "../../{PatientID}/x.dcm",
                                      "a/./../../{PatientID}.dcm", "\\\\server\\share\\{PatientID}.dcm",
                                      "{PatientID}/../../../x.dcm"])
def test_templates_that_climb_or_are_absolute_stay_inside(tmp_path, template):
    rendered = render_name(template, dataset(PatientID="P1"))
    assert not os.path.isabs(rendered)
    assert inside(tmp_path / "destination", rendered), rendered


@pytest.mark.parametrize("value", [None, "", []])
def test_empty_and_missing_values_become_unknown(value):
    ds = dataset()
    if value is not None:
        ds.PatientID = value
    assert render_name("{PatientID}/{SOPInstanceUID}.dcm", ds) == os.path.join("UNKNOWN", "1.2.3.4.dcm")


def test_an_unknown_keyword_renders_as_unknown():
    assert render_name("{NotAKeyword}.dcm", dataset()) == "UNKNOWN.dcm"


def test_long_values_are_cut_with_a_mark_of_what_was_cut():
    rendered = render_name("{ImageComments}.dcm", dataset(ImageComments="A" * 500))
    assert rendered.startswith("A" * 91 + "~") and rendered.endswith(".dcm")
    assert len(rendered) == 100 + len(".dcm")


def test_a_long_non_ascii_value_gives_a_name_the_file_system_accepts(tmp_path):
    instance = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    instance.SpecificCharacterSet = "ISO_IR 192"
    instance.ImageComments = "頭部" * 60  # LT allows 10240 characters
    source = tmp_path / "long.dcm"
    instance.save_as(source, enforce_file_format=True)
    rendered = render_name("{ImageComments}.dcm", pydicom.dcmread(source, stop_before_pixels=True))
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    assert all(len(part.encode("utf-8")) <= limit for part in rendered.split(os.sep))

    destination = FolderDestination("F", str(tmp_path / "folder"), naming="{ImageComments}.dcm")
    sender = FolderSender(destination)
    sender.open([])
    written = sender.send(Delivery(1, 1, "F", str(source), None, None, None, SENDING, 0, 0.0, None))
    assert Path(written).read_bytes() == source.read_bytes()


def test_check_naming_reports_unknown_keywords():
    assert check_naming("{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm") == []
    assert check_naming("{PatientId}/{Nonsense}.dcm") == ["{PatientId} is not a DICOM keyword",
                                                         "{Nonsense} is not a DICOM keyword"]
    assert check_naming("plain.dcm") == []


@pytest.mark.parametrize("template", [
    "{0}.dcm",
    "{PatientID.__class__}.dcm",
    "{}.dcm",
    "{PatientID.dcm",
    "{SOPInstanceUID}}.dcm",
])
def test_a_template_render_name_cannot_render_is_reported_by_check_naming(template):
    """check-config is where a bad template must show: at delivery time, render_name's exception
    fails every delivery to the folder."""
    try:
        render_name(template, dataset(PatientID="P1"))
        renders = True
    except Exception:  # noqa: BLE001 - any exception means the template cannot be used
        renders = False
    assert renders or check_naming(template) != []


def test_a_released_instance_goes_back_to_the_spool_with_its_arrival_facts(storage):
    facts = {"sop_instance_uid": "1.2.3.9", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "source": "main",
             "source_kind": "listener", "calling_aet": "CT1", "called_aet": "ROUTER", "peer": "127.0.0.1:4000"}
    kept = storage.quarantine(received_file(storage), "no PatientID", facts)
    older = storage.quarantine(received_file(storage, "mr_knee.dcm"), "old format", {"sop_instance_uid": "1.2.3.8",
                                                                                      "source": "inbox"})
    assert [path for path, _info in storage.quarantined()] == sorted([kept, older])
    [(_path, info)] = [item for item in storage.quarantined() if item[0] == kept]
    assert info["reason"] == "no PatientID"

    journal = storage.journal()
    try:
        instance_id = storage.release(kept, info, journal)
        [pending] = [r for r in journal.accepted_instances() if r["id"] == instance_id]
    finally:
        journal.close()
    assert not os.path.exists(kept) and not os.path.exists(kept + ".json")
    spooled = pending["path"]
    assert os.path.dirname(spooled) == storage.incoming
    assert Path(spooled).read_bytes() == (SAMPLES / "ct_head.dcm").read_bytes()
    assert Storage.facts_from_name(spooled) == Received("listener", "main", "CT1", "ROUTER", "127.0.0.1:4000")
    assert (pending["calling_aet"], pending["called_aet"], pending["sop_instance_uid"]) == ("CT1", "ROUTER",
                                                                                          "1.2.3.9")
    assert [path for path, _info in storage.quarantined()] == [older]
