"""Three router nodes on one machine sharing a PostgreSQL journal (a real server) and one
storage folder, each with its own listener, storescu processes sending to all three, one
storescp receiving, and one watched folder all three watch; one node killed (SIGKILL)
mid-stream, the one that reads the watched folder.

What is promised: every instance a node acknowledged, and every file dropped in the watched
folder, reaches the destination (a duplicate is possible, a loss is not), the survivors deliver
what the dead node held once its leases expire (3 s here: `journal_lease_seconds`), another node
reads the watched folder, and nothing stays leased afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import threading

from helpers.cli import dicom_rules
from helpers.nodes import arrived_uids, journal_rows, start_nodes
from helpers.instances import make_instances
from helpers.peers import StoreSCP, wait_until
from helpers.senders import Sender

LEASE_SECONDS = 3


def stored_uids(peer: StoreSCP) -> list[str]:
    """The SOP Instance UIDs storescp stored, in the order it stored them (its log, -v)."""
    log = (peer.folder.parent / f"storescp-{peer.port}.log").read_text(errors="replace")
    return re.findall(r"storing DICOM file: .*/[A-Z]{2}\.([0-9.]+)$", log, flags=re.M)


def test_a_node_killed_mid_stream_loses_nothing_acknowledged_and_the_others_deliver_its_work(tmp_path, postgres):
    url = postgres.new_database()
    # Each C-STORE answered a little later (a real archive takes its time): the node sends long enough
    # to be caught holding leases; --fork: the nodes' associations are served side by side.
    archive = StoreSCP(tmp_path / "archive", extra=("-v", "--fork", "-xcr", "sleep 0.05", "-xs")).start()
    inbox = tmp_path / "inbox"
    # b first: it reads the watched folder, which the others watch too and take over when it dies
    nodes = start_nodes(tmp_path, ["b", "a", "c"], url, archive.port, LEASE_SECONDS, watch=inbox)
    dropped = make_instances(tmp_path / "to-drop", 10)
    for instance in dropped[:5]:
        shutil.copyfile(instance.path, inbox / f".{instance.path.name}")
        os.rename(inbox / f".{instance.path.name}", inbox / instance.path.name)
    stop = {name: threading.Event() for name in nodes}
    senders = {name: Sender(node.port, tmp_path / f"sent-{name}", f"MOD{name.upper()}", stop[name])
               for name, node in nodes.items()}
    try:
        for sender in senders.values():
            sender.start()
        wait_until(lambda: all(len(s.acknowledged) >= 10 for s in senders.values()), timeout=180,
                   what="ten instances acknowledged by each node")

        # b dies while it holds leases on deliveries it is sending
        wait_until(lambda: journal_rows(url, "SELECT 1 FROM deliveries WHERE lease_owner = 'b' AND state = 'sending'"),
                   timeout=60, interval=0.01, what="node b sending")
        wait_until(lambda: len(list((inbox / "done").glob("*.dcm"))) >= 5, timeout=60, what="b taking the inbox")
        nodes["b"].kill()
        stop["b"].set()
        for instance in dropped[5:]:
            shutil.copyfile(instance.path, inbox / f".{instance.path.name}")
            os.rename(inbox / f".{instance.path.name}", inbox / instance.path.name)
        held_by_b = {row[0] for row in journal_rows(
            url, "SELECT id FROM deliveries WHERE lease_owner = 'b' AND state = 'sending'")}
        after_kill = {name: len(senders[name].acknowledged) for name in ("a", "c")}
        wait_until(lambda: all(len(senders[name].acknowledged) >= after_kill[name] + 10 for name in after_kill),
                   timeout=180, what="the survivors receiving on")
    finally:
        for event in stop.values():
            event.set()
        for sender in senders.values():
            sender.join(timeout=150)

    try:
        acknowledged = set().union(*(s.acknowledged for s in senders.values()))
        acknowledged |= {instance.sop_instance_uid for instance in dropped}  # taken from the inbox: all of them
        assert len(senders["b"].acknowledged) >= 10
        wait_until(lambda: acknowledged <= arrived_uids(archive.folder), timeout=180,
                   what="every acknowledged instance at the archive")

        # The deliveries b held were sent again by another node once its leases expired.
        assert held_by_b, "b was killed holding leases"
        wait_until(lambda: journal_rows(url, "SELECT count(*) FROM deliveries WHERE state <> 'delivered'")[0][0] == 0,
                   timeout=120, what="every delivery journaled as delivered")
        assert journal_rows(url, "SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL "
                                 "OR lease_expires IS NOT NULL") == [(0,)]
        assert journal_rows(url, "SELECT count(*) FROM instances WHERE state = 'accepted'") == [(0,)]
        survivors_log = nodes["a"].output() + nodes["c"].output()
        assert "whose lease expired (a node stopped sending them) queued again" in survivors_log
        # the inbox was read by b alone, then by one of the others
        assert "watched folder inbox: this node reads" in survivors_log
        assert "another node reads" not in nodes["b"].log_path.read_text()
        assert not list(inbox.glob("*.dcm"))
        # STORE has one association (max_associations: 1): one process of the three nodes sends
        # to it at a time, in the order the instances were received: what each modality sent
        # arrives in the order it sent it (a duplicate comes later)
        first = {uid: (number, source) for number, uid, source in reversed(journal_rows(
            url, "SELECT id, sop_instance_uid, COALESCE(calling_aet, source_name) FROM instances ORDER BY id"))}
        stored = [first[uid] for uid in dict.fromkeys(stored_uids(archive))]
        for source in {source for _, source in first.values()}:
            numbers = [number for number, of in stored if of == source]
            assert numbers == sorted(numbers), (source, numbers)
        for name in ("a", "c"):
            assert "Traceback" not in nodes[name].output(), nodes[name].output()
        # the instances b acknowledged and had not delivered were delivered by a or c
        from_b = {row[0] for row in journal_rows(url, "SELECT sop_instance_uid FROM instances WHERE calling_aet = 'MODB'")}
        assert senders["b"].acknowledged <= from_b
        # `dicom-rules queue` lists the three nodes, with the rule set version each runs
        queue = dicom_rules("queue", tmp_path / "a.yaml", cwd=tmp_path)
        assert queue.returncode == 0, queue.stdout + queue.stderr
        lines = queue.stdout.splitlines()
        header = next(index for index, line in enumerate(lines) if line.startswith("router "))
        assert sorted(line.split()[0] for line in lines[header + 1:] if line.strip()) == ["a", "b", "c"], queue.stdout
        assert "different rule set versions" not in queue.stdout
    finally:
        for name in ("a", "c"):
            assert nodes[name].stop() == 0, nodes[name].output()
        archive.stop()
