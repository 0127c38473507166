"""Several receiving processes on one node (`processes:`), in the real router: the listeners of
every process share the port (SO_REUSEPORT), so associations from concurrent storescu processes
land in more than one process, and every instance is delivered; an extra receiving process
SIGKILLed mid-stream is restarted, the senders to the others go on, and nothing acknowledged is
lost; a reload reaches every process (and a refused one none); a port already taken stops the
router before anything runs; a C-MOVE the router makes gets its instances back whichever
process the source's association lands in. Each process says in the log, as its listener stops, how many
associations it accepted: that is how the tests see where associations landed.
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
import threading
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pydicom
from helpers.instances import make_instances, received_by_uid
from helpers.peers import ROOT, StoreSCP, require, storescu, wait_until
from helpers.retrieve_source import RetrieveSource
from helpers.senders import Sender, received_uids

from rulesengine.config import load_config
from rulesengine.runtime.service import Router

ASSOCIATIONS_PER_SENDER = 3  # 8 senders x 3: the kernel's spread leaves one process alone once in 2^23


def rules(label: str) -> str:
    return f"""
rule "label" {{
  then {{
    set DataSet.InstitutionName = "{label}"
    route to STORE
  }}
}}
"""


def config(port: int, processes: int | str = 2) -> str:
    return (f"storage: var\nrules: main.rules\nprocesses: {processes}\n"
            f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            "destinations:\n  STORE: {type: folder, path: received}\n")


def start_router(router_factory, port: int, label: str = "V1", processes: int = 2, text: str | None = None):
    router = router_factory(text or config(port, processes), rules(label), port)
    for number in range(1, processes):
        router.wait_for_log(f"receiving process {number} (")  # its listener is bound: the port is shared
    return router


def receiving_pids(router) -> list[int]:
    """The extra receiving processes the router started, in order (from its log)."""
    return [int(pid) for pid in re.findall(r"receiving process (\d+) started", router.output())]


def accepted_by_process(output: str) -> dict[int, int]:
    """Associations each process accepted, from the lines its listener logs as it stops."""
    accepted: dict[int, int] = {}
    for pid, count in re.findall(r"listener main stopped in process (\d+): (\d+) association", output):
        accepted[int(pid)] = accepted.get(int(pid), 0) + int(count)
    return accepted


def send_concurrently(port: int, folder: Path, senders: int = 8) -> list[str]:
    """`senders` storescu processes at once, each sending ASSOCIATIONS_PER_SENDER times (one
    association each) two new instances; the SOP Instance UIDs sent."""
    batches = [make_instances(folder / f"{sender}-{round_}", 2)
               for sender in range(senders) for round_ in range(ASSOCIATIONS_PER_SENDER)]
    failures: list[str] = []

    def send(sender: int) -> None:
        for batch in batches[sender * ASSOCIATIONS_PER_SENDER:(sender + 1) * ASSOCIATIONS_PER_SENDER]:
            result = storescu(port, [instance.path for instance in batch])
            if result.returncode != 0:
                failures.append(result.stdout + result.stderr)

    threads = [threading.Thread(target=send, args=(sender,)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    return [instance.sop_instance_uid for batch in batches for instance in batch]


def labels(folder: Path) -> dict[str, str]:
    """SOP Instance UID -> InstitutionName of what the destination folder holds."""
    found = {}
    for path in folder.rglob("*.dcm"):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        found[str(dataset.SOPInstanceUID)] = str(dataset.InstitutionName)
    return found


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not reaped yet, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


# ---- 1. associations spread over the processes ----------------------------------------------------


def test_associations_from_eight_senders_land_in_more_than_one_process_and_every_instance_arrives(
        router_factory, tmp_path, port):
    router = start_router(router_factory, port)
    [extra] = receiving_pids(router)
    sent = send_concurrently(port, tmp_path / "sent")
    wait_until(lambda: set(sent) <= set(labels(tmp_path / "received")), timeout=120,
               what="every instance in the destination folder")
    assert router.stop() == 0
    output = router.log_path.read_text()
    accepted = accepted_by_process(output)
    assert sum(accepted.values()) == 8 * ASSOCIATIONS_PER_SENDER, output
    assert len([pid for pid, count in accepted.items() if count]) == 2, accepted
    assert router.process.pid in accepted and extra in accepted
    assert set(labels(tmp_path / "received").values()) == {"V1"}
    # each receiving process ran a worker of its own, and stopped it after its listener
    workers = {int(pid) for pid in re.findall(r"worker process (\d+) started", output)}
    assert len(workers) == 2, output
    # each instance processed once, by one of the workers, and delivered once
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite")) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT instance_id) FROM deliveries "
                          "WHERE state = 'delivered'").fetchone() == (len(sent), len(sent))
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == len(sent)
        assert {row[0] for row in db.execute("SELECT DISTINCT lease_process FROM instances")} <= workers
    assert f"receiving process {extra} stopped (exit code 0)" in output, output
    assert "retrieve: c-get" not in output  # no rule retrieves: no warning of retrievals


# ---- 2. an extra receiving process killed mid-stream ---------------------------------------------


def test_a_receiving_process_killed_mid_stream_is_restarted_and_nothing_acknowledged_is_lost(
        router_factory, tmp_path, port):
    router = start_router(router_factory, port)
    [first] = receiving_pids(router)
    stop = threading.Event()
    senders = [Sender(port, tmp_path / f"sender{n}", f"CT{n}", stop) for n in range(4)]
    for sender in senders:
        sender.start()
    acknowledged = lambda: sum(len(sender.acknowledged) for sender in senders)  # noqa: E731
    wait_until(lambda: acknowledged() >= 20, timeout=60, what="the senders under way")

    os.kill(first, signal.SIGKILL)
    at_kill = acknowledged()
    wait_until(lambda: len(receiving_pids(router)) == 2, timeout=30, what="a new receiving process")
    restarted = receiving_pids(router)[1]
    assert f"receiving process {first} ended with -9; starting another" in router.output()
    # the main process went on receiving while the other was down and starting again
    router.wait_for_log(f"receiving process 1 ({restarted}) runs rules")
    assert acknowledged() > at_kill
    # its worker process ended with it (the kernel ends a worker whose parent died)
    killed_worker = _worker_of(router.output(), first)
    wait_until(lambda: not alive(killed_worker), timeout=10, what=f"worker {killed_worker} gone")

    after_restart = acknowledged()
    wait_until(lambda: acknowledged() >= after_restart + 20, timeout=60, what="more instances after the restart")
    stop.set()
    for sender in senders:
        sender.join(180)
    every = set().union(*(sender.acknowledged for sender in senders))
    wait_until(lambda: every <= received_uids(tmp_path / "received"), timeout=180,
               what="every acknowledged instance delivered")
    assert router.stop() == 0
    output = router.log_path.read_text()
    assert router.process.pid in accepted_by_process(output) and restarted in accepted_by_process(output), output
    assert f"receiving process {restarted} stopped (exit code 0)" in output


def _worker_of(output: str, receiver: int) -> int:
    """The worker process the receiving process `receiver` started: the first worker started
    after it (each receiving process starts its worker before its listener)."""
    after = output[output.index(f"receiving process {receiver} started"):]
    return int(re.search(r"worker process (\d+) started", after).group(1))


# ---- 3. reloads ------------------------------------------------------------------------------------


def test_a_reload_reaches_every_receiving_process_and_a_refused_one_none(router_factory, tmp_path, port):
    router = start_router(router_factory, port, "V1")
    main_rules = tmp_path / "main.rules"

    main_rules.write_text(rules("V2").replace('"V2"', '"V2'), encoding="utf-8")  # an unterminated string
    router.wait_for_log("the changed rules do not compile")
    sent_refused = send_concurrently(port, tmp_path / "refused")
    wait_until(lambda: set(sent_refused) <= set(labels(tmp_path / "received")), timeout=120,
               what="the instances sent after the refused reload")
    assert {labels(tmp_path / "received")[uid] for uid in sent_refused} == {"V1"}
    assert "follows rules" not in router.output()

    main_rules.write_text(rules("V2"), encoding="utf-8")
    router.wait_for_log("rules reloaded: version")
    version = re.findall(r"rules reloaded: version (\w+)", router.output())[-1]
    router.wait_for_log(f"receiving process 1 ({receiving_pids(router)[0]}) follows rules {version}")
    sent_new = send_concurrently(port, tmp_path / "new")
    wait_until(lambda: set(sent_new) <= set(labels(tmp_path / "received")), timeout=120,
               what="the instances sent after the reload")
    assert {labels(tmp_path / "received")[uid] for uid in sent_new} == {"V2"}
    assert router.stop() == 0
    accepted = accepted_by_process(router.log_path.read_text())
    assert len([pid for pid, count in accepted.items() if count]) == 2, accepted  # both answered under V2 too


def test_sighup_reaches_the_receiving_processes_and_a_restarted_one_starts_with_the_rules_in_use(
        router_factory, tmp_path, port):
    router = start_router(router_factory, port, "V1")
    (tmp_path / "main.rules").write_text(rules("V2"), encoding="utf-8")
    router.wait_for_log("rules reloaded: version")
    version = re.findall(r"rules reloaded: version (\w+)", router.output())[-1]
    [first] = receiving_pids(router)
    router.wait_for_log(f"receiving process 1 ({first}) follows rules {version}")

    # broken on disk since: the restarted process starts with what the main process runs
    (tmp_path / "main.rules").write_text(rules("V3").replace('"V3"', '"V3'), encoding="utf-8")
    router.wait_for_log("the changed rules do not compile")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: len(receiving_pids(router)) == 2, timeout=30, what="a new receiving process")
    restarted = receiving_pids(router)[1]
    router.wait_for_log(f"receiving process 1 ({restarted}) runs rules {version}")

    os.kill(router.process.pid, signal.SIGHUP)  # the files are still broken: refused, nothing changes
    wait_until(lambda: router.output().count("the changed rules do not compile") == 2, timeout=30,
               what="the SIGHUP's reload refused")
    sent = send_concurrently(port, tmp_path / "sent")
    wait_until(lambda: set(sent) <= set(labels(tmp_path / "received")), timeout=120, what="every instance")
    assert {labels(tmp_path / "received")[uid] for uid in sent} == {"V2"}
    assert router.stop() == 0


# ---- 4. a port already taken ----------------------------------------------------------------------


def test_a_port_already_taken_is_said_at_once_and_nothing_is_left_running(tmp_path, port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        (tmp_path / "main.rules").write_text(rules("V1"), encoding="utf-8")
        (tmp_path / "router.yaml").write_text(config(port, 3), encoding="utf-8")
        result = subprocess.run([sys.executable, "-m", "rulesengine", "run", "router.yaml"], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
    (second / "main.rules").write_text(rules("OTHER"), encoding="utf-8")
    (second / "router.yaml").write_text(config(port, 2), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rulesengine", "run", "router.yaml"], cwd=second,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
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


def test_a_changed_configuration_reaches_every_receiving_process_and_its_worker(router_factory, tmp_path, port):
    router = start_router(router_factory, port, "V1")
    [extra] = receiving_pids(router)
    (tmp_path / "router.yaml").write_text(config(port).replace("path: received", "path: moved"), encoding="utf-8")
    router.wait_for_log("configuration applied")
    router.wait_for_log(f"receiving process 1 ({extra}) follows rules")
    sent = send_concurrently(port, tmp_path / "sent")
    wait_until(lambda: set(sent) <= set(labels(tmp_path / "moved")), timeout=120,
               what="every instance in the destination's new folder")
    assert not set(sent) & set(labels(tmp_path / "received"))  # none went to the old folder
    assert router.stop() == 0
    accepted = accepted_by_process(router.log_path.read_text())
    assert len([pid for pid, count in accepted.items() if count]) == 2, accepted


def test_under_load_what_is_sent_once_a_configuration_change_is_logged_goes_to_the_new_destination(
        router_factory, tmp_path, port):
    # Senders keep both workers in long passes while the configuration changes: the change is
    # logged as applied only once every worker follows it, not when it was merely told.
    router = start_router(router_factory, port, "V1")
    [extra] = receiving_pids(router)
    stop = threading.Event()
    background = [Sender(port, tmp_path / f"background{n}", f"BG{n}", stop) for n in range(8)]
    for sender in background:
        sender.start()
    folders = ["received", "moved1", "moved2"]
    try:
        wait_until(lambda: sum(len(sender.acknowledged) for sender in background) >= 20, timeout=60,
                   what="the background senders under way")
        for round_, folder in enumerate(folders[1:], start=1):
            (tmp_path / "router.yaml").write_text(config(port).replace("path: received", f"path: {folder}"),
                                                  encoding="utf-8")
            wait_until(lambda: router.output().count("configuration applied") == round_, timeout=120,
                       what=f"change {round_} applied")
            wait_until(lambda: router.output().count(f"receiving process 1 ({extra}) follows rules") == round_,
                       timeout=120, what=f"change {round_} followed by receiving process 1")
            sent = send_concurrently(port, tmp_path / f"sent{round_}", senders=4)
            everywhere = lambda: set().union(*(labels(tmp_path / name) for name in folders))  # noqa: E731
            wait_until(lambda: set(sent) <= everywhere(), timeout=120, what=f"round {round_} delivered")
            assert set(sent) <= set(labels(tmp_path / folder)), f"round {round_}: some went to an old folder"
    finally:
        stop.set()
        for sender in background:
            sender.join(180)
    assert router.stop() == 0


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
