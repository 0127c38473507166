"""Several receiving processes on one node (`processes:`), in the real router: the listeners of
every process share the port (SO_REUSEPORT), so associations from concurrent storescu processes
land in more than one process, and every instance is delivered; an extra receiving process
SIGKILLed mid-stream is restarted, the senders to the others go on, and nothing acknowledged is
lost; a reload or a changed configuration reaches every process (and a refused one none). Each
process says in the log, as its listener stops, how many associations it accepted: that is how
the tests see where associations landed. (Ports, C-MOVE retrievals, order and the main process
killed: test_receiving_processes_ports.py.)
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
from contextlib import closing

from helpers.peers import wait_until
from helpers.receiving_processes import (ASSOCIATIONS_PER_SENDER, accepted_by_process, alive, config, labels,
                                         receiving_pids, rules, send_concurrently, start_router)
from helpers.senders import Sender, received_uids


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
