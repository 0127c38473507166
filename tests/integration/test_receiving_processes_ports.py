"""Several receiving processes on one node (`processes:`), in the real router: a port already
taken stops the router before anything runs, a second router on the same ports is refused, a
listener of port 0 gets one port every process shares; a C-MOVE the router makes gets its
instances back whichever process the source's association lands in, and a C-STORE for a C-MOVE
whose process was killed is refused; a destination of one
association gets every instance once, in order; the main process killed takes the others with it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from helpers.instances import received_by_uid
from helpers.peers import ROOT, StoreSCP, require, wait_until
from helpers.receiving_processes import (ASSOCIATIONS_PER_SENDER, accepted_by_process, alive, config, labels,
                                         receiving_pids, rules, send_concurrently, start_router)
from helpers.retrieve_source import RetrieveSource
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from rulesengine.config import load_config
from rulesengine.runtime.retrieval_exchange import process_of
from rulesengine.runtime.service import Router


def run_router(folder: Path, rule_text: str, config_text: str) -> subprocess.CompletedProcess:
    """`dicom-rules run` in `folder`, expected to stop by itself (refused at its start)."""
    (folder / "main.rules").write_text(rule_text, encoding="utf-8")
    (folder / "router.yaml").write_text(config_text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "rulesengine", "run", "router.yaml"], cwd=folder,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_port_already_taken_is_said_at_once_and_nothing_is_left_running(tmp_path, port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_router(tmp_path, rules("V1"), config(port, 3))
    assert result.returncode == 1, result.stderr
    assert f"cannot start: listener main on 127.0.0.1:{port}: Address already in use" in result.stderr
    # nothing was started before the port was tried: no worker, no receiving process, no rules recorded
    assert "process" not in result.stderr.replace("cannot start", ""), result.stderr


def test_a_second_router_on_the_ports_of_a_first_one_with_several_processes_is_refused(
        router_factory, tmp_path, port):
    # SO_REUSEPORT would let a second router of the same user share the port: it is tried alone first.
    first = start_router(router_factory, port)
    second = tmp_path / "second"
    second.mkdir()
    result = run_router(second, rules("OTHER"), config(port, 2))
    assert result.returncode == 1, result.stderr
    assert f"listener main on 127.0.0.1:{port}: Address already in use" in result.stderr
    sent = send_concurrently(port, tmp_path / "sent", senders=2)
    wait_until(lambda: set(sent) <= set(labels(tmp_path / "received")), timeout=60, what="every instance")
    assert not (second / "received").exists()
    assert first.stop() == 0


# ---- 5. the listener of port 0 ---------------------------------------------------------------------


def test_a_listener_of_port_0_is_given_one_port_that_every_process_shares(tmp_path):
    # Port 0 is for programs that start a router themselves (a configuration file needs a port).
    (tmp_path / "main.rules").write_text(rules("V1"), encoding="utf-8")
    (tmp_path / "router.yaml").write_text(config(11112, 2), encoding="utf-8")
    loaded = load_config(tmp_path / "router.yaml")
    router = Router(replace(loaded, listeners=(replace(loaded.listeners[0], port=0),)))
    temporary = tempfile.tempdir
    router.start()  # it puts this process's temporary files in its spool: given back below
    try:
        [main_listener] = router.listeners
        chosen = main_listener.server.socket.getsockname()[1]
        assert chosen != 0 and main_listener.config.port == chosen
        [receiver] = router.receivers
        assert receiver.ports == [chosen]
        wait_until(lambda: _listening_pids(chosen) >= {os.getpid(), receiver.pid}, timeout=30,
                   what="both processes listening on the chosen port")
        sent = send_concurrently(chosen, tmp_path / "sent", senders=8)
        wait_until(lambda: set(sent) <= set(labels(tmp_path / "received")), timeout=120, what="every instance")
        # the status row: every process's associations (a receiving process tells its own each second)
        status = wait_until(lambda: (lambda s: s if sum(p["accepted"][0] for p in s["processes"])
                                     == 8 * ASSOCIATIONS_PER_SENDER else None)(router.status.snapshot()),
                            timeout=10, what="the status row counting every association")
        assert [entry["pid"] for entry in status["processes"]] == [os.getpid(), receiver.pid]
        assert all(entry["accepted"][0] for entry in status["processes"]), status
        assert status["listeners"][0]["port"] == chosen
    finally:
        router.stop()
        tempfile.tempdir = temporary


def _listening_pids(port: int) -> set[int]:
    """The processes with a listening socket on `port` (from /proc: the socket's inode)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in list(fh)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(fields[9])
    pids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        links = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except OSError:
                    pass  # closed meanwhile
        except OSError:
            continue  # ended, or not ours to read
        if any(f"socket:[{inode}]" in links for inode in inodes):
            pids.add(int(pid))
    return pids



# ---- 6. C-MOVE retrievals: the instances reach the process that asked ---------------------------------

MOVES = 8  # each C-MOVE and each of its source's associations lands in one of 3 processes: all 8 in
# the process that asked, which one process alone would need, happens once in 3^8


def test_c_move_retrievals_get_their_instances_back_whichever_process_receives_them(router_factory, tmp_path, port):
    workstation = StoreSCP(tmp_path / "ws1", ae_title="WS1").start()
    source = RetrieveSource(port, count=3, ae_title="SOURCE")
    try:
        retrieving = rules("V1") + '\nrule "retrievals" on C-MOVE {\n  then route to PACS\n}\n'
        text = (config(port, processes=3)
                + f"  PACS: {{type: dicom, ae_title: SOURCE, host: 127.0.0.1, port: {source.port}, "
                  "calling_ae_title: ROUTER}\n"
                + f"  WS1_STATION: {{type: dicom, ae_title: WS1, host: 127.0.0.1, port: {workstation.port}}}\n")
        text = text.replace("ae_title: ROUTER, port", "ae_title: ROUTER, services: [echo, store, move], port")
        router = router_factory(text, retrieving, port)
        for number in (1, 2):
            router.wait_for_log(f"receiving process {number} (")
        movescu = require("movescu")
        for _ in range(MOVES):
            result = subprocess.run([movescu, "-v", "-S", "-aet", "VIEWER", "-aec", "ROUTER", "-aem", "WS1",
                                     "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3",
                                     "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Received Final Move Response (Success)" in result.stdout + result.stderr, \
                result.stdout + result.stderr
        delivered = received_by_uid(workstation.folder)
        assert sorted(delivered) == sorted(str(i.SOPInstanceUID) for i in source.instances)  # each moved 8 times
        assert router.stop() == 0
        output = router.log_path.read_text()
        assert output.count("C-MOVE from VIEWER to WS1: answered, status 0x0000, 3 completed, 0 failed") == MOVES
        accepted = accepted_by_process(output)
        assert len([pid for pid, count in accepted.items() if count]) >= 2, accepted
    finally:
        source.stop()
        workstation.stop()


def test_a_c_store_for_a_c_move_whose_receiving_process_was_killed_is_refused_and_leaves_nothing(
        router_factory, tmp_path, port):
    """The receiving process that made a C-MOVE is SIGKILLed while its source holds the request;
    the source then stores the moved instances (Move Originator ROUTER, the C-MOVE's Message
    ID), on several associations, landing in any process, the restarted one included: each is
    refused with a failure status saying why, none is routed as an ordinary instance, and the
    spool keeps nothing of them."""
    source = RetrieveSource(port, count=1, ae_title="SOURCE", hold=True)
    workstation = StoreSCP(tmp_path / "ws1", ae_title="WS1").start()
    movescus: list[subprocess.Popen] = []
    try:
        text = (config(port, processes=3)
                + f"  PACS: {{type: dicom, ae_title: SOURCE, host: 127.0.0.1, port: {source.port}, "
                  "calling_ae_title: ROUTER}\n"
                + f"  WS1_STATION: {{type: dicom, ae_title: WS1, host: 127.0.0.1, port: {workstation.port}}}\n")
        text = text.replace("ae_title: ROUTER, port", "ae_title: ROUTER, services: [echo, store, move], port")
        router = router_factory(text, rules("V1") + '\nrule "retrievals" on C-MOVE {\n  then route to PACS\n}\n', port)
        for number in (1, 2):
            router.wait_for_log(f"receiving process {number} (")
        movescu = require("movescu")
        owner = 0
        while owner == 0:  # the main process made it: killing it ends the router; ask again
            assert len(movescus) < 12, "every C-MOVE landed in the main process"
            movescus.append(subprocess.Popen(
                [movescu, "-S", "-aet", "VIEWER", "-aec", "ROUTER", "-aem", "WS1", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", "StudyInstanceUID=1.2.3", "127.0.0.1", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_until(lambda: len(source.message_ids) == len(movescus), timeout=30, what="the C-MOVE at the source")
            message_id = source.message_ids[-1]
            owner = process_of(message_id)
        killed = receiving_pids(router)[owner - 1]
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: len(receiving_pids(router)) == 3, timeout=30, what="a new receiving process")
        router.wait_for_log(f"receiving process {owner} ({receiving_pids(router)[-1]}) runs rules")

        moved = source.instances[0]
        statuses = []
        for _ in range(6):  # six associations: the kernel spreads them over the three processes
            ae = AE(ae_title="SOURCE")
            ae.add_requested_context(moved.SOPClassUID, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
            assert assoc.is_established
            answer = assoc.send_c_store(moved, originator_aet="ROUTER", originator_id=message_id)
            statuses.append((int(answer.Status), str(answer.get("ErrorComment", ""))))
            assoc.release()
        assert statuses == [(0xA700, "the retrieval this instance is for has ended")] * 6
        storage = tmp_path / "var"
        with closing(sqlite3.connect(storage / "journal.sqlite", timeout=30)) as db:
            assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0  # none routed as a modality's
        assert [path for path in (storage / "spool").rglob("*") if path.is_file()] == []
        assert workstation.files() == []
        source.released.set()  # the C-MOVEs left (one made by the main process, asked again) end
        for process in movescus:
            process.wait(30)
        assert router.stop() == 0
        assert router.log_path.read_text().count(f"for the C-MOVE {message_id} ROUTER made, which has ended") == 6
    finally:
        for process in movescus:
            process.kill()
            process.wait()
        source.stop()
        workstation.stop()


# ---- 7. with the journal's claims: once each, in order ---------------------------------------------


def test_with_two_processes_a_destination_of_one_association_gets_every_instance_once_in_reception_order(
        router_factory, tmp_path, port):
    peer = StoreSCP(tmp_path / "ordered", extra=("-v",)).start()
    try:
        text = config(port).replace("STORE: {type: folder, path: received}",
                                    f"STORE: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {peer.port}}}")
        router = start_router(router_factory, port, text=text)
        sent = send_concurrently(port, tmp_path / "sent")
        wait_until(lambda: len(peer.files()) >= len(sent), timeout=180, what="every instance at the peer")
        assert router.stop() == 0
        accepted = accepted_by_process(router.log_path.read_text())
        assert len([pid for pid, count in accepted.items() if count]) == 2, accepted
        with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite")) as db:
            received = [row[0] for row in db.execute("SELECT sop_instance_uid FROM instances ORDER BY id")]
            assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == len(sent)  # sent once each
        log = (peer.folder.parent / f"storescp-{peer.port}.log").read_text(errors="replace")
        stored = re.findall(r"storing DICOM file: .*/[A-Z]{2}\.([0-9.]+)$", log, flags=re.M)
        assert sorted(received) == sorted(sent)
        assert stored == received  # in the order the router answered them, whichever process did
    finally:
        peer.stop()


# ---- 8. the main process killed ---------------------------------------------------------------------


def test_the_main_process_killed_takes_every_other_process_with_it_and_frees_the_port(
        router_factory, tmp_path, port):
    router = start_router(router_factory, port)
    output = router.output()
    others = receiving_pids(router) + [int(pid) for pid in re.findall(r"worker process (\d+) started", output)]
    assert len(others) == 3, output  # receiving process 1, and a worker for each receiving process
    router.kill()
    # the kernel ends them (no process of the last router may keep accepting on the shared port)
    wait_until(lambda: not any(alive(pid) for pid in others), timeout=30, what="the other processes gone")
    again = start_router(router_factory, port)
    sent = send_concurrently(port, tmp_path / "sent", senders=4)
    wait_until(lambda: set(sent) <= set(labels(tmp_path / "received")), timeout=120, what="every instance")
    assert again.stop() == 0
