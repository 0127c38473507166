"""CommandSet.* for instances stored over the network: the C-STORE request's command set
(Priority, Move Originator, Message ID) decides in the running router, as DCMTK's storescu
and pynetdicom send it, in either listener mode, and after a quarantine release."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from helpers.cli import dicom_rules
from helpers.instances import make_instances, received_by_uid
from helpers.peers import free_port, storescu, wait_until
from pynetdicom import AE

BY_COMMAND = """
rule "moved for the PACS" {
  when CommandSet.MoveOriginatorApplicationEntityTitle == "PACS" and CommandSet.MoveOriginatorMessageID == 7
  then route to MOVED
}

rule "urgent" {
  when CommandSet.Priority == 1
  then route to URGENT
}

rule "routine" {
  when CommandSet.Priority == 0 and CommandSet.CommandField == 1 and exists CommandSet.MessageID
       and missing CommandSet.MoveOriginatorApplicationEntityTitle
       and CommandSet.AffectedSOPInstanceUID == DataSet.SOPInstanceUID
  then route to ROUTINE
}
"""

HOLD_URGENT = """
rule "hold what is urgent" {
  when CommandSet.Priority == 1
  then quarantine "urgent, held"
}

rule "the rest" {
  then route to ROUTINE
}
"""


def config(port: int, mode: str = "async") -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\n"
            f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}, mode: {mode}}}\n"
            "destinations:\n"
            "  MOVED: {type: folder, path: out/moved}\n"
            "  URGENT: {type: folder, path: out/urgent}\n"
            "  ROUTINE: {type: folder, path: out/routine}\n")


def pynetdicom_store(port: int, path: Path, **options) -> int:
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset, **options).Status)
    finally:
        assoc.release()


def folder_of(tmp_path: Path, uid: str) -> str | None:
    for name in ("moved", "urgent", "routine"):
        if uid in received_by_uid(tmp_path / "out" / name):
            return name
    return None


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_c_store_command_set_routes(router_factory, tmp_path, port, mode):
    router = router_factory(config(port, mode), BY_COMMAND, port)
    (tmp_path / "out").mkdir()
    [plain, urgent, moved] = make_instances(tmp_path / "sent", 3)
    sent = storescu(port, [plain.path])  # DCMTK sends MEDIUM priority and no Move Originator
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert pynetdicom_store(port, urgent.path, priority=1) == 0
    assert pynetdicom_store(port, moved.path, originator_aet="PACS", originator_id=7) == 0

    expected = {plain.sop_instance_uid: "routine", urgent.sop_instance_uid: "urgent", moved.sop_instance_uid: "moved"}
    wait_until(lambda: {uid: folder_of(tmp_path, uid) for uid in expected} == expected,
               what="each instance in the folder its command set routes it to")
    assert "Traceback" not in router.output()
    assert router.stop() == 0


def test_a_released_instance_is_decided_on_its_first_command_set(router_factory, tmp_path, port):
    router = router_factory(config(port), HOLD_URGENT, port)
    [held, routine] = make_instances(tmp_path / "sent", 2)
    assert pynetdicom_store(port, held.path, priority=1, originator_aet="PACS", originator_id=7) == 0
    assert storescu(port, [routine.path]).returncode == 0
    quarantine = tmp_path / "var" / "quarantine"
    [info_path] = wait_until(lambda: list(quarantine.glob("*/*.json")), what="the urgent instance in the quarantine")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    command = info["store_command"]
    assert (command["Priority"], command["MoveOriginatorApplicationEntityTitle"]) == (1, "PACS")
    wait_until(lambda: folder_of(tmp_path, routine.sop_instance_uid) == "routine", what="the routine instance")

    (tmp_path / "main.rules").write_text(BY_COMMAND, encoding="utf-8")
    router.wait_for_log("rules reloaded")
    released = dicom_rules("quarantine", "router.yaml", "release", held.sop_instance_uid, cwd=tmp_path)
    assert released.returncode == 0, released.stderr
    wait_until(lambda: folder_of(tmp_path, held.sop_instance_uid) == "moved", what="the released instance")
    assert router.stop() == 0


ARRIVAL_AND_COMMAND = """
rule "note the arrival" {
  then copy to NOTED {
    set DataSet.StudyDescription = "arrived " + Arrival.DateTime + " on a " + Arrival.Weekday
  }
}

rule "moved for the PACS" {
  when CommandSet.MoveOriginatorApplicationEntityTitle == "PACS" and CommandSet.MoveOriginatorMessageID == 7
  then route to MOVED
}

rule "urgent" {
  when CommandSet.Priority == 1 and CommandSet.AffectedSOPInstanceUID == DataSet.SOPInstanceUID
  then route to URGENT
}

rule "routine" {
  when CommandSet.Priority == 2 and missing CommandSet.MoveOriginatorApplicationEntityTitle
  then route to ROUTINE
}
"""


def down_config(port: int, down: int) -> str:
    """Every destination a DICOM peer that does not answer: the received files stay in the spool,
    and NOTED's copies (edited, with the arrival time as the rules read it) in spool/out."""
    peer = f"{{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {down}, retry: {{delay: 600, max_attempts: 10}}}}"
    return (f"storage: var\nprocesses: 1\nrules: main.rules\n"
            f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            f"destinations:\n  MOVED: {peer}\n  URGENT: {peer}\n  ROUTINE: {peer}\n  NOTED: {peer}\n")


def decisions(tmp_path: Path) -> dict[str, tuple]:
    """Each instance's decision as the journal keeps it, by SOP Instance UID."""
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite", timeout=30)) as db:
        rows = db.execute("SELECT i.sop_instance_uid, i.outcome, i.rules_fired, i.received_at, i.store_command, "
                          "GROUP_CONCAT(d.destination) FROM instances i JOIN deliveries d ON d.instance_id = i.id "
                          "WHERE i.state = 'processed' GROUP BY i.id").fetchall()
    return {uid: (outcome, fired, int(received_at * 1000), json.loads(command), frozenset(destinations.split(",")))
            for uid, outcome, fired, received_at, command, destinations in rows}


def arrivals_noted(tmp_path: Path) -> dict[str, str]:
    """What NOTED's copies waiting in the spool say of their arrival, by SOP Instance UID."""
    copies = [pydicom.dcmread(path, stop_before_pixels=True) for path in (tmp_path / "var" / "spool" / "out").iterdir()]
    return {str(copy.SOPInstanceUID): str(copy.StudyDescription) for copy in copies}


def test_an_instance_whose_journal_entry_was_lost_is_decided_again_as_it_was(router_factory, tmp_path, port):
    """A power cut right after the answers: the spool files are on disk, their journal entries
    are not. The router started again receives them again with the arrival time and the
    C-STORE command set their names kept, and the rules decide as they did."""
    config = down_config(port, free_port())
    router = router_factory(config, ARRIVAL_AND_COMMAND, port)
    [routine, urgent, moved] = make_instances(tmp_path / "sent", 3)
    assert pynetdicom_store(port, routine.path, priority=2) == 0
    assert pynetdicom_store(port, urgent.path, priority=1) == 0
    assert pynetdicom_store(port, moved.path, originator_aet="PACS", originator_id=7) == 0
    before = wait_until(lambda: (found := decisions(tmp_path)) and len(found) == 3 and found,
                        what="three instances decided")
    assert {
        routine.sop_instance_uid: {"ROUTINE"}, urgent.sop_instance_uid: {"URGENT"},
        moved.sop_instance_uid: {"MOVED"}} == {uid: decision[4] - {"NOTED"} for uid, decision in before.items()}
    noted_before = arrivals_noted(tmp_path)
    assert router.stop() == 0
    first_log = router.log_path.read_text()

    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite")) as db, db:
        db.execute("DELETE FROM attempts")
        db.execute("DELETE FROM deliveries")
        db.execute("DELETE FROM instances")
    spooled = sorted(os.listdir(tmp_path / "var" / "spool" / "in"))
    assert len(spooled) == 3

    again = router_factory(config, ARRIVAL_AND_COMMAND, port)
    after = wait_until(lambda: (found := decisions(tmp_path)) and len(found) == 3 and found,
                       what="the three instances decided again")
    assert after == before  # the decision, the rules fired, the arrival time, the command set
    assert again.stop() == 0
    second_log = again.log_path.read_text()
    received_again = [line for line in second_log.splitlines() if "had no journal entry" in line]
    assert len(received_again) == 3, second_log
    assert all("(arrival time from its name; C-STORE command set from its name (CommandField, MessageID, Priority, "
               "AffectedSOPClassUID, AffectedSOPInstanceUID" in line and "not recovered" not in line
               for line in received_again), second_log
    # the rules read the same Arrival.* both times
    assert arrivals_noted(tmp_path) == noted_before
    assert all(re.fullmatch(r"arrived \d{14} on a \w+day", text) for text in noted_before.values())
    assert "Traceback" not in first_log + second_log
