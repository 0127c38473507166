"""Deliveries as the journal hands them to a sender: a spool copy of a file, one more CT of
the same SOP class, a destination for a local peer with short timeouts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom

from helpers.files import SAMPLES
from helpers.peers import StoreSCP
from rulesengine.config import DicomDestination, Timeouts
from rulesengine.runtime.journal import SENDING, Delivery

FAST = Timeouts(connect=5, acse=10, dimse=20, network=20)


def delivery(path, number: int = 1, destination: str = "PEER") -> Delivery:
    """A claimed delivery of the file at `path`, as the journal hands it to a worker."""
    header = pydicom.dcmread(path, stop_before_pixels=True)
    return Delivery(number, number, destination, str(path), str(header.SOPClassUID), str(header.SOPInstanceUID),
                    str(header.file_meta.TransferSyntaxUID), SENDING, 0, 0.0, None)


def spool_copy(tmp_path: Path, source, name: str | None = None) -> Path:
    """Deliveries are sent from the spool: never from the shared sample files."""
    target = tmp_path / "spool" / (name or os.path.basename(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def destination_for(peer: StoreSCP, **options) -> DicomDestination:
    return DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST, **options)


def another_ct(tmp_path: Path, number: int) -> Path:
    """ct_head with its own SOP Instance UID: one more instance of the same SOP class."""
    ds = pydicom.dcmread(SAMPLES / "ct_head.dcm")
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{number}"
    target = tmp_path / "spool" / f"ct-{number}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)
    return target
