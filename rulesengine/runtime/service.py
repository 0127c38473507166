"""The router: configuration, rules, storage, listeners, watched folders and delivery, together."""

from __future__ import annotations

import logging
import threading
import time

from pynetdicom import _config as pynetdicom_config

from ..config import Config, load_config
from ..copies import CopyError
from ..document import Document
from ..intake import short_error
from ..lang.ruleset import Decision, RuleSet
from .delivery import DeliveryManager
from .destinations import ItemError, LinkError, sender_for
from .journal import DONE, Outcome
from .listener import DicomListener
from .negotiation import install_per_context_negotiation
from .pipeline import Pipeline, describe, outcome_of, received_facts
from .rules import RulesHolder
from .storage import Storage
from .worker import WorkerProcess

log = logging.getLogger("rulesengine.router")

SYNC_IDLE_SECONDS = 1.0  # a sync-mode association is closed after this long unused


def configure_pynetdicom() -> None:
    """Receive data sets to a file and send them from one: a large instance never sits in memory.
    Listeners accept each presentation context in its own transfer syntax (negotiation.py)."""
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    install_per_context_negotiation()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


class Router:
    """With `worker=True` (what `dicom-rules run` does), processing and delivery run in a
    worker process of their own (worker.py); otherwise in threads of this process."""

    def __init__(self, config: Config, worker: bool = False, verbose: int = 0):
        self.config = config
        self.storage = Storage(config.storage)
        self.journal = self.storage.journal()
        self.rules = RulesHolder(config)
        self.delivery = DeliveryManager(self.journal, self.storage)
        self.worker = WorkerProcess(config.path, verbose) if worker else None
        self.pipeline = Pipeline(self.storage, self.journal, self.rules, self.delivery.notify,
                                 on_accepted=self.worker.wake if self.worker else None)
        self.listeners: list[DicomListener] = []
        self.watchers: list = []
        self.reloader = None
        self._sync_lock = threading.Lock()
        self._sync_senders: dict[str, list] = {}  # destination -> [(idle since, sender)]
        self._janitor: threading.Thread | None = None
        self._reload_requested = False  # a SIGHUP before the reloader runs

    @classmethod
    def from_file(cls, path: str) -> "Router":
        return cls(load_config(path))

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
        if self.worker is not None:
            self.worker.start(self.rules)  # it processes what was received before the stop, then what comes
        else:
            self.pipeline.recover()
            self.pipeline.start()
            self.delivery.apply(self.config.destinations)
        for listener_config in self.config.listeners:
            listener = DicomListener(listener_config, self.pipeline, self.deliver_now)
            try:
                listener.start()
            except OSError as exc:
                raise OSError(f"listener {listener_config.name} on {listener_config.bind}:{listener_config.port}: "
                              f"{exc.strerror or exc}") from None
            self.listeners.append(listener)
        self._start_watchers()
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
        for listener in self.listeners:
            listener.stop()
        for watcher in self.watchers:
            watcher.stop()
        if self.worker is not None:
            self.worker.stop()
        else:
            self.pipeline.stop()
            self.delivery.stop()
        with self._sync_lock:
            for senders in self._sync_senders.values():
                for _since, sender in senders:
                    sender.close()
        self.journal.close()
        self.storage.unlock()
        log.info("router stopped")

    # ---- configuration changes ----

    def apply_config(self, config: Config) -> None:
        """A changed configuration: destinations and rules follow at once; listeners and
        watched folders keep running as they are (a restart applies changes to them)."""
        if config.listeners != self.config.listeners or config.watch != self.config.watch:
            log.warning("listeners or watched folders changed in %s: restart the router to apply that part",
                        config.path)
        if config.storage != self.config.storage:
            log.warning("storage changed in %s: restart the router to apply it", config.path)
        if not self.rules.reload(config):
            log.error("the new configuration is not applied: the rules do not compile with it")
            return
        self.config = config
        if self.worker is None:
            self.delivery.apply(config.destinations)
        self.reloaded()
        with self._sync_lock:
            for senders in self._sync_senders.values():
                for _since, sender in senders:
                    sender.close()
            self._sync_senders.clear()
        log.info("configuration applied: %d destination(s)", len(config.destinations))

    def reload_now(self) -> None:
        """Read the configuration and the rules again (SIGHUP), as if they had changed."""
        if self.reloader is not None:
            self.reloader.reload_everything()
        else:  # still starting: the reloader does it once it runs, so that no request is lost
            self._reload_requested = True

    def reloaded(self) -> None:
        """The rules or the configuration changed and are in place here: the worker follows
        before it processes anything received from now on."""
        if self.worker is not None:
            self.worker.reload()

    # ---- sync mode ----

    def _borrow(self, name: str):
        with self._sync_lock:
            pool = self._sync_senders.setdefault(name, [])
            if pool:
                return pool.pop()[1]
        return sender_for(self.config.destinations[name])

    def _give_back(self, name: str, sender) -> None:
        """Keep the association for the next sync store, but not idle: many SCPs serve one
        association at a time, and an idle one would shut every other sender out."""
        with self._sync_lock:
            if name in self.config.destinations and self.config.destinations[name] is sender.destination:
                self._sync_senders.setdefault(name, []).append((time.monotonic(), sender))
                self._start_janitor()
                return
        sender.close()

    def _start_janitor(self) -> None:
        if self._janitor is None:
            self._janitor = threading.Thread(target=self._close_idle_senders, name="sync-janitor", daemon=True)
            self._janitor.start()

    def _close_idle_senders(self) -> None:
        while True:
            time.sleep(SYNC_IDLE_SECONDS / 2)
            now = time.monotonic()
            idle = []
            with self._sync_lock:
                for name, pool in self._sync_senders.items():
                    idle += [sender for since, sender in pool if now - since >= SYNC_IDLE_SECONDS]
                    pool[:] = [(since, sender) for since, sender in pool if now - since < SYNC_IDLE_SECONDS]
            for sender in idle:
                sender.close()

    def deliver_now(self, path: str, document: Document, decision: Decision, ruleset: RuleSet) -> tuple[bool, str]:
        """Sync mode: deliver to every destination before the sender is answered."""
        received = received_facts(document)
        outcome = outcome_of(decision, ruleset)
        instance_id = self.journal.record(received, path, outcome, DONE)
        try:
            deliveries = self.pipeline.write_copies(instance_id, path, document, decision, prefix="sync-")
        except (CopyError, OSError) as exc:
            # Nothing was sent and the sender is told: the instance is refused, not kept.
            reason = str(exc) if isinstance(exc, CopyError) else f"its copies cannot be written: {short_error(exc)}"
            self.journal.settle(instance_id, Outcome(ruleset.version, "reject", f"sync: {reason}",
                                                     outcome.rules_fired, ()), None)
            self.storage.remove(path)
            log.warning("sync delivery of %s refused: %s", received.sop_instance_uid, reason)
            return False, reason
        ids = self.journal.add_deliveries(instance_id, deliveries, state="sending")
        failures = []
        for delivery_id, item in zip(ids, deliveries):
            delivery = self.journal.delivery(delivery_id)
            sender = self._borrow(item.destination)
            started = time.time()
            try:
                sender.open([delivery])
                detail = sender.send(delivery)
                self.journal.delivered(delivery, started, detail)
                self._give_back(item.destination, sender)
            except (LinkError, ItemError) as exc:
                sender.close()
                failures.append(f"{item.destination}: {exc}")
                # Dead, without a file: the sender was answered with a failure and sends it again;
                # there is nothing for `queue retry` to resend.
                self.journal.failed(delivery, started, f"sync: {exc}; the sender was answered with a failure",
                                    None, keep_file=False)
        for item in deliveries:
            self.storage.remove(item.path)
        self.storage.remove(path)
        log.info(describe(document, decision, ruleset) + (" (sync: " + ("failed" if failures else "delivered") + ")"))
        if failures:
            log.warning("sync delivery of %s failed: %s", received.sop_instance_uid, "; ".join(failures))
        return not failures, "; ".join(failures)

    def wait_idle(self, timeout: float = 30) -> bool:
        """Until every received instance is processed and nothing is queued or being sent."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            counts = self.journal.counts()
            busy = sum(c.get("queued", 0) + c.get("sending", 0) for c in counts.values())
            if not busy and not self.journal.accepted_instances():
                return True
            time.sleep(0.05)
        return False

