"""The PostgreSQL journal across a restart of its server (a real one, of this module's own):
which errors say the database is out of reach, and the connections found lost are replaced
without failing the first call after the restart."""

from __future__ import annotations

import sqlite3
import threading

import psycopg
import pytest
from helpers.arrivals import Received
from helpers.postgres import start_postgres

from rulesengine.runtime.journal import ACCEPTED, unreachable
from rulesengine.runtime.journal.postgres import JournalUnavailable, PostgresJournal
from rulesengine.runtime.storage import JournalUnavailable as StorageJournalUnavailable


@pytest.fixture(scope="module")
def server():
    own = start_postgres()
    yield own
    own.stop()


def record(journal: PostgresJournal) -> int:
    return journal.record(Received("file", None), None, None, ACCEPTED)


def test_a_restart_costs_no_call_its_failure(server):
    journal = PostgresJournal(server.new_database())
    try:
        record(journal)
        # a thread that ended leaves its connection to the next one: it is lost with the restart too
        other = threading.Thread(target=record, args=(journal,))
        other.start()
        other.join()
        server.stop_server()
        server.start_server()

        record(journal)  # this thread's connection was lost: replaced at its BEGIN
        results: list = []
        thread = threading.Thread(target=lambda: results.append(record(journal)))
        thread.start()
        thread.join()
        assert len(results) == 1  # the lost connection of the ended thread was not handed on
        assert len(journal.accepted_instances()) == 4
    finally:
        journal.close()


def test_while_the_server_is_down_calls_fail_as_unreachable_and_work_once_it_is_back(server):
    journal = PostgresJournal(server.new_database())
    try:
        record(journal)
        server.stop_server()
        for _ in range(2):  # the connection found lost, then no server to connect to
            with pytest.raises(Exception) as failed:
                record(journal)
            assert unreachable(failed.value), repr(failed.value)
        server.start_server()
        record(journal)
        assert len(journal.accepted_instances()) == 2
    finally:
        journal.close()


def test_errors_of_the_rules_or_of_the_data_are_not_taken_for_an_unreachable_database(server):
    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        db.execute("INSERT INTO t VALUES (1)")
        for statement in ("INSERT INTO t VALUES (1)", "SELECT * FROM missing", "SELECT 1/0", "SELEC 1"):
            with pytest.raises(psycopg.Error) as failed:
                db.execute(statement)
            assert not unreachable(failed.value), statement
    assert unreachable(JournalUnavailable("cannot connect"))
    assert unreachable(StorageJournalUnavailable("router.yaml:3: journal: cannot connect"))
    assert unreachable(psycopg.OperationalError("the connection is closed"))
    for other in (sqlite3.OperationalError("database is locked"), OSError(28, "No space left on device"),
                  ValueError("bad"), RuntimeError("cannot connect")):
        assert not unreachable(other)
