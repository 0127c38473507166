"""Retention and cleanup: what the router keeps once it is done with it, and for how long.

Four kinds of files go once their time is up (`retention:` in the configuration):

- `retained`: received instances kept, as received, after their deliveries ended (or they
  were dropped), for `retention.delivered`; the journal says until when (instances.retained_until),
  so that a replay finds them. The file goes first, then the journal's mark: a crash in
  between leaves a mark without a file (the next round ends it), never a file no entry names
  (a start would take that for an instance whose entry was lost, and route it again). A
  file a delivery still names (a dead delivery kept for `queue retry`) stays: the retention
  ends, and the file goes with that delivery.
- `quarantine`: instances in STORAGE/quarantine/DAY/ with their .json, by age.
- `done`, `failed`: files in the watched folders' done and failed folders (a failed file with
  its .reason.txt), by age.

A file's age is counted from when it got there: the later of its modification and change
times (a move into done/ keeps the first and sets the second). Symbolic links and anything
but plain files are left alone; folders a cleanup leaves empty are removed (never the
quarantine, done or failed folder itself).

`Cleanup.plan(now)` says what would go, `apply(plan)` removes it; `dicom-rules cleanup` shows
a plan and applies it with --apply. In the router, `Housekeeper` runs a cleanup every
CLEANUP_SECONDS (the folders every FOLDER_CLEANUP_SECONDS), on one node at a time (the
journal's exclusive lock "cleanup"), and asks the disk watermark regularly, so that a low
disk is logged while nothing arrives too.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ..config import Retention, Watch
from .journal import Journal
from .storage import Storage, fsync_dir

log = logging.getLogger("rulesengine.cleanup")

KINDS = ("retained", "quarantine", "done", "failed")
LOCK_NAME = "cleanup"  # the journal's exclusive lock: one node cleans up at a time
CLEANUP_SECONDS = 60.0  # retained instances whose time is up go within about this long
FOLDER_CLEANUP_SECONDS = 600.0  # the quarantine, done and failed folders are walked this often
TICK_SECONDS = 5.0  # the housekeeper wakes this often (the disk watermark is asked then)
RETAINED_BATCH = 1000  # retained instances removed per journal read


@dataclass(frozen=True)
class Removal:
    """One thing a cleanup removes: a file (with the files that go with it), or a retained
    instance's file and its journal mark."""

    kind: str
    path: str | None
    size: int  # bytes, the companions' too
    companions: tuple[str, ...] = ()  # a quarantined instance's .json, a failed file's .reason.txt
    instance_id: int | None = None  # retained: whose retention ends
    needed: bool = False  # retained, but a delivery still names the file: only the retention ends


@dataclass
class CleanupPlan:
    """What a cleanup at `now` removes, by kind."""

    now: float
    removals: dict[str, list[Removal]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    configured: dict[str, float | None] = field(default_factory=dict)  # kind -> retention seconds

    def add(self, removal: Removal) -> None:
        self.removals[removal.kind].append(removal)

    def count(self, kind: str) -> int:
        return len(self.removals[kind])

    def size(self, kind: str) -> int:
        return sum(item.size for item in self.removals[kind] if not item.needed)

    def total(self) -> tuple[int, int]:
        return sum(map(self.count, KINDS)), sum(map(self.size, KINDS))

    def to_json(self, files: bool = False) -> dict:
        out = {"now": self.now, "kinds": {}}
        for kind in KINDS:
            entry = {"retention_seconds": self.configured.get(kind), "count": self.count(kind),
                     "bytes": self.size(kind)}
            if files:
                entry["files"] = [item.path for item in self.removals[kind]]
            out["kinds"][kind] = entry
        return out


def file_age_reference(info: os.stat_result) -> float:
    """When a file got where it is: the later of its modification and change times."""
    return max(info.st_mtime, info.st_ctime)


class Cleanup:
    """What is kept and for how long, for one storage folder and its watched folders."""

    def __init__(self, storage: Storage, journal: Journal, retention: Retention, watches: Iterable[Watch] = (),
                 clock: Callable[[], float] = time.time):
        self.storage = storage
        self.journal = journal
        self.retention = retention
        self.watches = tuple(watches)
        self.clock = clock  # wall time, in seconds: what "now" is when no time is given

    # ---- what would go ----------------------------------------------------------------------

    def plan(self, now: float | None = None, retained_limit: int | None = None, folders: bool = True) -> CleanupPlan:
        """What a cleanup at `now` removes: the retained instances whose time is up (at most
        `retained_limit`, all by default) and, with `folders`, the old files of the
        quarantine, done and failed folders."""
        now = self.clock() if now is None else now
        plan = CleanupPlan(now, configured=self.configured())
        for expired in self.journal.expired_retentions(now, retained_limit if retained_limit is not None else 2 ** 62):
            size = 0 if expired.needed else _size(expired.path)
            plan.add(Removal("retained", expired.path, size, instance_id=expired.instance_id, needed=expired.needed))
        if folders:
            if self.retention.quarantine is not None:
                for removal in self._quarantined(now - self.retention.quarantine):
                    plan.add(removal)
            for kind, folder, cutoff in self._watch_folders(now):
                for removal in _old_files(kind, folder, cutoff):
                    plan.add(removal)
        return plan

    def _quarantined(self, cutoff: float) -> Iterator[Removal]:
        """Quarantined instances (and stray .json files) older than `cutoff`."""
        root = self.storage.quarantine_dir
        for day in _entries(root):
            if not day.is_dir(follow_symlinks=False):
                continue
            entries = {entry.name: entry for entry in _entries(day.path)}
            for name, entry in sorted(entries.items()):
                info = _plain_file(entry)
                if info is None:
                    continue
                if name.endswith(".dcm"):
                    if file_age_reference(info) >= cutoff:
                        continue
                    companion = entries.get(name + ".json")
                    companion_info = _plain_file(companion) if companion is not None else None
                    yield Removal("quarantine", entry.path, info.st_size + (companion_info.st_size if companion_info else 0),
                                  (companion.path,) if companion_info else ())
                elif name.endswith(".dcm.json") and name[:-len(".json")] not in entries:
                    if file_age_reference(info) < cutoff:  # its instance is gone (released, removed by hand)
                        yield Removal("quarantine", entry.path, info.st_size)

    def _watch_folders(self, now: float) -> list[tuple[str, str, float]]:
        """(kind, folder, cutoff) of each done and failed folder with a retention, each folder once."""
        found: dict[str, tuple[str, float]] = {}
        for watch in self.watches:
            for kind, folder in (("done", watch.done), ("failed", watch.failed)):
                seconds = getattr(self.retention, kind)
                if seconds is None or not folder:
                    continue
                folder = os.path.abspath(folder)
                cutoff = now - seconds
                if folder in found:  # two watched folders sharing one: the shorter retention wins
                    cutoff = max(cutoff, found[folder][1])
                    kind = found[folder][0]
                found[folder] = (kind, cutoff)
        return [(kind, folder, cutoff) for folder, (kind, cutoff) in found.items()]

    # ---- removing it ------------------------------------------------------------------------

    def apply(self, plan: CleanupPlan, stopping: Callable[[], bool] = lambda: False) -> CleanupPlan:
        """Remove what the plan names (what is gone already is fine); returns what was removed."""
        done = CleanupPlan(plan.now, configured=plan.configured)
        ended: list[int] = []
        touched: set[str] = set()
        for kind in KINDS:
            for removal in plan.removals[kind]:
                if stopping():
                    break
                if kind == "retained":
                    if not removal.needed and removal.path and self._in_spool(removal.path):
                        self.storage.remove(removal.path)
                        touched.add(os.path.dirname(removal.path))
                    ended.append(removal.instance_id)
                    if len(ended) >= RETAINED_BATCH:
                        self._end(ended, touched)
                else:
                    if not _still_old(removal.path, plan.now, plan.configured.get(kind)):
                        continue  # changed since the plan was made (a file put back): not old any more
                    for path in (removal.path, *removal.companions):
                        self.storage.remove(path)
                    touched.add(os.path.dirname(removal.path))
                done.add(removal)
        self._end(ended, touched)
        self._prune(touched)
        return done

    def _end(self, ended: list[int], touched: set[str]) -> None:
        """The retention of these ends, once their files' removal is durable."""
        if not ended:
            return
        for folder in touched:
            try:
                fsync_dir(folder)
            except OSError:
                pass
        self.journal.end_retention(ended)
        ended.clear()

    def _in_spool(self, path: str) -> bool:
        """A retained file is removed only where spool files are: never in the quarantine (an
        instance quarantined since), never outside the storage folder."""
        path = os.path.abspath(path)
        root = self.storage.root.rstrip(os.sep) + os.sep
        quarantine = self.storage.quarantine_dir.rstrip(os.sep) + os.sep
        return path.startswith(root) and not path.startswith(quarantine)

    def _prune(self, folders: set[str]) -> None:
        """Remove folders the cleanup left empty, up to (never including) the quarantine, done
        and failed folders; spool folders are never removed."""
        roots = {os.path.abspath(self.storage.quarantine_dir)}
        for watch in self.watches:
            roots |= {os.path.abspath(watch.done), os.path.abspath(watch.failed)}
        for folder in sorted(folders, key=len, reverse=True):
            folder = os.path.abspath(folder)
            while any(folder.startswith(root + os.sep) for root in roots):
                try:
                    os.rmdir(folder)
                except OSError:  # not empty: it stays, and so do the folders above it
                    break
                folder = os.path.dirname(folder)

    def run(self, now: float | None = None, stopping: Callable[[], bool] = lambda: False,
            folders: bool = True) -> CleanupPlan:
        """A cleanup now: retained instances in batches, then (with `folders`) the folders.
        Returns what was removed."""
        now = self.clock() if now is None else now
        removed = CleanupPlan(now, configured=self.configured())
        while not stopping():
            batch = self.plan(now, RETAINED_BATCH, folders=False)
            if not batch.removals["retained"]:
                break
            done = self.apply(batch, stopping)
            removed.removals["retained"] += done.removals["retained"]
            if len(batch.removals["retained"]) < RETAINED_BATCH:
                break
        if folders and not stopping():
            plan = self.plan(now, 0, folders=True)
            done = self.apply(plan, stopping)
            for kind in ("quarantine", "done", "failed"):
                removed.removals[kind] += done.removals[kind]
        return removed

    def configured(self) -> dict[str, float | None]:
        """Each kind's retention in seconds (None: kept for ever; retained: 0 when off)."""
        return {"retained": self.retention.delivered, "quarantine": self.retention.quarantine,
                "done": self.retention.done, "failed": self.retention.failed}


def _still_old(path: str, now: float, seconds: float | None) -> bool:
    """Is the file still as old as the plan found it (the plan may be minutes old)?"""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return seconds is not None and file_age_reference(info) < now - seconds


def _old_files(kind: str, folder: str, cutoff: float) -> Iterator[Removal]:
    """Plain files under `folder` older than `cutoff`, a file's .reason.txt with it."""
    for current, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        names = set(files)
        for name in sorted(files):
            path = os.path.join(current, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            if name.endswith(".reason.txt") and name[:-len(".reason.txt")] in names:
                continue  # goes with its file
            if file_age_reference(info) >= cutoff:
                continue
            companion = path + ".reason.txt"
            companions: tuple[str, ...] = ()
            size = info.st_size
            if name + ".reason.txt" in names:
                try:
                    extra = os.lstat(companion)
                except OSError:
                    extra = None
                if extra is not None and stat.S_ISREG(extra.st_mode):
                    companions, size = (companion,), size + extra.st_size
            yield Removal(kind, path, size, companions)


def _entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _plain_file(entry: os.DirEntry | None) -> os.stat_result | None:
    if entry is None:
        return None
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _size(path: str | None) -> int:
    try:
        return os.lstat(path).st_size if path else 0
    except OSError:
        return 0


class Housekeeper:
    """In the router (receiving process 0): the periodic cleanup, on one node at a time, and
    the disk watermark asked every TICK_SECONDS. `clock` gives the wall time the retention
    is measured in; `tick(now)` does what is due (tests call it instead of the thread)."""

    def __init__(self, cleanup: Cleanup, clock: Callable[[], float] = time.time):
        self.cleanup = cleanup
        self.clock = clock
        self._next_round: float | None = None
        self._next_folders: float | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._waited = False  # another node held the lock at the last round

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        # The first round at once: what the rounds hold for the router's life (this thread's
        # journal connection) is taken at its start, not a minute into its work.
        delay = 0.0
        while not self._stopping.wait(delay):
            delay = TICK_SECONDS
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the database may be away: try again at the next round
                log.warning("cleanup: %s; tried again in %.0f s", exc, CLEANUP_SECONDS)
                self._next_round = self.clock() + CLEANUP_SECONDS

    def tick(self, now: float | None = None) -> CleanupPlan | None:
        """Ask the disk watermark; run a cleanup round when one is due. Returns what the round
        removed (None: no round now, or another node runs it)."""
        self.cleanup.storage.disk.low()
        now = self.clock() if now is None else now
        if self._next_round is not None and now < self._next_round:
            return None
        self._next_round = now + CLEANUP_SECONDS
        folders = self._next_folders is None or now >= self._next_folders
        lock = self.cleanup.journal.try_exclusive(LOCK_NAME)
        if lock is None:
            if not self._waited:
                log.debug("cleanup: another node runs it")
            self._waited = True
            return None
        self._waited = False
        try:
            removed = self.cleanup.run(now, self._stopping.is_set, folders=folders)
        finally:
            lock.release()
        if folders:
            self._next_folders = now + FOLDER_CLEANUP_SECONDS
        if removed.total()[0]:
            log.info("cleanup: %s", describe(removed))
        return removed


def describe(plan: CleanupPlan) -> str:
    """One line: what went (or would go), by kind."""
    from .disk_space import in_bytes
    parts = [f"{plan.count(kind)} {kind} ({in_bytes(plan.size(kind))})" for kind in KINDS if plan.count(kind)]
    return ", ".join(parts) or "nothing"
