"""A local worklist source: Modality Worklist queries answered from a folder of worklist
files, the folder DCMTK's wlmscpfs and Orthanc's worklist plugin read.

Every `*.wl` file of the folder (not of its subfolders; the suffix in any case) is one
worklist item: a DICOM file, with or without file meta information, whose data set holds
the item's attributes. Files are kept parsed and answered from memory; before a query
the folder is looked at again (at most once per `rescan_seconds`): a file whose
modification time, size or inode changed is read again, a removed file is dropped, and
unchanged files are not opened at all, so a folder of thousands of items answers without
re-reading them. A file that cannot be read is skipped and logged once, with its reason,
until it changes.

Matching is rulesengine.matching's, with a date and a time of the same pair matched as
one date-time, as wlmscpfs does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from ..matching import matches, response_for

log = logging.getLogger("rulesengine.worklist")

SUFFIX = ".wl"


@dataclass(frozen=True)
class _Version:
    """What tells a changed file: a rewrite changes the time or the size, a replacement by
    rename the inode."""

    mtime_ns: int
    size: int
    inode: int


class WorklistFolder:
    """The worklist items of a folder; `find(identifier)` answers a query."""

    def __init__(self, path: str | os.PathLike, clock=time.monotonic, rescan_seconds: float = 1.0):
        self.path = os.fspath(path)
        self.clock = clock
        self.rescan_seconds = rescan_seconds
        self._items: dict[str, tuple[_Version, Dataset]] = {}
        self._broken: dict[str, tuple[_Version, str]] = {}
        self._scanned_at: float | None = None
        self._lock = threading.Lock()
        self.reads = 0  # files parsed so far: what a test of "unchanged files are not re-read" counts

    # ---- the folder ----

    def refresh(self) -> None:
        """Look at the folder now: read new and changed files, drop removed ones. A folder
        that cannot be listed keeps what was read before and is logged."""
        with self._lock:
            self._scan()

    def _refresh_if_due(self) -> None:
        with self._lock:
            now = self.clock()
            if self._scanned_at is None or now - self._scanned_at >= self.rescan_seconds:
                self._scan()

    def _scan(self) -> None:
        self._scanned_at = self.clock()
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            log.warning("worklist folder %s cannot be read: %s", self.path, exc.strerror or exc)
            return
        seen = set()
        for entry in entries:
            if not entry.name.lower().endswith(SUFFIX) or entry.name.startswith("."):
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError:
                continue  # removed while listed
            seen.add(entry.name)
            version = _Version(stat.st_mtime_ns, stat.st_size, stat.st_ino)
            held = self._items.get(entry.name)
            if held is not None and held[0] == version:
                continue
            broken = self._broken.get(entry.name)
            if broken is not None and broken[0] == version:
                continue
            self._read(entry.name, entry.path, version)
        for name in set(self._items) - seen:
            del self._items[name]
        for name in set(self._broken) - seen:
            del self._broken[name]

    def _read(self, name: str, path: str, version: _Version) -> None:
        self.reads += 1
        self._items.pop(name, None)
        try:
            dataset = read_worklist_file(path)
        except WorklistFileError as exc:
            self._broken[name] = (version, str(exc))
            log.warning("worklist file %s skipped: %s", path, exc)
            return
        self._broken.pop(name, None)
        self._items[name] = (version, dataset)

    # ---- queries ----

    def find(self, identifier: Dataset) -> list[Dataset]:
        """The responses to a Modality Worklist identifier, one per matching item, in the
        order of the file names."""
        self._refresh_if_due()
        with self._lock:
            items = [self._items[name][1] for name in sorted(self._items)]
        return [response_for(identifier, item, combined_datetime=True) for item in items
                if matches(identifier, item, combined_datetime=True)]

    def items(self) -> dict[str, Dataset]:
        """The items read, by file name."""
        self._refresh_if_due()
        with self._lock:
            return {name: held[1] for name, held in sorted(self._items.items())}

    def broken(self) -> dict[str, str]:
        """The files skipped, by name, with the reason."""
        self._refresh_if_due()
        with self._lock:
            return {name: held[1] for name, held in sorted(self._broken.items())}


class WorklistFileError(Exception):
    """A worklist file that cannot be used, and why."""


def read_worklist_file(path: str) -> Dataset:
    """A worklist file's data set, every value converted now (so that a bad value is found
    at reading, not in the middle of a query)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
            fh.seek(0)
            # A DICOM file with its preamble, or (as DCMTK also reads) a bare data set.
            dataset = pydicom.dcmread(fh, force=head[128:132] != b"DICM")
            _convert_every_value(dataset)
    except OSError as exc:
        raise WorklistFileError(f"cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # pydicom raises many kinds for a file it cannot parse
        raise WorklistFileError(f"not a DICOM data set pydicom can read: {type(exc).__name__}: {exc}") from None
    if len(dataset) == 0:
        raise WorklistFileError("holds no attributes")
    return dataset


def _convert_every_value(dataset: Dataset) -> None:
    for element in dataset:
        if element.VR == "SQ":
            for item in element.value:
                _convert_every_value(item)


def folder_state(path: str) -> tuple[bool, str]:
    """Whether a worklist folder can be read, and how many worklist files it holds, in words."""
    if not os.path.exists(path):
        return False, "does not exist"
    if not os.path.isdir(path):
        return False, "is not a folder"
    try:
        names = [entry.name for entry in os.scandir(path)
                 if entry.name.lower().endswith(SUFFIX) and not entry.name.startswith(".") and entry.is_file()]
    except OSError as exc:
        return False, f"cannot be read: {exc.strerror or exc}"
    unreadable = [name for name in names if not os.access(os.path.join(path, name), os.R_OK)]
    text = f"is readable and holds {len(names)} worklist file{'' if len(names) == 1 else 's'}"
    if unreadable:
        return False, text + f", {len(unreadable)} of them unreadable"
    return True, text
