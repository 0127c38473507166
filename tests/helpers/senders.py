"""storescu senders that keep sending while the router is killed and restarted, and what
storescu and a destination folder say was acknowledged and received (the crash suite)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from helpers.files import bundled
from helpers.instances import read_header
from helpers.peers import storescu

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
        self.refusals: list[str] = []  # the statuses of the C-STORE responses other than Success
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
            self.refusals.extend(refused_statuses(result.stdout + result.stderr))
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


def refused_statuses(output: str) -> list[str]:
    """The statuses of the C-STORE responses storescu -v reports other than Success."""
    return [match.group(1) for match in re.finditer(r"^I: Received Store Response \((.*)\)$", output, re.M)
            if match.group(1) != "Success"]


def received_uids(folder: Path) -> set[str]:
    return {str(read_header(path).SOPInstanceUID) for path in folder.rglob("*") if path.is_file()}


ROUTE_ALL = """
rule "everything" {
  then {
    set DataSet.InstitutionName = "ROUTED"
    route to STORE
  }
}
"""
