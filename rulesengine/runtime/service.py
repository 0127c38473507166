"""The router: configuration, rules, storage, listeners, watched folders and delivery, together."""

from __future__ import annotations

import logging

from ..config import Config
from .find_service import FindService
from .retrieve_service import RetrieveService
from .listener import DicomListener
from .pipeline import Pipeline
from .pynetdicom_setup import configure_pynetdicom
from .router_status import StatusReporter
from .rules import RulesHolder
from .storage import Storage
from .sync_delivery import SyncDelivery
from .worker import WorkerProcess

log = logging.getLogger("rulesengine.router")


def _delivered_by_the_worker(_destinations) -> None:
    """This process queues no delivery: the worker process has the destinations' queues."""


class Router:
    """The main process receives (listeners, watched folders) and answers; processing and
    delivery run in a worker process of its own (worker.py), except a sync-mode listener's
    deliveries, made here before the answer (sync_delivery.py)."""

    def __init__(self, config: Config, verbose: int = 0):
        self.config = config
        self.storage = Storage.of(config)
        self.journal = self.storage.journal()
        self.rules = RulesHolder(config)
        self.worker = WorkerProcess(config.path, verbose)
        self.pipeline = Pipeline(self.storage, self.journal, self.rules, _delivered_by_the_worker,
                                 on_accepted=self.worker.wake)
        self.find_service = FindService(self.journal, self.rules)
        self.sync_delivery = SyncDelivery(self.journal, self.storage, self.pipeline, config.destinations)
        self.retrieve_service = RetrieveService(self.journal, self.rules, self.pipeline, self.sync_delivery)
        self.listeners: list[DicomListener] = []
        self.watchers: list = []
        self.reloader = None
        self._reload_requested = False  # a SIGHUP before the reloader runs
        self.status = StatusReporter(self, config.node)  # the journal's router_status row, for the operations console

    # ---- lifecycle ----

    def start(self) -> None:
        self.storage.lock()
        configure_pynetdicom()
        self.storage.use_for_temporary_files()
        if self.config.development_key:
            log.warning("no hash key configured (secrets.hash_key_env or hash_key_file): hash() and uid() use "
                        "the built-in development key")
        # Each rule set goes into the journal, with its files, before it is put in place: an
        # instance is processed with the version it was answered under, also after a restart.
        # Only once the storage is ours: a router refused on it must not leave its rules there.
        self.rules.record_in(self.journal)
        log.info("rules %s loaded from %s", self.rules.current.version, self.config.rules)
        requeued = self.journal.requeue_interrupted()
        if requeued:
            log.info("%d delivery(ies) interrupted by the last stop are queued again", requeued)
        removed, unknown = self.storage.sweep(self.journal.paths_in_use())
        if removed:
            log.info("removed %d spool file(s) no journal entry needs (never answered, or finished)", removed)
        self.pipeline.reingest(unknown)
        self.storage.shared()  # swept: other nodes may start on the folder now
        self.worker.start(self.rules)  # it processes what was received before the stop, then what comes
        for listener_config in self.config.listeners:
            listener = DicomListener(listener_config, self.pipeline, self.sync_delivery.deliver, self.find_service,
                                     self.retrieve_service)
            try:
                listener.start()
            except OSError as exc:
                raise OSError(f"listener {listener_config.name} on {listener_config.bind}:{listener_config.port}: "
                              f"{exc.strerror or exc}") from None
            self.listeners.append(listener)
        self._start_watchers()
        self.status.start()
        self._start_reloader()

    def _start_watchers(self) -> None:
        if not self.config.watch:
            return
        from .watcher import FolderWatcher
        for watch in self.config.watch:
            watcher = FolderWatcher(watch, self.pipeline)
            watcher.start()
            self.watchers.append(watcher)

    def _start_reloader(self) -> None:
        from .reload import Reloader
        reloader = Reloader(self)
        reloader.start()
        self.reloader = reloader
        if self._reload_requested:
            reloader.reload_everything()

    def stop(self) -> None:
        """Stop taking new work, finish what is in flight, then stop delivering."""
        if self.reloader is not None:
            self.reloader.stop()
        self.status.stop()
        for listener in self.listeners:
            listener.stop()
        for watcher in self.watchers:
            watcher.stop()
        self.worker.stop()
        self.sync_delivery.close()
        self.journal.close()
        self.storage.unlock()
        log.info("router stopped")

    # ---- rules and configuration changes ----

    def swap_rules(self, config: Config | None = None) -> bool:
        """Compile the rules (with a changed configuration, when given) and put them, and the
        configuration, in place; the worker process follows before it processes anything
        received from now on. False, with the reason logged, when the rules do not compile:
        then nothing changes."""
        if not self.rules.reload(config):
            return False
        if config is not None:
            self.config = config
            self.sync_delivery.use_destinations(config.destinations)
        self.worker.reload()
        return True

    def apply_config(self, config: Config) -> None:
        """A changed configuration: destinations and rules follow at once; listeners and
        watched folders keep running as they are (a restart applies changes to them)."""
        if config.listeners != self.config.listeners or config.watch != self.config.watch:
            log.warning("listeners or watched folders changed in %s: restart the router to apply that part",
                        config.path)
        if config.storage != self.config.storage:
            log.warning("storage changed in %s: restart the router to apply it", config.path)
        if not self.swap_rules(config):
            log.error("the new configuration is not applied: the rules do not compile with it")
            return
        log.info("configuration applied: %d destination(s)", len(config.destinations))

    def reload_now(self) -> None:
        """Read the configuration and the rules again (SIGHUP), as if they had changed."""
        if self.reloader is not None:
            self.reloader.reload_everything()
        else:  # still starting: the reloader does it once it runs, so that no request is lost
            self._reload_requested = True
