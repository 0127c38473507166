"""The journal's PostgreSQL server stopped (by its PID) and started again while storescu sends
to a node: the senders get failure statuses while it is down (never a Success for an instance
the journal does not hold), nothing acknowledged is lost, and the node recovers by itself, with
no restart, once the database is back: it receives and delivers again."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from helpers.nodes import arrived_uids, journal_rows, start_nodes
from helpers.peers import StoreSCP, wait_until
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
