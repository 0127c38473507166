"""Sync mode: a listener answers a C-STORE only once every destination has acknowledged it.

The main process delivers such an instance itself, while the sender waits: its copies are
written, sent at once over an association borrowed from a small pool, and the journal
records each attempt. Nothing is queued: a failure is the sender's to retry, so a failed
delivery is dead at once and keeps no file. With `retention.delivered`, an instance delivered
everywhere is moved into the spool and kept as received, for a replay, as in async mode.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ..copies import CopyError
from ..document import Document
from ..intake import short_error
from ..lang.ruleset import Decision, RuleSet
from .destinations import ItemError, LinkError, sender_for
from .journal import DONE, SENDING, Journal
from .pipeline import Pipeline, describe, failed_outcome, outcome_of, received_facts
from .storage import Storage

log = logging.getLogger("rulesengine.router")

IDLE_SECONDS = 1.0  # a sync-mode association is closed after this long unused


class SyncDelivery:
    """Delivers an instance to every destination before its sender is answered; keeps each
    destination's associations open between instances, closing those left unused."""

    def __init__(self, journal: Journal, storage: Storage, pipeline: Pipeline, destinations: dict):
        self.journal = journal
        self.storage = storage
        self.pipeline = pipeline
        self._destinations = destinations
        self._lock = threading.Lock()
        self._idle_senders: dict[str, list] = {}  # destination -> [(idle since, sender)]
        self._janitor: threading.Thread | None = None

    def use_destinations(self, destinations: dict) -> None:
        """A changed configuration: associations opened under the old one are closed."""
        with self._lock:
            self._destinations = destinations
            self._close_idle_senders_now()

    def close(self) -> None:
        with self._lock:
            self._close_idle_senders_now()

    def deliver(self, path: str, document: Document, decision: Decision, ruleset: RuleSet, purpose: str = "sync",
                senders: dict | None = None, originator: tuple[str, int] | None = None) -> tuple[bool, str]:
        """Deliver to every destination; (delivered everywhere, what failed where). `purpose`
        names the delivery in the journal and the log: "sync" for a sync-mode store (its sender
        is answered with the failure), "retrieve" for an instance retrieved for a C-MOVE or
        C-GET (its requester counts a failed sub-operation). `senders`: senders to use for some
        destinations (a C-GET requester's own association), which are neither pooled nor closed.
        `originator`: the Move Originator AE title and Message ID its C-STOREs carry (C-MOVE)."""
        answered = "the sender was answered with a failure" if purpose == "sync" else \
            "the requester was answered with a failed sub-operation"
        received = received_facts(document)
        outcome = outcome_of(decision, ruleset)
        instance_id = self.journal.record(received, path, outcome, DONE)
        held = self._hold(path) if purpose == "sync" else None  # the copies may take the file itself
        try:
            deliveries = self.pipeline.write_copies(instance_id, path, document, decision, prefix=f"{purpose}-",
                                                    durable=False)
        except (CopyError, OSError) as exc:
            # Nothing was sent and the sender is told: the instance is refused, not kept.
            reason = str(exc) if isinstance(exc, CopyError) else f"its copies cannot be written: {short_error(exc)}"
            refused = failed_outcome("reject", f"{purpose}: {reason}", ruleset.version, outcome)
            self.journal.settle(instance_id, refused, None)
            self.storage.remove(path)
            if held is not None:
                self.storage.remove(held)
            log.warning("%s delivery of %s refused: %s", purpose, received.sop_instance_uid, reason)
            return False, reason
        ids = self.journal.add_deliveries(instance_id, deliveries, state=SENDING)
        failures = []
        for delivery_id, item in zip(ids, deliveries):
            delivery = self.journal.delivery(delivery_id)
            own = (senders or {}).get(item.destination)
            sender = own or self._borrow(item.destination)
            started = time.time()
            if hasattr(sender, "originator"):
                sender.originator = originator
            try:
                sender.open([delivery])
                detail = sender.send(delivery)
                self.journal.delivered(delivery, started, detail)
                if own is None:
                    self._give_back(item.destination, sender)
            except (LinkError, ItemError) as exc:
                if own is None:
                    sender.close()
                failures.append(f"{item.destination}: {exc}")
                # Dead, without a file: whoever asked was answered with a failure and asks again;
                # there is nothing for `queue retry` to resend.
                self.journal.failed(delivery, started, f"{purpose}: {exc}; {answered}", None, keep_file=False)
        for item in deliveries:
            self.storage.remove(item.path)
        self.storage.remove(path)
        if held is not None and (failures or not self._retain(instance_id, held, received)):
            self.storage.remove(held)
        log.info(describe(document, decision, ruleset) + f" ({purpose}: " + ("failed" if failures else "delivered") + ")")
        if purpose == "sync":  # the rules' `notify`, once the instance is settled (a retrieval notifies nothing)
            self.pipeline.events.rule_notifications(decision.notifications, received, instance_id)
        if failures:
            log.warning("%s delivery of %s failed: %s", purpose, received.sop_instance_uid, "; ".join(failures))
        return not failures, "; ".join(failures)

    def _hold(self, path: str) -> str | None:
        """retention.delivered: a second name for the received file, kept should every
        destination take it (a hard link: nothing is copied)."""
        if self.storage.retain_seconds <= 0:
            return None
        held = self.storage.temp_path()
        try:
            os.link(path, held)
        except OSError as exc:
            log.warning("sync delivery: the received file cannot be retained: %s", short_error(exc))
            return None
        return held

    def _retain(self, instance_id: int, path: str, received) -> bool:
        """retention.delivered: the received file, delivered everywhere, moved into the spool and
        kept (for a replay) as an async instance is. Not for a failure: its sender sends it again."""
        try:
            kept = self.storage.accept(path, received)
        except OSError as exc:
            log.warning("sync delivery of %s: delivered, but not retained: %s", received.sop_instance_uid,
                        short_error(exc))
            return False
        try:
            self.journal.retain(instance_id, time.time() + self.storage.retain_seconds, kept)
        except Exception as exc:  # noqa: BLE001 - unrecorded, the kept file would be routed again at a start
            self.storage.remove(kept)
            log.warning("sync delivery of %s: delivered, but not retained: %s", received.sop_instance_uid, exc)
        return True

    # ---- the senders kept between instances ----

    def _borrow(self, name: str):
        with self._lock:
            pool = self._idle_senders.setdefault(name, [])
            if pool:
                return pool.pop()[1]
            destination = self._destinations[name]
        return sender_for(destination)

    def _give_back(self, name: str, sender) -> None:
        """Keep the association for the next sync store, but not idle: many SCPs serve one
        association at a time, and an idle one would shut every other sender out."""
        with self._lock:
            if self._destinations.get(name) is sender.destination:
                self._idle_senders.setdefault(name, []).append((time.monotonic(), sender))
                self._start_janitor()
                return
        sender.close()

    def _close_idle_senders_now(self) -> None:
        """With the lock held."""
        for senders in self._idle_senders.values():
            for _since, sender in senders:
                sender.close()
        self._idle_senders.clear()

    def _start_janitor(self) -> None:
        if self._janitor is None:
            self._janitor = threading.Thread(target=self._close_idle_senders, name="sync-janitor", daemon=True)
            self._janitor.start()

    def _close_idle_senders(self) -> None:
        while True:
            time.sleep(IDLE_SECONDS / 2)
            now = time.monotonic()
            idle = []
            with self._lock:
                for pool in self._idle_senders.values():
                    idle += [sender for since, sender in pool if now - since >= IDLE_SECONDS]
                    pool[:] = [(since, sender) for since, sender in pool if now - since < IDLE_SECONDS]
            for sender in idle:
                sender.close()
