"""Hot reload: the rule files, what they import, their tables and the configuration are
watched; a change is compiled aside and swapped in, or logged and ignored if it fails."""

from __future__ import annotations

import logging
import os
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from ..config import ConfigError, load_config
from .journal.errors import in_words, unreachable
from .rules import reload_finding

log = logging.getLogger("rulesengine.reload")

DEBOUNCE_SECONDS = 0.3  # editors write a file in several steps; wait for the last


class _Handler(FileSystemEventHandler):
    def __init__(self, reloader: "Reloader"):
        self.reloader = reloader

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (getattr(event, "src_path", None), getattr(event, "dest_path", None)):
            if path:
                self.reloader.changed(os.path.abspath(os.fsdecode(path)))


class Reloader:
    """In the main process: a change is put in place by Router.swap_rules (rule files) or
    Router.apply_config (the configuration), which tell the worker process."""

    def __init__(self, router):
        self.router = router
        self._observer: Observer | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()  # a file change and a SIGHUP may ask at once
        self._pending: set[str] = set()
        self._watched_dirs: set[str] = set()

    def files(self) -> set[str]:
        ruleset = self.router.rules.current
        return {os.path.abspath(p) for p in ruleset.files} | {os.path.abspath(self.router.config.path)}

    def start(self) -> None:
        self._observer = Observer()
        self._watch_folders()
        self._observer.start()

    def _watch_folders(self) -> None:
        for folder in {os.path.dirname(p) for p in self.files()} - self._watched_dirs:
            if os.path.isdir(folder):
                self._observer.schedule(_Handler(self), folder, recursive=False)
                self._watched_dirs.add(folder)

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()

    def changed(self, path: str) -> None:
        if path not in self.files():
            return
        with self._lock:
            self._pending.add(path)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(DEBOUNCE_SECONDS, self._reload)
            self._timer.daemon = True
            self._timer.start()

    def reload_everything(self) -> None:
        """Asked for (SIGHUP): the configuration and every rule file count as changed."""
        with self._lock:
            self._pending |= self.files()
        threading.Thread(target=self._reload, name="reload", daemon=True).start()

    def _reload(self) -> None:
        with self._reload_lock:
            self._reload_pending()

    def _reload_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        config_path = os.path.abspath(self.router.config.path)
        try:
            if config_path in pending:
                try:
                    config = load_config(config_path)
                except ConfigError as exc:
                    log.error("the changed configuration is not valid; the running one stays in place:\n%s", exc)
                    self.router.rules.note_reload(False, [reload_finding("config", str(exc))])
                    return
                self.router.apply_config(config)
            else:
                log.info("rule files changed: %s", ", ".join(sorted(os.path.relpath(p) for p in pending)))
                self.router.swap_rules()
            self._watch_folders()  # an import may have added a folder
        except Exception as exc:  # noqa: BLE001 - reloading must never stop the router
            if unreachable(exc):  # the new rules go into the journal before they are put in place
                log.error("reloading failed: the journal's database cannot be reached (%s); the running rules stay "
                          "in place until the next change or SIGHUP", in_words(exc))
            else:
                log.exception("reloading failed; the running rules stay in place")
        finally:
            status = getattr(self.router, "status", None)
            if status is not None:
                status.write()  # the reload's result, for the operations console at once
