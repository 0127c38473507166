"""What the journal's SQL backends share: the statements and the methods, written once.

`SQLJournal` implements the whole Journal interface over a DB-API connection per thread; a
backend (sqlite.py, postgres.py) gives it its connections, its schema and the few phrases its
dialect spells otherwise (see the class attributes). Statements are written with `?`
placeholders; a backend whose driver takes another style translates them.

Every transaction changes deliveries in at most one statement: PostgreSQL keeps the queue
counts with a trigger per statement that locks its rows in one order, so two transactions never
wait for each other's counts in a cycle.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import Any, Iterable, Iterator, Mapping

from ...arrival import Arrival
from .outbox import NotificationOutbox
from .records import (Attempt, ClaimLost, Counter, Delivery, DeliveryState, DeliveryTrace, Group, GroupChanged,
                      GroupJoin, GroupState, Instance, InstanceState, InstanceTrace, Lease, ListedDelivery,
                      NewDelivery, NewReplay, NewRequest, Outcome, Replay, ReplayedInstance, Request,
                      RequestResult, RetainedFile, RouterStatus)

QUEUED, SENDING, DELIVERED, RETRYING, DEAD = DeliveryState
ACCEPTED, PROCESSED, DONE = InstanceState
OPEN, FIRED = GroupState

# The exact filters of search_instances: each column has an index of its own, so that a search
# never reads the whole table, however rare the value.
INDEXED_FILTERS = ("patient_id", "accession_number", "study_instance_uid", "series_instance_uid", "sop_instance_uid",
                   "calling_aet", "source_name", "outcome")
_NARROW_FILTERS = INDEXED_FILTERS[:5]

# How long a claim holds its deliveries (or its instances): the process sending them renews the
# lease while it sends (renew_leases); once it has expired, any node puts them back in the queue
# (requeue_expired), and an instance claim is taken by the next claimer (claim_instances).
LEASE_SECONDS = 60.0

# Delivery latency (received to delivered), seconds: the upper bounds of the histogram's buckets.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


_NO_LEASE = "lease_owner=NULL, lease_process=NULL, lease_expires=NULL"  # a delivery no process is sending
# A lease is held by one process of one node: lease_owner (the node) and lease_process (its id there).
_MINE = "lease_owner=? AND lease_process=?"
_NO_INSTANCE = 2 ** 63 - 1  # above every instance number
_DELIVERY_COLUMNS = ", ".join(field.name for field in fields(Delivery))
_GROUP_COLUMNS = ", ".join(field.name for field in fields(Group) if field.name != "members")
# The spool files of the instances of open groups: kept until their group fired.
_HELD_PATHS = ("SELECT i.path FROM groups g JOIN group_members m ON m.group_id = g.id JOIN instances i ON "
               "i.id = m.instance_id WHERE g.state=? AND i.path IS NOT NULL")
# What a search lists of an instance: everything but its trace, which is read one at a time.
_LISTED_INSTANCE_COLUMNS = ("id, received_at, path, state, ruleset_version, outcome, reason, rules_fired, "
                            "destinations, processed_at, " + ", ".join(Arrival.ROW_COLUMNS + Arrival.HEADER_COLUMNS))


def search_query(*, received_from: float | None = None, received_to: float | None = None,
                 before_id: int | None = None, limit: int = 50, unindexed: str = "+", least: str = "min",
                 **exact: str | None) -> tuple[str, list]:
    """The statement of search_instances, and its arguments: `exact` names columns of instances
    and the values they must have (None: any). `unindexed` and `least` are the dialect's (see
    SQLJournal._UNINDEXED and _LEAST)."""
    unknown = set(exact) - set(INDEXED_FILTERS)
    if unknown:
        raise TypeError(f"not a filter of search_instances: {', '.join(sorted(unknown))}")
    where, args = [], []
    # With a value that few instances share (a patient, a UID), its index answers: the broad
    # filters (a source, an outcome, a time range) are written so that SQLite, which keeps no
    # statistics here, never walks their index instead ("+column" uses none).
    narrow = any(exact.get(column) is not None for column in _NARROW_FILTERS)
    broad = unindexed if narrow else ""
    for column, value in exact.items():
        if value is not None:
            where.append(f"{broad if column not in _NARROW_FILTERS else ''}{column}=?")
            args.append(value)
    window = [(condition, value) for condition, value in (("received_at>=?", received_from),
                                                          ("received_at<?", received_to)) if value is not None]
    prefix, high = "", None
    if window and not narrow:
        # A time range alone: sorting all its instances by id for each page (a day holds tens of
        # thousands) is what would cost. Ids follow arrival, so the range's instances lie between
        # the least and the greatest id it holds, read once from the received_at index alone; the
        # page is then walked newest first by id, its rows tested on received_at. Exact whatever
        # the order (an instance journaled again after a restart keeps its older time), and fast
        # while ids and times agree.
        prefix = (f"WITH span(low, high) AS (SELECT min(id), max(id) FROM instances WHERE "
                  f"{' AND '.join(condition for condition, _ in window)}) ")
        args[:0] = [value for _, value in window]
        where.append("id>=(SELECT low FROM span)")
        high = "(SELECT high FROM span)"
    for condition, value in window:
        where.append(unindexed + condition)  # never by its index, which cannot give the order by id
        args.append(value)
    if before_id is not None:
        # one upper bound on id: SQLite walks the table's key from one bound only (NULL: an empty range)
        where.append(f"id<{least}({high} + 1, ?)" if high else "id<?")
        args.append(before_id)
    elif high:
        where.append(f"id<={high}")
    query = f"{prefix}SELECT {_LISTED_INSTANCE_COLUMNS} FROM instances"
    if where:
        query += " WHERE " + " AND ".join(where)
    args.append(max(0, int(limit)))
    return query + " ORDER BY id DESC LIMIT ?", args


# What trace() reads besides the instance: each by its index (deliveries_instance, attempts_delivery).
TRACE_DELIVERIES = "SELECT * FROM deliveries WHERE instance_id=? ORDER BY id"
TRACE_ATTEMPTS = ("SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id WHERE d.instance_id=? "
                  "ORDER BY a.id")


def _count(db: Any, *counts: tuple[str, str, float]) -> None:
    """Add to counters (name, label, amount), in one statement: the transaction of the event
    they count pays one call into the database, whatever their number."""
    db.execute("INSERT INTO counters (name, label, value) VALUES " + ",".join(["(?,?,?)"] * len(counts)) +
               " ON CONFLICT (name, label) DO UPDATE SET value = counters.value + excluded.value",
               [item for count in counts for item in count])


def latency_counts(destination: str, seconds: float) -> tuple[tuple[str, str, float], ...]:
    """One delivery in the latency histogram: the count of its bucket (not cumulative: label
    "DESTINATION:BOUND", the smallest bound at least `seconds`, "+Inf" past the last), the sum, the count."""
    bound = next((f"{limit:g}" for limit in LATENCY_BUCKETS if seconds <= limit), "+Inf")
    return (("delivery_latency_seconds_bucket", f"{destination}:{bound}", 1),
            ("delivery_latency_seconds_sum", destination, seconds),
            ("delivery_latency_seconds_count", destination, 1))


def _window_filter(closed_windows: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """What a query of the queue adds to leave out the deliveries waiting for a closed window,
    and its arguments (nothing when every window is open)."""
    closed = tuple(sorted(set(closed_windows)))
    if not closed:
        return "", ()
    return f" AND (delivery_window IS NULL OR delivery_window NOT IN ({','.join('?' * len(closed))}))", closed


class _Lease:
    """A thread's connection. When the thread ends (and its local data with it), the connection
    goes to the next thread that needs one: each association has a thread of its own, and
    opening a connection costs several times a C-FIND's two commits."""

    def __init__(self, db: Any, idle: list):
        self.db = db
        self.returned = weakref.finalize(self, idle.append, db)


class SQLJournal(NotificationOutbox):
    """One per process; each thread gets its own connection. A backend subclasses it with
    `_connect` and these phrases of its dialect."""

    _BEGIN_WRITE = "BEGIN"  # a transaction that writes
    _BEGIN_READ = "BEGIN"  # a consistent read of several statements
    _GREATEST = "MAX"  # the larger of two values
    _SLOT = "CAST(({column} - ?) / ? AS INTEGER)"  # which span of activity() a time falls in
    _CLAIM_LOCK = ""  # what claim's SELECT adds to keep two claimers apart
    _ROW_LOCK = ""  # what a SELECT adds to lock the rows it reads until the transaction ends
    _UNINDEXED = "+"  # before a column: a filter never answered by its index (search_query)
    _LEAST = "min"  # the smaller of two values

    def __init__(self, node: str | None = None, process: int | None = None) -> None:
        self.node = node or socket.gethostname()  # the node whose process holds the leases this journal's claims take
        self._process = process
        self.lease_seconds = LEASE_SECONDS
        self._local = threading.local()
        self._idle: list = []  # the connections of threads that ended

    @property
    def process(self) -> int:
        """The process of `node` that holds this journal's leases: this process's id, unless
        given when opened (several owners in one process, for tests)."""
        return os.getpid() if self._process is None else self._process

    def _connect(self) -> Any:
        raise NotImplementedError

    def _connection(self) -> Any:
        lease = getattr(self._local, "lease", None)
        if lease is None:
            try:
                db = self._idle.pop()
            except IndexError:
                db = self._connect()
            lease = self._local.lease = _Lease(db, self._idle)
        return lease.db

    @contextmanager
    def _transaction(self, begin: str | None = None) -> Iterator[Any]:
        """BEGIN ... COMMIT (ROLLBACK on an exception)."""
        db = self._begin(begin or self._BEGIN_WRITE)
        try:
            yield db
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except Exception:  # the connection itself failed: what went wrong first is the error
                pass
            raise
        db.execute("COMMIT")

    def _begin(self, statement: str) -> Any:
        """The thread's connection, a transaction begun on it."""
        db = self._connection()
        db.execute(statement)
        return db

    def _reading(self) -> Any:
        """Several reads that see one state of the journal."""
        return self._transaction(self._BEGIN_READ)

    def _insert(self, db: Any, table: str, columns: dict) -> int:
        """One row; returns its id."""
        return int(db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                              "RETURNING id", tuple(columns.values())).fetchone()[0])

    def close(self) -> None:
        """This thread's connection, and those of the threads that ended."""
        lease = getattr(self._local, "lease", None)
        if lease is not None:
            lease.returned.detach()
            lease.db.close()
            self._local.lease = None
        while self._idle:
            self._idle.pop().close()

    # ---- instances -------------------------------------------------------------------

    def record(self, arrival: Arrival, path: str | None, outcome: Outcome | None, state: InstanceState,
               ruleset_version: str | None = None, checked: str | None = None) -> int:
        """An instance (and its decision, when the rules ran already; else the rule set version
        it will be processed with). After this commit the sender may be answered: the file it
        names was fsynced before, and carries the arrival facts in its name, so even a journal
        entry lost with a power cut is found again. `checked`: the file's fingerprint as the
        intake checked it (Instance.checked)."""
        now = time.time()
        outcome = outcome or Outcome(ruleset_version, None, None, (), ())
        received_at = arrival.received_at if arrival.received_at is not None else now  # what the rules saw
        columns = {"received_at": received_at, **arrival.to_row(), "path": path, "state": state, **outcome.to_row(),
                   "processed_at": now if state != ACCEPTED else None, "checked": checked}
        with self._transaction() as db:
            instance_id = self._insert(db, "instances", columns)
            counts = [("instances_received", arrival.source_name or arrival.source_kind or "", 1)]
            if state != ACCEPTED and outcome.outcome:
                counts.append(("instances_outcome", outcome.outcome, 1))
            _count(db, *counts)
            return instance_id

    def add_deliveries(self, instance_id: int, deliveries: Iterable[NewDelivery], outcome: Outcome | None = None,
                       state: DeliveryState = QUEUED) -> list[int]:
        """Queue an accepted instance's deliveries and mark it processed, in one transaction."""
        now = time.time()
        # Sent at once by this process (sync mode): its own, without an expiry, until it finishes
        # them or its node restarts (requeue_interrupted) or its supervisor gives them back
        # (requeue_process); no other process takes them.
        owner, process = (self.node, self.process) if state == SENDING else (None, None)
        rows = [(instance_id, item.destination, item.path, item.sop_class_uid, item.sop_instance_uid,
                 item.transfer_syntax, state, now, now, owner, process, item.priority, item.delivery_window)
                for item in deliveries]
        ids: list[int] = []
        with self._transaction() as db:
            before = self._settling(db, instance_id)
            if rows:  # one statement (see the module's docstring); ids are given in the rows' order
                ids = sorted(int(row[0]) for row in db.execute(
                    "INSERT INTO deliveries (instance_id, destination, path, sop_class_uid, sop_instance_uid, "
                    "transfer_syntax, state, created_at, updated_at, lease_owner, lease_process, priority, "
                    "delivery_window) VALUES " +
                    ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(rows)) +
                    " RETURNING id", [value for row in rows for value in row]).fetchall())
            decided = outcome.to_row() if outcome is not None else {}
            self._update_instance(db, instance_id, {"state": PROCESSED, "processed_at": now, "lease_expires": None,
                                                    **decided})
            self._count_outcome(db, before, outcome)
        return ids

    def settle(self, instance_id: int, outcome: Outcome, path: str | None) -> None:
        """An accepted instance that needs no delivery: dropped, or kept aside at `path`."""
        with self._transaction() as db:
            before = self._settling(db, instance_id)
            self._update_instance(db, instance_id, {"state": DONE, "processed_at": time.time(), "path": path,
                                                    "lease_expires": None, **outcome.to_row()})
            self._count_outcome(db, before, outcome)

    def _settling(self, db: Any, instance_id: int) -> Any:
        """The instance about to be settled (its row locked until the transaction ends). Raises
        ClaimLost when another process claimed it since this one did (this one's claim expired),
        or processed it: what it did stands. An instance nobody claimed (one handled at once, as
        sync mode does) is settled by whoever asks. A settled instance keeps, without expiry,
        the owner of the claim that processed it."""
        row = db.execute(f"SELECT state, outcome, lease_owner, lease_process FROM instances WHERE id=?{self._ROW_LOCK}",
                         (instance_id,)).fetchone()
        if row is not None and row["lease_owner"] is not None and (
                row["state"] != ACCEPTED or (row["lease_owner"], row["lease_process"]) != (self.node, self.process)):
            raise ClaimLost(f"instance {instance_id} is no longer claimed by this process: "
                            f"{row['lease_owner']} process {row['lease_process']} claimed it ({row['state']})")
        return row

    @staticmethod
    def _count_outcome(db: Any, before: Any, outcome: Outcome | None) -> None:
        """An instance decided now (it was accepted): counted once by its outcome, whatever
        settles it afterwards (a sync delivery whose copies cannot be written)."""
        if before is None or before["state"] != ACCEPTED:
            return
        decided = outcome.outcome if outcome is not None else before["outcome"]
        if decided:
            _count(db, ("instances_outcome", decided, 1))

    @staticmethod
    def _update_instance(db: Any, instance_id: int, columns: dict) -> None:
        db.execute(f"UPDATE instances SET {', '.join(f'{name}=?' for name in columns)} WHERE id=?",
                   (*columns.values(), instance_id))

    def accepted_instances(self) -> list[Instance]:
        """Instances answered but not yet processed: what a restart must finish."""
        return [Instance.from_row(row) for row in self._connection().execute(
            "SELECT * FROM instances WHERE state=? ORDER BY id", (ACCEPTED,))]

    def claim_instances(self, limit: int, now: float | None = None, after: int = 0) -> list[Instance]:
        """The next accepted instances (numbered above `after`), oldest first, that no process
        holds (or whose claim expired): leased to this process until `now + lease_seconds`, for
        it alone to process."""
        now = time.time() if now is None else now
        free = "state=? AND id>? AND (lease_expires IS NULL OR lease_expires < ?)"
        # Asked at every wake-up: when nothing is free, a read answers, without a write transaction.
        if self._connection().execute(f"SELECT 1 FROM instances WHERE {free} LIMIT 1",
                                      (ACCEPTED, after, now)).fetchone() is None:
            return []
        with self._transaction() as db:
            rows = db.execute(f"SELECT * FROM instances WHERE {free} ORDER BY id LIMIT ?{self._CLAIM_LOCK}",
                              (ACCEPTED, after, now, max(0, int(limit)))).fetchall()
            self._lease_instances(db, [row["id"] for row in rows], now)
        return [Instance.from_row(row) for row in rows]

    def claim_instance(self, instance_id: int, now: float | None = None) -> Instance | None:
        """This accepted instance, leased to this process as claim_instances does; None when it
        is processed already or another process holds it."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(f"SELECT * FROM instances WHERE id=? AND state=? AND (lease_expires IS NULL OR "
                             f"lease_expires < ?){self._CLAIM_LOCK}", (instance_id, ACCEPTED, now)).fetchone()
            if row is not None:
                self._lease_instances(db, [instance_id], now)
        return Instance.from_row(row) if row is not None else None

    def _lease_instances(self, db: Any, ids: list[int], now: float) -> None:
        if ids:
            db.execute(f"UPDATE instances SET lease_owner=?, lease_process=?, lease_expires=? "
                       f"WHERE id IN ({','.join('?' * len(ids))})",
                       (self.node, self.process, now + self.lease_seconds, *ids))

    def renew_instance_leases(self, instance_ids: Iterable[int], now: float | None = None) -> int:
        """This process still processes these: their claims run `lease_seconds` from `now` again.
        Returns how many it still held."""
        return self._renew("instances", list(instance_ids), ACCEPTED, now)

    def release_instances(self, instance_ids: Iterable[int]) -> int:
        """Claimed and not processed (stopping, or to be tried again later): free for any process
        again. Only this process's claims; returns how many."""
        ids = list(instance_ids)
        if not ids:
            return 0
        with self._transaction() as db:
            return db.execute(f"UPDATE instances SET {_NO_LEASE} WHERE id IN ({','.join('?' * len(ids))}) "
                              f"AND state=? AND {_MINE}", (*ids, ACCEPTED, self.node, self.process)).rowcount

    def instance_lease(self, instance_id: int) -> Lease | None:
        """Who holds an accepted instance's claim and until when; None when no process does."""
        row = self._connection().execute("SELECT lease_owner, lease_expires, lease_process FROM instances "
                                         "WHERE id=? AND state=?", (instance_id, ACCEPTED)).fetchone()
        return Lease(row[0], row[1], row[2]) if row and row[0] is not None else None

    def instance(self, instance_id: int) -> Instance | None:
        row = self._connection().execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
        return Instance.from_row(row) if row else None

    def record_ruleset(self, version: str, sources: dict[str, bytes]) -> None:
        """A rule set version about to be put in place, with what each of its files held
        (`sources`, in the order they were read: the main rule file first)."""
        with self._transaction() as db:
            db.execute("INSERT INTO rulesets (version, loaded_at, files) VALUES (?,?,?) ON CONFLICT (version) "
                       "DO UPDATE SET loaded_at=excluded.loaded_at", (version, time.time(), json.dumps(list(sources))))
            db.executemany("INSERT INTO ruleset_files (version, position, path, data) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                           [(version, position, path, data) for position, (path, data) in enumerate(sources.items())])

    def ruleset_sources(self, version: str) -> dict[str, bytes]:
        """The files of a recorded rule set version, the main rule file first; empty if unknown."""
        rows = self._connection().execute("SELECT path, data FROM ruleset_files WHERE version=? ORDER BY position",
                                          (version,)).fetchall()
        return {row[0]: bytes(row[1]) for row in rows}

    def latest_ruleset(self) -> str | None:
        """The rule set version put in place last."""
        row = self._connection().execute("SELECT version FROM rulesets ORDER BY loaded_at DESC LIMIT 1").fetchone()
        return row[0] if row else None

    # ---- deliveries ------------------------------------------------------------------

    def requeue_interrupted(self) -> int:
        """On start: what any process of this node was sending when it stopped is sent again,
        with what no node holds and what another node's expired lease held; another node's
        sends in flight are left to it. The instances (and groups) this node's processes had
        claimed are free again. Returns how many deliveries were queued again."""
        now = time.time()
        with self._transaction() as db:
            db.execute(f"UPDATE instances SET {_NO_LEASE} WHERE state=? AND lease_owner=?", (ACCEPTED, self.node))
            db.execute(f"UPDATE groups SET {_NO_LEASE} WHERE state=? AND lease_owner=?", (OPEN, self.node))
            return db.execute(f"UPDATE deliveries SET state=?, updated_at=?, {_NO_LEASE} WHERE state=? AND "
                              "(lease_owner IS NULL OR lease_owner=? OR lease_expires < ?)",
                              (QUEUED, now, SENDING, self.node, now)).rowcount

    def requeue_process(self, process: int, now: float | None = None) -> tuple[int, int]:
        """A process of this node ended unexpectedly (its supervisor knows it is gone): what it
        was sending is sent again, its sync deliveries too, and the instances (and groups) it had
        claimed are free, at once, without waiting for their leases to expire. Nobody else's claims are
        touched. Returns (deliveries queued again, instances freed)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            instances = db.execute(f"UPDATE instances SET {_NO_LEASE} WHERE state=? AND {_MINE}",
                                   (ACCEPTED, self.node, process)).rowcount
            db.execute(f"UPDATE groups SET {_NO_LEASE} WHERE state=? AND {_MINE}", (OPEN, self.node, process))
            deliveries = db.execute(f"UPDATE deliveries SET state=?, updated_at=?, {_NO_LEASE} WHERE state=? AND "
                                    f"{_MINE}", (QUEUED, now, SENDING, self.node, process)).rowcount
        return deliveries, instances

    def claim(self, destination: str, limit: int, now: float | None = None, ordered: bool = False,
              closed_windows: Iterable[str] = ()) -> list[Delivery]:
        """The next due deliveries of a destination, in order, marked sending and leased to
        this process until `now + lease_seconds`; none while the destination is paused.
        `ordered` (a destination that promises order, sent by one process at a time): in the
        order the instances were received, never past an instance still to be processed,
        whose deliveries may come before those already queued, nor past a delivery another
        process was sending when it lost the destination (it died: its lease expires, and the
        delivery comes back to the queue, still first).

        Urgent deliveries (priority 1) come first, in that same order among themselves; those
        waiting for a window of `closed_windows` stay where they are, untouched."""
        now = time.time() if now is None else now
        waiting, closed = _window_filter(closed_windows)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM pauses WHERE destination=? AND until > ?", (destination, now)).fetchone():
                return []
            if ordered:
                # The due rows (deliveries_due), sorted: never a walk of the destination's history.
                query = (f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination=? AND state IN (?, ?) "
                         f"AND next_attempt_at <= ?{waiting} AND instance_id < (SELECT COALESCE(MIN(id), "
                         f"{_NO_INSTANCE}) FROM instances WHERE state=?) AND instance_id < (SELECT "
                         f"COALESCE(MIN(instance_id), {_NO_INSTANCE}) FROM deliveries WHERE destination=? AND "
                         f"state=? AND lease_expires IS NOT NULL AND NOT ({_MINE})) "
                         f"ORDER BY priority DESC, instance_id, id LIMIT ?{self._CLAIM_LOCK}")
                args: tuple = (destination, QUEUED, RETRYING, now, *closed, ACCEPTED, destination, SENDING,
                               self.node, self.process, limit)
            else:
                query = (f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE destination=? AND state IN (?, ?) "
                         f"AND next_attempt_at <= ?{waiting} ORDER BY priority DESC, id LIMIT ?{self._CLAIM_LOCK}")
                args = (destination, QUEUED, RETRYING, now, *closed, limit)
            rows = db.execute(query, args).fetchall()
            if rows:  # one statement (see the module's docstring)
                db.execute("UPDATE deliveries SET state=?, updated_at=?, lease_owner=?, lease_process=?, "
                           f"lease_expires=? WHERE id IN ({','.join('?' * len(rows))})",
                           (SENDING, now, self.node, self.process, now + self.lease_seconds,
                            *(row["id"] for row in rows)))
        return [replace(Delivery.from_row(row), state=SENDING) for row in rows]

    def renew_leases(self, deliveries: Iterable[Delivery], now: float | None = None) -> int:
        """This process still sends these: their leases run `lease_seconds` from now again.
        Returns how many it still held (one that expired and went back to the queue is not
        taken back)."""
        return self._renew("deliveries", [delivery.id for delivery in deliveries], SENDING, now,
                           " AND lease_expires IS NOT NULL")

    def _renew(self, table: str, ids: list[int], state: str, now: float | None, condition: str = "") -> int:
        """The leases this process holds on these rows of `table` (in `state`) run `lease_seconds`
        from `now` again; how many it still held."""
        if not ids:
            return 0
        now = time.time() if now is None else now
        with self._transaction() as db:
            return db.execute(f"UPDATE {table} SET lease_expires=? WHERE id IN ({','.join('?' * len(ids))}) "
                              f"AND state=? AND {_MINE}{condition}",
                              (now + self.lease_seconds, *ids, state, self.node, self.process)).rowcount

    def requeue_expired(self, now: float | None = None) -> int:
        """Deliveries whose lease expired, whichever node held them (it died, or lost the
        database): back in the queue, for any node to send. Read from the lease index alone."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            return db.execute(f"UPDATE deliveries SET state=?, updated_at=?, {_NO_LEASE} WHERE lease_expires < ? "
                              "AND state=?", (QUEUED, now, now, SENDING)).rowcount

    def lease(self, delivery_id: int) -> Lease | None:
        """Who holds a delivery and until when; None when no process holds it."""
        row = self._connection().execute("SELECT lease_owner, lease_expires, lease_process FROM deliveries "
                                         "WHERE id=?", (delivery_id,)).fetchone()
        return Lease(row[0], row[1], row[2]) if row and row[0] is not None else None

    def delivery(self, delivery_id: int) -> Delivery | None:
        row = self._connection().execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id=?",
                                         (delivery_id,)).fetchone()
        return Delivery.from_row(row) if row else None

    def next_due(self, destination: str, closed_windows: Iterable[str] = ()) -> float | None:
        """When something of the destination's queue is due next; None when nothing waits
        (what waits for a window of `closed_windows` is not counted: see claim)."""
        waiting, closed = _window_filter(closed_windows)
        row = self._connection().execute(
            f"SELECT MIN(next_attempt_at) FROM deliveries WHERE destination=? AND state IN (?, ?){waiting}",
            (destination, QUEUED, RETRYING, *closed)).fetchone()
        return None if row[0] is None else max(row[0], self.postponed_until(destination, now=0.0))

    def delivered(self, delivery: Delivery, started: float, detail: str | None = None) -> None:
        """Record a delivery made. One another node had taken over meanwhile (this node's lease
        expired) is delivered all the same: the instance arrived; it is counted once."""
        now = time.time()
        with self._transaction() as db:
            changed = db.execute("UPDATE deliveries SET state=?, attempts=attempts+1, updated_at=?, delivered_at=?, "
                                 f"last_error=NULL, {_NO_LEASE} WHERE id=? AND state<>?",
                                 (DELIVERED, now, now, delivery.id, DELIVERED)).rowcount
            db.execute("INSERT INTO attempts (delivery_id, started_at, finished_at, ok, detail) VALUES (?,?,?,1,?)",
                       (delivery.id, started, now, detail))
            if changed:
                # from its arrival; a replayed instance's from its replay (it keeps its original's arrival time)
                received = db.execute("SELECT COALESCE(r.created_at, i.received_at) FROM instances i LEFT JOIN "
                                      "replays r ON r.id = i.replay_id WHERE i.id=?", (delivery.instance_id,)).fetchone()
                latency = latency_counts(delivery.destination, max(0.0, now - received[0])) if received else ()
                _count(db, ("deliveries_delivered", delivery.destination, 1), *latency)

    def failed(self, delivery: Delivery, started: float, error: str, retry_at: float | None,
               keep_file: bool = True) -> DeliveryState:
        """Record a failed attempt: retrying until `retry_at`, or dead when it is None (with
        `keep_file=False`, dead for good: the file is gone and `retry` leaves it alone)."""
        now = time.time()
        state = DEAD if retry_at is None else RETRYING
        with self._transaction() as db:
            # Only while this process still sends it: once its lease expired, another process may
            # have taken it over (and delivered it), and a late failure here must not undo that.
            changed = db.execute(
                "UPDATE deliveries SET state=?, attempts=attempts+1, next_attempt_at=?, last_error=?, "
                f"updated_at=?, path=CASE WHEN ? THEN path ELSE NULL END, {_NO_LEASE} WHERE id=? AND state=? "
                f"AND ({_MINE} OR lease_owner IS NULL)",
                (state, retry_at or now, error, now, keep_file, delivery.id, SENDING, self.node,
                 self.process)).rowcount
            db.execute("INSERT INTO attempts (delivery_id, started_at, finished_at, ok, detail) VALUES (?,?,?,0,?)",
                       (delivery.id, started, now, error))
            _count(db, ("delivery_attempts_failed", delivery.destination, 1),
                   *((("deliveries_dead", delivery.destination, 1),) if changed and state == DEAD else ()))
            if not changed:
                row = db.execute("SELECT state FROM deliveries WHERE id=?", (delivery.id,)).fetchone()
                return DeliveryState(row[0]) if row else state
        return state

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """Claimed but not attempted (a connection failed first): back in the queue, untouched.
        Only what this process still holds: another's claim of them (this one's lease expired) stands."""
        ids = [delivery.id for delivery in deliveries]
        if not ids:
            return
        with self._transaction() as db:  # one statement (see the module's docstring)
            db.execute(f"UPDATE deliveries SET state=CASE WHEN attempts > 0 THEN ? ELSE ? END, updated_at=?, {_NO_LEASE} "
                       f"WHERE id IN ({','.join('?' * len(ids))}) AND state=? AND {_MINE}",
                       (RETRYING, QUEUED, time.time(), *ids, SENDING, self.node, self.process))

    def postpone(self, destination: str, until: float) -> None:
        """A destination is unreachable: nothing of it is claimed before `until`."""
        with self._transaction() as db:
            db.execute("INSERT INTO pauses (destination, until) VALUES (?, ?) ON CONFLICT (destination) "
                       f"DO UPDATE SET until={self._GREATEST}(pauses.until, excluded.until)", (destination, until))

    def postponed_until(self, destination: str, now: float | None = None) -> float:
        """When the destination's pause ends; 0 if it is not paused."""
        now = time.time() if now is None else now
        row = self._connection().execute("SELECT until FROM pauses WHERE destination=? AND until > ?",
                                         (destination, now)).fetchone()
        return row[0] if row else 0.0

    def resume(self, destination: str, now: float | None = None) -> int:
        """A changed destination starts afresh: its pause ends, and what waits for a retry is
        due now. Returns how many deliveries were waiting."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute("DELETE FROM pauses WHERE destination=?", (destination,))
            return db.execute("UPDATE deliveries SET next_attempt_at=? WHERE destination=? AND state IN (?, ?) "
                              "AND next_attempt_at > ?", (now, destination, QUEUED, RETRYING, now)).rowcount

    def path_in_use(self, path: str) -> bool:
        """Does a delivery that is not finished, an unprocessed instance, or a retained one, still need this file?"""
        db = self._connection()
        row = db.execute("SELECT 1 FROM deliveries WHERE path=? AND state NOT IN (?) LIMIT 1",
                         (path, DELIVERED)).fetchone()
        if row:
            return True
        if db.execute("SELECT 1 FROM instances WHERE path=? AND state=? LIMIT 1", (path, ACCEPTED)).fetchone():
            return True
        # a retained instance's file (read from the index of retained paths alone)
        if db.execute("SELECT 1 FROM instances WHERE path=? AND retained_until IS NOT NULL LIMIT 1", (path,)).fetchone():
            return True
        # an instance an open group holds
        return db.execute(f"SELECT 1 FROM ({_HELD_PATHS}) AS held WHERE path=? LIMIT 1", (OPEN, path)).fetchone() is not None

    def paths_in_use(self) -> set[str]:
        db = self._connection()
        paths = {r[0] for r in db.execute("SELECT DISTINCT path FROM deliveries WHERE state != ? AND path IS NOT "
                                          "NULL", (DELIVERED,))}
        paths |= {r[0] for r in db.execute("SELECT path FROM instances WHERE state=? AND path IS NOT NULL",
                                           (ACCEPTED,))}
        paths |= {r[0] for r in db.execute("SELECT path FROM instances WHERE retained_until IS NOT NULL AND path "
                                           "IS NOT NULL")}
        paths |= {r[0] for r in db.execute(_HELD_PATHS, (OPEN,))}
        return paths

    # ---- retention (retention.delivered) ----------------------------------------------------

    def retain(self, instance_id: int, until: float, path: str | None = None) -> None:
        """Keep the instance's spool file, as received, until `until` (a later time already
        recorded stands): path_in_use names it meanwhile, so nothing removes it but the cleanup.
        `path`: where the file is now (sync mode moves it into the spool to keep it)."""
        moved, args = ("path=?, ", (path,)) if path is not None else ("", ())
        self._connection().execute(
            f"UPDATE instances SET {moved}retained_until={self._GREATEST}(COALESCE(retained_until, ?), ?) WHERE id=?",
            (*args, until, until, instance_id))

    def extend_retention(self, instance_id: int, until: float) -> bool:
        """A delivery of a retained instance ended: its retention runs until `until` once none
        of its deliveries is left to send (queued, sending, retrying). True when extended."""
        return self._connection().execute(
            f"UPDATE instances SET retained_until={self._GREATEST}(retained_until, ?) WHERE id=? AND "
            "retained_until IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id=? AND "
            "d.state IN (?, ?, ?))", (until, instance_id, instance_id, QUEUED, SENDING, RETRYING)).rowcount > 0

    def retained_instances(self, received_from: float | None = None, received_to: float | None = None,
                           after: int = 0, limit: int = 1000) -> list[Instance]:
        """Retained instances numbered above `after`, oldest first, received_from <= received_at
        < received_to when given: what a replay finds. Instances as received only: one queued
        by a replay (replay_of) keeps its original's arrival time, and would be replayed twice."""
        query = "SELECT * FROM instances WHERE retained_until IS NOT NULL AND replay_of IS NULL AND id > ?"
        args: list = [after]
        for condition, value in (("received_at >= ?", received_from), ("received_at < ?", received_to)):
            if value is not None:
                query += f" AND {condition}"
                args.append(value)
        args.append(max(0, int(limit)))
        return [Instance.from_row(row) for row in self._connection().execute(query + " ORDER BY id LIMIT ?", args)]

    def expired_retentions(self, now: float, limit: int = 1000) -> list[RetainedFile]:
        """Retained instances whose retention ended before `now`, the longest ended first (read
        from the retention index alone), each with whether a delivery still names its file."""
        return [RetainedFile(row[0], row[1], row[2], row[3], bool(row[4])) for row in self._connection().execute(
            "SELECT id, path, received_at, retained_until, EXISTS (SELECT 1 FROM deliveries d WHERE "
            "d.path = instances.path AND d.state <> ?) FROM instances WHERE retained_until IS NOT NULL AND "
            "retained_until < ? ORDER BY retained_until LIMIT ?", (DELIVERED, now, max(0, int(limit))))]

    def retained_count(self) -> int:
        """How many instances are retained now."""
        return int(self._connection().execute(
            "SELECT COUNT(*) FROM instances WHERE retained_until IS NOT NULL").fetchone()[0])

    def end_retention(self, instance_ids: Iterable[int]) -> int:
        """The retention of these instances is over (their file removed, or left to the delivery
        that still names it); returns how many were retained."""
        ids = list(instance_ids)
        if not ids:
            return 0
        with self._transaction() as db:
            return db.execute(f"UPDATE instances SET retained_until=NULL WHERE id IN ({','.join('?' * len(ids))}) "
                              "AND retained_until IS NOT NULL", ids).rowcount

    # ---- replays (`dicom-rules replay`) ------------------------------------------------------

    def keep_ruleset(self, version: str, sources: dict[str, bytes]) -> None:
        """The files of a rule set version that instances are to be processed with (a replay's
        rule file), without putting it in place: latest_ruleset never names it for this."""
        with self._transaction() as db:
            db.executemany("INSERT INTO ruleset_files (version, position, path, data) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                           [(version, position, path, data) for position, (path, data) in enumerate(sources.items())])

    def record_replay(self, replay: NewReplay, instances: Iterable[ReplayedInstance], now: float | None = None) -> int:
        """A replay and its instances, at once: each a new accepted instance with its original's
        arrival (time included: the rules see what they saw), its file's new name, the replay's
        rule set version, and whose replay it is; any process claims them as it claims what
        arrives. Counted as no instance received. Returns the replay's number (never reused)."""
        items = list(instances)
        undecided = Outcome(replay.rules_version, None, None, (), ()).to_row()
        with self._transaction() as db:
            replay_id = self._insert(db, "replays", {
                "created_at": time.time() if now is None else now, "requested_by": replay.requested_by,
                "rules_version": replay.rules_version, "rules_file": replay.rules_file,
                "received_from": replay.received_from, "received_to": replay.received_to,
                "instances": len(items), "missing": replay.missing})
            rows = [{"received_at": item.original.received_at, **item.original.arrival.to_row(), "path": item.path,
                     "state": ACCEPTED, **undecided, "checked": item.original.checked, "replay_id": replay_id,
                     "replay_of": item.original.id} for item in items]
            if rows:
                columns = list(rows[0])
                db.executemany(f"INSERT INTO instances ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               [tuple(row[column] for column in columns) for row in rows])
        return replay_id

    def replays(self, limit: int = 50, before_id: int | None = None) -> list[Replay]:
        """The latest replays, newest first (numbered below `before_id` when given), each with
        how far the router got: its instances waiting, processed by outcome, their deliveries by state."""
        with self._reading() as db:
            query, args = "SELECT * FROM replays", []
            if before_id is not None:
                query += " WHERE id < ?"
                args.append(before_id)
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, max(0, int(limit)))).fetchall()
            replays = {row["id"]: Replay.from_row(row) for row in rows}
            if not replays:
                return []
            ids = list(replays)
            marks = ",".join("?" * len(ids))
            waiting: dict[int, int] = {}
            outcomes: dict[int, dict[str, int]] = {}
            for replay_id, state, outcome, count in db.execute(
                    f"SELECT replay_id, state, outcome, COUNT(*) FROM instances WHERE replay_id IN ({marks}) "
                    "GROUP BY replay_id, state, outcome", ids).fetchall():
                if state == ACCEPTED:
                    waiting[replay_id] = waiting.get(replay_id, 0) + count
                else:
                    kept = outcomes.setdefault(replay_id, {})
                    kept[outcome or "?"] = kept.get(outcome or "?", 0) + count
            deliveries: dict[int, dict[str, int]] = {}
            for replay_id, state, count in db.execute(
                    f"SELECT i.replay_id, d.state, COUNT(*) FROM deliveries d JOIN instances i ON i.id = d.instance_id "
                    f"WHERE i.replay_id IN ({marks}) GROUP BY i.replay_id, d.state", ids).fetchall():
                deliveries.setdefault(replay_id, {})[str(state)] = count
        return [replace(replay, waiting=waiting.get(replay.id, 0), outcomes=outcomes.get(replay.id, {}),
                        deliveries=deliveries.get(replay.id, {})) for replay in replays.values()]

    def replayed_instances(self, replay_id: int, after: int = 0, limit: int = 1000) -> list[tuple[int, Instance]]:
        """A replay's instances numbered above `after`, oldest first, each with the number of the
        instance it replays (read from the index of replayed instances alone)."""
        rows = self._connection().execute(
            "SELECT * FROM instances WHERE replay_id=? AND id > ? ORDER BY id LIMIT ?",
            (replay_id, after, max(0, int(limit)))).fetchall()
        return [(row["replay_of"], Instance.from_row(row)) for row in rows]

    # ---- groups (group rules: per series, per study) --------------------------------------------

    def join_group(self, rule: str, ruleset_version: str | None, level: str, study_uid: str, series_uid: str | None,
                   instance_id: int, quiet_seconds: float, now: float | None = None,
                   header: str | None = None) -> GroupJoin:
        """The instance joins its group of `rule` (opened by its first instance, whose rule set
        version it keeps): an open group's timer starts again, due `quiet_seconds` after this
        arrival. One statement for the group and one for the member, in one transaction. A
        fired group is left as it is: the instance is late, unless it was a member before.
        `header`: what the group's rules read of the instance (groups.py), kept with the member."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "INSERT INTO groups (rule, ruleset_version, level, study_uid, series_uid, state, first_arrival, "
                "last_arrival, due_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (rule, study_uid, series_uid) DO UPDATE SET "
                f"last_arrival=CASE WHEN groups.state=? THEN {self._GREATEST}(groups.last_arrival, excluded.last_arrival) "
                "ELSE groups.last_arrival END, "
                f"due_at=CASE WHEN groups.state=? THEN {self._GREATEST}(groups.due_at, excluded.due_at) "
                f"ELSE groups.due_at END RETURNING {_GROUP_COLUMNS}",
                (rule, ruleset_version, level, study_uid, series_uid or "", OPEN, now, now, now + quiet_seconds,
                 OPEN, OPEN)).fetchone()
            group = Group.from_row(row)
            joined = db.execute("INSERT INTO group_members (group_id, instance_id, arrived_at, member_header) "
                                "VALUES (?,?,?,?) ON CONFLICT (group_id, instance_id) DO NOTHING",
                                (group.id, instance_id, now, header)).rowcount
        return GroupJoin(group, group.state == FIRED and joined > 0)

    def groups_of(self, instance_id: int) -> list[Group]:
        """The groups an instance joined, oldest first."""
        return [Group.from_row(row) for row in self._connection().execute(
            f"SELECT {', '.join('g.' + name for name in _GROUP_COLUMNS.split(', '))} FROM groups g JOIN group_members m "
            "ON m.group_id = g.id WHERE m.instance_id=? ORDER BY g.id", (instance_id,))]

    def group(self, group_id: int) -> Group | None:
        row = self._connection().execute(f"SELECT {_GROUP_COLUMNS}, (SELECT COUNT(*) FROM group_members m WHERE "
                                         "m.group_id = groups.id) AS members FROM groups WHERE id=?",
                                         (group_id,)).fetchone()
        return Group.from_row(row) if row else None

    def group_members(self, group_id: int) -> list[Instance]:
        """The instances of a group, in the order they joined it (the rule puts them in group
        order); those the journal forgot since (purged) are left out."""
        return [Instance.from_row(row) for row in self._connection().execute(
            "SELECT i.* FROM group_members m JOIN instances i ON i.id = m.instance_id WHERE m.group_id=? "
            "ORDER BY m.arrived_at, m.instance_id", (group_id,))]

    def group_member_ids(self, group_id: int) -> list[int]:
        """The ids of a group's members, in the order they joined it (members the journal
        forgot since included)."""
        return [int(row[0]) for row in self._connection().execute(
            "SELECT instance_id FROM group_members WHERE group_id=? ORDER BY arrived_at, instance_id", (group_id,))]

    def group_member_headers(self, group_id: int, instance_ids: Iterable[int]) -> dict[int, str | None]:
        """The headers these members' rules read, as kept when they joined (None: none was)."""
        ids = list(instance_ids)
        found: dict[int, str | None] = {}
        for start in range(0, len(ids), 500):  # a bounded statement, however large the group
            part = ids[start:start + 500]
            found.update((int(row[0]), row[1]) for row in self._connection().execute(
                f"SELECT instance_id, member_header FROM group_members WHERE group_id=? AND instance_id IN "
                f"({','.join('?' * len(part))})", (group_id, *part)))
        return found

    def due_groups(self, now: float | None = None, limit: int = 100) -> list[Group]:
        """Open groups whose timer ran out (`due_at <= now`) and that no process is firing (or
        whose firing process's lease expired), the oldest due first."""
        now = time.time() if now is None else now
        return [Group.from_row(row) for row in self._connection().execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE state=? AND due_at<=? AND (lease_expires IS NULL OR "
            "lease_expires<?) ORDER BY due_at, id LIMIT ?", (OPEN, now, now, max(0, int(limit))))]

    def claim_due_groups(self, limit: int, now: float | None = None) -> list[Group]:
        """Due groups (as due_groups), leased to this process for `lease_seconds`: it alone fires
        them; one that dies loses them when the lease expires, and another process fires them."""
        now = time.time() if now is None else now
        if not self.due_groups(now, 1):  # asked at every round: a read answers when nothing is due
            return []
        with self._transaction() as db:
            rows = db.execute(f"SELECT {_GROUP_COLUMNS} FROM groups WHERE state=? AND due_at<=? AND (lease_expires "
                              f"IS NULL OR lease_expires<?) ORDER BY due_at, id LIMIT ?{self._CLAIM_LOCK}",
                              (OPEN, now, now, max(0, int(limit)))).fetchall()
            self._lease_groups(db, [row["id"] for row in rows], now)
        return [self._leased(Group.from_row(row), now) for row in rows]

    def claim_group(self, group_id: int, now: float | None = None) -> Group | None:
        """This open group, leased to this process whether due or not (its `complete when`
        holds); None when it fired already or another process is firing it."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(f"SELECT {_GROUP_COLUMNS} FROM groups WHERE id=? AND state=? AND (lease_expires IS NULL "
                             f"OR lease_expires<?){self._CLAIM_LOCK}", (group_id, OPEN, now)).fetchone()
            if row is not None:
                self._lease_groups(db, [group_id], now)
        return self._leased(Group.from_row(row), now) if row is not None else None

    def _lease_groups(self, db: Any, ids: list[int], now: float) -> None:
        if ids:
            db.execute(f"UPDATE groups SET lease_owner=?, lease_process=?, lease_expires=? "
                       f"WHERE id IN ({','.join('?' * len(ids))})",
                       (self.node, self.process, now + self.lease_seconds, *ids))

    def _leased(self, group: Group, now: float) -> Group:
        return replace(group, lease_owner=self.node, lease_process=self.process,
                       lease_expires=now + self.lease_seconds)

    def renew_group_leases(self, group_ids: Iterable[int], now: float | None = None) -> int:
        """This process is still firing these groups: their leases run `lease_seconds` from
        `now` again. Returns how many it still held."""
        return self._renew("groups", list(group_ids), OPEN, now)

    def release_groups(self, group_ids: Iterable[int]) -> int:
        """Claimed and not fired (an error; tried again at a later round): free for any process."""
        ids = list(group_ids)
        if not ids:
            return 0
        with self._transaction() as db:
            return db.execute(f"UPDATE groups SET {_NO_LEASE} WHERE id IN ({','.join('?' * len(ids))}) AND state=? "
                              f"AND {_MINE}", (*ids, OPEN, self.node, self.process)).rowcount

    def fire_group(self, group_id: int, deliveries: Iterable[tuple[int, NewDelivery]],
                   members: Iterable[int] | None = None, outcomes: Mapping[int, Outcome] | None = None,
                   now: float | None = None) -> list[int]:
        """A group this process claimed fires: its deliveries ((instance, delivery), in group
        order) are queued together and the group is marked fired, in one transaction. Raises
        ClaimLost, changing nothing, when this process no longer holds it (its lease expired and
        another process took it, or fired it), and GroupChanged when an instance besides `members`
        (those the caller evaluated) joined it meanwhile: the caller evaluates it again."""
        now = time.time() if now is None else now
        evaluated = None if members is None else set(members)
        rows = [(instance_id, item.destination, item.path, item.sop_class_uid, item.sop_instance_uid,
                 item.transfer_syntax, item.priority, item.delivery_window, QUEUED, now, now)
                for instance_id, item in deliveries]
        with self._transaction() as db:
            held = db.execute(f"UPDATE groups SET state=?, fired_at=?, {_NO_LEASE} WHERE id=? AND state=? AND {_MINE}",
                              (FIRED, now, group_id, OPEN, self.node, self.process)).rowcount
            if not held:
                row = db.execute("SELECT state, lease_owner, lease_process FROM groups WHERE id=?",
                                 (group_id,)).fetchone()
                raise ClaimLost(f"group {group_id} is no longer claimed by this process" +
                                (f": {row['lease_owner']} process {row['lease_process']} has it ({row['state']})"
                                 if row else ""))
            for instance_id, outcome in (outcomes or {}).items():
                db.execute(f"UPDATE instances SET {', '.join(f'{name}=?' for name in outcome.to_row())} "
                           "WHERE id=? AND outcome=?", (*outcome.to_row().values(), instance_id, "held"))
            if evaluated is not None:
                # The group's row is locked by the update: a join waits for this commit, then finds it fired.
                joined = {int(row[0]) for row in db.execute("SELECT instance_id FROM group_members WHERE group_id=?",
                                                            (group_id,))}
                if joined - evaluated:
                    raise GroupChanged(f"group {group_id}: {len(joined - evaluated)} instance(s) joined while it fired")
            if not rows:
                return []
            # one statement (see the module's docstring); ids are given in the rows' order
            return sorted(int(row[0]) for row in db.execute(
                "INSERT INTO deliveries (instance_id, destination, path, sop_class_uid, sop_instance_uid, "
                "transfer_syntax, priority, delivery_window, state, created_at, updated_at) VALUES " +
                ",".join(["(?,?,?,?,?,?,?,?,?,?,?)"] * len(rows)) +
                " RETURNING id", [value for row in rows for value in row]).fetchall())

    def pending_groups(self, limit: int = 100) -> list[Group]:
        """Open groups, the next due first, each with how many instances it holds."""
        return [Group.from_row(row) for row in self._connection().execute(
            f"SELECT {_GROUP_COLUMNS}, (SELECT COUNT(*) FROM group_members m WHERE m.group_id = groups.id) AS members "
            "FROM groups WHERE state=? ORDER BY due_at, id LIMIT ?", (OPEN, max(0, int(limit))))]

    # ---- for `dicom-rules queue` ---------------------------------------------------------

    def counts(self) -> dict[str, dict[DeliveryState, int]]:
        out: dict[str, dict[DeliveryState, int]] = {}
        for row in self._connection().execute("SELECT destination, state, count FROM delivery_counts WHERE count > 0"):
            out.setdefault(row[0], {})[DeliveryState(row[1])] = row[2]
        return out

    def deliveries(self, states: Iterable[DeliveryState] = tuple(DeliveryState), destination: str | None = None,
                   limit: int = 100) -> list[ListedDelivery]:
        return self.deliveries_page(states, destination, None, limit)

    def retry_dead(self, destination: str | None = None, ids: Iterable[int] = ()) -> int:
        """Dead deliveries back in the queue, with their attempts counted from zero."""
        query = ("UPDATE deliveries SET state=?, attempts=0, next_attempt_at=0, updated_at=? WHERE state=? "
                 "AND path IS NOT NULL")
        args: list = [QUEUED, time.time(), DEAD]
        if destination:
            query += " AND destination=?"
            args.append(destination)
        ids = tuple(ids)
        if ids:
            query += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(ids)
        with self._transaction() as db:
            return db.execute(query, args).rowcount

    def purge_instances(self, older_than: float | None = None) -> int:
        """Forget instances that are finished and have no delivery left in the journal (a retained
        one stays until its retention ends: the cleanup needs its entry to remove its file; one an
        open group holds stays until the group fires)."""
        query = ("DELETE FROM instances WHERE state IN (?, ?) AND retained_until IS NULL AND NOT EXISTS (SELECT 1 "
                 "FROM deliveries d WHERE d.instance_id = instances.id) AND NOT EXISTS (SELECT 1 FROM group_members m "
                 "JOIN groups g ON g.id = m.group_id WHERE m.instance_id = instances.id AND g.state=?)")
        args: list = [DONE, PROCESSED, OPEN]
        if older_than is not None:
            query += " AND COALESCE(processed_at, received_at) < ?"
            args.append(older_than)
        with self._transaction() as db:
            return db.execute(query, args).rowcount

    def purge(self, states: Iterable[DeliveryState], older_than: float | None = None,
              destination: str | None = None) -> list[str]:
        """Forget deliveries in these states (the caller decides which may go); returns the files
        they named, which may no longer be needed."""
        states = tuple(states)
        query = f"FROM deliveries WHERE state IN ({','.join('?' * len(states))})"
        args: list = list(states)
        if destination is not None:
            query += " AND destination = ?"
            args.append(destination)
        if older_than is not None:
            query += " AND updated_at < ?"
            args.append(older_than)
        with self._transaction() as db:
            paths = [r[0] for r in db.execute(f"SELECT DISTINCT path {query}", args) if r[0]]
            db.execute(f"DELETE FROM attempts WHERE delivery_id IN (SELECT id {query})", args)
            db.execute(f"DELETE {query}", args)
        return paths

    def attempts(self, delivery_id: int) -> list[Attempt]:
        return [Attempt.from_row(row) for row in self._connection().execute(
            "SELECT * FROM attempts WHERE delivery_id=? ORDER BY id", (delivery_id,))]

    # ---- requests -----------------------------------------------------------------------

    def record_request(self, request: NewRequest, now: float | None = None) -> int:
        """A request as it arrives; returns its number."""
        columns = {"received_at": time.time() if now is None else now, "message": request.message,
                   **request.arrival.to_row(header=False), "level": request.level,
                   "matching_keys": json.dumps(dict(request.matching_keys)),
                   "move_destination": request.move_destination}
        # One statement, its own transaction: a request waits for one call into the database, not three.
        return self._insert(self._connection(), "requests", columns)

    def finish_request(self, request_id: int, result: RequestResult, now: float | None = None) -> None:
        """How the request ended: the final status answered, the destinations' answers, the counts."""
        columns = {"finished_at": time.time() if now is None else now, **result.to_row()}
        self._connection().execute(f"UPDATE requests SET {', '.join(f'{name}=?' for name in columns)} WHERE id=?",
                                   (*columns.values(), request_id))

    def request(self, request_id: int) -> Request | None:
        row = self._connection().execute("SELECT * FROM requests WHERE id=?", (request_id,)).fetchone()
        return Request.from_row(row) if row else None

    def requests(self, messages: Iterable[str] = (), limit: int = 100, *, calling_aet: str | None = None,
                 received_from: float | None = None, received_to: float | None = None,
                 before_id: int | None = None) -> list[Request]:
        """The latest requests, newest first, matching every filter given: these messages, this
        calling AE, received_from <= received_at < received_to; the next page starts before the
        last id of this one (`before_id`)."""
        messages = tuple(messages)
        where, args = [], []
        if messages:
            where.append(f"message IN ({','.join('?' * len(messages))})")
            args += messages
        for condition, value in (("calling_aet=?", calling_aet), ("received_at>=?", received_from),
                                 ("received_at<?", received_to), ("id<?", before_id)):
            if value is not None:
                where.append(condition)
                args.append(value)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return [Request.from_row(row) for row in self._connection().execute(
            f"SELECT * FROM requests {clause}ORDER BY id DESC LIMIT ?", (*args, limit))]

    def purge_requests(self, older_than: float | None = None) -> int:
        """Forget finished requests (received before `older_than`, when given); returns how many."""
        query = "DELETE FROM requests WHERE finished_at IS NOT NULL"
        args: list = []
        if older_than is not None:
            query += " AND received_at < ?"
            args.append(older_than)
        with self._transaction() as db:
            return db.execute(query, args).rowcount

    # ---- for the operations console -----------------------------------------------------------

    def search_instances(self, *, patient_id: str | None = None, accession_number: str | None = None,
                         study_instance_uid: str | None = None, series_instance_uid: str | None = None,
                         sop_instance_uid: str | None = None, calling_aet: str | None = None,
                         source_name: str | None = None, outcome: str | None = None,
                         received_from: float | None = None, received_to: float | None = None,
                         before_id: int | None = None, limit: int = 50) -> list[Instance]:
        """Instances matching every filter given (exact values; received_from <= received_at <
        received_to), newest first, at most `limit`, without their trace; the next page starts
        before the last id of this one (`before_id`)."""
        query, args = search_query(
            unindexed=self._UNINDEXED, least=self._LEAST, patient_id=patient_id, accession_number=accession_number, study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid, calling_aet=calling_aet,
            source_name=source_name, outcome=outcome, received_from=received_from, received_to=received_to,
            before_id=before_id, limit=limit)
        return [Instance.from_row(row) for row in self._connection().execute(query, args)]

    def trace(self, instance_id: int) -> InstanceTrace | None:
        """An instance with its trace, its deliveries and each one's attempts (read in one
        transaction: a consistent picture while the router works on)."""
        with self._reading() as db:
            row = db.execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
            if row is None:
                return None
            deliveries = db.execute(TRACE_DELIVERIES, (instance_id,)).fetchall()
            attempts: dict[int, list[Attempt]] = {}
            for attempt in db.execute(TRACE_ATTEMPTS, (instance_id,)).fetchall():
                attempts.setdefault(attempt["delivery_id"], []).append(Attempt.from_row(attempt))
        try:
            trace = json.loads(row["trace"]) if row["trace"] else None
        except ValueError:
            trace = None
        return InstanceTrace(Instance.from_row(row), trace, tuple(
            DeliveryTrace(Delivery.from_row(item), item["created_at"], item["updated_at"], item["delivered_at"],
                          tuple(attempts.get(item["id"], ()))) for item in deliveries))

    def counters(self) -> list[Counter]:
        """Every counter, by name and label. They only grow, whatever is purged:
        instances_received (label: the source's name, else its kind), instances_outcome (route,
        drop, quarantine, reject: counted once, when decided), deliveries_delivered,
        delivery_attempts_failed, deliveries_dead (label: the destination), and the delivery
        latency from received to delivered: delivery_latency_seconds_bucket (label
        "DESTINATION:BOUND", each bucket counting the deliveries above the bound before it: not
        cumulative), delivery_latency_seconds_sum and _count (label: the destination), and reloads (label: ok,
        failed)."""
        return [Counter(*row) for row in self._connection().execute(
            "SELECT name, label, value FROM counters ORDER BY name, label")]

    def count_reload(self, ok: bool) -> None:
        """A reload of the rules or the configuration, in place (ok) or refused (failed)."""
        with self._transaction() as db:
            _count(db, ("reloads", "ok" if ok else "failed", 1))

    def activity(self, start: float, bucket_seconds: float, buckets: int) -> list[tuple[float, int, int]]:
        """Instances received and deliveries delivered in each of `buckets` spans of
        `bucket_seconds` from `start`: (span start, received, delivered). Two index ranges (on
        received_at, and on delivered_at of the deliveries delivered), however large the journal."""
        end = start + bucket_seconds * buckets
        counts = {slot: [0, 0] for slot in range(buckets)}
        with self._reading() as db:
            for column, (table, time_column) in enumerate((("instances", "received_at"),
                                                           ("deliveries", "delivered_at"))):
                query = (f"SELECT {self._SLOT.format(column=time_column)} AS slot, COUNT(*) FROM {table} "
                         f"WHERE {time_column} >= ? AND {time_column} < ? GROUP BY slot")
                for slot, count in db.execute(query, (start, bucket_seconds, start, end)).fetchall():
                    if slot in counts:
                        counts[slot][column] = count
        return [(start + slot * bucket_seconds, received, delivered)
                for slot, (received, delivered) in sorted(counts.items())]

    def write_status(self, node: str, status: dict, now: float | None = None) -> None:
        """What the router on `node` says of itself now (replacing what it said before)."""
        self._connection().execute(
            "INSERT INTO router_status (node, updated_at, status) VALUES (?,?,?) ON CONFLICT (node) DO UPDATE SET "
            "updated_at=excluded.updated_at, status=excluded.status",
            (node, time.time() if now is None else now, json.dumps(status, default=str)))

    def statuses(self) -> list[RouterStatus]:
        """What each router said of itself last, the latest first."""
        return [RouterStatus(row[0], row[1], json.loads(row[2])) for row in self._connection().execute(
            "SELECT node, updated_at, status FROM router_status ORDER BY updated_at DESC")]
    # ---- the console's audit log ----------------------------------------------------------

    def record_audit(self, user: str, action: str, target: str | None, result: str,
                     now: float | None = None) -> int:
        """One action of a console user (a login too, failed or not); returns its number."""
        return self._insert(self._connection(), "audit", {"at": time.time() if now is None else now,
                                                          '"user"': user, "action": action, "target": target,
                                                          "result": result})

    def audit_log(self, limit: int = 100) -> list[dict]:
        """The latest audit rows, newest first: id, at, user, action, target, result."""
        return [dict(row) for row in self._connection().execute(
            "SELECT id, at, \"user\", action, target, result FROM audit ORDER BY id DESC LIMIT ?", (limit,))]

    def deliveries_page(self, states: Iterable[DeliveryState], destination: str | None = None,
                        before_id: int | None = None, limit: int = 50) -> list[ListedDelivery]:
        """Deliveries in these states, newest first, those numbered below `before_id` (the
        next page after a page whose last row had that number)."""
        states = tuple(states)
        query = (f"SELECT d.*, i.source_name, i.calling_aet FROM deliveries d JOIN instances i ON i.id = "
                 f"d.instance_id WHERE d.state IN ({','.join('?' * len(states))})")
        args: list = list(states)
        if destination:
            query += " AND d.destination=?"
            args.append(destination)
        if before_id is not None:
            query += " AND d.id < ?"
            args.append(before_id)
        query += " ORDER BY d.id DESC LIMIT ?"
        args.append(limit)
        return [ListedDelivery.from_row(row) for row in self._connection().execute(query, args)]

    def pauses(self, now: float | None = None) -> dict[str, float]:
        """Destinations whose queue waits, with until when."""
        now = time.time() if now is None else now
        return {row[0]: row[1] for row in self._connection().execute(
            "SELECT destination, until FROM pauses WHERE until > ?", (now,))}
