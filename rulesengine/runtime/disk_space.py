"""The disk watermark (`storage_min_free`): below it, new instances are refused before the disk is full.

Every receiving path asks `DiskSpace.low()` before it takes an instance: a listener answers
the C-STORE with Out of Resources (A700) and an Error Comment that says the disk is low, a
watched folder leaves its files where they are. The file system is asked (statvfs) at most
once per CHECK_SECONDS, whatever the traffic; the answer is cached in between.

When space runs low, and when it is back, the router says so in its log (while low, once per
REPEAT_SECONDS) and calls the listeners given to `on_change`: the place where a
notification is raised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from ..config import FreeSpaceFloor
from .logs import REPEAT_SECONDS

log = logging.getLogger("rulesengine.router")

CHECK_SECONDS = 1.0  # the file system is asked at most this often
# What a refused C-STORE's Error Comment says (an LO: at most 64 characters).
DISK_LOW_COMMENT = "not stored: the router's disk is low (storage_min_free)"


def in_bytes(size: float) -> str:
    """A size in words: 1.5 GB, 730 MB (decimal units, as `df -H` and most disks say)."""
    for unit, factor in (("TB", 10 ** 12), ("GB", 10 ** 9), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if abs(size) >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} B"


class DiskSpace:
    """Whether the storage folder's file system has the free space `floor` asks for.
    `statvfs` and `clock` (monotonic seconds) are injectable for tests."""

    def __init__(self, folder: str, floor: FreeSpaceFloor | None, statvfs: Callable = os.statvfs,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = folder
        self.floor = floor
        self.statvfs = statvfs
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reason: str | None = None  # why instances are refused now; None: there is room
        self._logged_at: float | None = None
        # Called with (low: bool, reason or None) when space runs low and when it is back: the
        # hook where a notification is raised (the log lines are written here already).
        self.on_change: list[Callable[[bool, str | None], None]] = []

    def low(self) -> str | None:
        """Why new instances are refused now (the disk is low), or None when there is room."""
        if self.floor is None:
            return None
        now = self.clock()
        with self._lock:
            if self._checked_at is not None and now - self._checked_at < CHECK_SECONDS:
                return self._reason
            self._checked_at = now
            before, self._reason = self._reason, self._measure()
            changed = (before is None) != (self._reason is None)
            reason = self._reason
            due = reason is not None and (changed or self._logged_at is None or now - self._logged_at >= REPEAT_SECONDS)
            if due:
                self._logged_at = now
        if reason is not None and due:
            log.warning("%s; new instances are refused until space is back", reason)
        elif changed:
            log.info("disk space of the storage folder is back above storage_min_free (%s): instances are taken again",
                     self.floor.text)
        if changed:
            for listener in list(self.on_change):
                try:
                    listener(reason is not None, reason)
                except Exception:  # noqa: BLE001 - a listener's fault must not stop the intake
                    log.exception("disk space: a listener of the change failed")
        return reason

    def _measure(self) -> str | None:
        try:
            stat = self.statvfs(self.folder)
        except OSError as exc:  # cannot tell: refusing everything for that would be worse
            log.debug("disk space of %s cannot be read: %s", self.folder, exc)
            return None
        free = stat.f_bavail * stat.f_frsize
        total = stat.f_blocks * stat.f_frsize
        needed = self.floor.required(total)
        if free >= needed and not (self.floor.percent is not None and self.floor.percent >= 100):
            return None
        return (f"the disk of the router's storage is low: {in_bytes(free)} free, storage_min_free is "
                f"{self.floor.text}")
