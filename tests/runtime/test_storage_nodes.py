"""One storage folder under several routers: SQLite keeps it to one router; with a PostgreSQL
journal each node has a lock and a spool of its own, and a start-up sweep never touches the
files another running node wrote. Real folders, real locks (flock), two Storage objects."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from helpers.arrivals import Received
from helpers.files import SAMPLES

from rulesengine.config import ConfigError, JournalDatabase, load_config
from rulesengine.runtime.journal import ACCEPTED
from rulesengine.runtime.storage import Storage, StorageInUse


def node_storage(root, node: str, url: str = "postgresql://router@127.0.0.1:5432/router") -> Storage:
    """A node's storage with a PostgreSQL journal (the locks and the layout need no server)."""
    return Storage(str(root), JournalDatabase(url), node)


def received_file(storage: Storage) -> str:
    path = storage.temp_path()
    shutil.copyfile(SAMPLES / "ct_head.dcm", path)
    return path


@pytest.fixture
def nodes(tmp_path):
    made: list[Storage] = []

    def make(node: str, **kwargs) -> Storage:
        storage = node_storage(tmp_path / "storage", node, **kwargs)
        made.append(storage)
        return storage
    yield make
    for storage in made:
        storage.unlock()


# ---- SQLite: one router ---------------------------------------------------------------------------


def test_a_second_router_on_a_sqlite_folder_is_refused_naming_the_postgresql_journal(tmp_path):
    first, second = Storage(str(tmp_path / "storage")), Storage(str(tmp_path / "storage"))
    first.lock()
    try:
        with pytest.raises(StorageInUse) as refused:
            second.lock()
        message = str(refused.value)
        assert f"storage {first.root} is in use by another router (process {os.getpid()})" in message
        assert "need a PostgreSQL journal" in message and "`node:`" in message
        # the single spool, as before nodes existed: no per-node folder
        assert first.tmp == os.path.join(first.root, "spool", "tmp")
        assert not os.path.exists(os.path.join(first.root, "nodes"))
    finally:
        first.unlock()
    second.lock()  # released: the folder is free again
    second.unlock()


def test_a_sqlite_router_is_refused_where_nodes_run_and_a_node_where_a_sqlite_router_runs(nodes, tmp_path):
    node = nodes("a")
    node.lock()
    node.shared()
    sqlite = Storage(str(tmp_path / "storage"))
    with pytest.raises(StorageInUse, match="nodes on a PostgreSQL journal"):
        sqlite.lock()
    node.unlock()

    sqlite.lock()
    try:
        with pytest.raises(StorageInUse) as refused:
            nodes("b").lock(wait_seconds=0)
        assert f"needs it alone (process {os.getpid()})" in str(refused.value)
        assert "SQLite journal" in str(refused.value)
    finally:
        sqlite.unlock()


# ---- PostgreSQL: nodes side by side ------------------------------------------------------------------


def test_nodes_run_side_by_side_and_the_same_node_name_twice_is_refused(nodes):
    a, b, a_again = nodes("a"), nodes("b"), nodes("a")
    a.lock()
    assert a.alone  # the first: it sweeps every spool, then shares the folder
    a.shared()
    b.lock()
    assert not b.alone
    with pytest.raises(StorageInUse) as refused:
        a_again.lock()
    assert "another router with the node name 'a'" in str(refused.value)
    assert f"(process {os.getpid()})" in str(refused.value) and "its own `node:` name" in str(refused.value)
    a.unlock()
    a_again.lock()  # a stopped: its name is free, and b runs: not alone
    assert not a_again.alone


def test_each_node_writes_into_a_spool_of_its_own(nodes):
    a, b = nodes("a"), nodes("b")
    spooled_a, spooled_b = a.accept(received_file(a)), b.accept(received_file(b))
    assert os.path.dirname(spooled_a) == os.path.join(a.root, "nodes", "a", "in")
    assert os.path.dirname(spooled_b) == os.path.join(b.root, "nodes", "b", "in")
    assert os.path.dirname(a.temp_path()) == os.path.join(a.root, "nodes", "a", "tmp")
    assert os.path.dirname(b.output_path(1, "PACS")) == os.path.join(b.root, "nodes", "b", "out")
    assert a.quarantine_dir == b.quarantine_dir  # shared


def test_a_hostile_node_name_stays_inside_the_nodes_folder(nodes):
    storage = nodes("../../etc")
    storage.lock()
    assert os.path.dirname(storage.node_lock_path) == storage.nodes_dir
    assert os.path.dirname(os.path.dirname(storage.tmp)) == storage.nodes_dir


def test_the_sweep_of_a_node_never_touches_another_running_nodes_files(nodes):
    a, b = nodes("a"), nodes("b")
    a.lock()
    a.shared()
    b.lock()
    # b receives: a file half-received, one spooled and not journaled yet, a copy being written
    b_tmp, b_in = received_file(b), b.accept(received_file(b))
    b_out = b.output_path(7, "PACS")
    shutil.copyfile(SAMPLES / "ct_head.dcm", b_out)
    # a's own leftovers
    a_tmp, a_in = received_file(a), a.accept(received_file(a))

    a.unlock()  # a restarts while b runs
    a.lock()
    assert not a.alone
    removed, unknown = a.sweep(set())

    assert (removed, unknown) == (1, [a_in])
    assert not os.path.exists(a_tmp)
    assert all(os.path.exists(path) for path in (b_tmp, b_in, b_out))


def test_a_node_that_starts_alone_sweeps_the_stopped_nodes_and_the_single_spool(nodes, tmp_path):
    # files a single router left in the single spool before it became a node
    single = Storage(str(tmp_path / "storage"))
    single_tmp, single_in = received_file(single), single.accept(received_file(single))
    single_needed = single.accept(received_file(single))
    b = nodes("b")
    b_tmp, b_in = received_file(b), b.accept(received_file(b))  # b was killed; it stays stopped

    a = nodes("a")
    a.lock()
    assert a.alone
    removed, unknown = a.sweep({single_needed})

    assert removed == 2 and not os.path.exists(single_tmp) and not os.path.exists(b_tmp)
    assert sorted(unknown) == sorted([single_in, b_in])
    assert os.path.exists(single_needed)


def test_a_node_starting_while_another_sweeps_waits_for_it(nodes):
    a, b = nodes("a"), nodes("b")
    a.lock()
    assert a.alone
    started, waiting = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        waiting.set()  # b found a sweeping and waits
        time.sleep(0.01)

    def start_b():
        b.lock(wait_seconds=60, sleep=sleep)
        started.set()
    thread = threading.Thread(target=start_b)
    thread.start()
    try:
        assert waiting.wait(30)
        assert not started.is_set()
    finally:
        a.shared()
    thread.join(timeout=30)
    assert started.is_set() and not b.alone


def test_a_node_gives_up_waiting_for_a_sweep_that_never_ends(nodes):
    a, b = nodes("a"), nodes("b")
    a.lock()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
    with pytest.raises(StorageInUse, match="has been sweeping the spool for over 5 s"):
        b.lock(wait_seconds=5, clock=lambda: now[0], sleep=sleep)
    assert now[0] >= 5
    # b let go of its node lock: another try, once a shares, succeeds
    a.shared()
    b.lock(wait_seconds=0)
    assert not b.alone


def test_a_node_upgraded_in_place_journals_its_single_spool_files_again(tmp_path, postgres):
    """A router of one node kept its files in the single spool; restarted as a node on the same
    PostgreSQL journal, alone, it keeps what the journal names and finds what it does not."""
    url = postgres.new_schema()
    single = Storage(str(tmp_path / "storage"))
    journaled, lost = single.accept(received_file(single)), single.accept(received_file(single))
    node = node_storage(tmp_path / "storage", "a", url)
    journal = node.journal()
    try:
        journal.record(Received("file", None), journaled, None, ACCEPTED)
        node.lock()
        assert node.alone
        assert node.sweep(journal.paths_in_use()) == (0, [lost])
        node.shared()
        assert not node.alone
    finally:
        journal.close()
        node.unlock()


# ---- the lease length ------------------------------------------------------------------------------


def test_the_lease_length_comes_from_the_configuration(tmp_path):
    (tmp_path / "router.yaml").write_text("storage: var\nrules: main.rules\njournal_lease_seconds: 7.5\n",
                                          encoding="utf-8")
    config = load_config(tmp_path / "router.yaml")
    assert config.journal_lease_seconds == 7.5
    journal = Storage.of(config).journal()
    try:
        assert journal.lease_seconds == 7.5
    finally:
        journal.close()
    (tmp_path / "router.yaml").write_text("storage: var\nrules: main.rules\n", encoding="utf-8")
    assert load_config(tmp_path / "router.yaml").journal_lease_seconds == 60.0


@pytest.mark.parametrize("value", ["0", "-3", "0.5", "100000", "soon", "true", "[1]", "'10'"])
def test_a_bad_lease_length_is_refused_naming_the_key_and_its_line(tmp_path, value):
    (tmp_path / "router.yaml").write_text(f"storage: var\nrules: main.rules\njournal_lease_seconds: {value}\n",
                                          encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "router.yaml")
    [problem] = refused.value.problems
    assert "router.yaml:3: journal_lease_seconds" in problem, problem


def test_a_lock_file_not_yet_rewritten_by_a_starting_node_is_never_taken_for_a_router_that_needs_it_alone(nodes):
    """What the last nodes wrote stays in router.lock after they stopped; a node that just took
    it alone rewrites it a moment later: meanwhile another node waits, it is not refused."""
    a, b = nodes("a"), nodes("b")
    a.lock()
    with open(a.lock_path, "w") as stale:
        stale.write("nodes\n")
    with pytest.raises(StorageInUse, match="another node .* has been sweeping the spool"):
        b.lock(wait_seconds=0)
    a.shared()
    b.lock(wait_seconds=0)
