"""What only the PostgreSQL journal does: versioned migrations, claims that skip the rows
another claimer holds, the configuration's `journal:` key and its password, and the errors
of a database that is wrong or away. The journal's behaviour itself is tested on both
backends by test_journal.py."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from helpers.peers import free_port
from rulesengine.arrival import Arrival
from rulesengine.cli import main
from rulesengine.config import ConfigError, load_config
from rulesengine.runtime.journal import ACCEPTED, NewDelivery, Outcome
from rulesengine.runtime.journal.postgres import MIGRATIONS, PostgresJournal, migrate
from rulesengine.runtime.storage import JournalUnavailable, Storage

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PASSWORD = "s3cret-Pa55"


def queue(journal, count: int, destination: str = "PACS") -> list[int]:
    ids = []
    for number in range(count):
        arrival = Arrival(calling_aet="CT1", source_name="main", source_kind="listener", sop_class_uid=CT_IMAGE,
                          sop_instance_uid=f"1.2.3.{number}")
        instance_id = journal.record(arrival, f"/spool/in/{number}.dcm",
                                     Outcome("v1", "route", None, (), (destination,)), ACCEPTED)
        ids += journal.add_deliveries(instance_id, [NewDelivery(destination, f"/spool/in/{number}.dcm", CT_IMAGE,
                                                                f"1.2.3.{number}", "1.2.840.10008.1.2.1")])
    return ids


@pytest.fixture
def router_database(postgres):
    """A database owned by a role that logs in with a password, as a router's would."""
    name = f"router_{free_port()}"
    postgres.admin(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'router') THEN "
                   f"CREATE ROLE router LOGIN PASSWORD '{PASSWORD}'; END IF; END $$",
                   f"CREATE DATABASE {name} OWNER router TEMPLATE template0")
    return f"postgresql://router@127.0.0.1:{postgres.port}/{name}"


def config_file(folder: Path, body: str) -> Path:
    path = folder / "router.yaml"
    (folder / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    path.write_text("storage: var\nrules: main.rules\n" + textwrap.dedent(body), encoding="utf-8")
    return path


ALL_VERSIONS = [(number,) for number, _ in sorted(MIGRATIONS)]  # schema_version's rows once all are applied


# ---- migrations -----------------------------------------------------------------------------------


def test_migrations_are_applied_once_in_order_and_opening_again_applies_none(postgres):
    url = postgres.new_database()
    journal = PostgresJournal(url)
    assert journal.schema_version() == MIGRATIONS[-1][0] == max(number for number, _ in MIGRATIONS)
    queue(journal, 1)
    journal.close()
    with psycopg.connect(url) as db:
        assert migrate(db) == []  # nothing left to do
        assert db.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == ALL_VERSIONS
    reopened = PostgresJournal(url)
    assert [row["destination"] for row in reopened.deliveries()] == ["PACS"]  # nothing made again, nothing lost
    reopened.close()


def test_a_database_of_version_1_gets_leases_and_keeps_its_deliveries(postgres):
    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        db.execute(MIGRATIONS[0][1])
        db.execute("INSERT INTO schema_version VALUES (1, 0)")
        db.execute("INSERT INTO instances (received_at, state) VALUES (1, 'processed')")
        db.execute("INSERT INTO instances (received_at, state) VALUES (2, 'accepted')")
        db.execute("INSERT INTO deliveries (instance_id, destination, path, state, created_at, updated_at) "
                   "VALUES (1, 'PACS', '/spool/in/old.dcm', 'sending', 1, 1)")
    journal = PostgresJournal(url, node="a")
    try:
        assert journal.schema_version() == MIGRATIONS[-1][0]
        assert journal.instance_lease(2) is None  # answered before claims: free, and claimed once
        assert [i.id for i in journal.claim_instances(5, now=100.0)] == [2] and journal.claim_instances(5, now=100.0) == []
        assert journal.lease(1) is None  # sent before leases: held by no node
        assert journal.requeue_interrupted() == 1  # so any node's start queues it again
        [claimed] = journal.claim("PACS", 1, now=100.0)
        assert journal.lease(claimed.id).owner == "a"
        db = journal._connection()
        db.execute("SET enable_seqscan = off")  # one row: the planner would rightly read the table
        plan = " ".join(row[0] for row in db.execute(
            "EXPLAIN SELECT id FROM deliveries WHERE lease_expires < 1 AND state = 'sending'").fetchall())
        db.execute("RESET enable_seqscan")
        assert "deliveries_lease" in plan
    finally:
        journal.close()


def test_processes_starting_at_once_migrate_once(postgres):
    url = postgres.new_database()
    start = threading.Barrier(4)
    opened, failed = [], []

    def open_journal():
        start.wait()
        try:
            opened.append(PostgresJournal(url))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=open_journal) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == [] and len(opened) == 4
    with psycopg.connect(url) as db:
        assert db.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == ALL_VERSIONS
    for journal in opened:
        journal.close()


# ---- claims -------------------------------------------------------------------------------------------


def test_a_claim_skips_the_rows_another_transaction_holds_without_waiting(postgres):
    url = postgres.new_schema()
    journal = PostgresJournal(url)
    first, *others = queue(journal, 4)
    with psycopg.connect(url) as other:  # another node, in the middle of its claim
        other.execute("SELECT id FROM deliveries WHERE id = %s FOR UPDATE", (first,))
        started = time.monotonic()
        claimed = journal.claim("PACS", 10)
        assert time.monotonic() - started < 2  # did not wait for the lock
        assert [delivery.id for delivery in claimed] == others
    assert [delivery.id for delivery in journal.claim("PACS", 10)] == [first]  # released with the lock
    journal.close()


def test_two_journals_claiming_at_once_never_take_the_same_delivery(postgres):
    url = postgres.new_schema()
    journals = [PostgresJournal(url), PostgresJournal(url)]
    ids = queue(journals[0], 120)
    taken: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def claimer(index: int):
        journal = journals[index % 2]
        start.wait()
        while True:
            claimed = journal.claim("PACS", 3)
            if not claimed:
                return
            taken[index] += [delivery.id for delivery in claimed]
            for delivery in claimed:
                journal.delivered(delivery, time.time(), "0x0000")

    threads = [threading.Thread(target=claimer, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [number for numbers in taken for number in numbers]
    assert sorted(every) == ids  # each delivery once, none left out
    assert sum(1 for numbers in taken if numbers) >= 2  # they did claim side by side
    assert journals[1].counts() == {"PACS": {"delivered": 120}}  # the counts kept by the triggers agree
    for journal in journals:
        journal.close()


# ---- the configuration and its password ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["file", "env"])
def test_the_password_comes_from_its_file_or_its_variable(tmp_path, router_database, monkeypatch, source):
    if source == "file":
        (tmp_path / "password").write_text(PASSWORD + "\n", encoding="utf-8")
        body = f"journal: {router_database}\njournal_password_file: password\n"
    else:
        monkeypatch.setenv("ROUTER_JOURNAL_PASSWORD", PASSWORD)
        body = f"journal: {router_database}\njournal_password_env: ROUTER_JOURNAL_PASSWORD\n"
    config = load_config(config_file(tmp_path, body))
    assert PASSWORD not in repr(config)
    journal = Storage.of(config).journal()
    assert isinstance(journal, PostgresJournal)
    queue(journal, 2)
    assert journal.counts() == {"PACS": {"queued": 2}}
    journal.close()


def test_a_wrong_password_stops_the_start_naming_the_key_and_never_the_password(tmp_path, router_database):
    (tmp_path / "password").write_text("not-" + PASSWORD + "\n", encoding="utf-8")
    config = load_config(config_file(tmp_path, f"journal: {router_database}\njournal_password_file: password\n"))
    with pytest.raises(JournalUnavailable) as raised:
        Storage.of(config).journal()
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'router.yaml'}:3: journal: cannot connect to the journal's database "
                              f"{router_database}: ")
    assert "password authentication failed" in message and PASSWORD not in message


def test_an_unreachable_server_is_an_error_at_start_naming_the_key(tmp_path, capsys):
    url = f"postgresql://router@127.0.0.1:{free_port()}/dicom_router"  # nothing listens there
    config = config_file(tmp_path, f"journal: {url}\n")
    assert main(["queue", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"dicom-rules: {config}:3: journal: cannot connect to the journal's database {url}: ")
    assert "Traceback" not in error
    assert "dicom-rules: internal error" not in error


@pytest.mark.parametrize("value, words", [
    ("sqlite:///var/journal.sqlite", "'sqlite:///var/journal.sqlite' is not valid: The journal in PostgreSQL"),
    ("postgres://router:hunter2@db/dicom_router", "the address holds a password"),
    ("postgresql://router:hunter2@db/dicom_router", "the address holds a password: give it with "
                                                     "journal_password_file or journal_password_env"),
    ("postgresql://db.example.org/dicom_router", "the address names no user"),
    ("postgresql://router@db.example.org", "the address names no database"),
    ("postgresql://router@db.example.org:99999/dicom_router", "not a postgresql:// address"),
])
def test_a_bad_address_names_the_key_and_its_line(tmp_path, value, words):
    with pytest.raises(ConfigError) as raised:
        load_config(config_file(tmp_path, f"log: {{level: info}}\njournal: {value}\n"))
    [problem] = raised.value.problems
    assert problem.startswith(f"{tmp_path / 'router.yaml'}:4: journal") and words in problem
    assert "hunter2" not in problem


@pytest.mark.parametrize("body, expected", [
    ("journal_password_file: password\n",
     ":3: journal_password_file: a password without a journal: set journal: postgresql://... too"),
    ("journal: postgresql://router@db/dicom_router\njournal_password_file: password\n"
     "journal_password_env: ROUTER_JOURNAL_PASSWORD\n",
     ":5: journal_password_env: journal_password_file and journal_password_env both name the password; keep one"),
    ("journal: postgresql://router@db/dicom_router\njournal_password_env: NO_SUCH_VARIABLE_OF_THE_TESTS\n",
     ":4: journal_password_env: the environment variable NO_SUCH_VARIABLE_OF_THE_TESTS is not set"),
    ("journal: postgresql://router@db/dicom_router\njournal_password_file: missing\n",
     ":4: journal_password_file: cannot read"),
])
def test_a_password_that_cannot_be_read_names_its_key(tmp_path, body, expected):
    with pytest.raises(ConfigError) as raised:
        load_config(config_file(tmp_path, body))
    [problem] = raised.value.problems
    assert problem.startswith(str(tmp_path / "router.yaml") + expected), problem


def test_without_journal_key_the_journal_is_sqlite_in_the_storage_folder(tmp_path):
    config = load_config(config_file(tmp_path, ""))
    assert config.journal is None
    journal = Storage.of(config).journal()
    assert journal.path == str(tmp_path / "var" / "journal.sqlite")
    journal.close()


def test_a_connection_the_server_ended_is_replaced_at_the_next_call(postgres):
    url = postgres.new_schema()
    journal = PostgresJournal(url)
    queue(journal, 1)
    pid = journal._connection().db.info.backend_pid
    postgres.admin(f"SELECT pg_terminate_backend({pid})")  # as a restarted server or a cut would
    with pytest.raises(psycopg.OperationalError):
        journal.counts()  # the call that finds it lost fails...
    assert journal.counts() == {"PACS": {"queued": 1}}  # ...and the next one has a new connection
    assert journal._connection().db.info.backend_pid != pid
    journal.close()


def test_an_exclusive_lock_whose_session_ended_is_no_longer_held_and_goes_to_another(postgres):
    url = postgres.new_schema()
    first, second = PostgresJournal(url, node="a"), PostgresJournal(url, node="b")
    lock = first.try_exclusive("destination:PACS")
    assert lock is not None and second.try_exclusive("destination:PACS") is None
    pid = lock._db.info.backend_pid
    postgres.admin(f"SELECT pg_terminate_backend({pid})")  # the database restarted, or the network cut
    assert not lock.held()  # its holder stops what the lock protected...
    taken = None
    deadline = time.monotonic() + 30
    while taken is None and time.monotonic() < deadline:  # ...and the server hands it on
        taken = second.try_exclusive("destination:PACS")
    assert taken is not None and taken.held()
    assert first.try_exclusive("destination:PACS") is None
    lock.release()  # after the loss: harmless, and it does not free the new holder's lock
    assert taken.held() and first.try_exclusive("destination:PACS") is None
    taken.release()
    first.close()
    second.close()
