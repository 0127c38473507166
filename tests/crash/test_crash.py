"""The router killed while several senders stream into it: the worker process alone, then the
whole router by SIGKILL at random (seeded) moments, restarted each time. Every instance a
sender saw acknowledged reaches the destination, and the journal ends settled. Set
CRASH_SEED to replay another sequence of kill points."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess

from helpers.invariants import assert_settled, journal_rows
from helpers.files import SAMPLES
from helpers.instances import store_router_config as router_config
from helpers.peers import RouterProcess, free_port, storescu, wait_until
from helpers.senders import ROUTE_ALL, acknowledged_files, received_uids

SEED = int(os.environ.get("CRASH_SEED", "20260611"))
MAIN_KILLS = int(os.environ.get("CRASH_KILLS", "10"))  # `make crash` kills it many more times


# A worker process being spawned when the main process is SIGKILLed reads half of what
# multiprocessing hands it and prints this before it ends (docs/operations.md, known limits):
# Python's own start-up, before any code of the router runs. Any other traceback fails.
ORPHANED_SPAWN = re.compile(r"Traceback \(most recent call last\):\n(?:  .*\n)*?"
                            r"  File \"[^\"]*multiprocessing/spawn\.py\", line \d+, in _main\n(?:  .*\n)*?"
                            r"EOFError: Ran out of input\n")


def tracebacks(output: str) -> str:
    """The tracebacks of `output`, but for a worker orphaned while it was being spawned."""
    return "" if "Traceback" not in ORPHANED_SPAWN.sub("", output) else output


def start_router(tmp_path, port, peer_port, wait: bool = True) -> RouterProcess:
    (tmp_path / "main.rules").write_text(ROUTE_ALL, encoding="utf-8")
    (tmp_path / "router.yaml").write_text(router_config(port, peer_port), encoding="utf-8")
    return RouterProcess(tmp_path / "router.yaml", port).start(wait=wait)


def worker_pids(router: RouterProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker process (\d+) started", router.output())]


def instances_journaled(tmp_path) -> int:
    return journal_rows(tmp_path / "var", "SELECT COUNT(*) AS n FROM instances")[0]["n"]


def finish_and_check(router: RouterProcess, tmp_path, storescp, senders) -> int:
    """Stop the senders, let the router deliver everything, and check what arrived."""
    senders.stop.set()
    for sender in senders(0):
        sender.join(180)
    acknowledged = set().union(*(sender.acknowledged for sender in senders(0)))
    assert acknowledged, "no sender ever saw an acknowledgement"
    storage = tmp_path / "var"
    wait_until(lambda: not journal_rows(storage, "SELECT id FROM instances WHERE state='accepted'") and not
               journal_rows(storage, "SELECT id FROM deliveries WHERE state != 'delivered'"), timeout=120,
               what="every instance processed and delivered")
    missing = acknowledged - received_uids(storescp.folder)
    assert not missing, f"{len(missing)} acknowledged instance(s) never arrived, e.g. {sorted(missing)[:3]}"
    assert router.stop() == 0
    counts = assert_settled(storage)
    assert set(counts) == {"delivered"}, counts
    return len(acknowledged)


def test_killing_the_worker_mid_stream_loses_nothing_acknowledged(tmp_path, port, storescp, senders):
    router = start_router(tmp_path, port, storescp.port)
    running = senders(3)
    kills = random.Random(SEED)
    for kill in range(4):
        seen = instances_journaled(tmp_path)
        wait_until(lambda: instances_journaled(tmp_path) >= seen + kills.randint(5, 25), timeout=60,
                   interval=0.02, what="instances arriving")
        pids = worker_pids(router)
        os.kill(pids[-1], signal.SIGKILL)
        wait_until(lambda: len(worker_pids(router)) == len(pids) + 1, timeout=60,
                   what=f"the worker started again after kill {kill + 1}")
    assert all(sender.is_alive() for sender in running)

    count = finish_and_check(router, tmp_path, storescp, senders)
    output = router.log_path.read_text()
    assert output.count("ended with -9; starting another") == 4
    assert output.count("router running") == 1
    assert "Traceback" not in output, output
    assert count > 40


def test_killing_the_router_at_random_moments_loses_nothing_acknowledged(tmp_path, port, storescp, senders):
    senders(3)
    kills = random.Random(SEED)
    logs = []
    for _ in range(MAIN_KILLS):
        # One kill in four during start-up (recovery, the worker starting, the listener not yet
        # open); the others while the senders stream, up to 1.2 s after it listens.
        during_start_up = kills.random() < 0.25
        router = start_router(tmp_path, port, storescp.port, wait=not during_start_up)
        logs.append(router.log_path)
        try:
            router.process.wait(kills.uniform(0.05, 1.0) if during_start_up else kills.uniform(0.0, 1.2))
        except subprocess.TimeoutExpired:  # still running, as it should be: kill it now
            pass
        assert router.process.poll() is None, router.output()  # it never stopped by itself
        router.kill()
    router = start_router(tmp_path, port, storescp.port)
    logs.append(router.log_path)
    seen = instances_journaled(tmp_path)
    wait_until(lambda: instances_journaled(tmp_path) >= seen + 15, what="instances after the last restart")

    count = finish_and_check(router, tmp_path, storescp, senders)
    output = "".join(path.read_text() for path in logs)
    assert not tracebacks(output)
    assert count > 20
    assert not os.listdir(tmp_path / "var" / "spool" / "in"), "spool files left behind"


def attempts(tmp_path) -> int:
    return journal_rows(tmp_path / "var", "SELECT COUNT(*) AS n FROM attempts")[0]["n"]


def test_a_worker_whose_router_dies_while_it_starts_does_nothing(tmp_path, port):
    """Killed before its worker process has even started its interpreter: that worker must not
    live on to send what the next router sends (the kernel could not be asked to end it yet)."""
    nothing_listens = free_port()
    router = start_router(tmp_path, port, nothing_listens)
    assert storescu(port, [SAMPLES / "ct_head.dcm"]).returncode == 0
    wait_until(lambda: attempts(tmp_path) >= 2, what="failed delivery attempts")
    assert router.stop() == 0
    before = attempts(tmp_path)

    router = start_router(tmp_path, port, nothing_listens, wait=False)
    worker = wait_until(lambda: worker_pids(router), timeout=30, interval=0.01, what="the worker started")[0]
    router.kill()
    try:
        wait_until(lambda: not os.path.exists(f"/proc/{worker}") or
                   open(f"/proc/{worker}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
                   timeout=30, what=f"worker process {worker} ended")
    finally:
        if os.path.exists(f"/proc/{worker}"):
            os.kill(worker, signal.SIGKILL)  # started by the router this test started
    assert attempts(tmp_path) == before  # it tried no delivery
    assert "attempt" not in router.log_path.read_text()


def test_only_what_storescu_reports_a_success_for_counts_as_acknowledged():
    output = ("I: Sending file: /a.dcm\nI: Sending Store Request (MsgID 1, CT)\nI: Received Store Response (Success)\n"
              "I: Sending file: /b.dcm\nI: Sending Store Request (MsgID 2, CT)\n"
              "E: Store Failed, file: /b.dcm:\nE: 0006:020e DIMSE Failed to receive message\n")
    assert acknowledged_files(output) == ["/a.dcm"]
