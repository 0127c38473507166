"""A watched folder read by one node at a time: nodes on one PostgreSQL journal (a real
server) and one storage folder, each with its watcher of the same folder. The one that holds
the journal's lock `watch:FOLDER` takes the files; the others wait and take over when it
stops, dies (SIGKILL) or loses its database connection.

The watchers run without their threads: the tests call `poll()` and move an injected clock
(settle time, HOLD_CHECK_SECONDS) themselves.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.clock import StoppedClock
from helpers.files import ROOT, SAMPLES, write
from helpers.peers import wait_until

from rulesengine.config import JournalDatabase, load_config
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage
from rulesengine.runtime.watcher import HOLD_CHECK_SECONDS, FolderWatcher

SETTLE = 1.0
CONFIG = f"""
storage: storage
rules: main.rules
watch:
  - {{name: inbox, path: inbox, settle_seconds: {SETTLE}}}
destinations:
  OUT: {{type: folder, path: out}}
"""
RULES = 'rule "all" {\n  then route to OUT\n}\n'


@dataclass
class Node:
    name: str
    storage: Storage
    watcher: FolderWatcher

    @property
    def journal(self):
        return self.watcher.pipeline.journal


@pytest.fixture
def cluster(tmp_path, postgres):
    """make(name) -> a node watching the one inbox, on one journal and one storage folder."""
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    url = postgres.new_schema()
    clock = StoppedClock(1000.0)
    made: list[Node] = []

    def make(name: str) -> Node:
        storage = Storage(config.storage, JournalDatabase(url), name)
        journal = storage.journal()
        pipeline = Pipeline(storage, journal, RulesHolder(config), lambda names: None, on_accepted=lambda _id: None)
        watcher = FolderWatcher(config.watch[0], pipeline, clock=clock)
        watcher.observe()
        node = Node(name, storage, watcher)
        made.append(node)
        return node
    make.clock = clock
    make.inbox = Path(config.watch[0].path)
    make.url = url
    yield make
    for node in made:
        node.watcher.stop()
        node.journal.close()


def drop(inbox: Path, name: str) -> None:
    staged = inbox.parent / "staging" / name
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes((SAMPLES / "ct_head.dcm").read_bytes())
    os.rename(staged, inbox / name)


def instances_by_node(journal) -> dict[str, int]:
    """How many instances each node's spool received (the journal names each spool file)."""
    counts: dict[str, int] = {}
    db = journal._connection()
    for (path,) in db.execute("SELECT path FROM instances"):
        node = Path(path).parent.parent.name
        counts[node] = counts.get(node, 0) + 1
    return counts


def settle_and_poll(clock: StoppedClock, *watchers: FolderWatcher) -> list[int]:
    """Every watcher looks, the clock moves past the settle time and a hold check, they look again."""
    for watcher in watchers:
        watcher.poll()
    clock.now += max(SETTLE, HOLD_CHECK_SECONDS) + 0.1
    return [watcher.poll() for watcher in watchers]


def test_one_node_reads_the_folder_and_the_other_waits(cluster, caplog):
    caplog.set_level(logging.INFO, logger="rulesengine.watch")
    a, b = cluster("a"), cluster("b")
    for index in range(3):
        drop(cluster.inbox, f"{index}.dcm")
    wait_until(lambda: len(a.watcher.waiting()) == 3 and len(b.watcher.waiting()) == 3, timeout=20,
               what="both watchers noticing the files")

    assert settle_and_poll(cluster.clock, a.watcher, b.watcher) == [3, 0]

    assert a.watcher.reading() and not b.watcher.reading()
    assert sorted(p.name for p in (cluster.inbox / "done").iterdir()) == ["0.dcm", "1.dcm", "2.dcm"]
    assert instances_by_node(a.journal) == {"a": 3}
    assert any("another node reads" in r.getMessage() for r in caplog.records)
    # the files the other node took are not waited for any longer by b
    cluster.clock.now += HOLD_CHECK_SECONDS
    b.watcher.poll()
    assert b.watcher.waiting() == []


HOLDER = """
import sys
from rulesengine.runtime.journal.postgres import PostgresJournal
journal = PostgresJournal(sys.argv[1], node="other")
lock = journal.try_exclusive(sys.argv[2])
print("held" if lock is not None else "refused", flush=True)
sys.stdin.read()
"""


def other_node_holding(cluster, name: str) -> subprocess.Popen:
    """Another node's process holding the lock `name` until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, cluster.url, name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_a_holder_that_loses_its_database_connection_stops_reading_until_it_holds_the_folder_again(
        cluster, postgres, caplog):
    caplog.set_level(logging.INFO, logger="rulesengine.watch")
    a = cluster("a")
    assert a.watcher.reading()
    # The server ends a's session that holds the lock (as a database restart or a network cut
    # would); another node takes the folder meanwhile.
    [[ended]] = postgres.admin(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
        "database = (SELECT oid FROM pg_database WHERE datname = 'journals')")
    assert ended == 1
    other = other_node_holding(cluster, a.watcher.lock_name)
    try:
        drop(cluster.inbox, "meanwhile.dcm")
        wait_until(lambda: "meanwhile.dcm" in a.watcher.waiting(), timeout=20, what="a noticing the file")
        cluster.clock.now += HOLD_CHECK_SECONDS
        assert not a.watcher.reading()
        assert settle_and_poll(cluster.clock, a.watcher) == [0]
        assert (cluster.inbox / "meanwhile.dcm").exists()
    finally:
        kill(other)

    def reading_again() -> bool:  # the other node died: once the server has seen it, a holds the folder again
        cluster.clock.now += HOLD_CHECK_SECONDS
        return a.watcher.reading()
    wait_until(reading_again, timeout=20, what="a reading the folder again")
    assert settle_and_poll(cluster.clock, a.watcher) == [1]
    assert instances_by_node(a.journal) == {"a": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert any("inbox: no longer holds" in m and "the journal's connection ended" in m for m in messages)
    assert any("inbox: another node reads" in m for m in messages)
    assert any("inbox: this node reads" in m for m in messages)
    assert not any(r.exc_info for r in caplog.records)


def test_the_waiting_node_takes_over_when_the_holder_is_killed(cluster):
    b = cluster("b")
    holder = other_node_holding(cluster, b.watcher.lock_name)
    try:
        drop(cluster.inbox, "waiting.dcm")
        wait_until(lambda: "waiting.dcm" in b.watcher.waiting(), timeout=20, what="b noticing the file")
        assert settle_and_poll(cluster.clock, b.watcher) == [0]
        assert (cluster.inbox / "waiting.dcm").exists()
    finally:
        kill(holder)

    def taken() -> bool:
        cluster.clock.now += HOLD_CHECK_SECONDS
        b.watcher.poll()
        cluster.clock.now += SETTLE + 0.1
        return b.watcher.poll() == 1
    wait_until(taken, timeout=20, what="b taking the folder over from the killed holder")
    assert (cluster.inbox / "done" / "waiting.dcm").exists()


def test_a_stopped_holder_hands_the_folder_to_the_next(cluster):
    a, b = cluster("a"), cluster("b")
    assert a.watcher.reading() and not b.watcher.reading()
    a.watcher.stop()
    cluster.clock.now += HOLD_CHECK_SECONDS
    assert b.watcher.reading()


def test_with_sqlite_a_second_watcher_of_the_folder_waits_too(tmp_path):
    """SQLite's lock is a file lock: a second watcher of one folder (a second watch entry
    naming it) never reads it at the same time."""
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    pipeline = Pipeline(storage, journal, RulesHolder(config), lambda names: None, on_accepted=lambda _id: None)
    clock = StoppedClock(1000.0)
    first = FolderWatcher(config.watch[0], pipeline, clock=clock)
    second = FolderWatcher(config.watch[0], pipeline, clock=clock)
    try:
        assert first.reading() and not second.reading()
        first.stop()
        clock.now += HOLD_CHECK_SECONDS
        assert second.reading()
    finally:
        second.stop()
        journal.close()


def test_files_wait_in_the_folder_while_the_journals_database_is_away(tmp_path, caplog):
    """Neither the file's fault nor a bug: nothing journaled, nothing failed; taken once the
    database is back (and the watcher holds the folder again)."""
    from helpers.postgres import start_postgres
    from rulesengine.runtime.watcher import FULL_WAIT_SECONDS
    caplog.set_level(logging.INFO, logger="rulesengine.watch")
    server = start_postgres()
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage, JournalDatabase(server.new_database()), "a")
    journal = storage.journal()
    clock = StoppedClock(1000.0)
    watcher = FolderWatcher(config.watch[0], Pipeline(storage, journal, RulesHolder(config), lambda names: None,
                                                      on_accepted=lambda _id: None), clock=clock)
    inbox = Path(config.watch[0].path)
    try:
        watcher.observe()
        assert watcher.poll() == 0 and watcher.reading()
        drop(inbox, "during.dcm")
        wait_until(lambda: "during.dcm" in watcher.waiting(), timeout=20, what="the file noticed")
        watcher.poll()
        server.stop_server()
        clock.now += SETTLE + 0.1  # settled, before the next check of the folder's lock
        assert watcher.poll() == 1

        assert (inbox / "during.dcm").exists() and not (inbox / "failed").joinpath("during.dcm").exists()
        assert os.listdir(storage.tmp) == [] and os.listdir(storage.incoming) == []
        [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "inbox: the journal's database cannot be reached" in warning.getMessage()
        assert warning.exc_info is None

        server.start_server()
        clock.now += FULL_WAIT_SECONDS + HOLD_CHECK_SECONDS
        watcher.poll()  # the lock went with the server: asked for again, held again
        clock.now += SETTLE + 0.1
        assert watcher.poll() == 1
        assert (inbox / "done" / "during.dcm").exists()
        assert len(journal.accepted_instances()) == 1
    finally:
        watcher.stop()
        journal.close()
        server.stop()
