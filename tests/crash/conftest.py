"""The crash suite: the router killed under load, as real processes (DCMTK storescu senders,
`dicom-rules run`, DCMTK storescp as the destination). What it checks: nothing a sender saw
acknowledged is lost, and the journal ends settled (nothing `accepted`, nothing `sending`)."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import bundled  # noqa: E402
from instances import store_router_config as router_config  # noqa: E402,F401
from peers import StoreSCP, free_port, storescu  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

BATCH = 5  # instances per association


class Sender(threading.Thread):
    """storescu sending instances, a few per association, until told to stop; remembers which
    ones storescu reported acknowledged (a Success response). What was not acknowledged is
    sent again, as a modality does; a sender that finds the router down tries again shortly."""

    def __init__(self, port: int, folder: Path, calling: str, stop: threading.Event):
        super().__init__(daemon=True, name=f"sender-{calling}")
        self.port, self.folder, self.calling, self.stop = port, folder, calling, stop
        self.acknowledged: set[str] = set()
        self.sent = 0  # C-STOREs tried, resent ones included
        folder.mkdir(parents=True)

    def run(self) -> None:
        dataset = pydicom.dcmread(bundled("CT_small.dcm"))
        pending: dict[str, str] = {}  # file -> SOP Instance UID, not yet acknowledged
        made = 0
        while not self.stop.is_set():
            while len(pending) < BATCH:
                made += 1
                uid = generate_uid()
                dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
                path = self.folder / f"{made:05d}.dcm"
                dataset.save_as(path, enforce_file_format=True)
                pending[str(path)] = uid
            result = storescu(self.port, list(pending), self.calling, "ROUTER", "-v", timeout=120)
            self.sent += len(pending)
            acknowledged = acknowledged_files(result.stdout + result.stderr)
            self.acknowledged.update(pending.pop(path) for path in acknowledged)
            if not acknowledged:
                time.sleep(0.25)  # the router is down or starting: leave it the processor


def acknowledged_files(output: str) -> list[str]:
    """The files storescu -v reports a Success response for."""
    done, current = [], None
    for line in output.splitlines():
        sending = re.match(r"I: Sending file: (.*)$", line)
        if sending:
            current = sending.group(1)
        elif current and line.startswith("I: Received Store Response (Success)"):
            done.append(current)
            current = None
    return done


def received_uids(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
            for path in folder.rglob("*") if path.is_file()}


ROUTE_ALL = """
rule "everything" {
  then {
    set DataSet.InstitutionName = "ROUTED"
    route to STORE
  }
}
"""


@pytest.fixture
def storescp(tmp_path):
    peer = StoreSCP(tmp_path / "storescp").start()
    yield peer
    peer.stop()


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def senders(tmp_path, port):
    """Start(n) senders on the router's port; they are stopped and joined after the test."""
    stop = threading.Event()
    started: list[Sender] = []

    def start(count: int) -> list[Sender]:
        for number in range(count):
            sender = Sender(port, tmp_path / f"sent-{number}", f"CT{number}", stop)
            sender.start()
            started.append(sender)
        return started

    start.stop = stop
    yield start
    stop.set()
    for sender in started:
        sender.join(180)
