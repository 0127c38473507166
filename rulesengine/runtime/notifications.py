"""Notifications: queued in the journal's outbox by any process, sent by one.

`Notifications.send(notifier, event, context, patient)` queues one (the router's events
through events.py, or any caller with the values it has, a document's among them): the
values its templates read are stored with it, the patient data only for a notifier with
`patient_data: true`. Queuing is one journal insert; nothing waits for a server.

`NotificationSender` (a thread of the main process) sends what is due: one process of the
whole cluster at a time, the holder of the journal's exclusive lock "notifications" (with
PostgreSQL, one node; the others take over if it stops). A failed attempt is retried after
the notifier's backoff (`retry:`, as a delivery's); after its last attempt, or at once when
trying again cannot help (a template that does not render, a 4xx answer), it is dead, with
the reason kept and logged. Nothing is retried forever, nothing dropped without a word.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..config import Config
from ..config.notification_context import ARRIVAL_PATHS, DATASET, PATIENT_FIELDS, WHOLE
from .journal import Journal, NotificationState, unreachable
from .journal.errors import in_words
from .logs import Repeats, origin

log = logging.getLogger("rulesengine.notifications")


def _deliver(notifier, context: Mapping[str, Any]) -> str:
    # Imported when the first notification goes out: the HTTP client and the template engine
    # cost every process of a router that notifies nobody a tenth of a second at its start.
    from .notifiers import deliver
    return deliver(notifier, context)
_errors = Repeats()

IDLE_WAIT = 1.0  # seconds the sender waits when nothing is due (a notification queued here wakes it sooner)
BATCH = 20  # notifications sent per round


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Notifications:
    """Queues notifications in the journal's outbox, for the notifiers of `config`."""

    def __init__(self, journal: Journal, config: Config, clock: Callable[[], float] = time.time,
                 wake: Callable[[], None] | None = None):
        self.journal = journal
        self.config = config
        self.clock = clock
        self.wake = wake  # tells this process's sender that something was queued

    def configure(self, config: Config) -> None:
        self.config = config

    def send(self, notifier: str, event: str, context: Mapping[str, Any],
             patient: Mapping[str, Any] | None = None) -> int | None:
        """Queue a notification of `event` for `notifier` with the event's values (`context`)
        and the patient data (`patient`: given to the templates only where the notifier opted
        in). Returns its number; None, with the reason logged, when it cannot be queued."""
        settings = self.config.notifiers.get(notifier)
        if settings is None:
            log.error("notification %s for %s not sent: no notifier of that name is configured", event, notifier)
            return None
        now = self.clock()
        # DataSet is made of these values when the notification is rendered: a caller's own is
        # not kept (it could hold patient data); the arrival's mappings keep only their fields.
        values = {key: value for key, value in context.items()
                  if key not in PATIENT_FIELDS and key not in (WHOLE, DATASET, *ARRIVAL_PATHS)}
        for root, fields in ARRIVAL_PATHS.items():
            given = context.get(root)
            if isinstance(given, Mapping):
                values[root] = {field: given[field] for field in fields if field in given}
        values.update({"event": event, "node": self.journal.node, "time": iso_time(now), "notifier": notifier})
        if settings.patient_data and patient:
            values.update({key: value for key, value in patient.items() if key in PATIENT_FIELDS})
        try:
            number = self.journal.add_notification(notifier, event, values, now)
        except Exception as exc:  # noqa: BLE001 - what raised the event goes on; the loss is said
            if not unreachable(exc):
                _errors.log(log, logging.ERROR, origin(exc), "notification %s for %s could not be queued: %s", event,
                            notifier, exc, exc_info=exc)
            else:
                log.error("notification %s for %s could not be queued: the journal's database cannot be reached (%s)",
                          event, notifier, in_words(exc))
            return None
        log.info("notification %s queued for %s (%s)", number, notifier, event)
        if self.wake is not None:
            self.wake()
        return number


class NotificationSender(threading.Thread):
    """Sends the outbox's notifications while this process holds the lock "notifications"."""

    def __init__(self, journal: Journal, config: Config, clock: Callable[[], float] = time.time,
                 send: Callable[[Any, Mapping[str, Any]], str] | None = None):
        super().__init__(name="notifications", daemon=True)
        self.journal = journal
        self.config = config
        self.clock = clock
        self.send_one = send or _deliver
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.exclusive = None

    def configure(self, config: Config) -> None:
        self.config = config

    def wake(self) -> None:
        self.wakeup.set()

    def stop(self, timeout: float = 10) -> None:
        self.stopping.set()
        self.wakeup.set()
        if self.is_alive():
            self.join(timeout)
        self._let_go()

    def _let_go(self) -> None:
        lock, self.exclusive = self.exclusive, None
        if lock is not None:
            lock.release()

    def holds_the_outbox(self) -> bool:
        """Is this the process that sends? Asked each round: a lock lost is asked for again."""
        if self.exclusive is not None and not self.exclusive.held():
            log.warning("notifications: this process lost the right to send them; asking again")
            self._let_go()
        if self.exclusive is None:
            self.exclusive = self.journal.try_exclusive("notifications")
            if self.exclusive is not None:
                log.debug("notifications: this process sends them")
        return self.exclusive is not None

    def tick(self) -> int:
        """One round: what is due, sent (or its failure recorded). Returns how many were tried."""
        if not self.config.notifiers and self.exclusive is None and self.journal.next_notification_due() is None:
            return 0  # nothing configured, nothing waiting: no need to hold the lock
        if not self.holds_the_outbox():
            return 0
        due = self.journal.due_notifications(BATCH, self.clock())
        for notification in due:
            if self.stopping.is_set():
                break
            self._attempt(notification)
        return len(due)

    def _attempt(self, notification) -> None:
        notifier = self.config.notifiers.get(notification.notifier)
        what = f"notification {notification.id} ({notification.event}) for {notification.notifier}"
        if notifier is None:
            self._dead(notification, what, "no notifier of that name is configured any more")
            return
        from .notifiers import NotifyFailed
        try:
            detail = self.send_one(notifier, notification.context)
        except NotifyFailed as exc:
            attempts = notification.attempts + 1
            if exc.permanent or attempts >= notifier.retry.max_attempts:
                self._dead(notification, what, f"{exc} (attempt {attempts})")
                return
            wait = notifier.retry.wait(attempts)
            self.journal.notification_failed(notification.id, str(exc), self.clock() + wait, self.clock())
            log.warning("%s: attempt %d failed: %s; trying again in %.0f s", what, attempts, exc, wait)
            return
        except Exception as exc:  # noqa: BLE001 - a fault in one notification must not stop the others
            _errors.internal_error(log, "%s: unexpected error: %s", what, exc, exc=exc)
            attempts = notification.attempts + 1
            if attempts >= notifier.retry.max_attempts:
                self._dead(notification, what, f"unexpected error: {exc}")
            else:
                self.journal.notification_failed(notification.id, f"unexpected error: {exc}",
                                                  self.clock() + notifier.retry.wait(attempts), self.clock())
            return
        self.journal.notification_sent(notification.id, self.clock())
        log.info("%s sent: %s", what, detail)

    def _dead(self, notification, what: str, reason: str) -> None:
        state = self.journal.notification_failed(notification.id, reason, None, self.clock())
        assert state == NotificationState.DEAD
        log.error("%s is dead: %s (dicom-rules notifications lists it)", what, reason)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.tick()
                due = self.journal.next_notification_due() if self.exclusive is not None else None
            except Exception as exc:  # noqa: BLE001 - the database may be away a while: try again
                if unreachable(exc):
                    _errors.log(log, logging.WARNING, "unreachable", "notifications: the journal's database cannot "
                                "be reached (%s)", in_words(exc))
                else:
                    _errors.log(log, logging.ERROR, origin(exc), "notifications: unexpected error: %s", exc,
                                exc_info=exc)
                due = None
            wait = IDLE_WAIT if due is None else max(0.0, min(IDLE_WAIT, due - self.clock()))
            if wait > 0:
                self.wakeup.wait(wait)
            self.wakeup.clear()
