"""The worker process of `dicom-rules run` dying under the router: it is restarted, picks up
what it was sending, stops cleanly with the router afterwards, and starts with the rules the
router runs even when the files on disk were broken since. Everything runs as real processes
on 127.0.0.1; the worker is killed by the PID the router logs for it.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from helpers.instances import make_instances, received_by_uid, store_router_config
from helpers.peers import StoreSCP, storescu, wait_until

ROUTE_TO_STORE = """
rule "everything" {
  then route to STORE
}
"""


def versioned_rules(institution: str) -> str:
    return f"""
rule "version" {{
  then {{
    set DataSet.InstitutionName = "{institution}"
    route to STORE
  }}
}}
"""


BROKEN_RULES = versioned_rules("V2").replace('"V2"', '"V2')  # an unterminated string


def deliveries(tmp_path: Path) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM deliveries ORDER BY id").fetchall()


def worker_pids(router) -> list[int]:
    """Every worker process the router started, in order (from its log)."""
    return [int(pid) for pid in re.findall(r"worker process (\d+) started", router.output())]


def kill_worker(router) -> int:
    """SIGKILL the router's current worker process; wait until the router started the next one."""
    pids = worker_pids(router)
    os.kill(pids[-1], signal.SIGKILL)
    wait_until(lambda: len(worker_pids(router)) == len(pids) + 1, timeout=30, what="a new worker process")
    assert f"worker process {pids[-1]} ended with -9; starting another" in router.output(), router.output()
    return worker_pids(router)[-1]


@pytest.fixture
def slow_storescp(tmp_path):
    """storescp that sleeps 1 s at each step of receiving a C-STORE (several seconds for one
    instance): a delivery stays `sending` meanwhile."""
    peer = StoreSCP(tmp_path / "storescp", extra=("--sleep-during", "1")).start()
    yield peer
    peer.stop()


def wait_for_sending(tmp_path: Path) -> sqlite3.Row:
    return wait_until(lambda: next((row for row in deliveries(tmp_path) if row["state"] == "sending"), None),
                      timeout=30, interval=0.05, what="a delivery in state sending")


# ---- 1. a worker killed while sending -------------------------------------------------------------


def test_a_delivery_the_killed_worker_was_sending_is_delivered_by_the_next(router_factory, tmp_path, port,
                                                                           slow_storescp):
    router = router_factory(store_router_config(port, slow_storescp.port), ROUTE_TO_STORE, port)
    [sent] = make_instances(tmp_path / "sent", 1)
    path, uid = sent.path, sent.sop_instance_uid
    assert storescu(port, [path]).returncode == 0

    sending = wait_for_sending(tmp_path)  # storescp sleeps in the middle of the C-STORE
    killed = worker_pids(router)[-1]
    assert sending["lease_process"] == killed  # the lease is that process's
    kill_worker(router)
    # Without a router restart, the new worker sends it again and it ends delivered: given back
    # by the router at once, well before its lease (60 s) would have expired.
    wait_until(lambda: [row["state"] for row in deliveries(tmp_path)] == ["delivered"], timeout=40,
               what="the interrupted delivery delivered")
    assert deliveries(tmp_path)[0]["id"] == sending["id"]
    assert uid in received_by_uid(slow_storescp.folder)
    assert f"worker process {killed} held 1 delivery(ies) and 0 instance(s): queued again" in router.output()
    assert router.process.poll() is None and router.output().count("router running") == 1

    # Sent after the restart: it arrives too.
    [late] = make_instances(tmp_path / "late", 1)
    late_path, late_uid = late.path, late.sop_instance_uid
    assert storescu(port, [late_path]).returncode == 0
    wait_until(lambda: late_uid in received_by_uid(slow_storescp.folder), timeout=60,
               what="the instance sent after the restart")
    assert router.stop() == 0


# ---- 2. a restarted worker stops cleanly with the router ------------------------------------------


def test_a_restarted_worker_finishes_its_delivery_when_the_router_stops(router_factory, tmp_path, port,
                                                                        slow_storescp):
    router = router_factory(store_router_config(port, slow_storescp.port), ROUTE_TO_STORE, port)
    restarted = kill_worker(router)  # this one is started by the router's monitor thread
    [sent] = make_instances(tmp_path / "sent", 1)
    path, uid = sent.path, sent.sop_instance_uid
    assert storescu(port, [path]).returncode == 0
    wait_for_sending(tmp_path)

    # SIGTERM while the worker is in the middle of the delivery: it finishes it, then ends.
    assert router.stop() == 0
    output = router.log_path.read_text()  # the log is closed once the router stopped
    assert "router stopped" in output, output
    assert f"worker process {restarted} stopped (exit code 0)" in output, output
    assert [row["state"] for row in deliveries(tmp_path)] == ["delivered"]
    assert uid in received_by_uid(slow_storescp.folder)
    assert "Traceback" not in output, output


def test_a_sigterm_to_the_whole_process_group_stops_router_and_worker_once_and_cleanly(router_factory, tmp_path,
                                                                                     port, storescp):
    # A service manager or a terminal signals every process of the group; the worker hears it first
    # here, as it can in real life: it must leave the stop to the main process, not die and be restarted.
    router = router_factory(store_router_config(port, storescp.port), ROUTE_TO_STORE, port)
    [sent] = make_instances(tmp_path / "sent", 1)
    assert storescu(port, [sent.path]).returncode == 0
    wait_until(lambda: sent.sop_instance_uid in received_by_uid(storescp.folder), timeout=30,
               what="the worker's first delivery")  # the worker runs: it has set up its signals
    [worker] = worker_pids(router)
    os.kill(worker, signal.SIGTERM)
    assert router.stop() == 0  # SIGTERM to the main process
    output = router.log_path.read_text()
    assert f"worker process {worker} stopped (exit code 0)" in output, output
    assert "starting another" not in output, output
    assert re.findall(r"worker process (\d+) started", output) == [str(worker)]


# ---- 3. a worker restarted while the rules on disk are broken --------------------------------------


def test_a_restarted_worker_runs_the_rules_the_router_runs_not_broken_files(router_factory, tmp_path, port,
                                                                           storescp):
    router = router_factory(store_router_config(port, storescp.port), versioned_rules("V1"), port)
    router.wait_for_log("router running")  # the rule files are watched from then on
    (tmp_path / "main.rules").write_text(BROKEN_RULES, encoding="utf-8")
    router.wait_for_log("the running rules")  # refused: the rules of V1 stay in place
    assert "do not compile" in router.output()

    kill_worker(router)
    [sent] = make_instances(tmp_path / "sent", 1)
    path, uid = sent.path, sent.sop_instance_uid
    assert storescu(port, [path]).returncode == 0
    arrived = wait_until(lambda: received_by_uid(storescp.folder).get(uid), timeout=30,
                         what="the instance sent after the restart")
    assert arrived.InstitutionName == "V1"
    output = router.output()
    assert output.count("ended with") == 1, output  # restarted once, not in a loop
    assert "Traceback" not in output, output

    # Mended on disk: the router and its worker take the new rules.
    (tmp_path / "main.rules").write_text(versioned_rules("V3"), encoding="utf-8")
    router.wait_for_log("rules reloaded")
    [late] = make_instances(tmp_path / "late", 1)
    late_path, late_uid = late.path, late.sop_instance_uid
    assert storescu(port, [late_path]).returncode == 0
    arrived = wait_until(lambda: received_by_uid(storescp.folder).get(late_uid), timeout=30,
                         what="the instance sent after the rules were mended")
    assert arrived.InstitutionName == "V3"
    assert router.stop() == 0
