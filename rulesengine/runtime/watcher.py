"""Watched folders: files that appear are routed like received instances.

A file is taken only once it is complete: its size and modification time must
not change for `settle_seconds` (a copy in progress keeps changing them). It is
copied into the spool (fsynced), journaled, and then moved to the done folder;
one that cannot be read, or that a rule rejects, goes to the failed folder with
a .reason.txt beside it. Files already there when the router starts are taken too.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import threading
import time
from stat import S_ISREG

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..config import Watch
from ..document import Arrival, DocumentReadError
from .pipeline import Pipeline

log = logging.getLogger("rulesengine.watch")

POLL_SECONDS = 0.2  # how often files waiting to settle are looked at


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "FolderWatcher"):
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = getattr(event, "dest_path", None) or event.src_path
        self.watcher.seen(os.fsdecode(path))


class FolderWatcher:
    def __init__(self, config: Watch, pipeline: Pipeline):
        self.config = config
        self.pipeline = pipeline
        self._candidates: dict[str, tuple[int, float, float]] = {}  # path -> (size, mtime, stable since)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for folder in (self.config.path, self.config.done, self.config.failed):
            os.makedirs(folder, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_Handler(self), self.config.path, recursive=False)
        self._observer.start()
        for name in sorted(os.listdir(self.config.path)):  # what was there before the start
            self.seen(os.path.join(self.config.path, name))
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.config.name}", daemon=True)
        self._thread.start()
        log.info("watching %s for %s (%s)", self.config.path, self.config.pattern, self.config.name)

    def stop(self) -> None:
        self._stopping.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None:
            self._thread.join()

    def seen(self, path: str) -> None:
        name = os.path.basename(path)
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(self.config.path):
            return
        if name.startswith(".") or not fnmatch.fnmatch(name, self.config.pattern):
            return
        with self._lock:
            self._candidates.pop(path, None)
            self._candidates[path] = (-1, -1.0, time.monotonic())

    def _run(self) -> None:
        while not self._stopping.wait(POLL_SECONDS):
            for path in self._settled():
                if self._stopping.is_set():
                    return
                try:
                    self._take(path)
                except Exception:  # noqa: BLE001 - one bad file must not stop the folder
                    log.exception("watched folder %s: %s could not be handled", self.config.name, path)

    def _settled(self) -> list[str]:
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, (size, mtime, since) in list(self._candidates.items()):
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    del self._candidates[path]
                    continue
                if not S_ISREG(stat.st_mode):  # a folder (done/ and failed/ are inside by default)
                    del self._candidates[path]
                    continue
                if (stat.st_size, stat.st_mtime) != (size, mtime):
                    self._candidates[path] = (stat.st_size, stat.st_mtime, now)
                elif now - since >= self.config.settle_seconds:
                    del self._candidates[path]
                    ready.append(path)
        return ready

    def _take(self, path: str) -> None:
        storage = self.pipeline.storage
        copy = storage.copy_in(path)
        arrival = Arrival(source_name=self.config.name, source_kind="folder", source_path=path)
        try:
            result = self.pipeline.intake(copy, arrival)
        except DocumentReadError as exc:
            storage.remove(copy)
            self._move(path, self.config.failed, str(exc).replace(copy, os.path.basename(path)))
            return
        except BaseException:
            storage.remove(copy)  # not accepted (accepting moves it away): the original stays here
            raise
        if result.outcome == "reject":
            self._move(path, self.config.failed, f"rejected by the rules: {result.reason or ''}")
        else:
            self._move(path, self.config.done, None)

    def _move(self, path: str, folder: str, reason: str | None) -> None:
        target = os.path.join(folder, os.path.basename(path))
        if os.path.exists(target):
            stem, ext = os.path.splitext(os.path.basename(path))
            target = os.path.join(folder, f"{stem}-{int(time.time() * 1000)}{ext}")
        shutil.move(path, target)
        if reason is not None:
            with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
                fh.write(reason + "\n")
            log.warning("watched folder %s: %s -> %s: %s", self.config.name, os.path.basename(path), folder, reason)
