"""The router: configuration, rules, storage, listeners, watched folders and delivery, together."""

from __future__ import annotations

import logging

from ..config import Config
from .cleanup import Cleanup, Housekeeper
from .events import Events
from .notifications import NotificationSender, Notifications
from .pynetdicom_setup import configure_pynetdicom
from .receiver import Reception, ReceivingProcess
from .retrieval_exchange import RetrievalExchange, exchange_folder, remove_exchange_folder
from .router_status import StatusReporter
from .rules import RulesHolder
from .storage import Storage
from .transport import port_is_free

log = logging.getLogger("rulesengine.router")


class Router:
    """The main process is receiving process 0: listeners and, in sync mode, their deliveries
    (sync_delivery.py), with processing and delivery in a worker process of its own (worker.py),
    as every receiving process (receiver.py); it alone has the watched folders, the reloader,
    the status row and the recovery at start, and it starts the other receiving processes
    (`processes`) and follows them."""

    def __init__(self, config: Config, verbose: int = 0):
        self.config = config
        self.verbose = verbose
        self.storage = Storage.of(config)
        self.journal = self.storage.journal()
        self.rules = RulesHolder(config)
        self.reception = Reception(config, self.storage, self.journal, self.rules, verbose)
        self.worker = self.reception.worker
        self.pipeline = self.reception.pipeline
        self.find_service = self.reception.find_service
        self.sync_delivery = self.reception.sync_delivery
        self.retrieve_service = self.reception.retrieve_service
        self.receivers: list[ReceivingProcess] = []  # receiving processes 1, 2, ...
        self.exchange_folder: str | None = None  # their sockets, for retrieved instances (retrieval_exchange.py)
        self.watchers: list = []
        self.reloader = None
        self._reload_requested = False  # a SIGHUP before the reloader runs
        self.status = StatusReporter(self, config.node)  # the journal's router_status row, for the operations console
        # retention and cleanup, and the disk watermark asked while nothing arrives (cleanup.py)
        self.housekeeper = Housekeeper(Cleanup(self.storage, self.journal, config.retention, config.watch))
        # Notifications: queued by any process, sent from here (one process of the cluster at a time).
        self.notification_sender = NotificationSender(self.journal, config)
        self.events = Events(Notifications(self.journal, config, wake=self.notification_sender.wake))
        self.rules.events = self.events  # a reload refused
        self.pipeline.events = self.events  # a reject at reception, a sync-mode delivery: told from here
        # disk-low, disk-recovered: this process's watermark, which the housekeeper asks while
        # nothing arrives, tells each change once (the other receiving processes' refuse alike)
        self.storage.disk.on_change.append(self._disk_changed)

    def _disk_changed(self, low: bool, reason: str | None) -> None:
        floor = self.storage.disk.floor
        self.events.disk_changed(low, reason, floor.text if floor is not None else None)

    @property
    def listeners(self):
        return self.reception.listeners

    # ---- lifecycle ----

    def start(self) -> None:
        self.storage.lock()
        processes = self.config.process_count()
        # Every port is tried before anything else starts: a port taken (by another router too,
        # whose processes share theirs) is said at once, naming the listener.
        ports = [self._free_port(listener) for listener in self.config.listeners]
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
        if self.storage.interrupted_replay_files:
            log.warning("removed %d spool file(s) of a replay interrupted before it was recorded: it did not happen "
                        "(the retained instances are kept; ask for it again)", self.storage.interrupted_replay_files)
        self.pipeline.reingest(unknown)
        self.storage.shared()  # swept: other nodes may start on the folder now
        self.reception.start_worker()  # it processes what was received before the stop, then what comes
        shared = processes > 1
        if shared:
            self.exchange_folder = exchange_folder()
        self.reception.start_listeners(
            ports if shared else [listener.port for listener in self.config.listeners], shared,
            RetrievalExchange(self.exchange_folder, 0, processes, self.storage.tmp) if shared else None)
        if shared:
            for number in range(1, processes):
                receiver = ReceivingProcess(self.config.path, self.verbose, number, ports, self.journal,
                                            (self.exchange_folder, processes))
                receiver.start(self.rules)
                self.receivers.append(receiver)
            log.info("%d receiving processes, each with its worker process", processes)
        self._start_watchers()
        self.housekeeper.start()
        self.notification_sender.start()
        self.status.start()
        self._start_reloader()

    @staticmethod
    def _free_port(listener) -> int:
        try:
            return port_is_free((listener.bind, listener.port))
        except OSError as exc:
            raise OSError(f"listener {listener.name} on {listener.bind}:{listener.port}: {exc.strerror or exc}") \
                from None

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
        """Stop taking new work, finish what is in flight, then stop delivering: in every
        receiving process at once (each stops its listeners, then its worker process)."""
        if self.reloader is not None:
            self.reloader.stop()
        self.housekeeper.stop()
        self.status.stop()
        for receiver in self.receivers:
            receiver.ask_to_stop()
        self.reception.stop_listeners()
        for watcher in self.watchers:
            watcher.stop()
        self.reception.stop()
        for receiver in self.receivers:
            receiver.wait_stopped()
        self.notification_sender.stop()
        remove_exchange_folder(self.exchange_folder)
        self.journal.close()
        self.storage.unlock()
        log.info("router stopped")

    # ---- rules and configuration changes ----

    def swap_rules(self, config: Config | None = None) -> bool:
        """Compile the rules (with a changed configuration, when given) and put them, and the
        configuration, in place; the worker process follows before it processes anything
        received from now on, and every other receiving process (with its worker) before this
        returns. False, with the reason logged, when the rules do not compile: then nothing
        changes, here or in any other process."""
        if not self.rules.reload(config):
            return False
        if config is not None:
            self.config = config
            self.reception.follow(config)
            self.events.configure(config)
            self.notification_sender.configure(config)
        self.worker.reload()
        for receiver in self.receivers:
            receiver.reload(self.rules.config, self.rules.current.program)
        return True

    def apply_config(self, config: Config) -> None:
        """A changed configuration: destinations and rules follow at once; listeners and
        watched folders keep running as they are (a restart applies changes to them)."""
        if config.listeners != self.config.listeners or config.watch != self.config.watch:
            log.warning("listeners or watched folders changed in %s: restart the router to apply that part",
                        config.path)
        if config.storage != self.config.storage:
            log.warning("storage changed in %s: restart the router to apply it", config.path)
        if (config.retention, config.storage_min_free) != (self.config.retention, self.config.storage_min_free):
            log.warning("retention or storage_min_free changed in %s: restart the router to apply it", config.path)
        if config.processes != self.config.processes:
            log.warning("processes changed in %s: restart the router to apply it", config.path)
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
