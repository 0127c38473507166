"""CommandSet.* for instances stored over the network: the C-STORE request's command set
(Priority, Move Originator, Message ID) decides in the running router, as DCMTK's storescu
and pynetdicom send it, in either listener mode, and after a quarantine release."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from helpers.cli import dicom_rules
from helpers.instances import make_instances, received_by_uid
from helpers.peers import storescu, wait_until
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
    return (f"storage: var\nrules: main.rules\n"
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
