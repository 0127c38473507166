"""A journal filled the way the router fills it, for the console's Messages page: the sample
instances received through the router's pipeline (its intake, its rules, its copies) at
known times, their deliveries sent by the router's delivery workers (a folder that takes
them, a DICOM peer that is down), and requests (a C-FIND, a C-MOVE) as the services
journal them."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from helpers.files import SAMPLES
from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.runtime.delivery import DestinationWorker
from rulesengine.runtime.journal import DestinationAnswer, NewRequest, RequestOutcome, RequestResult
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

RULES = """\
rule "reject secondary captures" {
  when DataSet.Modality == "OT"
  then reject "secondary captures are not accepted"
}

rule "drop reports" {
  when DataSet.Modality == "SR"
  then drop
}

rule "hold the knee" {
  when DataSet.PatientID == "MR-0001"
  then quarantine "knee under review"
}

rule "CT to the PACS" {
  when DataSet.Modality == "CT"
  then route to PACS
  set DataSet.InstitutionName = "ROUTED <b>here</b>"
  copy to RESEARCH {
    set DataSet.PatientID = "ANON"
    set DataSet.PatientName = "ANON^ANON"
    set DataSet.PatientBirthDate = "19000101"
  }
}

rule "MR to the down peer" {
  when DataSet.Modality == "MR"
  then route to DOWN
}
"""

CONFIG = """\
storage: var
processes: 1
rules: main.rules
destinations:
  PACS: {type: folder, path: out/pacs}
  RESEARCH: {type: folder, path: out/research}
  DOWN:
    type: dicom
    ae_title: DOWN
    host: 127.0.0.1
    port: DOWN_PORT
    retry: {delay: 0.2, max_attempts: 1}
    timeouts: {connect: 2}
console:
  bind: 127.0.0.1
  port: 8104
"""


def local(text: str) -> float:
    """Seconds since the epoch of a local date-time (2026-12-01T09:00)."""
    return datetime.fromisoformat(text).timestamp()


# What is received, in this order: (sample, source kind, source name, calling AE, when).
RECEIVED = (
    ("ct_chest.dcm", "listener", "main", "CT1", "2026-12-01T09:00"),
    ("ct_head.dcm", "listener", "main", "CT2", "2026-12-01T10:00"),
    ("mr_knee.dcm", "listener", "main", "MR1", "2026-12-02T09:00"),
    ("mr_japanese.dcm", "folder", "inbox", None, "2026-12-02T11:00"),
    ("ot_secondary.dcm", "listener", "main", "WS1", "2026-12-03T08:00"),
    ("sr_report.dcm", "folder", "inbox", None, "2026-12-03T09:30"),
)


@dataclass
class Traffic:
    folder: Path
    config_path: Path
    ids: dict[str, int] = field(default_factory=dict)  # sample -> instance number
    requests: list[int] = field(default_factory=list)


def fill(folder: Path, down_port: int) -> Traffic:
    """A configuration in `folder` and its journal, filled by the router's own code."""
    (folder / "main.rules").write_text(RULES, encoding="utf-8")
    config_path = folder / "router.yaml"
    config_path.write_text(CONFIG.replace("DOWN_PORT", str(down_port)), encoding="utf-8")
    config = load_config(config_path, secrets=False)
    storage = Storage(config.storage)
    journal = storage.journal()
    rules = RulesHolder(config, journal)
    pipeline = Pipeline(storage, journal, rules, lambda names: None)
    traffic = Traffic(folder, config_path)
    try:
        for sample, kind, name, calling, when in RECEIVED:
            path = storage.temp_path()
            shutil.copyfile(SAMPLES / sample, path)
            arrival = Arrival(calling_aet=calling, called_aet="ROUTER" if calling else None,
                              peer_address="127.0.0.1" if calling else None, peer_port=40100 if calling else None,
                              source_name=name, source_kind=kind, received_at=local(when))
            result = pipeline.intake(path, arrival)
            if result.outcome == "accepted":
                pipeline.process(result.instance_id)
            traffic.ids[sample] = result.instance_id
        for name, destination in config.destinations.items():
            worker = DestinationWorker(destination, journal, storage, threading.Event())
            worker._claim_and_send()  # one round: what is due is sent (or fails) now
            worker.sender.close()
        find = journal.record_request(NewRequest(
            "C-FIND", Arrival(calling_aet="VIEWER1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40200,
                              source_name="main", source_kind="listener"),
            "STUDY", {"PatientName": "DOE^JOHN", "PatientID": "123456", "StudyDate": "20040119",
                      "ModalitiesInStudy": "CT"}), now=local("2026-12-03T10:00"))
        journal.finish_request(find, RequestResult(RequestOutcome.ANSWERED, 0x0000,
                                                   (DestinationAnswer("PACS", 0x0000, 1, None, 0.05),), matches=1),
                               now=local("2026-12-03T10:00"))
        move = journal.record_request(NewRequest(
            "C-MOVE", Arrival(calling_aet="VIEWER1", called_aet="ROUTER", source_name="main", source_kind="listener"),
            "STUDY", {"StudyInstanceUID": "1.2.3"}, move_destination="VIEWER1"), now=local("2026-12-03T10:05"))
        journal.finish_request(move, RequestResult(RequestOutcome.FAILED, 0xA801, error="unknown move destination"),
                               now=local("2026-12-03T10:05"))
        traffic.requests = [find, move]
    finally:
        pipeline.stop()
        journal.close()
    return traffic
