"""Router commands that need no peer: `echo` on folder destinations, `send` into a folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pydicom

from helpers.arrivals import Received
from helpers.files import SAMPLES
from helpers.cli import dicom_rules

from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import (DELIVERED, QUEUED, DestinationAnswer, NewDelivery, NewRequest, Outcome,
                                         RequestOutcome, RequestResult)
from rulesengine.runtime.storage import Storage

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

CONFIG = """
storage: var/storage
processes: 1
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
    assert os.listdir(tmp_path / "out" / "present") == []  # what echo wrote to know is gone
    assert sorted(os.listdir(tmp_path / "out")) == ["a-file", "present"]
    a_file = dicom_rules("echo", config, "A_FILE", cwd=tmp_path)
    assert (a_file.returncode, a_file.stdout.strip()) == (1, f"A_FILE: folder {tmp_path}/out/a-file is not a folder")
    unknown = dicom_rules("echo", config, "NOPE", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "no destination 'NOPE' in" in unknown.stderr and "A_FILE, MISSING, PRESENT" in unknown.stderr


def test_echo_of_a_folder_destination_writes_there_to_know(tmp_path):
    """Permissions say nothing of a pseudo or read-only file system, and root passes them all:
    echo writes a file (in a new folder when the destination's is missing yet) and removes it.
    /proc takes neither, for root too."""
    config = make_config(tmp_path)
    config.write_text(CONFIG + "  PROC: {type: folder, path: /proc}\n"
                               "  UNDER_PROC: {type: folder, path: /proc/archive/dicom}\n", encoding="utf-8")
    proc = dicom_rules("echo", config, "PROC", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout.startswith("PROC: folder /proc is not writable: writing a file there fails: "), proc.stdout
    under_proc = dicom_rules("echo", config, "UNDER_PROC", cwd=tmp_path)
    assert under_proc.returncode == 1
    assert under_proc.stdout.startswith(
        "UNDER_PROC: folder /proc/archive/dicom does not exist and cannot be created in /proc: "), under_proc.stdout


def test_send_into_a_folder_destination_names_files_by_its_template(tmp_path):
    config = make_config(tmp_path)
    sent = dicom_rules("send", config, "PRESENT", SAMPLES / "ct_head.dcm", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("1 sent, 0 failed to PRESENT")
    source = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    written = tmp_path / "out" / "present" / source.PatientID / f"{source.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(written).SOPInstanceUID == source.SOPInstanceUID


def test_purge_forgets_finished_deliveries_and_unfinished_ones_only_of_a_removed_destination(tmp_path):
    config = make_config(tmp_path)
    storage = Storage(str(tmp_path / "var" / "storage"))
    journal = storage.journal()
    spooled = {}
    try:
        for number, destination in enumerate(["PRESENT", "PRESENT", "GONE"], 1):
            path = storage.accept(str(write_copy(storage, number)))
            received = Received("listener", "main", "CT1", "ROUTER", None, CT_IMAGE, f"1.2.3.{number}")
            instance = journal.record(received, path, Outcome("v1", "route", None, ("all",), (destination,)),
                                      "accepted")
            [spooled[number]] = journal.add_deliveries(instance, [NewDelivery(destination, path, CT_IMAGE,
                                                                              f"1.2.3.{number}", None)])
        [delivered] = journal.claim("PRESENT", 1)
        journal.delivered(delivered, 0.0)
    finally:
        journal.close()

    def states() -> dict[int, str | None]:
        reopened = storage.journal()
        try:
            return {number: getattr(reopened.delivery(i), "state", None) for number, i in spooled.items()}
        finally:
            reopened.close()

    for refused in (["--state", "queued"], ["--state", "queued", "--destination", "PRESENT"],
                    ["--state", "sending", "--destination", "GONE"], ["--id", "1"]):
        result = dicom_rules("queue", config, "purge", *refused, cwd=tmp_path)
        assert result.returncode == 2, (refused, result.stdout, result.stderr)
    assert states() == {1: DELIVERED, 2: QUEUED, 3: QUEUED}

    gone = dicom_rules("queue", config, "purge", "--state", "queued", "--destination", "GONE", cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert states() == {1: DELIVERED, 2: QUEUED, 3: None}
    finished = dicom_rules("queue", config, "purge", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert states() == {1: None, 2: QUEUED, 3: None}
    assert os.listdir(storage.incoming) == [os.path.basename(journal_path_of(storage, spooled[2]))]


def write_copy(storage: Storage, number: int) -> str:
    path = storage.temp_path()
    dataset = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    dataset.SOPInstanceUID = f"1.2.3.{number}"
    dataset.save_as(path, enforce_file_format=True)
    return path


def journal_path_of(storage: Storage, delivery_id: int) -> str:
    journal = storage.journal()
    try:
        return journal.delivery(delivery_id).path
    finally:
        journal.close()


def test_run_on_a_storage_folder_that_cannot_be_made_says_so(tmp_path):
    config = make_config(tmp_path)
    (tmp_path / "var").write_text("a file where the storage folder should be")
    result = dicom_rules("run", config, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert f"cannot start: storage {tmp_path}/var/storage: Not a directory" in result.stderr


def test_requests_lists_what_was_asked_and_how_it_ended_and_purges_finished_ones(tmp_path):
    config = make_config(tmp_path)
    journal = Storage(str(tmp_path / "var" / "storage")).journal()
    asked = Arrival(calling_aet="WS1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40001,
                    source_name="main", source_kind="listener", sop_class_uid="1.2.840.10008.5.1.4.1.2.2.1")
    try:
        find = journal.record_request(NewRequest("C-FIND", asked, "STUDY", {"PatientID": "H1-*"}))
        journal.finish_request(find, RequestResult(
            RequestOutcome.PARTIAL, 0x0000, (DestinationAnswer("PACS", 0x0000, 2, None, 0.2),
                                             DestinationAnswer("OLD_PACS", None, 0, "connection refused", 0.01)),
            matches=2, error="OLD_PACS: connection refused"))
        move = journal.record_request(NewRequest("C-MOVE", asked, "STUDY", {"StudyInstanceUID": "1.2.3"}, "WS1"))
    finally:
        journal.close()

    listed = dicom_rules("requests", config, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [running, answered] = listed.stdout.splitlines()
    assert f"#{move} C-MOVE STUDY from WS1 (127.0.0.1) StudyInstanceUID=1.2.3 to WS1: not finished" in running
    assert f"#{find} C-FIND STUDY from WS1 (127.0.0.1) PatientID=H1-*: partial (status 0x0000), 2 matches" in answered
    assert "OLD_PACS: connection refused" in answered and "PACS: status 0x0000, 2 matches" in answered

    only_finds = json.loads(dicom_rules("requests", config, "--message", "C-FIND", "--format", "json",
                                        cwd=tmp_path).stdout)
    assert [entry["id"] for entry in only_finds] == [find]
    assert only_finds[0]["result"]["destinations"][1] == {"destination": "OLD_PACS", "status": None, "matches": 0,
                                                          "error": "connection refused", "seconds": 0.01}
    assert only_finds[0]["from"] == {"calling_aet": "WS1", "called_aet": "ROUTER", "peer": "127.0.0.1:40001",
                                     "listener": "main"}

    purged = dicom_rules("requests", config, "purge", cwd=tmp_path)
    assert purged.stdout.strip() == "purged 1 finished request"
    assert [line.split()[2] for line in dicom_rules("requests", config, cwd=tmp_path).stdout.splitlines()] \
        == [f"#{move}"]


def test_requests_without_a_journal_is_a_usage_error(tmp_path):
    result = dicom_rules("requests", make_config(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no journal in" in result.stderr


def test_queue_lists_the_routers_and_warns_when_running_ones_differ_in_rules(tmp_path):
    config = make_config(tmp_path)
    storage = Storage(str(tmp_path / "var" / "storage"))
    journal = storage.journal()
    now = time.time()
    try:
        for node, version, heartbeat, state in (("node-a", "aaaa11112222", now, "running"),
                                                ("node-b", "bbbb33334444", now, "running"),
                                                ("node-c", "cccc55556666", now - 3600, "running"),
                                                ("node-d", "aaaa11112222", now, "stopped")):
            journal.write_status(node, {"state": state, "heartbeat": heartbeat, "ruleset_version": version},
                                 now=heartbeat)
    finally:
        journal.close()
    result = dicom_rules("queue", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "no deliveries"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.startswith("node-")}
    assert rows["node-a"][:2] == ["running", "aaaa11112222"] and rows["node-b"][0] == "running"
    assert rows["node-c"][:3] == ["not", "running", "cccc55556666"]  # its heartbeat is an hour old
    assert rows["node-d"][:2] == ["not", "running"]  # it said it stopped
    assert lines[-1] == ("warning: the running routers use different rule set versions: "
                         "node-a aaaa11112222, node-b bbbb33334444")


def test_queue_lists_the_pending_groups_with_their_instances_and_timers(tmp_path):
    config = make_config(tmp_path)
    storage = Storage(str(tmp_path / "var" / "storage"))
    journal = storage.journal()
    now = time.time()
    try:
        for number in (1, 2):
            instance_id = journal.record(Arrival(source_kind="listener", sop_instance_uid=f"1.2.3.{number}"),
                                         f"/spool/in/{number}.dcm", Outcome("v1", "held", None, (), ()), "done")
            journal.join_group("AI: brain <MR>", "v1", "study", "1.2.3", None, instance_id, 600, now=now)
        series = journal.record(Arrival(source_kind="listener", sop_instance_uid="1.2.4.1"), "/spool/in/3.dcm",
                                Outcome("v1", "held", None, (), ()), "done")
        fired = journal.join_group("per series", "v1", "series", "1.2.4", "1.2.4.9", series, 60, now=now - 120).group
        journal.claim_group(fired.id, now=now)
        journal.fire_group(fired.id, [], now=now)  # fired: no longer pending
        due = journal.join_group("due", "v1", "series", "1.2.5", "1.2.5.9", series, 60, now=now - 120).group
    finally:
        journal.close()
    result = dicom_rules("queue", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["no deliveries", "", "2 pending group(s)"]
    assert lines[3] == f"group #{due.id:<5} 'due' per series: 1 instance(s), due now  series 1.2.5.9"
    assert lines[4].startswith("group #1     'AI: brain <MR>' per study: 2 instance(s), fires in 59")
    assert lines[4].endswith(" s  study 1.2.3") and "per series" not in result.stdout.replace("'due' per series", "")
