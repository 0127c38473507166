"""The journal's outbox of notifications: each one kept until it is sent, or dead after its
retries, with its last error.

A notification is queued with the values its templates read (the event's, and patient data
only for a notifier that opted in: what is not given is never stored). One process of the
cluster sends them (the holder of the exclusive lock "notifications", runtime/notifications.py),
so a claim here takes no lease: the lock keeps senders apart. SQLite keeps them in the
`notifications` table of sqlite.py's schema, PostgreSQL in that of migration 7 (postgres.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Iterable, Mapping


class NotificationState(StrEnum):
    QUEUED = "queued"
    RETRYING = "retrying"
    SENT = "sent"
    DEAD = "dead"


@dataclass(frozen=True)
class Notification:
    id: int
    notifier: str
    event: str
    context: dict  # the values its templates read
    state: NotificationState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float
    sent_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Notification":
        values = {field.name: row[field.name] for field in fields(cls)}
        values["context"] = json.loads(values["context"] or "{}")
        values["state"] = NotificationState(values["state"])
        return cls(**values)


_COLUMNS = ", ".join(field.name for field in fields(Notification))
_WAITING = (NotificationState.QUEUED, NotificationState.RETRYING)
MAX_ERROR_CHARS = 2000  # the last error kept: a server's whole answer page is not


class NotificationOutbox:
    """The outbox's methods, part of SQLJournal (its connections and transactions)."""

    def add_notification(self, notifier: str, event: str, context: Mapping[str, Any],
                         now: float | None = None) -> int:
        """A notification to send as soon as the sender gets to it; returns its number."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            return self._insert(db, "notifications", {
                "notifier": notifier, "event": event,
                "context": json.dumps(dict(context), ensure_ascii=False, default=str, separators=(",", ":")),
                "state": NotificationState.QUEUED.value, "attempts": 0, "next_attempt_at": now,
                "created_at": now, "updated_at": now})

    def due_notifications(self, limit: int, now: float | None = None) -> list[Notification]:
        """What is due to be sent, oldest first (for the holder of the lock "notifications")."""
        now = time.time() if now is None else now
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE state IN (?, ?) AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, id LIMIT ?", (*_WAITING, now, max(1, int(limit)))).fetchall()
        return [Notification.from_row(row) for row in rows]

    def next_notification_due(self) -> float | None:
        """When the next waiting notification is due; None when none waits."""
        row = self._connection().execute("SELECT MIN(next_attempt_at) FROM notifications WHERE state IN (?, ?)",
                                         _WAITING).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def notification_sent(self, notification_id: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("UPDATE notifications SET state=?, attempts=attempts+1, last_error=NULL, sent_at=?, "
                       "updated_at=? WHERE id=?", (NotificationState.SENT.value, now, now, notification_id))

    def notification_failed(self, notification_id: int, error: str, retry_at: float | None,
                            now: float | None = None) -> NotificationState:
        """A failed attempt: retried at `retry_at`, or dead when it is None."""
        now = time.time() if now is None else now
        state = NotificationState.DEAD if retry_at is None else NotificationState.RETRYING
        with self._transaction() as db:
            db.execute("UPDATE notifications SET state=?, attempts=attempts+1, last_error=?, next_attempt_at=?, "
                       "updated_at=? WHERE id=?", (state.value, error[:MAX_ERROR_CHARS],
                                                   now if retry_at is None else retry_at, now, notification_id))
        return state

    def notification(self, notification_id: int) -> Notification | None:
        row = self._connection().execute(f"SELECT {_COLUMNS} FROM notifications WHERE id=?",
                                         (notification_id,)).fetchone()
        return Notification.from_row(row) if row else None

    def notifications(self, states: Iterable[NotificationState] = tuple(NotificationState),
                      limit: int = 100) -> list[Notification]:
        """Notifications in these states, newest first."""
        states = [NotificationState(state).value for state in states]
        if not states:
            return []
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM notifications WHERE state IN ({', '.join('?' * len(states))}) "
            "ORDER BY id DESC LIMIT ?", (*states, max(0, int(limit)))).fetchall()
        return [Notification.from_row(row) for row in rows]

    def notification_counts(self) -> dict[NotificationState, int]:
        rows = self._connection().execute("SELECT state, COUNT(*) FROM notifications GROUP BY state").fetchall()
        return {NotificationState(row[0]): int(row[1]) for row in rows}

    def purge_notifications(self, older_than: float | None = None) -> int:
        """Forget sent and dead notifications (last changed before `older_than`, when given)."""
        query = "DELETE FROM notifications WHERE state IN (?, ?)"
        args: list = [NotificationState.SENT.value, NotificationState.DEAD.value]
        if older_than is not None:
            query += " AND updated_at < ?"
            args.append(older_than)
        with self._transaction() as db:
            return db.execute(query, args).rowcount

    # ---- outages (the event destination-unreachable) ---------------------------------------------

    def outage(self, destination: str, now: float | None = None) -> tuple[float, frozenset[int]]:
        """A failed attempt found `destination` unreachable: (since when, for the whole cluster,
        the subscriptions already told of this outage)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("INSERT INTO outages (destination, since) VALUES (?, ?) ON CONFLICT (destination) DO NOTHING",
                       (destination, now))
            since, told = db.execute("SELECT since, told FROM outages WHERE destination=?", (destination,)).fetchone()
        return float(since), frozenset(int(number) for number in told.split(",") if number)

    def outage_told(self, destination: str, since: float, subscription: int) -> bool:
        """Mark the subscription told of the outage that began at `since`; False when another
        process did first (or the outage ended meanwhile): it is not told twice."""
        with self._transaction() as db:
            return db.execute("UPDATE outages SET told = told || ? WHERE destination=? AND since=? AND told NOT LIKE ?",
                              (f"{subscription},", destination, since, f"%,{subscription},%")).rowcount == 1

    def outage_known(self, destination: str) -> bool:
        return self._connection().execute("SELECT 1 FROM outages WHERE destination=?",
                                          (destination,)).fetchone() is not None

    def outage_over(self, destination: str) -> None:
        """A delivery reached the destination: its outage, if any, is over."""
        with self._transaction() as db:
            db.execute("DELETE FROM outages WHERE destination=?", (destination,))
