"""Delivery workers: each destination's queue, sent in order, retried with backoff.

A worker claims the next due deliveries of its destination from the journal,
sends them over one association, and records each attempt. When the
destination cannot be reached (no connection, no association, no answer to a
C-ECHO), the failed item waits its backoff and the whole queue of that
destination waits with it, so instances keep their order. When one instance
fails while the destination works (a failure status, no transfer syntax for it,
an association or a C-STORE the peer refused or aborted for it), that instance
alone is retried later and the queue goes on. After max_attempts an item is
dead: kept, with its last error, until `dicom-rules queue retry`.

What a worker claims is leased to its process (journal.claim). The manager's LeaseKeeper renews
the leases of the batches its workers hold, however long a send takes (a large instance), and
puts back in the queue what any node's expired lease held (a node that died). A batch whose
renewal finds some of its leases gone (they expired, and another process took them) is not
sent further: the rest belongs to that process now.

A destination with one association (`max_associations: 1`) promises order: one process of
the whole cluster sends to it at a time, the holder of the journal's exclusive lock
"destination:NAME"; the others wait and try again. Its holder claims in the order the
instances were received, never past one still to be processed (journal.claim, ordered), so
that several processing processes cannot reorder it.
"""

from __future__ import annotations

import logging
import threading
import time

from .destinations import ItemError, LinkError, sender_for
from .events import NO_EVENTS, Events
from .journal import DEAD, QUEUED, RETRYING, SENDING, Journal, unreachable
from .journal.errors import in_words
from .logs import Repeats, origin
from .storage import Storage

log = logging.getLogger("rulesengine.delivery")
_errors = Repeats()  # a fault met again and again logs its traceback once a minute, not each time

# The last error of a delivery (`dicom-rules queue`) starts with which kind of failure it was.
UNREACHABLE = "destination unreachable"
INSTANCE_FAILED = "instance failed"
UNEXPECTED = "unexpected error"

IDLE_WAIT = 1.0  # seconds a worker sleeps when nothing is due (a notification wakes it sooner)
ERROR_WAIT = 5.0  # seconds a worker waits after an unexpected error before it tries again


class HeldBatch:
    """A batch a worker is sending: what of it is not finished yet (the leases to renew), and
    whether some of them were lost to another process (then the worker stops sending it)."""

    def __init__(self, batch) -> None:
        self.pending = list(batch)
        self.lost = threading.Event()
        self.lock = threading.Lock()  # a renewal and the end of an item never cross

    def finishing(self, item) -> None:
        """The item's send ended: its outcome goes to the journal next, its lease with it."""
        with self.lock:
            if item in self.pending:
                self.pending.remove(item)


class LeaseKeeper(threading.Thread):
    """Renews the leases of the deliveries this process's workers hold, and puts back in the
    queue those whose lease expired, whichever process held them; every third of a lease."""

    def __init__(self, journal: Journal, clock=time.time):
        super().__init__(name="delivery-leases", daemon=True)
        self.journal = journal
        self.clock = clock
        self.stopping = threading.Event()
        self._held: dict[int, HeldBatch] = {}  # id(batch) -> the batch a worker is sending
        self._lock = threading.Lock()

    def hold(self, batch) -> HeldBatch:
        held = HeldBatch(batch)
        with self._lock:
            self._held[id(batch)] = held
        return held

    def drop(self, batch) -> None:
        with self._lock:
            self._held.pop(id(batch), None)

    def held(self) -> list:
        """The deliveries this process's workers are sending now (not finished yet)."""
        with self._lock:
            batches = list(self._held.values())
        return [item for held in batches for item in held.pending]

    def tick(self, now: float | None = None) -> tuple[int, int]:
        """One round: (leases renewed, expired deliveries queued again)."""
        now = self.clock() if now is None else now
        with self._lock:
            batches = list(self._held.values())
        renewed = sum(self._renew(held, now) for held in batches)
        requeued = self.journal.requeue_expired(now)
        if requeued:
            log.warning("%d deliver%s whose lease expired (a node stopped sending them) queued again", requeued,
                        "y" if requeued == 1 else "ies")
        return renewed, requeued

    def _renew(self, held: HeldBatch, now: float) -> int:
        with held.lock:
            pending = list(held.pending)
            if not pending or held.lost.is_set():
                return 0
            renewed = self.journal.renew_leases(pending, now)
            if renewed < len(pending):
                held.lost.set()
                log.warning("%d of %d deliveries being sent to %s lost their lease (this process was too slow to "
                            "renew it, and another took them over): the rest of the batch is left to it",
                            len(pending) - renewed, len(pending), pending[0].destination)
        return renewed

    def run(self) -> None:
        while not self.stopping.wait(self.journal.lease_seconds / 3):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the database may be away a while: try again next round
                if unreachable(exc):
                    _errors.log(log, logging.WARNING, "leases unreachable", "delivery leases: cannot renew or requeue: "
                                "the journal's database cannot be reached (%s)", in_words(exc))
                else:
                    _errors.log(log, logging.ERROR, origin(exc), "delivery leases: cannot renew or requeue: %s", exc,
                                exc_info=exc)

    def stop(self) -> None:
        self.stopping.set()


class DestinationWorker(threading.Thread):
    def __init__(self, destination, journal: Journal, storage: Storage, wake: threading.Event, index: int = 0,
                 clock=time.time, leases: LeaseKeeper | None = None, events: Events = NO_EVENTS):
        super().__init__(name=f"deliver-{destination.name}-{index}", daemon=True)
        self.events = events  # a delivery dead, the destination unreachable (events.py)
        self.destination = destination
        self.journal = journal
        self.storage = storage
        self.wake = wake
        self.clock = clock  # what is due and when to retry (tests move it instead of waiting)
        self.leases = leases  # renews the leases of the batch being sent (None: no renewal)
        self.stopping = threading.Event()
        self.sender = sender_for(destination)
        # One association promises order: one sender in the whole cluster, in reception order.
        self.ordered = getattr(destination, "max_associations", 1) == 1
        self.exclusive = None  # the lock "destination:NAME", while this worker holds it

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self._claim_and_send()
                except Exception as exc:  # noqa: BLE001 - a destination must not stop delivering for good
                    if unreachable(exc):
                        _errors.log(log, logging.WARNING, ("unreachable", self.destination.name), "delivery worker "
                                    "for %s: the journal's database cannot be reached (%s); trying again every %.0f s",
                                    self.destination.name, in_words(exc), ERROR_WAIT)
                    else:
                        _errors.log(log, logging.ERROR, origin(exc), "delivery worker for %s: unexpected error; "
                                    "trying again every %.0f s", self.destination.name, ERROR_WAIT, exc_info=exc)
                    self.sender.close()
                    self.stopping.wait(ERROR_WAIT)
        finally:
            self.sender.close()
            self._let_go()

    def _holds_order(self) -> bool:
        """For an ordered destination: is this the one process that sends to it? Asked before
        each claim: a lock lost (its database connection ended) is asked for again."""
        if self.exclusive is not None:
            if self.exclusive.held():
                return True
            log.warning("%s: this process lost the right to send to it (the journal's connection ended); "
                        "asking again", self.destination.name)
            self._let_go()
        self.exclusive = self.journal.try_exclusive(f"destination:{self.destination.name}")
        if self.exclusive is not None:
            log.info("%s: this process sends to it (one at a time in the whole cluster, in order)",
                     self.destination.name)
        return self.exclusive is not None

    def _let_go(self) -> None:
        lock, self.exclusive = self.exclusive, None
        if lock is not None:
            lock.release()

    def _claim_and_send(self) -> None:
        if self.ordered and not self._holds_order():
            self.sender.close()
            self.wake.wait(IDLE_WAIT)  # another process sends to it: ask again later
            self.wake.clear()
            return
        batch = self.journal.claim(self.destination.name, self._batch_size(), self.clock(),  # none while paused
                                   ordered=self.ordered)
        if not batch:
            self.sender.close()  # nothing to send: do not keep the association idle
            self._sleep()
            return
        held = self.leases.hold(batch) if self.leases is not None else HeldBatch(batch)
        try:
            self._send(batch, held)
        finally:
            if self.leases is not None:
                self.leases.drop(batch)
            self.journal.release(batch)  # whatever an error left claimed goes back; the rest is untouched

    def _batch_size(self) -> int:
        return max(1, min(getattr(self.destination, "batch", 16), 64))

    def _sleep(self) -> None:
        due = self.journal.next_due(self.destination.name)
        wait = IDLE_WAIT if due is None else max(0.0, min(IDLE_WAIT, due - self.clock()))
        if wait > 0:
            self.wake.wait(wait)
            self.wake.clear()

    def _send(self, batch, held: HeldBatch | None = None) -> None:
        held = held or HeldBatch(batch)
        for index, item in enumerate(batch):
            if self.stopping.is_set():
                return  # the rest goes back to the queue
            if held.lost.is_set():
                return  # another process took the rest over (LeaseKeeper logged it)
            started = time.time()
            try:
                self.sender.open(batch[index:])  # the open association if it carries this item
                detail = self.sender.send(item)
            except LinkError as exc:
                held.finishing(item)
                self.sender.close()
                self._unreachable(item, started, str(exc))
                return  # the rest goes back to the queue, which waits
            except ItemError as exc:
                held.finishing(item)
                self._refused(item, started, INSTANCE_FAILED, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a fault with one instance must not stop its destination
                held.finishing(item)
                _errors.internal_error(log, "delivery %s of %s to %s: unexpected error: %s", item.id,
                                       item.sop_instance_uid, self.destination.name, exc, exc=exc)
                self.sender.close()  # the association's state is unknown: the next claim opens a new one
                self._refused(item, started, UNEXPECTED, str(exc))
                return  # the rest goes back to the queue
            held.finishing(item)
            self.journal.delivered(item, started, detail)
            self.events.destination_reached(self.destination.name)
            log.debug("delivered %s to %s (%s)", item.sop_instance_uid, self.destination.name, detail)
            if self.storage.retain_seconds > 0:  # retention.delivered counts from the last delivery
                self.journal.extend_retention(item.instance_id, self.clock() + self.storage.retain_seconds)
            self._release_file(item.path)

    def _refused(self, item, started: float, kind: str, error: str) -> None:
        """This instance alone failed: it is retried after its backoff, or dead; the queue goes on."""
        retry = self.destination.retry
        attempts = item.attempts + 1
        wait = retry.wait(attempts)
        retry_at = None if attempts >= retry.max_attempts else self.clock() + wait
        state = self.journal.failed(item, started, f"{kind}: {error}", retry_at)
        if state == DEAD:
            self.events.delivery_dead(item, f"{kind}: {error}", self.journal)
        then = f"dead after {attempts} attempts (dicom-rules queue retry sends it again)" if state == DEAD else \
            f"this instance is tried again in {wait:.0f} s, the queue goes on"
        log.warning("delivery %s of %s to %s: %s (attempt %d): %s; %s", item.id, item.sop_instance_uid,
                    self.destination.name, kind, attempts, error, then)

    def _unreachable(self, item, started: float, error: str) -> None:
        """The destination is down: this item counts an attempt; the queue waits its backoff."""
        retry = self.destination.retry
        attempts = item.attempts + 1
        wait = retry.wait(attempts)
        retry_at = None if attempts >= retry.max_attempts else self.clock() + wait
        if retry_at is not None:  # first: no other worker of this destination may claim in between
            self.journal.postpone(self.destination.name, retry_at)
        state = self.journal.failed(item, started, f"{UNREACHABLE}: {error}", retry_at)
        self.events.destination_failed(self.destination.name, error, self._waiting)
        if state == DEAD:
            self.events.delivery_dead(item, f"{UNREACHABLE}: {error}", self.journal)
        then = f"the queue waits: next try in {wait:.0f} s" if retry_at is not None else \
            f"delivery dead after {attempts} attempts (dicom-rules queue retry sends it again)"
        log.warning("%s unreachable (attempt %d of delivery %s): %s; %s", self.destination.name, attempts, item.id,
                    error, then)

    def _waiting(self) -> int:
        """The destination's deliveries not yet delivered nor dead (for destination-unreachable)."""
        counts = self.journal.counts().get(self.destination.name, {})
        return sum(counts.get(state, 0) for state in (QUEUED, RETRYING, SENDING))

    def _release_file(self, path: str | None) -> None:
        if path and not self.journal.path_in_use(path):
            self.storage.remove(path)


class DeliveryManager:
    """The workers of every destination; destinations can change while running."""

    def __init__(self, journal: Journal, storage: Storage, clock=time.time, events: Events = NO_EVENTS):
        self.journal = journal
        self.storage = storage
        self.clock = clock
        self.events = events
        self._workers: dict[str, list[DestinationWorker]] = {}
        self._wakes: dict[str, threading.Event] = {}
        self._destinations: dict = {}
        self._lock = threading.Lock()
        self.leases = LeaseKeeper(journal, clock)
        self.leases.start()

    def apply(self, destinations: dict) -> None:
        """Start workers for new or changed destinations; stop those of removed or changed ones.
        A worklist destination takes no instances: it gets no queue."""
        destinations = {name: d for name, d in destinations.items() if d.type != "worklist"}
        with self._lock:
            for name in list(self._workers):
                if name not in destinations or destinations[name] != self._destinations.get(name):
                    for worker in self._workers.pop(name):
                        worker.stop()
                    if name in destinations:  # changed, perhaps mended: no reason to wait out old backoffs
                        resumed = self.journal.resume(name, self.clock())
                        if resumed:
                            log.info("%s changed: %d waiting deliver%s due now", name, resumed,
                                     "y is" if resumed == 1 else "ies are")
            for name, destination in destinations.items():
                if name in self._workers:
                    continue
                wake = self._wakes.setdefault(name, threading.Event())
                count = getattr(destination, "max_associations", 1)
                workers = [DestinationWorker(destination, self.journal, self.storage, wake, i, self.clock, self.leases,
                                             self.events) for i in range(count)]
                for worker in workers:
                    worker.start()
                self._workers[name] = workers
            self._destinations = dict(destinations)

    def notify(self, names) -> None:
        for name in names:
            wake = self._wakes.get(name)
            if wake is not None:
                wake.set()

    def stop(self, timeout: float = 30) -> None:
        with self._lock:
            workers = [w for group in self._workers.values() for w in group]
            self._workers.clear()
        self.leases.stop()
        for worker in workers:
            worker.stop()
        deadline = time.time() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.time()))
