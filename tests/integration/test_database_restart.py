"""The journal's PostgreSQL server stopped (by its PID) and started again while storescu sends
to a node: the senders get failure statuses while it is down (never a Success for an instance
the journal does not hold), nothing acknowledged is lost, and the node recovers by itself, with
no restart, once the database is back: it receives and delivers again. A receiving process
(`processes: 2`) started again while the database is down waits for it, trying again every few
seconds and saying so once, rather than dying at each try; then it runs and receives."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading

import pytest

from helpers.instances import make_instances
from helpers.nodes import arrived_uids, journal_rows, start_nodes
from helpers.peers import RouterProcess, StoreSCP, free_port, storescu, wait_until
from helpers.postgres import start_postgres
from helpers.senders import Sender


@pytest.fixture
def own_postgres():
    """A server of this test's own: stopping it must not disturb the other tests' journals."""
    server = start_postgres()
    yield server
    server.stop()


def test_the_database_restarted_under_load_loses_nothing_and_the_node_recovers_by_itself(tmp_path, own_postgres):
    url = own_postgres.new_database()
    archive = StoreSCP(tmp_path / "archive").start()
    node = start_nodes(tmp_path, ["a"], url, archive.port)["a"]
    stop = threading.Event()
    sender = Sender(node.port, tmp_path / "sent", "MODA", stop)
    try:
        sender.start()
        wait_until(lambda: len(sender.acknowledged) >= 10, timeout=120, what="ten instances acknowledged")
        # the worker process delivers too: its connections go down with the server
        wait_until(lambda: len(archive.files()) >= 5, timeout=120, what="deliveries under way")

        own_postgres.stop_server()
        refused_before = len(sender.refusals)
        wait_until(lambda: len(sender.refusals) >= refused_before + 5, timeout=120,
                   what="the sender refused while the database is down")
        acknowledged_while_down = set(sender.acknowledged)
        # a rule change meanwhile is not put in place: its version cannot be recorded
        rules = tmp_path / "main.rules"
        rules.write_text(rules.read_text(encoding="utf-8") + "# changed while the database is away\n",
                         encoding="utf-8")
        node.wait_for_log("reloading failed: the journal's database cannot be reached", timeout=60)

        own_postgres.start_server()
        wait_until(lambda: len(sender.acknowledged) >= len(acknowledged_while_down) + 10, timeout=120,
                   what="instances acknowledged again once the database is back")
        os.kill(node.process.pid, signal.SIGHUP)  # the change, again
        node.wait_for_log("rules reloaded", timeout=60)
    finally:
        stop.set()
        sender.join(timeout=150)

    try:
        # every acknowledged instance is in the journal and at the archive
        journaled = {row[0] for row in journal_rows(url, "SELECT sop_instance_uid FROM instances")}
        assert sender.acknowledged <= journaled
        wait_until(lambda: sender.acknowledged <= arrived_uids(archive.folder), timeout=120,
                   what="every acknowledged instance at the archive")
        wait_until(lambda: journal_rows(url, "SELECT count(*) FROM deliveries WHERE state <> 'delivered'")[0][0] == 0,
                   timeout=60, what="every delivery journaled as delivered")
        assert journal_rows(url, "SELECT count(*) FROM instances WHERE state = 'accepted'") == [(0,)]
        assert set(sender.refusals) == {"Refused: OutOfResources"}, set(sender.refusals)
        output = node.output()
        assert node.process.poll() is None  # the same process all along
        assert "Traceback" not in output, output
        assert "the journal's database cannot be reached" in output, output
        assert "the journal's database answers again" in output, output
    finally:
        assert node.stop() == 0, node.output()
        archive.stop()


# ---- a receiving process started while the database is down ---------------------------------------


class DatabaseStandIn(threading.Thread):
    """Listens on the stopped server's port: each connection the router makes to its database
    is taken and closed at once (as a server going down does), after noting whether process
    `pid` made it (its socket's inode among that process's file descriptors)."""

    def __init__(self, port: int, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.tries_of_pid = 0
        self.server = socket.create_server(("127.0.0.1", port))

    def run(self) -> None:
        while True:
            try:
                connection, (_host, peer_port) = self.server.accept()
            except OSError:
                return  # closed
            with connection:
                if _socket_inode(peer_port) in _socket_inodes(self.pid):
                    self.tries_of_pid += 1

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.join(10)


def _socket_inode(local_port: int) -> str | None:
    """The inode of the loopback TCP socket bound to `local_port` (the client's end)."""
    with open("/proc/net/tcp") as fh:
        for line in list(fh)[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                return fields[9]
    return None


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(link[8:-1])
    except OSError:
        pass
    return found


def two_processes_on_postgres(tmp_path, own_postgres) -> RouterProcess:
    """A router of two receiving processes journaling in a database of its own, started."""
    port = free_port()
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to STORE\n}\n', encoding="utf-8")
    (tmp_path / "router.yaml").write_text(
        f"storage: var\nrules: main.rules\nprocesses: 2\njournal: {own_postgres.new_database()}\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
        "destinations:\n  STORE: {type: folder, path: received}\n", encoding="utf-8")
    return RouterProcess(tmp_path / "router.yaml", port).start()


def test_a_receiving_process_started_while_the_database_is_down_waits_for_it_without_a_restart_loop(
        tmp_path, own_postgres):
    router = two_processes_on_postgres(tmp_path, own_postgres)

    def started() -> list[int]:
        return [int(pid) for pid in re.findall(r"receiving process (\d+) started", router.output())]

    try:
        router.wait_for_log("receiving process 1 (")
        [first] = started()
        own_postgres.stop_server()
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(started()) == 2, timeout=30, what="a new receiving process")
        restarted = started()[1]
        stand_in = DatabaseStandIn(own_postgres.port, restarted)
        stand_in.start()
        try:
            # it tries again and again, the same process all along (every 2 s: a restart loop
            # would have started one a second)
            wait_until(lambda: stand_in.tries_of_pid >= 3, timeout=60, what="three tries of the new process")
        finally:
            stand_in.close()
        output = router.output()
        assert started() == [first, restarted], output
        assert "ended with 1" not in output and "Traceback" not in output, output
        waiting = f"receiving process 1 ({restarted}): the journal's database cannot be reached"
        assert output.count(waiting) == 1, output  # said once, not at each try
        assert "trying again every 2 s" in output[output.index(waiting):].splitlines()[0]

        own_postgres.start_server()
        router.wait_for_log(f"receiving process 1 ({restarted}) runs rules", timeout=60)
        instances = make_instances(tmp_path / "sent", 16)
        for instance in instances:  # an association each: the kernel gives some to each process
            result = storescu(router.port, [instance.path])
            assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: {i.sop_instance_uid for i in instances} <= arrived_uids(tmp_path / "received"),
                   timeout=120, what="every instance delivered")
    finally:
        code = router.stop()
    output = router.log_path.read_text()
    assert code == 0, output
    accepted = {int(pid): int(count) for pid, count in
                re.findall(r"listener main stopped in process (\d+): (\d+) association", output)}
    assert accepted.get(restarted, 0) > 0, output  # the process that waited receives
    assert f"receiving process {restarted} stopped (exit code 0)" in output, output
    assert re.findall(r"receiving process (\d+) started", output) == [str(first), str(restarted)], output
    assert "Traceback" not in output, output


def test_a_receiving_process_waiting_for_the_database_stops_with_the_router(tmp_path, own_postgres):
    router = two_processes_on_postgres(tmp_path, own_postgres)
    router.wait_for_log("receiving process 1 (")
    [first] = [int(pid) for pid in re.findall(r"receiving process (\d+) started", router.output())]
    own_postgres.stop_server()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: re.search(r"receiving process 1 \((\d+)\): the journal's database cannot be reached",
                                 router.output()), timeout=30, what="the new receiving process waiting")
    restarted = int(re.search(r"receiving process 1 \((\d+)\): the journal's database cannot be reached",
                              router.output()).group(1))
    code = router.stop()
    output = router.log_path.read_text()
    assert code == 0, output
    # it answered the stop while waiting (one that did not would be killed, after 120 s)
    assert f"receiving process {restarted} stopped (exit code 0)" in output, output
    assert "Traceback" not in output, output
