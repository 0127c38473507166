"""The journal, through its interface (rulesengine.runtime.journal.Journal): instances,
deliveries and attempts.

Every test runs on each backend (the `backend` fixture: SQLite, and PostgreSQL on a server the
tests start, a schema per test): a new backend adds itself there. What only SQLite does (WAL, a
file on disk, its query plans) is tested apart (`sqlite_journal`); what only PostgreSQL does, in
test_journal_postgres.py.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from rulesengine.arrival import Arrival
from rulesengine.config import Retry
from rulesengine.runtime.journal import (
    ACCEPTED,
    DEAD,
    DELIVERED,
    DONE,
    MAX_TRACE_BYTES,
    MAX_TRACE_EDITS,
    PROCESSED,
    QUEUED,
    RETRYING,
    SENDING,
    Attempt,
    ClaimLost,
    Delivery,
    DeliveryState,
    DestinationAnswer,
    Instance,
    InstanceState,
    Journal,
    Lease,
    NewDelivery,
    NewRequest,
    Outcome,
    RequestOutcome,
    RequestResult,
    SQLiteJournal,
    trace_text,
)

ROOT = Path(__file__).resolve().parent.parent
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Backend:
    """How to open one journal: a class implementing Journal, and what it opens (a file, a
    database address); importable by name, for another process."""

    module: str
    name: str
    address: str

    def open(self, **options) -> Journal:
        return getattr(importlib.import_module(self.module), self.name)(self.address, **options)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return Backend("rulesengine.runtime.journal.sqlite", "SQLiteJournal", str(tmp_path / "journal.sqlite"))
    if request.param == "postgres":  # a schema of its own, on the tests' server
        return Backend("rulesengine.runtime.journal.postgres", "PostgresJournal",
                       request.getfixturevalue("postgres").new_schema())
    raise AssertionError(request.param)


@pytest.fixture
def journal(backend):
    opened = backend.open()
    yield opened
    opened.close()


def received(number: int = 1) -> Arrival:
    return Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40000,
                   source_name="main", source_kind="listener", sop_class_uid=CT_IMAGE,
                   sop_instance_uid=f"1.2.3.{number}")


def routed(*destinations: str) -> Outcome:
    return Outcome("v1", "route", None, ("everything",), destinations)


def new_delivery(destination: str, path: str, number: int = 1) -> NewDelivery:
    return NewDelivery(destination, path, CT_IMAGE, f"1.2.3.{number}", EXPLICIT_LE)


def queue_instance(journal: Journal, destinations=("PACS",), path: str = "/spool/in/a.dcm",
                   number: int = 1) -> list[int]:
    """An accepted instance, processed: one queued delivery per destination."""
    instance_id = journal.record(received(number), path, routed(*destinations), ACCEPTED)
    return journal.add_deliveries(instance_id, [new_delivery(name, path, number) for name in destinations])


def test_the_backend_implements_the_whole_interface(backend):
    implementation = getattr(importlib.import_module(backend.module), backend.name)
    for name, method in inspect.getmembers(Journal, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert callable(getattr(implementation, name, None)), name
        assert (list(inspect.signature(getattr(implementation, name)).parameters)
                == list(inspect.signature(method).parameters)), name


# ---- instances ------------------------------------------------------------------------------------


def test_record_keeps_the_facts_and_the_decision(journal):
    outcome = Outcome("v7", "reject", "modality not accepted: XA", ("reject unknown modality",), ())
    instance_id = journal.record(received(), None, outcome, DONE)
    row = journal.instance(instance_id)
    assert (row["source_kind"], row["source_name"], row["calling_aet"], row["called_aet"], row["peer"]) == (
        "listener", "main", "CT1", "ROUTER", "127.0.0.1:40000")
    assert (row["sop_class_uid"], row["sop_instance_uid"]) == (CT_IMAGE, "1.2.3.1")
    assert (row["state"], row["ruleset_version"], row["outcome"], row["reason"]) == (
        DONE, "v7", "reject", "modality not accepted: XA")
    assert row["rules_fired"] == '["reject unknown modality"]'
    assert row["processed_at"] is not None  # settled at once


def test_an_accepted_instance_waits_until_its_deliveries_are_added(journal):
    instance_id = journal.record(received(), "/spool/in/a.dcm", routed("PACS"), ACCEPTED)
    assert [row["id"] for row in journal.accepted_instances()] == [instance_id]
    assert journal.instance(instance_id)["processed_at"] is None

    journal.add_deliveries(instance_id, [new_delivery("PACS", "/spool/in/a.dcm")])

    assert journal.accepted_instances() == []
    row = journal.instance(instance_id)
    assert row["state"] == PROCESSED and row["processed_at"] is not None


def test_an_instance_is_recorded_before_the_rules_run(journal):
    instance_id = journal.record(received(), "/spool/in/a.dcm", None, ACCEPTED)
    row = journal.instance(instance_id)
    assert (row["state"], row["path"], row["outcome"], row["ruleset_version"]) == (
        ACCEPTED, "/spool/in/a.dcm", None, None)
    assert row["rules_fired"] == "[]" and row["destinations"] == "[]"
    assert row["processed_at"] is None


def test_settle_finishes_an_accepted_instance_that_needs_no_delivery(journal):
    kept = journal.record(received(1), "/spool/in/a.dcm", None, ACCEPTED)
    dropped = journal.record(received(2), "/spool/in/b.dcm", None, ACCEPTED)

    journal.settle(kept, Outcome("v3", "quarantine", "no PatientID", ("hold",), ()), "/quarantine/d/1.2.3.1.dcm")
    journal.settle(dropped, Outcome("v3", "drop", None, ("drop tests",), ()), None)

    assert journal.accepted_instances() == []
    row = journal.instance(kept)
    assert (row["state"], row["outcome"], row["reason"], row["path"], row["ruleset_version"]) == (
        DONE, "quarantine", "no PatientID", "/quarantine/d/1.2.3.1.dcm", "v3")
    assert row["processed_at"] is not None
    row = journal.instance(dropped)
    assert (row["state"], row["outcome"], row["path"]) == (DONE, "drop", None)
    assert not journal.path_in_use("/spool/in/a.dcm") and not journal.path_in_use("/spool/in/b.dcm")


def test_add_deliveries_can_replace_the_recorded_outcome(journal):
    instance_id = journal.record(received(), "/spool/in/a.dcm", routed("PACS"), ACCEPTED)
    later = Outcome("v2", "quarantine", "decided quarantine after a restart", ("hold",), ())
    journal.add_deliveries(instance_id, [], later)
    row = journal.instance(instance_id)
    assert (row["state"], row["ruleset_version"], row["outcome"], row["reason"]) == (
        PROCESSED, "v2", "quarantine", "decided quarantine after a restart")


def test_record_is_visible_at_once_to_another_process(journal, backend):
    instance_id = journal.record(received(), "/spool/in/a.dcm", routed("PACS"), ACCEPTED)
    reader = ("import importlib, sys\n"
              "journal = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(sys.argv[3])\n"
              "instance = journal.instance(int(sys.argv[4]))\n"
              "print(*((instance.state, instance.arrival.sop_instance_uid) if instance else ('missing',)))\n")
    result = subprocess.run([sys.executable, "-c", reader, backend.module, backend.name, backend.address,
                             str(instance_id)], capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [ACCEPTED, "1.2.3.1"]


def test_the_schema_is_created_once_and_reopened(journal, backend):
    ids = queue_instance(journal)
    again = backend.open()
    try:
        assert again.delivery(ids[0]).state == QUEUED
    finally:
        again.close()


def test_the_c_store_command_is_kept_with_the_arrival(journal, backend):
    command = (("CommandField", 1), ("MessageID", 9), ("Priority", 2), ("MoveOriginatorApplicationEntityTitle", "PACS"),
               ("MoveOriginatorMessageID", 4))
    arrival = replace(received(), store_command=command)
    instance_id = journal.record(arrival, "/spool/in/a.dcm", None, ACCEPTED)
    again = backend.open()  # another process (the worker), or the router after a restart
    try:
        kept = again.instance(instance_id).arrival
        assert kept.store_command == command
        assert kept.command_set().MoveOriginatorApplicationEntityTitle == "PACS"
    finally:
        again.close()


def test_a_journal_from_before_the_c_store_command_is_migrated(tmp_path):
    from rulesengine.runtime.journal import sqlite as journal_sqlite
    path = tmp_path / "old.sqlite"
    old_schema = "\n".join(line for line in journal_sqlite._SCHEMA.splitlines() if "store_command" not in line)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO instances (received_at, source_kind, calling_aet, path, state) "
                   "VALUES (1, 'listener', 'CT1', '/spool/in/old.dcm', 'accepted')")
        db.commit()
    journal = SQLiteJournal(str(path))
    try:
        assert journal.instance(1).arrival.store_command is None  # an old entry: no command known
        instance_id = journal.record(Arrival(source_kind="listener", store_command=(("Priority", 1),)), None, None,
                                     ACCEPTED)
        assert journal.instance(instance_id).arrival.store_command == (("Priority", 1),)
        journal.record_request(NewRequest("C-FIND", received(), "STUDY", {}, None))
    finally:
        journal.close()
    SQLiteJournal(str(path)).close()  # opened again: nothing left to add


def test_a_journal_from_before_leases_gets_them_and_scans_expiries_by_index(tmp_path):
    from rulesengine.runtime.journal import sqlite as journal_sqlite
    path = tmp_path / "old.sqlite"
    before_groups = journal_sqlite._SCHEMA.split("-- Group rules")[0]  # made since, with their leases
    old_schema = "\n".join(line for line in before_groups.splitlines() if "lease_" not in line)
    old_schema = old_schema.replace("delivered_at REAL,\n", "delivered_at REAL\n")
    with closing(sqlite3.connect(path)) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO instances (received_at, state) VALUES (1, 'processed')")
        db.execute("INSERT INTO deliveries (instance_id, destination, path, state, created_at, updated_at) "
                   "VALUES (1, 'PACS', '/spool/in/old.dcm', 'sending', 1, 1)")
        db.commit()
        assert "lease_owner" not in {row[1] for row in db.execute("PRAGMA table_info(deliveries)")}
    journal = SQLiteJournal(str(path), node="a")
    try:
        assert journal.lease(1) is None  # sent before leases: held by no node
        assert journal.requeue_process(journal.process) == (0, 0)  # not a claim of any process
        assert journal.requeue_interrupted() == 1  # a start sends it again
        [claimed] = journal.claim("PACS", 1, now=100.0)
        assert journal.lease(claimed.id) == Lease("a", 100.0 + journal.lease_seconds, journal.process)
        plan = " ".join(str(row[-1]) for row in journal._connection().execute(
            "EXPLAIN QUERY PLAN UPDATE deliveries SET state='queued' WHERE lease_expires < 1 AND state='sending'"))
        assert "deliveries_lease" in plan, plan
    finally:
        journal.close()


# ---- the life of a delivery -----------------------------------------------------------------------


def test_queued_then_sending_then_delivered(journal):
    [delivery_id] = queue_instance(journal)
    queued = journal.delivery(delivery_id)
    assert (queued.state, queued.attempts, queued.destination, queued.transfer_syntax) == (
        QUEUED, 0, "PACS", EXPLICIT_LE)

    [claimed] = journal.claim("PACS", 10)
    assert claimed.id == delivery_id and claimed.state == SENDING
    assert journal.delivery(delivery_id).state == SENDING

    started = time.time()
    journal.delivered(claimed, started, "0x0000")
    done = journal.delivery(delivery_id)
    assert (done.state, done.attempts, done.last_error) == (DELIVERED, 1, None)
    [attempt] = journal.attempts(delivery_id)
    assert attempt["ok"] == 1 and attempt["detail"] == "0x0000"
    assert attempt["started_at"] == started and attempt["finished_at"] >= started
    assert journal.claim("PACS", 10) == []  # delivered is never claimed again


def test_failed_attempt_retries_after_the_backoff(journal):
    retry = Retry(delay=5, multiplier=2, cap=300, max_attempts=3)
    [delivery_id] = queue_instance(journal)
    [claimed] = journal.claim("PACS", 10)

    retry_at = time.time() + retry.wait(1)
    state = journal.failed(claimed, time.time(), "PACS answered 0xA700: out of resources", retry_at)

    assert state == RETRYING
    waiting = journal.delivery(delivery_id)
    assert (waiting.state, waiting.attempts, waiting.next_attempt_at) == (RETRYING, 1, retry_at)
    assert waiting.last_error == "PACS answered 0xA700: out of resources"
    [attempt] = journal.attempts(delivery_id)
    assert attempt["ok"] == 0 and attempt["detail"] == "PACS answered 0xA700: out of resources"
    assert journal.claim("PACS", 10, now=retry_at - 1) == []  # not due yet
    assert journal.next_due("PACS") == retry_at
    [again] = journal.claim("PACS", 10, now=retry_at)
    assert again.id == delivery_id and again.attempts == 1 and again.state == SENDING


def test_dead_after_the_last_attempt_then_retry_dead_queues_it_from_zero(journal):
    retry = Retry(delay=1, multiplier=2, cap=300, max_attempts=3)
    [delivery_id] = queue_instance(journal)
    now = time.time()
    states = []
    for _ in range(retry.max_attempts):
        [claimed] = journal.claim("PACS", 10, now=now + 10_000)
        attempts = claimed.attempts + 1
        retry_at = None if attempts >= retry.max_attempts else now + retry.wait(attempts)
        states.append(journal.failed(claimed, time.time(), f"refused ({attempts})", retry_at))
    assert states == [RETRYING, RETRYING, DEAD]
    dead = journal.delivery(delivery_id)
    assert (dead.state, dead.attempts, dead.last_error) == (DEAD, 3, "refused (3)")
    assert [a["detail"] for a in journal.attempts(delivery_id)] == ["refused (1)", "refused (2)", "refused (3)"]
    assert journal.claim("PACS", 10, now=now + 10_000) == []  # dead is never claimed

    assert journal.retry_dead() == 1
    revived = journal.delivery(delivery_id)
    assert (revived.state, revived.attempts, revived.next_attempt_at) == (QUEUED, 0, 0)
    [claimed] = journal.claim("PACS", 10)
    assert claimed.id == delivery_id


def test_retry_dead_by_destination_and_by_id(journal):
    ids = queue_instance(journal, ("PACS", "ARCHIVE"), number=1) + queue_instance(journal, ("PACS",), number=2)
    for destination in ("PACS", "ARCHIVE"):
        for claimed in journal.claim(destination, 10):
            journal.failed(claimed, time.time(), "refused", None)
    pacs_first, archive, pacs_second = ids

    assert journal.retry_dead(destination="ARCHIVE") == 1
    assert journal.delivery(archive).state == QUEUED
    assert journal.retry_dead(ids=[pacs_second]) == 1
    assert [journal.delivery(i).state for i in ids] == [DEAD, QUEUED, QUEUED]
    assert journal.retry_dead(destination="ARCHIVE", ids=[pacs_first]) == 0  # both filters apply


# ---- claim ----------------------------------------------------------------------------------------


def test_claim_returns_due_items_of_one_destination_in_id_order(journal):
    ids = []
    for number in range(1, 6):
        ids += queue_instance(journal, ("PACS", "ARCHIVE"), path=f"/spool/in/{number}.dcm", number=number)
    pacs = ids[0::2]
    archive = ids[1::2]

    first = journal.claim("PACS", 3)
    assert [d.id for d in first] == pacs[:3]
    assert all(d.destination == "PACS" and d.state == SENDING for d in first)
    assert [d.path for d in first] == ["/spool/in/1.dcm", "/spool/in/2.dcm", "/spool/in/3.dcm"]
    assert [d.id for d in journal.claim("PACS", 10)] == pacs[3:]
    assert journal.claim("PACS", 10) == []  # all are sending now
    assert [d.id for d in journal.claim("ARCHIVE", 10)] == archive
    assert journal.counts() == {"PACS": {SENDING: 5}, "ARCHIVE": {SENDING: 5}}


def test_claim_skips_an_item_that_waits_but_takes_those_behind_it(journal):
    first, second = queue_instance(journal, number=1) + queue_instance(journal, number=2)
    [claimed] = journal.claim("PACS", 1)
    now = time.time()
    journal.failed(claimed, now, "refused", now + 60)

    assert [d.id for d in journal.claim("PACS", 10, now=now + 1)] == [second]
    assert journal.claim("PACS", 10, now=now + 59) == []
    assert [d.id for d in journal.claim("PACS", 10, now=now + 60)] == [first]


def test_threads_claiming_at_once_never_get_the_same_item(journal):
    for number in range(200):
        queue_instance(journal, number=number)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def claimer():
        mine = claimed.setdefault(threading.current_thread().name, [])
        try:
            start.wait()
            while batch := journal.claim("PACS", 3):
                mine.extend(d.id for d in batch)
                time.sleep(0.002)  # a worker sends its batch before it claims the next
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            journal.close()  # this thread's connection

    threads = [threading.Thread(target=claimer, name=f"claimer-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == 200 and len(set(every)) == 200
    assert sum(1 for ids in claimed.values() if ids) > 1  # they really competed
    assert journal.counts() == {"PACS": {SENDING: 200}}


# ---- release, postpone, restart -------------------------------------------------------------------


def test_release_puts_unattempted_items_back_queued_and_attempted_ones_retrying(journal):
    [attempted] = queue_instance(journal, number=1)
    [first_try] = journal.claim("PACS", 10)
    now = time.time()
    journal.failed(first_try, now, "refused", now - 1)  # due again at once
    [fresh] = queue_instance(journal, number=2)
    batch = journal.claim("PACS", 10)
    assert [d.id for d in batch] == [attempted, fresh]

    journal.release(batch)  # e.g. the association could not be opened: nothing was sent

    assert (journal.delivery(attempted).state, journal.delivery(attempted).attempts) == (RETRYING, 1)
    assert (journal.delivery(fresh).state, journal.delivery(fresh).attempts) == (QUEUED, 0)
    assert journal.attempts(fresh) == []  # a release is not an attempt
    assert len(journal.attempts(attempted)) == 1
    assert [d.id for d in journal.claim("PACS", 10)] == [attempted, fresh]


def test_release_leaves_items_that_are_no_longer_sending(journal):
    [delivery_id] = queue_instance(journal)
    [claimed] = journal.claim("PACS", 1)
    journal.delivered(claimed, time.time())
    journal.release([claimed])
    assert journal.delivery(delivery_id).state == DELIVERED


def test_postpone_delays_a_whole_destination(journal):
    ids = queue_instance(journal, ("PACS", "ARCHIVE"), number=1) + queue_instance(journal, ("PACS",), number=2)
    pacs_first, archive, pacs_second = ids
    now = time.time()
    journal.postpone("PACS", now + 30)

    assert journal.claim("PACS", 10, now=now + 29) == []
    assert [d.id for d in journal.claim("ARCHIVE", 10, now=now)] == [archive]
    assert journal.next_due("PACS") == now + 30
    assert [d.id for d in journal.claim("PACS", 10, now=now + 30)] == [pacs_first, pacs_second]


def test_postpone_never_brings_a_later_retry_forward(journal):
    [delivery_id] = queue_instance(journal)
    [claimed] = journal.claim("PACS", 1)
    now = time.time()
    journal.failed(claimed, now, "refused", now + 300)
    journal.postpone("PACS", now + 10)
    assert journal.delivery(delivery_id).next_attempt_at == now + 300


def test_requeue_interrupted_after_a_restart(journal, backend):
    first, second, third = (queue_instance(journal, number=1) + queue_instance(journal, number=2)
                            + queue_instance(journal, number=3))
    [a, _b] = journal.claim("PACS", 2)
    journal.delivered(a, time.time())
    # `_b` was being sent when the process stopped; the journal file stays as it was.
    journal.close()

    restarted = backend.open()
    try:
        assert restarted.delivery(second).state == SENDING
        assert restarted.requeue_interrupted() == 1
        assert [restarted.delivery(i).state for i in (first, second, third)] == [DELIVERED, QUEUED, QUEUED]
        assert [d.id for d in restarted.claim("PACS", 10)] == [second, third]  # order kept
        assert restarted.requeue_interrupted() == 2
    finally:
        restarted.close()


# ---- leases: several nodes on one journal ---------------------------------------------------------


@pytest.fixture
def nodes(backend):
    """Two router nodes, "a" and "b", on one journal (a process of each: 1 and 2)."""
    opened = [backend.open(node="a", process=1), backend.open(node="b", process=2)]
    yield opened
    for journal in opened:
        journal.close()


def test_a_claim_leases_its_deliveries_to_its_node_until_they_finish(nodes):
    a, _b = nodes
    ids = [queue_instance(a, number=number)[0] for number in range(4)]
    assert a.lease(ids[0]) is None  # queued: no node holds it
    claimed = a.claim("PACS", 4, now=1000.0)
    assert [a.lease(i) for i in ids] == [Lease("a", 1000.0 + a.lease_seconds, 1)] * 4
    a.delivered(claimed[0], 1000.0)
    a.failed(claimed[1], 1000.0, "refused", 1060.0)
    a.failed(claimed[2], 1000.0, "refused", None)
    a.release(claimed[3:])
    assert [a.lease(i) for i in ids] == [None] * 4
    assert [a.delivery(i).state for i in ids] == [DELIVERED, RETRYING, DEAD, QUEUED]


def test_a_node_renews_only_its_own_leases(nodes):
    a, b = nodes
    [first] = queue_instance(a, number=1)
    [second] = queue_instance(a, ("ARCHIVE",), number=2)
    mine = a.claim("PACS", 1, now=1000.0)
    theirs = b.claim("ARCHIVE", 1, now=1010.0)
    assert a.renew_leases(mine + theirs, now=1030.0) == 1
    assert a.lease(first) == Lease("a", 1030.0 + a.lease_seconds, 1)
    assert a.lease(second) == Lease("b", 1010.0 + b.lease_seconds, 2)  # untouched
    assert a.renew_leases([], now=1030.0) == 0
    a.delivered(mine[0], 1030.0)
    assert a.renew_leases(mine, now=1040.0) == 0  # finished: nothing to renew, no lease comes back
    assert a.lease(first) is None


def test_an_expired_lease_goes_back_to_the_queue_an_unexpired_one_never(nodes):
    a, b = nodes
    [delivery_id] = queue_instance(a)
    [claimed] = a.claim("PACS", 1, now=1000.0)
    expires = 1000.0 + a.lease_seconds
    for now in (1000.0, 1030.0, expires - 0.001, expires):
        assert b.requeue_expired(now=now) == 0, now
        assert a.delivery(delivery_id).state == SENDING
    a.renew_leases([claimed], now=expires - 1)  # still sending: its lease runs on
    assert b.requeue_expired(now=expires + 1) == 0
    assert b.requeue_expired(now=expires - 1 + a.lease_seconds + 0.001) == 1
    assert (a.delivery(delivery_id).state, a.lease(delivery_id)) == (QUEUED, None)
    assert a.counts() == {"PACS": {QUEUED: 1}}


def test_sync_deliveries_are_held_by_their_node_and_never_expire(nodes):
    a, b = nodes
    [delivery_id] = a.add_deliveries(a.record(received(), "/spool/in/a.dcm", None, ACCEPTED),
                                     [new_delivery("PACS", "/spool/in/a.dcm")], state=SENDING)
    assert a.lease(delivery_id) == Lease("a", None, 1)
    far = time.time() + 10 * a.lease_seconds
    assert b.requeue_expired(now=far) == 0
    assert a.requeue_process(2, now=far) == b.requeue_process(1, now=far) == (0, 0)  # another process's
    assert b.requeue_interrupted() == 0  # another node's start leaves it
    assert a.requeue_interrupted() == 1  # its own node's start sends it again
    assert a.delivery(delivery_id).state == QUEUED


def test_a_dead_processs_claims_are_given_back_at_once_and_nobody_elses(backend):
    """Two worker processes of node "a" (1 and 2), one of node "b" with the same process id as
    one of a's: process 2 of "a" dies; its supervisor gives back what it held, only that."""
    first, second, other = (backend.open(node="a", process=1), backend.open(node="a", process=2),
                            backend.open(node="b", process=2))
    try:
        deliveries = [queue_instance(first, number=number)[0] for number in range(3)]
        instances = [first.record(received(10 + number), f"/spool/in/{number}.dcm", None, ACCEPTED)
                     for number in range(3)]
        now = time.time()
        [of_first], [of_second], [of_other] = (journal.claim("PACS", 1, now=now) for journal in (first, second, other))
        [sync] = second.add_deliveries(second.record(received(20), "/spool/in/s.dcm", None, ACCEPTED),
                                       [new_delivery("ARCHIVE", "/spool/in/s.dcm")], state=SENDING)
        claimed = [journal.claim_instances(1, now=now)[0].id for journal in (first, second, other)]
        assert claimed == instances
        assert second.requeue_process(2, now=now + 1) == (2, 1)  # its claim and its sync delivery; its instance
        assert [first.delivery(i).state for i in deliveries] == [SENDING, QUEUED, SENDING]
        assert first.delivery(sync).state == QUEUED
        assert first.lease(of_first.id) == Lease("a", now + first.lease_seconds, 1)
        assert first.lease(of_other.id) == Lease("b", now + first.lease_seconds, 2)
        assert [first.instance_lease(i) for i in instances] == [
            Lease("a", now + first.lease_seconds, 1), None, Lease("b", now + first.lease_seconds, 2)]
        assert second.requeue_process(2, now=now + 2) == (0, 0)  # given back once
        # the others still renew theirs: nothing of theirs was touched
        assert first.renew_leases([of_first], now=now + 3) == other.renew_leases([of_other], now=now + 3) == 1
        assert second.renew_leases([of_second], now=now + 3) == 0
        assert first.renew_instance_leases([instances[0]], now=now + 3) == 1
        assert second.renew_instance_leases([instances[1]], now=now + 3) == 0
        # a process of the same node neither renews nor releases another's claims
        assert second.renew_leases([of_first], now=now + 4) == 0
        second.release([of_first])
        assert second.release_instances([instances[0]]) == 0
        assert first.delivery(of_first.id).state == SENDING and first.instance_lease(instances[0]).process == 1
        assert other.failed(of_first, now, "refused", None) == SENDING  # not b's: left to a
        assert first.failed(of_first, now, "refused", None) == DEAD  # its own: its outcome stands
    finally:
        for journal in (first, second, other):
            journal.close()


def test_a_router_start_takes_back_everything_its_node_held_and_leaves_other_nodes_alone(nodes):
    a, b = nodes
    ids = [queue_instance(a, number=number)[0] for number in range(2)]
    instances = [a.record(received(10 + number), f"/spool/in/{number}.dcm", None, ACCEPTED) for number in range(2)]
    a.claim("PACS", 1)
    b.claim("PACS", 1)
    a.claim_instances(1)
    b.claim_instances(1)
    assert a.requeue_interrupted() == 1
    assert [a.delivery(i).state for i in ids] == [QUEUED, SENDING]
    assert a.instance_lease(instances[0]) is None and a.instance_lease(instances[1]).owner == "b"


def test_requeue_interrupted_leaves_another_nodes_sends_in_flight(nodes):
    a, b = nodes
    ids = [queue_instance(a, number=number)[0] for number in range(2)]
    a.claim("PACS", 1)
    b.claim("PACS", 1)
    assert b.requeue_interrupted() == 1
    assert [a.delivery(i).state for i in ids] == [SENDING, QUEUED]


def test_a_node_that_dies_has_its_deliveries_taken_over_and_delivered_once(nodes):
    a, b = nodes
    ids = [queue_instance(a, number=number)[0] for number in range(3)]
    now = 1000.0
    taken = a.claim("PACS", 2, now=now)  # then node a dies: it never renews, delivers nor releases
    assert [d.id for d in b.claim("PACS", 10, now=now)] == [ids[2]]  # b never takes a's claims
    b.delivered(b.delivery(ids[2]), now)
    assert b.requeue_expired(now=now + a.lease_seconds / 2) == 0
    assert b.claim("PACS", 10, now=now + a.lease_seconds / 2) == []
    later = now + a.lease_seconds + 1
    assert b.requeue_expired(now=later) == 2
    again = b.claim("PACS", 10, now=later)
    assert [d.id for d in again] == [d.id for d in taken]  # in their order
    assert [b.lease(d.id) for d in again] == [Lease("b", later + b.lease_seconds, 2)] * 2
    assert a.renew_leases(taken, now=later) == 0  # a, back too late, holds nothing
    for item in again:
        b.delivered(item, later)
    assert [b.delivery(i).state for i in ids] == [DELIVERED] * 3
    assert [len(b.attempts(i)) for i in ids] == [1, 1, 1]  # each sent once
    assert b.requeue_expired(now=later + 10 * b.lease_seconds) == 0
    assert a.claim("PACS", 10, now=later) == b.claim("PACS", 10, now=later) == []


def test_a_node_back_too_late_never_undoes_what_another_node_did(nodes):
    a, b = nodes
    ids = [queue_instance(a, number=number)[0] for number in range(2)]
    now = 1000.0
    late = a.claim("PACS", 2, now=now)  # then node a is cut off from the journal past its lease
    later = now + a.lease_seconds + 1
    assert b.requeue_expired(now=later) == 2
    first, second = b.claim("PACS", 2, now=later)
    b.delivered(first, later)
    # a comes back: its failure leaves b's delivery delivered, and b's send in flight sending
    assert a.failed(late[0], now, "destination unreachable: refused", None) == DELIVERED
    assert a.failed(late[1], now, "destination unreachable: refused", None) == SENDING
    assert [a.delivery(i).state for i in ids] == [DELIVERED, SENDING]
    assert b.lease(ids[1]) == Lease("b", later + b.lease_seconds, 2)
    # a late success counts: the instance arrived; b's own outcome then changes nothing more
    a.delivered(late[1], now)
    b.failed(second, later, "destination unreachable: refused", None)
    assert a.delivery(ids[1]).state == DELIVERED
    assert [len(a.attempts(i)) for i in ids] == [2, 3]  # every attempt is kept
    totals = {name: value for (name, _label), value in counted(a).items()}
    assert totals["deliveries_delivered"] == 2 and "deliveries_dead" not in totals


# ---- instance claims: one process processes each accepted instance ------------------------------


def test_two_claimers_get_disjoint_instances_oldest_first(nodes):
    a, b = nodes
    ids = [a.record(received(number), f"/spool/in/{number}.dcm", None, ACCEPTED) for number in range(7)]
    queue_instance(a, number=99)  # processed: never claimed
    first = a.claim_instances(3, now=1000.0)
    second = b.claim_instances(3, now=1000.0)
    third = a.claim_instances(3, now=1000.0)
    assert [i.id for i in first] == ids[:3] and [i.id for i in second] == ids[3:6] and [i.id for i in third] == ids[6:]
    assert a.claim_instances(3, now=1000.0) == b.claim_instances(3, now=1000.0) == []
    assert a.claim_instance(ids[3], now=1000.0) is None  # b's, not expired
    assert a.instance_lease(ids[0]) == Lease("a", 1000.0 + a.lease_seconds, 1)
    assert a.instance_lease(ids[3]) == Lease("b", 1000.0 + b.lease_seconds, 2)
    assert [i.id for i in b.claim_instances(10, now=1000.0 + b.lease_seconds + 1, after=ids[1])] == ids[2:]
    assert [i.id for i in a.claim_instances(10, now=1000.0 + b.lease_seconds + 1)] == ids[:2]


def test_claims_from_concurrent_processes_never_overlap(backend):
    """Four processes, each with its own connection, claim two at a time until nothing is left."""
    journal = backend.open()
    try:
        ids = [journal.record(received(number), f"/spool/in/{number}.dcm", None, ACCEPTED) for number in range(60)]
    finally:
        journal.close()
    script = ("import importlib, sys, json\n"
              "journal = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(sys.argv[3], node='n')\n"
              "got = []\n"
              "while True:\n"
              "    batch = journal.claim_instances(2)\n"
              "    if not batch: break\n"
              "    got += [i.id for i in batch]\n"
              "print(json.dumps(got))\n")
    runs = [subprocess.Popen([sys.executable, "-c", script, backend.module, backend.name, backend.address],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT.parent) for _ in range(4)]
    claimed = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sorted(i for got in claimed for i in got) == ids  # each once


def test_an_expired_instance_claim_is_taken_by_another_process_and_renewal_keeps_it(nodes):
    a, b = nodes
    [instance_id] = [a.record(received(), "/spool/in/a.dcm", None, ACCEPTED)]
    [claimed] = a.claim_instances(1, now=1000.0)
    expires = 1000.0 + a.lease_seconds
    assert b.claim_instances(1, now=expires) == []  # not before it expires
    assert a.renew_instance_leases([instance_id], now=expires - 1) == 1  # a 1 GB copy: still working
    assert b.claim_instances(1, now=expires + 1) == []
    later = expires - 1 + a.lease_seconds + 1
    assert [i.id for i in b.claim_instances(1, now=later)] == [instance_id]
    assert b.instance_lease(instance_id) == Lease("b", later + b.lease_seconds, 2)
    assert a.renew_instance_leases([instance_id], now=later) == 0  # a, back too late, holds nothing
    assert a.release_instances([instance_id]) == 0
    assert b.instance_lease(instance_id).owner == "b"


def test_a_late_settle_from_a_process_that_lost_its_claim_undoes_nothing(nodes):
    a, b = nodes
    routed_id, dropped_id = (a.record(received(number), f"/spool/in/{number}.dcm", None, ACCEPTED)
                             for number in range(2))
    a.claim_instances(2, now=1000.0)  # then a stalls past its lease
    later = 1000.0 + a.lease_seconds + 1
    assert [i.id for i in b.claim_instances(2, now=later)] == [routed_id, dropped_id]
    # while b works on them, a's late settles change nothing
    with pytest.raises(ClaimLost):
        a.add_deliveries(routed_id, [new_delivery("PACS", "/spool/out/a.dcm")], routed("PACS"))
    with pytest.raises(ClaimLost):
        a.settle(dropped_id, Outcome("v1", "drop", None, (), ()), None)
    assert [a.instance(i).state for i in (routed_id, dropped_id)] == [ACCEPTED, ACCEPTED]
    assert a.counts() == {}
    b.add_deliveries(routed_id, [new_delivery("PACS", "/spool/out/b.dcm")], routed("PACS"))
    b.settle(dropped_id, Outcome("v1", "quarantine", "kept", (), ()), "/quarantine/b.dcm")
    # and after b settled them, a's still change nothing: b's work stands, counted once
    with pytest.raises(ClaimLost):
        a.add_deliveries(routed_id, [new_delivery("PACS", "/spool/out/a.dcm")], routed("PACS"))
    with pytest.raises(ClaimLost):
        a.settle(dropped_id, Outcome("v1", "drop", None, (), ()), None)
    with pytest.raises(ClaimLost):
        b.settle(routed_id, Outcome("v1", "drop", None, (), ()), None)  # nor twice by its own owner
    assert a.counts() == {"PACS": {QUEUED: 1}}
    assert [d.path for d in a.claim("PACS", 10)] == ["/spool/out/b.dcm"]
    assert (a.instance(dropped_id).outcome.outcome, a.instance(dropped_id).path) == ("quarantine", "/quarantine/b.dcm")
    assert counted(a)[("instances_outcome", "route")] == 1 and ("instances_outcome", "drop") not in counted(a)
    assert a.instance_lease(routed_id) is None and a.claim_instances(5, now=later) == []


def test_an_instance_nobody_claimed_is_settled_by_whoever_asks(nodes):
    a, b = nodes
    instance_id = a.record(received(), "/spool/in/a.dcm", None, ACCEPTED)
    b.settle(instance_id, Outcome("v1", "drop", None, (), ()), None)  # as sync mode settles what it sent
    assert a.instance(instance_id).state == DONE


def test_a_released_instance_claim_is_free_for_any_process(nodes):
    a, b = nodes
    instance_id = a.record(received(), "/spool/in/a.dcm", None, ACCEPTED)
    assert a.claim_instance(instance_id, now=1000.0).id == instance_id
    assert a.claim_instance(instance_id, now=1000.0) is None  # held: not claimed twice, even by its owner
    assert b.release_instances([instance_id]) == 0  # not b's to release
    assert a.release_instances([instance_id]) == 1
    assert a.instance_lease(instance_id) is None
    assert b.claim_instance(instance_id, now=1000.0).id == instance_id


def test_an_ordered_claim_follows_the_instances_and_never_passes_one_still_to_be_processed(journal):
    """Two processes processing: instance 2's delivery is queued before instance 1's. A
    destination that promises order waits for instance 1, then sends 1 before 2."""
    first = journal.record(received(1), "/spool/in/1.dcm", None, ACCEPTED)
    second = journal.record(received(2), "/spool/in/2.dcm", None, ACCEPTED)
    third = journal.record(received(3), "/spool/in/3.dcm", None, ACCEPTED)
    [of_second] = journal.add_deliveries(second, [new_delivery("PACS", "/spool/in/2.dcm", 2)])
    assert journal.claim("PACS", 10, ordered=True) == []  # instance 1 may still route to PACS
    journal.settle(third, Outcome("v1", "drop", None, (), ()), None)
    [of_first] = journal.add_deliveries(first, [new_delivery("PACS", "/spool/in/1.dcm", 1)])
    assert of_first > of_second
    assert [d.id for d in journal.claim("PACS", 10, ordered=True)] == [of_first, of_second]


def test_an_ordered_claim_stops_at_the_first_instance_still_accepted_and_unordered_ones_do_not(journal):
    ids = [journal.record(received(n), f"/spool/in/{n}.dcm", None, ACCEPTED) for n in range(4)]
    deliveries = {n: journal.add_deliveries(ids[n], [new_delivery("PACS", f"/spool/in/{n}.dcm", n)])[0]
                  for n in (0, 1, 3)}  # instance 2 not processed yet
    assert [d.id for d in journal.claim("PACS", 10, ordered=True)] == [deliveries[0], deliveries[1]]
    journal.add_deliveries(ids[2], [new_delivery("ARCHIVE", "/spool/in/2.dcm", 2)])  # not for PACS
    assert [d.id for d in journal.claim("PACS", 10, ordered=True)] == [deliveries[3]]
    journal.record(received(9), "/spool/in/9.dcm", None, ACCEPTED)  # still to be processed
    later = journal.add_deliveries(journal.record(received(10), "/spool/in/10.dcm", None, ACCEPTED),
                                   [new_delivery("ARCHIVE", "/spool/in/10.dcm", 10)])
    assert journal.claim("ARCHIVE", 10, ordered=True)[1:] == []  # instance 2's only: 9 is before 10
    assert [d.id for d in journal.claim("ARCHIVE", 10)] == later  # unordered: does not wait for it


# ---- files ----------------------------------------------------------------------------------------


def test_path_in_use_until_every_delivery_of_the_file_is_delivered(journal):
    shared = "/spool/in/shared.dcm"
    instance_id = journal.record(received(), shared, routed("PACS", "ARCHIVE"), ACCEPTED)
    assert journal.path_in_use(shared)  # the accepted instance needs it
    assert not journal.path_in_use("/spool/in/other.dcm")
    journal.add_deliveries(instance_id, [new_delivery("PACS", shared), new_delivery("ARCHIVE", shared)])
    assert journal.path_in_use(shared)

    [pacs] = journal.claim("PACS", 1)
    journal.delivered(pacs, time.time())
    assert journal.path_in_use(shared)  # ARCHIVE still needs it
    assert journal.paths_in_use() == {shared}

    [archive] = journal.claim("ARCHIVE", 1)
    journal.failed(archive, time.time(), "refused", None)
    assert journal.path_in_use(shared)  # dead is kept for `queue retry`

    journal.retry_dead()
    [archive] = journal.claim("ARCHIVE", 1)
    journal.delivered(archive, time.time())
    assert not journal.path_in_use(shared)
    assert journal.paths_in_use() == set()


def test_purge_forgets_finished_deliveries_and_returns_their_files(journal):
    delivered_ids = queue_instance(journal, path="/spool/out/1-PACS.dcm", number=1)
    dead_ids = queue_instance(journal, path="/spool/out/2-PACS.dcm", number=2)
    queued_ids = queue_instance(journal, path="/spool/out/3-PACS.dcm", number=3)
    first, second, third = journal.claim("PACS", 3)
    journal.delivered(first, time.time())
    journal.failed(second, time.time(), "refused", None)
    journal.release([third])

    assert journal.purge([DELIVERED]) == ["/spool/out/1-PACS.dcm"]
    assert journal.delivery(delivered_ids[0]) is None
    assert journal.attempts(delivered_ids[0]) == []
    assert journal.delivery(dead_ids[0]).state == DEAD
    assert journal.delivery(queued_ids[0]).state == QUEUED
    assert journal.purge([DELIVERED]) == []

    assert journal.purge([DEAD]) == ["/spool/out/2-PACS.dcm"]
    assert journal.delivery(dead_ids[0]) is None
    assert journal.counts() == {"PACS": {QUEUED: 1}}


def test_purge_older_than_keeps_recent_entries(journal):
    [delivery_id] = queue_instance(journal)
    [claimed] = journal.claim("PACS", 1)
    journal.delivered(claimed, time.time())
    finished = time.time()
    assert journal.purge([DELIVERED], older_than=finished - 3600) == []
    assert journal.delivery(delivery_id) is not None
    assert journal.purge([DELIVERED], older_than=finished + 1) == ["/spool/in/a.dcm"]
    assert journal.delivery(delivery_id) is None


def test_a_purged_file_another_destination_still_needs_stays_in_use(journal):
    """purge names the file of a purged delivery; path_in_use is what protects a file shared
    with a destination that has not received it yet (`queue purge` asks it before removing)."""
    shared = "/spool/in/shared.dcm"
    queue_instance(journal, ("PACS", "ARCHIVE"), path=shared)
    [pacs] = journal.claim("PACS", 1)
    journal.delivered(pacs, time.time())
    assert journal.purge([DELIVERED]) == [shared]
    assert journal.path_in_use(shared)


def test_deliveries_listing_joins_the_instance(journal):
    queue_instance(journal, ("PACS", "ARCHIVE"))
    rows = journal.deliveries(states=[QUEUED], destination="ARCHIVE")
    assert [(r["destination"], r["source_name"], r["calling_aet"]) for r in rows] == [("ARCHIVE", "main", "CT1")]


def test_a_pause_is_kept_in_the_journal_and_a_changed_destination_resumes(journal, backend):
    [first] = queue_instance(journal, number=1)
    [head] = journal.claim("PACS", 1)
    now = time.time()
    journal.postpone("PACS", now + 30)
    journal.failed(head, now, "connection refused", now + 30)
    # Only the failed delivery waits, yet the pause is there for whoever asks: a worker that
    # starts after a restart, or another worker of the same destination.
    reopened = backend.open()
    try:
        assert reopened.postponed_until("PACS", now=now) == now + 30
        [second] = queue_instance(reopened, number=2)  # arrives during the pause
        assert reopened.claim("PACS", 10, now=now + 1) == []
    finally:
        reopened.close()
    assert journal.postponed_until("ARCHIVE", now=now) == 0.0
    assert journal.postponed_until("PACS", now=now + 30) == 0.0  # over once it is due
    assert journal.next_due("PACS") == now + 30

    assert journal.resume("PACS", now=now + 1) == 1  # the failed head was waiting for its retry
    assert journal.postponed_until("PACS", now=now + 1) == 0.0
    assert [d.id for d in journal.claim("PACS", 10, now=now + 1)] == [first, second]


def test_numbers_are_never_reused_after_a_purge(journal):
    """Log lines name instances and deliveries by number: one number, one thing, for good."""
    [first] = queue_instance(journal, number=1)
    first_instance = journal.delivery(first).instance_id
    [claimed] = journal.claim("PACS", 1)
    journal.delivered(claimed, time.time())
    journal.purge([DELIVERED])
    assert journal.purge_instances() == 1
    [second] = queue_instance(journal, number=2)
    assert second > first
    assert journal.delivery(second).instance_id > first_instance


# ---- records ----------------------------------------------------------------------------------------


def test_records_are_typed_and_read_by_column_name_as_stored(journal):
    [delivery_id] = queue_instance(journal)
    delivery = journal.delivery(delivery_id)
    assert isinstance(delivery, Delivery) and delivery.state is DeliveryState.QUEUED
    assert delivery["state"] == "queued" and dict(delivery)["destination"] == "PACS"

    instance = journal.instance(delivery.instance_id)
    assert isinstance(instance, Instance) and instance.state is InstanceState.PROCESSED
    assert instance.arrival == received()
    assert instance.outcome == routed("PACS")
    assert (instance["peer"], instance["destinations"]) == ("127.0.0.1:40000", '["PACS"]')

    [claimed] = journal.claim("PACS", 1)
    assert journal.failed(claimed, time.time(), "refused", None) is DeliveryState.DEAD
    [attempt] = journal.attempts(delivery_id)
    assert isinstance(attempt, Attempt) and attempt.ok is False and attempt["ok"] == 0


def test_states_are_stored_as_their_names():
    """The stored text of every state stays what it was: journals written before read on."""
    assert [state.value for state in DeliveryState] == ["queued", "sending", "delivered", "retrying", "dead"]
    assert [state.value for state in InstanceState] == ["accepted", "processed", "done"]
    assert f"{QUEUED:>8}" == "  queued"  # formatted as text, as `dicom-rules queue` prints it


# ---- SQLite only ----------------------------------------------------------------------------------


@pytest.fixture
def sqlite_journal(tmp_path):
    opened = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    yield opened
    opened.close()


def test_claims_read_the_due_deliveries_and_the_free_instances_alone_by_index(sqlite_journal):
    """However long a destination's history: an ordered claim sorts its due deliveries
    (deliveries_due), never walks the delivered ones; an instance claim reads instances_state."""
    db = sqlite_journal._connection()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    sqlite_journal.claim("PACS", 10, ordered=True)
    sqlite_journal.record(received(), "/spool/in/a.dcm", None, ACCEPTED)
    sqlite_journal.claim_instances(4)
    db.set_trace_callback(None)
    [ordered] = [text for text in statements if "ORDER BY priority DESC, instance_id" in text]
    plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + ordered))
    assert "deliveries_due" in plan and "SCAN" not in plan, plan
    claims = [text for text in statements if text.startswith("SELECT") and "lease_expires IS NULL" in text]
    assert len(claims) == 2  # the read that finds one free, then the claim
    for text in claims:
        plan = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + text))
        assert "instances_state" in plan and "SCAN" not in plan, plan


def test_sqlite_keeps_one_file_in_wal_mode(sqlite_journal):
    queue_instance(sqlite_journal)
    assert os.path.isfile(sqlite_journal.path)
    with closing(sqlite3.connect(sqlite_journal.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_a_record_is_visible_at_once_to_another_connection(sqlite_journal):
    instance_id = sqlite_journal.record(received(), "/spool/in/a.dcm", routed("PACS"), ACCEPTED)
    reader = ("import sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1])\n"
              "row = db.execute('SELECT state, sop_instance_uid FROM instances WHERE id=?', (int(sys.argv[2]),))"
              ".fetchone()\n"
              "print(row[0] if row else 'missing', row[1] if row else '')\n")
    result = subprocess.run([sys.executable, "-c", reader, sqlite_journal.path, str(instance_id)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [ACCEPTED, "1.2.3.1"]


def test_sqlite_rows_written_before_the_records_read_on(sqlite_journal):
    """An upgraded router reads the journal it left: rows as the router wrote them before its
    records (the same schema), with the peer as one text."""
    with closing(sqlite3.connect(sqlite_journal.path, isolation_level=None)) as db:
        instance_id = db.execute(
            "INSERT INTO instances (received_at, source_kind, source_name, calling_aet, called_aet, peer, "
            "sop_class_uid, sop_instance_uid, path, state, ruleset_version, outcome, reason, rules_fired, "
            "destinations, processed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (1.0, "listener", "main", "CT1", "ROUTER", "10.0.0.7:104", CT_IMAGE, "1.2.3.7", "/spool/in/x.dcm",
             "accepted", "v1", None, None, "[]", "[]", None)).lastrowid
        db.execute("INSERT INTO deliveries (instance_id, destination, path, sop_class_uid, sop_instance_uid, "
                   "transfer_syntax, state, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                   (instance_id, "PACS", "/spool/in/x.dcm", CT_IMAGE, "1.2.3.7", EXPLICIT_LE, "retrying", 1.0, 1.0))
    [instance] = sqlite_journal.accepted_instances()
    assert instance.arrival == Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="10.0.0.7",
                                       peer_port=104, source_name="main", source_kind="listener",
                                       sop_class_uid=CT_IMAGE, sop_instance_uid="1.2.3.7")
    assert (instance.state, instance.outcome) == (ACCEPTED, Outcome("v1", None, None, (), ()))
    [claimed] = sqlite_journal.claim("PACS", 10)
    assert (claimed.instance_id, claimed.state, claimed.transfer_syntax) == (instance_id, SENDING, EXPLICIT_LE)


# ---- requests ------------------------------------------------------------------------------------

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def a_query(number: int = 1, message: str = "C-FIND") -> NewRequest:
    asked = Arrival(calling_aet="WS1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40000 + number,
                    source_name="main", source_kind="listener", sop_class_uid=STUDY_ROOT_FIND)
    return NewRequest(message, asked, "STUDY", {"PatientID": f"H1-{number}", "StudyDate": "20260101-"},
                      "WS1" if message == "C-MOVE" else None)


def test_a_request_is_recorded_as_it_arrives_and_finished_with_its_answers(journal):
    request_id = journal.record_request(a_query(), now=1000.0)
    running = journal.request(request_id)
    assert running.result is None and running.finished_at is None and running.seconds is None
    assert running.message == "C-FIND" and running.level == "STUDY"
    assert running.arrival.calling_aet == "WS1" and running.arrival.peer_port == 40001
    assert running.arrival.sop_class_uid == STUDY_ROOT_FIND
    assert running.matching_keys == {"PatientID": "H1-1", "StudyDate": "20260101-"}

    answers = (DestinationAnswer("PACS", 0x0000, 3, None, 0.25),
               DestinationAnswer("OLD_PACS", None, 0, "no answer within 30 s", 30.0))
    journal.finish_request(request_id, RequestResult(RequestOutcome.PARTIAL, 0x0000, answers, matches=3,
                                                     error="OLD_PACS: no answer within 30 s"), now=1030.5)
    ended = journal.request(request_id)
    assert ended.finished_at == 1030.5 and ended.seconds == pytest.approx(30.5)
    assert ended.result.outcome is RequestOutcome.PARTIAL and ended.result.status == 0
    assert ended.result.answers == answers
    assert ended.result.matches == 3 and ended.result.error == "OLD_PACS: no answer within 30 s"
    assert journal.request(request_id + 1) is None


def test_a_retrieval_keeps_its_move_destination_and_sub_operation_counts(journal):
    request_id = journal.record_request(a_query(message="C-MOVE"))
    journal.finish_request(request_id, RequestResult(RequestOutcome.FAILED, 0xB000, (), completed=198, failed=2,
                                                     warning=1, error="2 instances failed"))
    ended = journal.request(request_id)
    assert ended.move_destination == "WS1"
    assert (ended.result.completed, ended.result.failed, ended.result.warning) == (198, 2, 1)
    assert ended.result.outcome == "failed"  # stored as its text


def test_requests_are_listed_newest_first_by_message_and_limited(journal):
    ids = [journal.record_request(a_query(number, message)) for number, message in
           enumerate(["C-FIND", "C-MOVE", "C-FIND", "N-CREATE"], 1)]
    assert [r.id for r in journal.requests()] == ids[::-1]
    assert [r.id for r in journal.requests(["C-FIND"])] == [ids[2], ids[0]]
    assert [r.id for r in journal.requests(["C-MOVE", "N-CREATE"], limit=1)] == [ids[3]]


def test_requests_are_found_by_calling_ae_and_time_and_paged(journal):
    ids = []
    for number in range(1, 6):
        asked = a_query(number)
        if number % 2 == 0:
            asked = replace(asked, arrival=replace(asked.arrival, calling_aet="WS2"))
        ids.append(journal.record_request(asked, now=1000.0 + number))
    assert [r.id for r in journal.requests(calling_aet="WS2")] == [ids[3], ids[1]]
    assert [r.id for r in journal.requests(received_from=1002.0, received_to=1004.0)] == [ids[2], ids[1]]
    first = journal.requests(limit=2)
    assert [r.id for r in first] == [ids[4], ids[3]]
    assert [r.id for r in journal.requests(limit=2, before_id=first[-1].id)] == [ids[2], ids[1]]
    assert [r.id for r in journal.requests(["C-FIND"], calling_aet="WS1", before_id=ids[4])] == [ids[2], ids[0]]


def test_purge_requests_forgets_finished_ones_only_and_never_reuses_numbers(journal):
    finished = journal.record_request(a_query(1), now=100.0)
    journal.finish_request(finished, RequestResult(RequestOutcome.ANSWERED, 0), now=101.0)
    recent = journal.record_request(a_query(2), now=500.0)
    journal.finish_request(recent, RequestResult(RequestOutcome.REJECTED, 0xC124, error="not for you"), now=501.0)
    running = journal.record_request(a_query(3), now=600.0)
    assert journal.purge_requests(older_than=200.0) == 1
    assert journal.request(finished) is None and journal.request(recent) is not None
    assert journal.purge_requests() == 1  # the running one stays
    assert [r.id for r in journal.requests()] == [running]
    assert journal.record_request(a_query(4)) > running


def test_sqlite_a_thread_that_ended_leaves_its_connection_to_the_next(sqlite_journal):
    """Each association has a thread of its own: its connection is not opened again for each."""
    used: list[int] = []

    def write() -> None:
        sqlite_journal.record(received(), "/spool/in/a.dcm", routed("PACS"), ACCEPTED)
        used.append(id(sqlite_journal._connection()))

    for _ in range(3):
        thread = threading.Thread(target=write)
        thread.start()
        thread.join()
    assert len(set(used)) == 1
    assert len(sqlite_journal.accepted_instances()) == 3


def test_sqlite_close_closes_the_connections_of_threads_that_ended(tmp_path):
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    connections: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: connections.append(journal._connection()))
    thread.start()
    thread.join()
    journal.close()
    with pytest.raises(sqlite3.ProgrammingError):
        connections[0].execute("SELECT 1")


# ---- for the operations console: header facts, search, trace, counters, status ----------------------


# The schema of the release before header facts, traces, counters and statuses, as it was written.
PREVIOUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused after a purge: log lines name these numbers
    received_at REAL NOT NULL,
    source_kind TEXT, source_name TEXT,
    calling_aet TEXT, called_aet TEXT, peer TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT,
    store_command TEXT,  -- the C-STORE request's command set (JSON)
    path TEXT,
    state TEXT NOT NULL,
    ruleset_version TEXT,
    outcome TEXT, reason TEXT,
    rules_fired TEXT,
    destinations TEXT,
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    destination TEXT NOT NULL,
    path TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT, transfer_syntax TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt_at, id);
CREATE INDEX IF NOT EXISTS deliveries_path ON deliveries(path);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT
);
-- A destination found unreachable: nothing of its queue is claimed before `until`, so that
-- nothing overtakes the delivery that failed, in any worker, also after a restart.
CREATE TABLE IF NOT EXISTS pauses (
    destination TEXT PRIMARY KEY,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rulesets (
    version TEXT PRIMARY KEY,
    loaded_at REAL NOT NULL,
    files TEXT
);
-- What each file of a rule set version held when it was compiled (the main rule file first):
-- an instance is processed with the version it was answered under, compiled again from here.
CREATE TABLE IF NOT EXISTS ruleset_files (
    version TEXT NOT NULL,
    position INTEGER NOT NULL,
    path TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (version, position)
);
-- Requests answered (C-FIND, C-MOVE, C-GET, N-CREATE, N-SET): who asked what, which destinations
-- answered and how, the counts, how long it took. The outcome columns are empty while it runs.
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    finished_at REAL,
    message TEXT NOT NULL,
    source_kind TEXT, source_name TEXT,
    calling_aet TEXT, called_aet TEXT, peer TEXT,
    sop_class_uid TEXT, sop_instance_uid TEXT,
    store_command TEXT,  -- empty: a request is not a C-STORE
    level TEXT,
    matching_keys TEXT,
    move_destination TEXT,
    outcome TEXT, status INTEGER, answers TEXT,
    matches INTEGER, completed INTEGER, failed INTEGER, warning INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS requests_received ON requests(received_at);
"""


def with_facts(number: int, patient_id: str = "P1", accession_number: str | None = "A1", study: str = "1.9.1",
               series: str = "1.9.1.1", source_name: str = "main", calling_aet: str = "CT1") -> Arrival:
    return replace(received(number), patient_id=patient_id, patient_name="DOE^JANE", accession_number=accession_number,
                   study_instance_uid=study, series_instance_uid=series, modality="CT", source_name=source_name,
                   calling_aet=calling_aet)


def test_header_facts_are_kept_with_the_instance_and_not_with_requests(journal, backend):
    instance_id = journal.record(with_facts(1), "/spool/in/a.dcm", None, ACCEPTED, "v1")
    again = backend.open()  # the worker process, or the operations console
    try:
        kept = again.instance(instance_id)
        assert kept.arrival == with_facts(1)
        assert (kept["patient_id"], kept["patient_name"], kept["accession_number"], kept["modality"]) == (
            "P1", "DOE^JANE", "A1", "CT")
    finally:
        again.close()
    request_id = journal.record_request(NewRequest("C-FIND", with_facts(2), "STUDY", {}, None))
    assert journal.request(request_id).arrival.patient_id is None  # a request keeps the association's facts only


def test_search_filters_by_exact_values_newest_first(journal):
    first = journal.record(with_facts(1), None, routed("PACS"), DONE)
    other_patient = journal.record(with_facts(2, patient_id="P2", accession_number=None, study="1.9.2",
                                              series="1.9.2.1", source_name="inbox", calling_aet="MR1"), None,
                                   Outcome("v1", "drop", None, (), ()), DONE)
    second = journal.record(with_facts(3, series="1.9.1.2"), "/spool/in/c.dcm", None, ACCEPTED, "v1")

    def ids(**filters) -> list[int]:
        return [instance.id for instance in journal.search_instances(**filters)]

    assert ids() == [second, other_patient, first]
    assert ids(patient_id="P1") == [second, first]
    assert ids(patient_id="p1") == [] and ids(patient_id="P") == []  # exact, not a pattern
    assert ids(accession_number="A1") == [second, first]
    assert ids(study_instance_uid="1.9.2") == [other_patient]
    assert ids(series_instance_uid="1.9.1.2") == [second]
    assert ids(sop_instance_uid="1.2.3.1") == [first]
    assert ids(calling_aet="MR1") == ids(source_name="inbox") == ids(outcome="drop") == [other_patient]
    assert ids(outcome="route") == [first]
    assert ids(patient_id="P1", series_instance_uid="1.9.1.1") == [first]  # every filter given
    listed = journal.search_instances(patient_id="P2")[0]
    assert listed.arrival.patient_name == "DOE^JANE" and listed.outcome.outcome == "drop"


def test_search_pages_by_id_and_by_the_time_received(journal):
    ids = [journal.record(replace(with_facts(number), received_at=1000.0 + number), None, routed("PACS"), DONE)
           for number in range(7)]
    first_page = journal.search_instances(patient_id="P1", limit=3)
    assert [item.id for item in first_page] == ids[:-4:-1]
    second_page = journal.search_instances(patient_id="P1", limit=3, before_id=first_page[-1].id)
    assert [item.id for item in second_page] == ids[3:0:-1]
    last_page = journal.search_instances(patient_id="P1", limit=3, before_id=second_page[-1].id)
    assert [item.id for item in last_page] == [ids[0]]
    assert journal.search_instances(patient_id="P1", before_id=ids[0]) == []
    # received_from <= received_at < received_to
    assert [item.id for item in journal.search_instances(received_from=1002.0, received_to=1005.0)] == ids[4:1:-1]
    assert journal.search_instances(limit=0) == []


def test_a_listing_leaves_the_trace_out_and_the_trace_keeps_it_with_the_deliveries(journal):
    trace = trace_text("route", None, "v1", [{"name": "to the PACS", "file": "main.rules", "line": 3}],
                       [{"path": "DataSet.PatientID", "old": "P1", "new": "ANON", "rule": "anonymise",
                         "file": "main.rules", "line": 7, "destination": "RESEARCH"}])
    instance_id = journal.record(with_facts(1), "/spool/in/a.dcm", None, ACCEPTED, "v1")
    pacs, research = journal.add_deliveries(instance_id, [new_delivery("PACS", "/spool/in/a.dcm"),
                                                          new_delivery("RESEARCH", "/spool/out/b.dcm")],
                                            replace(routed("PACS", "RESEARCH"), trace=trace))
    for claimed in journal.claim("PACS", 1) + journal.claim("RESEARCH", 1):
        journal.failed(claimed, 100.0, "refused: 0xA700", time.time() + 60) if claimed.destination == "PACS" \
            else journal.delivered(claimed, 100.0, "0x0000")

    assert journal.search_instances()[0].outcome.trace is None
    traced = journal.trace(instance_id)
    assert traced.instance.id == instance_id and traced.instance.arrival.patient_id == "P1"
    assert traced.trace["rules_fired"] == [{"name": "to the PACS", "file": "main.rules", "line": 3}]
    assert traced.trace["edits"][0]["new"] == "ANON" and traced.trace["edits"][0]["destination"] == "RESEARCH"
    assert (traced.trace["outcome"], traced.trace["ruleset_version"], traced.trace["truncated"]) == ("route", "v1", 0)
    by_destination = {item.delivery.destination: item for item in traced.deliveries}
    assert [item.delivery.id for item in traced.deliveries] == [pacs, research]
    [failed] = by_destination["PACS"].attempts
    assert (failed.ok, failed.detail, failed.started_at) == (False, "refused: 0xA700", 100.0)
    assert failed.seconds == failed.finished_at - failed.started_at
    assert by_destination["PACS"].delivery.state == RETRYING and by_destination["PACS"].delivered_at is None
    [sent] = by_destination["RESEARCH"].attempts
    assert sent.ok and by_destination["RESEARCH"].delivered_at is not None
    assert journal.trace(instance_id + 100) is None


def test_an_instance_not_processed_yet_has_no_trace(journal):
    instance_id = journal.record(with_facts(1), "/spool/in/a.dcm", None, ACCEPTED, "v1")
    traced = journal.trace(instance_id)
    assert (traced.trace, traced.deliveries) == (None, ())


def test_a_trace_is_bounded_in_edits_and_in_size():
    edit = {"path": "DataSet.X", "old": "a", "new": "b", "rule": "r", "file": "f.rules", "line": 1,
            "destination": None}
    many = json.loads(trace_text("route", None, "v1", [], [edit] * (MAX_TRACE_EDITS + 100)))
    assert (len(many["edits"]), many["truncated"]) == (MAX_TRACE_EDITS, 100)
    assert json.loads(trace_text("route", None, "v1", [], [edit] * 10, left_out=7))["truncated"] == 7
    long_edit = dict(edit, old="x" * 2000, new="y" * 2000)
    text = trace_text("route", None, "v1", [], [long_edit] * MAX_TRACE_EDITS)
    bounded = json.loads(text)
    assert len(text) <= MAX_TRACE_BYTES
    assert 0 < len(bounded["edits"]) < MAX_TRACE_EDITS
    assert bounded["truncated"] == MAX_TRACE_EDITS - len(bounded["edits"])
    huge_reason = trace_text("quarantine", "r" * (MAX_TRACE_BYTES + 10), "v1", [], [])
    assert len(huge_reason) <= MAX_TRACE_BYTES and json.loads(huge_reason)["outcome"] == "quarantine"


def counted(journal) -> dict[tuple[str, str], float]:
    return {(name, label): value for name, label, value in journal.counters()}


def test_counters_count_each_event_once_and_never_go_back_after_a_purge(journal):
    journal.record(with_facts(1), None, Outcome("v1", "reject", "no", (), ()), DONE)  # rejected at once
    dropped = journal.record(with_facts(2, source_name="inbox"), "/spool/in/b.dcm", None, ACCEPTED, "v1")
    journal.settle(dropped, Outcome("v1", "drop", None, (), ()), None)
    [delivery_id] = queue_instance(journal, ("PACS",), number=3)
    # a sync delivery: decided at its record, its deliveries added afterwards, then refused
    sync = journal.record(with_facts(4), "/spool/in/d.dcm", routed("ARCHIVE"), DONE)
    journal.add_deliveries(sync, [new_delivery("ARCHIVE", "/spool/out/d.dcm", 4)], state=SENDING)
    journal.settle(sync, Outcome("v1", "reject", "sync: copies cannot be written", (), ()), None)

    [claimed] = journal.claim("PACS", 1)
    journal.failed(claimed, time.time(), "unreachable", time.time())
    [claimed] = journal.claim("PACS", 1)
    journal.delivered(claimed, time.time())
    journal.add_deliveries(journal.record(with_facts(5), "/p", routed("ARCHIVE"), ACCEPTED),
                           [new_delivery("ARCHIVE", "/p", 5)])
    [claimed] = journal.claim("ARCHIVE", 1)
    journal.failed(claimed, time.time(), "refused", None)

    counts = counted(journal)
    assert counts[("instances_received", "main")] == 4 and counts[("instances_received", "inbox")] == 1
    assert {label: value for (name, label), value in counts.items() if name == "instances_outcome"} == {
        "reject": 1, "drop": 1, "route": 3}  # the sync delivery refused afterwards counts as routed
    assert counts[("deliveries_delivered", "PACS")] == 1
    assert counts[("delivery_attempts_failed", "PACS")] == 1 and counts[("delivery_attempts_failed", "ARCHIVE")] == 1
    assert counts[("deliveries_dead", "ARCHIVE")] == 1 and ("deliveries_dead", "PACS") not in counts
    buckets = {label: value for (name, label), value in counts.items() if name == "delivery_latency_seconds_bucket"}
    assert sum(buckets.values()) == counts[("delivery_latency_seconds_count", "PACS")] == 1
    [(label, _)] = buckets.items()
    bound = label.split(":")[1]
    assert label.startswith("PACS:") and counts[("delivery_latency_seconds_sum", "PACS")] <= float(bound)

    journal.purge(DELIVERY_STATES_FINISHED)
    journal.purge_instances()
    assert counted(journal) == counts  # metrics only grow


DELIVERY_STATES_FINISHED = (DELIVERED, DEAD)


def test_the_latency_histogram_puts_each_delivery_in_its_bucket(journal):
    now = time.time()
    for number, age in enumerate((0.01, 0.07, 3.0, 45.0, 1000.0)):
        instance_id = journal.record(replace(with_facts(number), received_at=now - age), "/p", routed("PACS"),
                                     ACCEPTED)
        journal.add_deliveries(instance_id, [new_delivery("PACS", f"/p{number}", number)])
        [claimed] = journal.claim("PACS", 1)
        journal.delivered(claimed, now)
    counts = counted(journal)
    buckets = {label.split(":")[1]: value for (name, label), value in counts.items()
               if name == "delivery_latency_seconds_bucket"}
    # each counted once, in the smallest bucket that holds it (a test taking seconds moves none of them)
    assert sum(buckets.values()) == 5 and buckets["+Inf"] == 1
    assert counts[("delivery_latency_seconds_count", "PACS")] == 5
    assert counts[("delivery_latency_seconds_sum", "PACS")] >= 0.01 + 0.07 + 3.0 + 45.0 + 1000.0


def test_a_router_status_is_replaced_by_the_next(journal, backend):
    journal.write_status("node-a", {"pid": 1, "listeners": [{"name": "main", "port": 11112, "associations": 0}]},
                         now=100.0)
    journal.write_status("node-b", {"pid": 2}, now=150.0)
    journal.write_status("node-a", {"pid": 3, "last_reload": {"time": 190.0, "ok": False, "findings": []}},
                         now=200.0)
    again = backend.open()  # the console's process
    try:
        statuses = again.statuses()
    finally:
        again.close()
    assert [(status.node, status.updated_at) for status in statuses] == [("node-a", 200.0), ("node-b", 150.0)]
    assert statuses[0].status == {"pid": 3, "last_reload": {"time": 190.0, "ok": False, "findings": []}}
    node, updated_at, status = statuses[1]
    assert (node, updated_at, status) == ("node-b", 150.0, {"pid": 2})


def test_sqlite_every_search_on_an_indexed_fact_uses_its_index(sqlite_journal):
    for number in range(20):
        sqlite_journal.record(with_facts(number, patient_id=f"P{number}"), None, routed("PACS"), DONE)
    from rulesengine.runtime.journal import sql as journal_sql

    db = sqlite_journal._connection()

    def searched(**filters) -> str:
        query, args = journal_sql.search_query(**filters)
        return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query, args))

    for column in journal_sql.INDEXED_FILTERS:
        for paging in ({}, {"before_id": 10}):
            plan = searched(**{column: "x"}, **paging)
            assert "SCAN" not in plan and f"instances_{column}" in plan, (column, paging, plan)
    # a patient or a UID narrows a search more than a source, an outcome or a time range
    for column in ("patient_id", "accession_number", "study_instance_uid", "series_instance_uid", "sop_instance_uid"):
        for broad in ({"calling_aet": "CT1"}, {"source_name": "main", "outcome": "route"},
                      {"received_from": 0.0, "received_to": 10.0, "before_id": 10}):
            plan = searched(**{column: "x"}, **broad)
            assert "SCAN" not in plan and f"instances_{column}" in plan, (column, broad, plan)
    # A time range alone: its ids bounded from the received_at index alone, then the table walked
    # newest first by id, a page's worth: never every instance of the range sorted.
    for window in ({"received_from": 0.0, "received_to": 10.0}, {"received_from": 0.0}, {"received_to": 10.0}):
        for paging in ({}, {"before_id": 10}):
            plan = searched(**window, **paging)
            assert "SEARCH instances USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in plan, (window, paging, plan)
            assert "COVERING INDEX instances_received_at" in plan, (window, paging, plan)
            assert "SCAN instances" not in plan and "TEMP B-TREE" not in plan, (window, paging, plan)
        # with a broad filter, its index and the ids' bounds
        plan = searched(**window, outcome="route", before_id=10)
        assert "USING INDEX instances_outcome (outcome=? AND rowid>? AND rowid<?)" in plan, (window, plan)
        assert "SCAN instances" not in plan and "TEMP B-TREE" not in plan, (window, plan)


def test_sqlite_a_trace_reads_deliveries_and_attempts_by_their_index(sqlite_journal):
    from rulesengine.runtime.journal import sql as journal_sql
    db = sqlite_journal._connection()
    deliveries = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + journal_sql.TRACE_DELIVERIES, (1,)))
    assert deliveries.startswith("SEARCH deliveries USING INDEX deliveries_instance (instance_id=?)"), deliveries
    attempts = " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + journal_sql.TRACE_ATTEMPTS, (1,)))
    assert "SCAN" not in attempts and "deliveries_instance" in attempts and "attempts_delivery" in attempts, attempts


@pytest.mark.parametrize("paging", [1, 3, 50])
def test_a_time_range_finds_every_instance_in_it_newest_first_whatever_the_order_of_times(journal, paging):
    """Ids follow arrival, mostly: an instance journaled again after a restart keeps its older
    time. Paged through, a range gives exactly the instances received in it, by id, newest first."""
    times = [100.0, 101.0, 102.0, 50.0, 103.0, 104.0, 10.0, 105.0, 200.0, 101.5, 106.0, 300.0]
    ids = [journal.record(replace(with_facts(number), received_at=at), None, routed("PACS"), DONE)
           for number, at in enumerate(times)]
    for received_from, received_to in ((100.0, 106.0), (None, 102.0), (101.0, None), (0.0, 1000.0), (400.0, 500.0),
                                       (60.0, 100.0)):
        expected = [number for number, at in sorted(zip(ids, times), reverse=True)
                    if (received_from is None or at >= received_from) and (received_to is None or at < received_to)]
        found, before = [], None
        while True:
            page = journal.search_instances(received_from=received_from, received_to=received_to, before_id=before,
                                            limit=paging)
            found += [item.id for item in page]
            if len(page) < paging:
                break
            before = page[-1].id
        assert found == expected, (received_from, received_to)
        with_outcome = journal.search_instances(received_from=received_from, received_to=received_to,
                                               outcome="route", limit=100)
        assert [item.id for item in with_outcome] == expected


def test_a_journal_of_the_previous_release_opens_and_gains_what_the_console_reads(tmp_path):
    path = tmp_path / "previous.sqlite"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(PREVIOUS_SCHEMA)
        db.execute("INSERT INTO instances (received_at, source_kind, source_name, calling_aet, sop_instance_uid, path, "
                   "state, ruleset_version, outcome, rules_fired, destinations, processed_at) VALUES "
                   "(1, 'listener', 'main', 'CT1', '1.2.3.1', NULL, 'done', 'v0', 'drop', '[\"drop\"]', '[]', 2)")
        db.execute("INSERT INTO requests (received_at, message, calling_aet) VALUES (1, 'C-FIND', 'CT1')")
        db.commit()
    journal = SQLiteJournal(str(path))
    try:
        old = journal.instance(1)
        assert old.arrival.patient_id is None and old.outcome.outcome == "drop" and old.outcome.trace is None
        assert journal.trace(1).trace is None
        assert [item.id for item in journal.search_instances(sop_instance_uid="1.2.3.1")] == [1]
        new_id = journal.record(with_facts(2), None, replace(routed("PACS"), trace='{"edits":[]}'), DONE)
        assert [item.id for item in journal.search_instances(patient_id="P1")] == [new_id]
        assert journal.trace(new_id).trace == {"edits": []}
        assert counted(journal)[("instances_received", "main")] == 1  # counted from the update on
        journal.write_status("node", {"pid": 1})
        assert journal.request(1).arrival.calling_aet == "CT1"
        with closing(sqlite3.connect(path)) as db:
            indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"instances_patient_id", "instances_accession_number", "instances_study_instance_uid",
                "instances_series_instance_uid", "instances_received_at", "instances_sop_instance_uid"} <= indexes
    finally:
        journal.close()
    SQLiteJournal(str(path)).close()  # opened again: nothing left to add


def test_a_search_value_is_a_value_never_sql(journal):
    instance_id = journal.record(with_facts(1, patient_id="x' OR '1'='1"), None, routed("PACS"), DONE)
    journal.record(with_facts(2), None, routed("PACS"), DONE)
    assert [item.id for item in journal.search_instances(patient_id="x' OR '1'='1")] == [instance_id]
    assert journal.search_instances(patient_id="' OR 1=1 --") == []
    assert journal.search_instances(calling_aet="%") == [] and journal.search_instances(patient_id="P_") == []


def test_sqlite_a_search_takes_only_the_filters_it_knows():
    from rulesengine.runtime.journal import sql as journal_sql
    with pytest.raises(TypeError, match="not a filter"):
        journal_sql.search_query(**{"1=1 OR patient_id": "x"})
# ---- the console's reads and its audit log --------------------------------------------------------


def test_the_audit_log_keeps_who_did_what_when_newest_first(journal):
    first = journal.record_audit("ada", "login", "127.0.0.1", "ok", now=1000.0)
    second = journal.record_audit("otto", "queue retry", "PACS", "ok: 2 dead deliveries queued again", now=1001.5)
    assert second > first
    assert journal.audit_log() == [
        {"id": second, "at": 1001.5, "user": "otto", "action": "queue retry", "target": "PACS",
         "result": "ok: 2 dead deliveries queued again"},
        {"id": first, "at": 1000.0, "user": "ada", "action": "login", "target": "127.0.0.1", "result": "ok"}]
    assert [row["id"] for row in journal.audit_log(limit=1)] == [second]


def test_the_audit_log_outlives_purges(journal):
    queue_instance(journal)
    journal.record_audit("ada", "queue purge", None, "ok")
    journal.purge(tuple(DeliveryState))
    journal.purge_instances()
    assert [row["action"] for row in journal.audit_log()] == ["queue purge"]


def test_deliveries_page_by_page_newest_first(journal):
    ids = [queue_instance(journal, ("PACS",), f"/spool/in/{n}.dcm", n)[0] for n in range(5)]
    queue_instance(journal, ("ARCHIVE",), "/spool/in/x.dcm", 9)
    first = journal.deliveries_page((QUEUED,), "PACS", None, 2)
    assert [d.id for d in first] == [ids[4], ids[3]]
    assert [d.id for d in journal.deliveries_page((QUEUED,), "PACS", first[-1].id, 2)] == [ids[2], ids[1]]
    assert [d.id for d in journal.deliveries_page((QUEUED,), "PACS", ids[1], 2)] == [ids[0]]
    assert journal.deliveries_page((DEAD,), "PACS", None, 2) == []
    assert first[0]["calling_aet"] == "CT1"


def test_pauses_lists_the_destinations_that_wait(journal):
    journal.postpone("PACS", 2000.0)
    journal.postpone("ARCHIVE", 500.0)
    assert journal.pauses(now=1000.0) == {"PACS": 2000.0}
    journal.resume("PACS", now=1000.0)
    assert journal.pauses(now=1000.0) == {}


# ---- for the console's overview and metrics: activity, reloads ----------------


def test_activity_counts_received_and_delivered_by_span(journal):
    now = time.time()
    for number, age in enumerate((5.0, 30.0, 700.0, 1300.0, 5000.0)):  # the last is before the spans asked
        journal.record(replace(with_facts(number), received_at=now - age), None, routed("PACS"), DONE)
    [first, second] = queue_instance(journal, ("PACS", "ARCHIVE"), number=9)
    [claimed] = journal.claim("PACS", 1)
    journal.delivered(claimed, now)
    [claimed] = journal.claim("ARCHIVE", 1)
    journal.failed(claimed, now, "refused", None)  # dead: never delivered
    start = now - 1700  # the last span ends 100 s after now: the instances recorded since are in it
    spans = journal.activity(start, 600, 3)
    assert [span[0] for span in spans] == [start, start + 600, start + 1200]
    # the instance queued at `now` (number 9) is received in the last span, like the ones 5 and 30 s old
    assert [span[1] for span in spans] == [1, 1, 3]
    assert [span[2] for span in spans] == [0, 0, 1]
    assert journal.activity(now + 10, 60, 1) == [(now + 10, 0, 0)]


def test_reloads_are_counted_by_result(journal):
    journal.count_reload(True)
    journal.count_reload(False)
    journal.count_reload(True)
    assert {label: value for (name, label), value in counted(journal).items() if name == "reloads"} == {
        "ok": 2, "failed": 1}


def test_sqlite_the_overview_reads_never_walk_the_delivered_or_the_old(sqlite_journal):
    """A journal of many delivered deliveries and old instances: what the overview and /metrics
    read stays as cheap as in a small one (SQLite's virtual machine steps, counted), while a
    count of the deliveries themselves walks them all."""
    db = sqlite_journal._connection()
    now = time.time()

    def steps(read) -> int:
        taken = [0]

        def step() -> int:
            taken[0] += 1
            return 0
        db.set_progress_handler(step, 100)
        try:
            read()
        finally:
            db.set_progress_handler(None, 100)
        return taken[0]

    def reads() -> dict[str, int]:
        return {"activity": steps(lambda: sqlite_journal.activity(now - 600, 60, 10)),
                "counts": steps(sqlite_journal.counts),
                "scan": steps(lambda: db.execute("SELECT destination, state, COUNT(*) FROM deliveries "
                                                 "GROUP BY destination, state").fetchall())}

    queue_instance(sqlite_journal, ("PACS", "ARCHIVE"), number=1)
    small = reads()
    old = now - 86400
    db.execute("BEGIN")
    db.executemany("INSERT INTO instances (received_at, state) VALUES (?, 'processed')",
                   [(old + number,) for number in range(20000)])
    db.executemany("INSERT INTO deliveries (instance_id, destination, state, created_at, updated_at, delivered_at) "
                   "VALUES (1, ?, 'delivered', 0, 0, ?)", [(("PACS", "ARCHIVE")[number % 2], old + number)
                                                           for number in range(20000)])
    db.execute("COMMIT")
    large = reads()
    assert large["scan"] > 50 * max(1, small["scan"])  # the walk the others avoid
    assert large["activity"] <= small["activity"] + 2 and large["counts"] <= small["counts"] + 2, (small, large)
# ---- the queue counts, kept as deliveries change ---------------------------------------------------


def counted_by_scan(journal) -> dict:
    out: dict = {}
    for destination, state, count in journal._connection().execute(
            "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"):
        out.setdefault(destination, {})[DeliveryState(state)] = count
    return out


def test_queue_counts_follow_every_change_of_a_delivery(journal):
    for number in range(6):
        queue_instance(journal, ("PACS", "ARCHIVE"), path=f"/spool/in/{number}.dcm", number=number)
    assert journal.counts() == counted_by_scan(journal) == {"PACS": {QUEUED: 6}, "ARCHIVE": {QUEUED: 6}}
    claimed = journal.claim("PACS", 5)
    journal.delivered(claimed[0], time.time())
    journal.failed(claimed[1], time.time(), "refused", time.time() + 60)
    journal.failed(claimed[2], time.time(), "refused", None)
    journal.release(claimed[3:4])
    assert journal.counts() == counted_by_scan(journal)
    assert journal.counts()["PACS"] == {QUEUED: 2, SENDING: 1, DELIVERED: 1, RETRYING: 1, DEAD: 1}
    assert journal.retry_dead("PACS") == 1
    assert journal.requeue_interrupted() == 1
    journal.add_deliveries(journal.record(received(9), "/spool/in/9.dcm", None, ACCEPTED),
                           [new_delivery("TELERAD", "/spool/in/9.dcm", 9)], state=SENDING)
    assert journal.counts() == counted_by_scan(journal)
    journal.purge([DELIVERED, QUEUED], destination="ARCHIVE")
    journal.purge([DELIVERED])
    assert journal.counts() == counted_by_scan(journal) == {"PACS": {QUEUED: 4, RETRYING: 1},
                                                              "TELERAD": {SENDING: 1}}
    journal._connection().execute("UPDATE deliveries SET destination='VNA' WHERE destination='TELERAD'")
    assert journal.counts() == counted_by_scan(journal)


def test_sqlite_queue_counts_are_read_without_the_deliveries(sqlite_journal):
    queue_instance(sqlite_journal, ("PACS", "ARCHIVE"))
    plan = " | ".join(row[3] for row in sqlite_journal._connection().execute(
        "EXPLAIN QUERY PLAN SELECT destination, state, count FROM delivery_counts WHERE count > 0"))
    assert "deliveries" not in plan.replace("delivery_counts", ""), plan


def test_sqlite_a_journal_without_kept_counts_counts_once_when_opened(tmp_path):
    path = str(tmp_path / "journal.sqlite")
    journal = SQLiteJournal(path)
    queue_instance(journal, ("PACS", "ARCHIVE"))
    journal.delivered(journal.claim("PACS", 1)[0], time.time())
    journal.close()
    with closing(sqlite3.connect(path)) as db:  # as a journal of the release before kept none
        for name in ("deliveries_counted_insert", "deliveries_counted_delete", "deliveries_counted_update"):
            db.execute(f"DROP TRIGGER {name}")
        db.execute("DROP TABLE delivery_counts")
        db.commit()
    journal = SQLiteJournal(path)
    try:
        assert journal.counts() == {"PACS": {DELIVERED: 1}, "ARCHIVE": {QUEUED: 1}}
        queue_instance(journal, ("PACS",), number=2)
        assert journal.counts() == counted_by_scan(journal) == {"PACS": {DELIVERED: 1, QUEUED: 1},
                                                                  "ARCHIVE": {QUEUED: 1}}
    finally:
        journal.close()
    SQLiteJournal(path).close()  # opened again: counted once only
    journal = SQLiteJournal(path)
    try:
        assert journal.counts() == counted_by_scan(journal)
    finally:
        journal.close()


def test_the_journal_says_how_much_it_takes(journal):
    before = journal.size_bytes()
    assert before > 0
    for number in range(1000):
        journal.record(replace(with_facts(number), received_at=1000.0 + number), None, routed("PACS"), DONE)
    assert journal.size_bytes() > before


# ---- exclusive locks ------------------------------------------------------------------------------

_HOLD_A_LOCK = """
import importlib, sys
journal = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(sys.argv[3])
lock = journal.try_exclusive(sys.argv[4])
print("held" if lock is not None else "refused", flush=True)
sys.stdin.read()  # until the test closes stdin, or kills this process
"""


def _holder(backend: Backend, name: str) -> subprocess.Popen:
    """Another process holding (or asking for) the lock `name`; its first line says which."""
    return subprocess.Popen([sys.executable, "-c", _HOLD_A_LOCK, backend.module, backend.name, backend.address, name],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT.parent)


def test_an_exclusive_lock_has_one_holder_until_released(journal):
    first = journal.try_exclusive("destination:PACS")
    assert first is not None and first.held()
    assert journal.try_exclusive("destination:PACS") is None  # another thread of this process, too
    other = journal.try_exclusive("destination:ARCHIVE")  # names are independent
    assert other is not None
    first.release()
    first.release()  # twice is harmless
    assert not first.held()
    again = journal.try_exclusive("destination:PACS")
    assert again is not None and again.held()
    again.release()
    other.release()


def test_an_exclusive_lock_held_by_another_process_is_refused_until_it_dies(backend, journal):
    holder = _holder(backend, "watch:/data/incoming")
    try:
        assert holder.stdout.readline().strip() == "held"
        assert journal.try_exclusive("watch:/data/incoming") is None
        holder.kill()  # SIGKILL: no chance to release it
        holder.wait(30)
        deadline = time.monotonic() + 30  # the server notices the closed session soon after
        lock = journal.try_exclusive("watch:/data/incoming")
        while lock is None and time.monotonic() < deadline:
            time.sleep(0.05)
            lock = journal.try_exclusive("watch:/data/incoming")
        assert lock is not None and lock.held()
    finally:
        holder.kill()
        holder.wait(30)
    second = _holder(backend, "watch:/data/incoming")
    try:
        assert second.stdout.readline().strip() == "refused"  # now this process holds it
    finally:
        second.kill()
        second.wait(30)
    lock.release()


def test_lock_names_of_any_text_are_safe_and_distinct(journal):
    names = ["watch:/data/in", "watch:/data_in", "watch:../../etc/passwd", "destination:" + "x" * 500, "ä ö/\x00?"]
    locks = [journal.try_exclusive(name) for name in names]
    assert all(lock is not None for lock in locks)
    for lock in locks:
        lock.release()
