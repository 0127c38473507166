"""Watched folders: files that appear are routed like received instances.

A file is taken only once it is complete: its size and modification time must
not change for `settle_seconds` (a copy in progress keeps changing them). It is
copied into the spool (fsynced), journaled, and then moved to the done folder;
one that fails, for whatever reason (it cannot be read, intake refuses it, a rule
rejects it, an internal error), goes to the failed folder with a .reason.txt
beside it. Either way a file is taken once: it leaves the folder, and only a file
that changes is looked at again.

Subfolders are watched too (a CD copied in, with its DICOMDIR and its folders):
their files keep their relative path in done/ and failed/, and a subfolder a taken
file leaves empty is removed. done/ and failed/ themselves, and names starting
with `.`, are never taken. Files already there when the router starts are taken too.

A folder is read by one node at a time (nodes sharing a PostgreSQL journal may all
watch it): the watcher holds the journal's exclusive lock `watch:FOLDER` while it
takes files. The others wait, asking again every HOLD_CHECK_SECONDS, and one of
them takes over when the holder stops, dies, or loses its database connection
(then the holder stops taking files until it holds the lock again). A file the
holder copied in and had not moved out when it died is taken again by the next:
a duplicate is possible, a loss is not.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import shutil
import threading
import time
from stat import S_ISREG
from typing import Callable

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from ..config import Watch
from ..arrival import Arrival
from ..document import DocumentReadError
from ..intake import reason_of
from .journal import unreachable
from .logs import Repeats
from .pipeline import Pipeline

log = logging.getLogger("rulesengine.watch")

POLL_SECONDS = 0.2  # how often files waiting to settle are looked at
FULL_WAIT_SECONDS = 10.0  # a file the spool has no room for is tried again after this
# The folder is listed again this often: file notifications can be lost (the kernel's queue
# overflows) or never come (a network file system written by other machines).
RESCAN_SECONDS = 60.0
# How often a watcher waiting for the folder asks for it, and the holder makes sure it still holds it.
HOLD_CHECK_SECONDS = 5.0

# The events that say a file's content may have changed. Opening a file and closing it
# without writing (every read, the router's own among them) and changes of attributes
# say nothing new: taking a file on those would take a failed file again and again.
_CHANGES = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED})
_SPOOL_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # the spool's file system, not the file


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "FolderWatcher"):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED):
                self.watcher.folder_gone(os.fsdecode(event.src_path))
            if event.event_type in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
                self.watcher.folder_added(os.fsdecode(event.dest_path or event.src_path))
            return
        if event.event_type in _CHANGES:
            self.watcher.seen(os.fsdecode(event.dest_path if event.event_type == EVENT_TYPE_MOVED else event.src_path))


class _SpoolFull(Exception):
    """The spool has no room: the file is fine and waits in the folder."""


class FolderWatcher:
    def __init__(self, config: Watch, pipeline: Pipeline, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.pipeline = pipeline
        self.clock = clock
        self.root = os.path.abspath(config.path)
        self._outputs = tuple(os.path.abspath(folder) for folder in (config.done, config.failed))
        self._candidates: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, stable since)
        # Files that could not be moved out after they were taken: path -> (inode, size, mtime_ns)
        # then. They are not taken again unless they change (or the router starts again).
        self._left: dict[str, tuple[int, int, int]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: Observer | None = None
        self._handler = _Handler(self)
        self._subfolders: dict[str, ObservedWatch | None] = {}  # folder directly in the watched one -> its watch
        self._thread: threading.Thread | None = None
        self._repeats = Repeats()
        self._next_scan = clock() + RESCAN_SECONDS
        self.lock_name = f"watch:{self.root}"  # one reader of the folder among all the nodes
        self._hold = None  # the journal's exclusive lock, while this watcher reads the folder
        self._next_hold_check = clock()
        self._waited = False  # another node read the folder when this one last asked

    # ---- noticing files ----

    def start(self) -> None:
        self.observe()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.config.name}", daemon=True)
        self._thread.start()
        log.info("watching %s for %s (%s)", self.config.path, self.config.pattern, self.config.name)

    def observe(self) -> None:
        """Start noticing files: the file notifications, and what the folder holds already."""
        for output in self._outputs:
            if _within(output, self.root):
                raise OSError(f"watched folder {self.config.name}: {output} is the watched folder or holds it; "
                              "done and failed must be other folders (by default they are inside it)")
        for folder in (self.root, *self._outputs):
            os.makedirs(folder, exist_ok=True)
        # The watched folder itself is watched alone, and each folder in it (but done/ and
        # failed/, which only grow) with everything below: done/ and failed/ never cost a watch.
        self._observer = Observer()
        self._observer.schedule(self._handler, self.root, recursive=False)
        self._observer.start()
        self.scan(self.root)  # what was there before the start

    def stop(self) -> None:
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None:
            self._thread.join()
        if self._hold is not None:
            self._hold.release()
            self._hold = None

    def scan(self, folder: str) -> None:
        """Every file under `folder`: a folder moved in, the watched folder at start and
        every RESCAN_SECONDS."""
        folder = os.path.abspath(folder)
        if folder != self.root and not self._is_input(folder):
            return
        for parent, folders, files in os.walk(folder):
            folders[:] = sorted(name for name in folders if self._is_input(os.path.join(parent, name)))
            if parent == self.root:
                for name in folders:
                    self._watch_subfolder(os.path.join(parent, name))
            for name in sorted(files):
                self.seen(os.path.join(parent, name), listed=True)

    def folder_added(self, path: str) -> None:
        """A folder was created or moved in: watch it (if it is directly in the watched
        folder) and take what it holds already (files written before its watch began)."""
        path = os.path.abspath(path)
        if os.path.dirname(path) == self.root and self._is_input(path):
            self._watch_subfolder(path)
        self.scan(path)

    def folder_gone(self, path: str) -> None:
        with self._lock:
            watch = self._subfolders.pop(os.path.abspath(path), None)
        if watch is not None:
            self._unschedule(watch)

    def _watch_subfolder(self, path: str) -> None:
        if os.path.islink(path):
            return  # not followed when listing either: what it points to is not the watched folder's
        # The observer holds its own lock while it hands us events: it is never asked for
        # while we hold ours, or the two threads could wait for each other.
        with self._lock:
            if path in self._subfolders or self._observer is None or self._stopping.is_set():
                return
            self._subfolders[path] = None  # being scheduled
        try:
            watch = self._observer.schedule(self._handler, path, recursive=True)
        except OSError as exc:  # gone meanwhile, or no inotify watch left: it was scanned once
            with self._lock:
                self._subfolders.pop(path, None)
            self._repeats.log(log, logging.WARNING, ("watch", path), "watched folder %s: cannot watch %s (%s); "
                              "it is listed once a minute instead", self.config.name, path, exc.strerror or exc)
            return
        with self._lock:
            wanted = path in self._subfolders
            if wanted:
                self._subfolders[path] = watch
        if not wanted:  # it went while it was being scheduled
            self._unschedule(watch)

    def _unschedule(self, watch: ObservedWatch) -> None:
        with contextlib.suppress(KeyError):
            self._observer.unschedule(watch)

    def seen(self, path: str, listed: bool = False) -> None:
        """A file may have appeared or changed: look at it until it settles. `listed`: found
        by listing the folder, which says nothing about a file already waiting."""
        path = os.path.abspath(path)
        if not self._is_input(path) or not fnmatch.fnmatch(os.path.basename(path), self.config.pattern):
            return
        with self._lock:
            if not (listed and path in self._candidates):
                self._candidates[path] = (-1, -1, self.clock())

    def waiting(self) -> list[str]:
        """The files waiting to settle, as paths relative to the watched folder."""
        with self._lock:
            return sorted(os.path.relpath(path, self.root) for path in self._candidates)

    def _is_input(self, path: str) -> bool:
        """Inside the watched folder, outside done/ and failed/, and no part of its name hidden."""
        if any(_within(output, path) for output in self._outputs):
            return False
        relative = os.path.relpath(path, self.root)
        parts = relative.split(os.sep)
        return relative != os.curdir and parts[0] != os.pardir and not any(part.startswith(".") for part in parts)

    # ---- taking files ----

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            self.poll()

    def reading(self) -> bool:
        """Does this watcher read the folder (hold its lock)? Asked at most every
        HOLD_CHECK_SECONDS, of the journal: whether the lock is still held, or free."""
        now = self.clock()
        if now < self._next_hold_check:
            return self._hold is not None
        self._next_hold_check = now + HOLD_CHECK_SECONDS
        if self._hold is not None:
            if self._hold.held():
                return True
            self._hold.release()
            self._hold = None
            log.warning("watched folder %s: no longer holds %s (the journal's connection ended); it stops taking "
                        "files and asks again every %.0f s", self.config.name, self.config.path, HOLD_CHECK_SECONDS)
        try:
            self._hold = self.pipeline.journal.try_exclusive(self.lock_name)
        except Exception as exc:  # noqa: BLE001 - the database is away: the files wait in the folder
            self._repeats.log(log, logging.WARNING, ("hold", self.config.name), "watched folder %s: cannot ask the "
                              "journal whether another node reads %s (%s); files wait, asked again every %.0f s",
                              self.config.name, self.config.path, _short(exc), HOLD_CHECK_SECONDS)
            return False
        if self._hold is None:
            if not self._waited:
                log.info("watched folder %s: another node reads %s; this one takes over if that one stops",
                         self.config.name, self.config.path)
            self._waited = True
            self._forget_gone()
            return False
        if self._waited:
            self._waited = False
            log.info("watched folder %s: this node reads %s now", self.config.name, self.config.path)
            self.scan(self.root)  # what the other node left there
        return True

    def _forget_gone(self) -> None:
        """While another node reads the folder: the files it took are no longer waited for."""
        with self._lock:
            for path in list(self._candidates):
                if not os.path.lexists(path):
                    del self._candidates[path]

    def poll(self) -> int:
        """One look at the waiting files: each that has settled is taken (only while this
        watcher reads the folder). Returns how many were."""
        if not self.reading():
            return 0
        if self.clock() >= self._next_scan:
            self._next_scan = self.clock() + RESCAN_SECONDS
            self.scan(self.root)
        taken = 0
        for path in self._settled():
            if self._stopping.is_set():
                break
            self._take(path)
            taken += 1
        return taken

    def _settled(self) -> list[str]:
        now = self.clock()
        ready = []
        with self._lock:
            for path, (size, mtime, since) in list(self._candidates.items()):
                try:
                    stat = os.stat(path)
                except OSError:  # gone: moved away, deleted, or its folder was
                    del self._candidates[path]
                    continue
                if not S_ISREG(stat.st_mode):
                    del self._candidates[path]
                    continue
                left = self._left.get(path)
                if left is not None:
                    if left == (stat.st_ino, stat.st_size, stat.st_mtime_ns):
                        del self._candidates[path]  # taken once already, and unchanged since
                        continue
                    del self._left[path]  # changed: a new file under the old name
                if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
                    self._candidates[path] = (stat.st_size, stat.st_mtime_ns, max(now, since))
                elif now - since >= self.config.settle_seconds:
                    del self._candidates[path]
                    ready.append(path)
        return ready

    def _take(self, path: str) -> None:
        """Route one settled file, then move it to done/ or failed/: whatever happens, once."""
        relative = os.path.relpath(path, self.root)
        internal = None
        try:
            reason = self._intake(path, relative)
        except _SpoolFull as exc:
            self._wait(path)  # the file is fine: it waits, and is tried again later
            self._repeats.log(log, logging.WARNING, ("full", self.config.name),
                              "watched folder %s: the spool has no room (%s); files wait in the folder",
                              self.config.name, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a true internal error: the file is failed with it, once
            if unreachable(exc):  # nor is it the file's fault: nothing was journaled, it waits in the folder
                self._wait(path)
                self._repeats.log(log, logging.WARNING, ("journal", self.config.name), "watched folder %s: the "
                                  "journal's database cannot be reached (%s); files wait in the folder",
                                  self.config.name, _short(exc))
                return
            internal = exc
            reason = f"internal error: {type(exc).__name__}: {exc}"
        folder = self.config.done if reason is None else self.config.failed
        try:
            self._move(path, relative, folder, reason)
        except OSError as exc:
            self._leave(path)
            log.warning("watched folder %s: %s %s, but it cannot be moved to %s (%s); it stays until it changes",
                        self.config.name, relative, "was taken" if reason is None else f"failed ({reason})",
                        folder, exc.strerror or exc)
            return
        if internal is not None:
            self._repeats.internal_error(log, "watched folder %s: %s -> %s: %s", self.config.name, relative,
                                         folder, reason, exc=internal)
        elif reason is not None:
            log.warning("watched folder %s: %s -> %s: %s", self.config.name, relative, folder, reason)
        else:
            log.debug("watched folder %s: %s -> %s", self.config.name, relative, folder)

    def _wait(self, path: str) -> None:
        """Take the file again in FULL_WAIT_SECONDS, whatever happens to it meanwhile."""
        with self._lock:
            self._candidates[path] = (-1, -1, self.clock() + FULL_WAIT_SECONDS)

    def _intake(self, path: str, relative: str) -> str | None:
        """Copy the file into the spool and hand it to the pipeline: None when it was
        received, otherwise why it failed. Raises _SpoolFull."""
        storage = self.pipeline.storage
        low = storage.disk.low()
        if low is not None:  # storage_min_free: the file waits, as for a full disk
            raise _SpoolFull(low)
        try:
            copy = storage.copy_in(path)
        except OSError as exc:
            if exc.errno in _SPOOL_FULL:
                raise _SpoolFull(exc.strerror or str(exc)) from None
            return f"cannot read: {exc.strerror or exc}"
        arrival = Arrival(source_name=self.config.name, source_kind="folder", source_path=path)
        try:
            result = self.pipeline.intake(copy, arrival)
        except DocumentReadError as exc:
            storage.remove(copy)
            log.debug("watched folder %s: %s cannot be read", self.config.name, relative, exc_info=True)
            return reason_of(exc, copy)  # the file's name is beside it, and in the log line
        except BaseException:
            storage.remove(copy)  # not accepted (accepting moves it away)
            raise
        if result.outcome == "reject":
            return f"rejected by the rules: {result.reason or ''}"
        return None

    def _move(self, path: str, relative: str, folder: str, reason: str | None) -> None:
        """Move a taken file to `folder` under its relative path (a new name if that one is
        taken), write why beside it, and remove the subfolders it leaves empty."""
        target = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        stem, ext = os.path.splitext(target)
        count = 0
        while os.path.lexists(target) or os.path.lexists(target + ".reason.txt"):
            count += 1
            target = f"{stem}-{int(time.time() * 1000)}{'-%d' % count if count > 1 else ''}{ext}"
        shutil.move(path, target)
        self._prune(os.path.dirname(path))
        if reason is not None:
            try:
                with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
                    fh.write(reason + "\n")
            except OSError as exc:  # the file is out of the folder already: say why in the log only
                log.warning("watched folder %s: cannot write %s.reason.txt: %s", self.config.name, target,
                            exc.strerror or exc)

    def _prune(self, folder: str) -> None:
        """Remove the subfolders a taken file left empty, up to the watched folder."""
        while folder != self.root and _within(self.root, folder):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (or not ours to remove): it stays
                return
            self.folder_gone(folder)
            folder = os.path.dirname(folder)

    def _leave(self, path: str) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return
        with self._lock:
            self._left[path] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            self._candidates.pop(path, None)


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _within(folder: str, path: str) -> bool:
    """Is `path` the folder `folder` or inside it?"""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
