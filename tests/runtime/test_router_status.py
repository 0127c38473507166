"""The router's status row (router_status.py): what the operations console, a process of its
own, knows of the running router: heartbeat, process, rules in use, the last reload and its
findings, and the associations open on each listener."""

from __future__ import annotations

import os
import time

import pytest
from helpers.clock import StoppedClock
from helpers.files import write
from helpers.peers import free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from rulesengine.config import load_config
from rulesengine.runtime.listener import DicomListener
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.reload import Reloader
from rulesengine.runtime.router_status import INTERVAL_SECONDS, StatusReporter
from rulesengine.runtime.service import Router

CONFIG = """
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  PACS: {{type: folder, path: out}}
"""
ROUTING = 'rule "all" {\n  then route to PACS\n}\n'
BROKEN = 'rule "all" {\n  then route to NOWHERE\n}\n'


@pytest.fixture
def router(run_in):
    """A router over a configuration in run_in, not started (no worker process): its listener
    runs when a test starts it."""
    write(run_in / "router.yaml", CONFIG.format(port=free_port()))
    write(run_in / "main.rules", ROUTING)
    router = Router(load_config(run_in / "router.yaml"))
    yield router
    for listener in router.listeners:
        listener.stop()
    router.journal.close()


def written(router) -> dict:
    [(node, updated_at, status)] = router.journal.statuses()
    assert updated_at == status["heartbeat"]
    return status


def test_the_status_says_who_runs_which_rules(router):
    clock = StoppedClock(1000.0)
    reporter = StatusReporter(router, node="node-a", clock=clock)
    reporter.write()
    [(node, updated_at, status)] = router.journal.statuses()
    assert (node, updated_at) == ("node-a", 1000.0)
    assert status == {"state": "running", "heartbeat": 1000.0, "pid": os.getpid(), "started_at": 1000.0,
                      "ruleset_version": router.rules.current.version, "last_reload": None, "listeners": [],
                      "processes": [{"pid": os.getpid(), "associations": [], "accepted": []}]}


def test_it_is_written_again_every_interval_and_at_the_stop(router):
    clock = StoppedClock(1000.0)
    intervals: list[float] = []

    def wait(seconds: float) -> bool:
        """Three intervals pass, then the router stops."""
        intervals.append(seconds)
        clock.advance(seconds)
        return len(intervals) > 3

    reporter = StatusReporter(router, node="node-a", clock=clock, wait=wait)
    reporter.start()
    reporter._thread.join(timeout=10)
    assert intervals == [INTERVAL_SECONDS] * 4
    assert written(router)["heartbeat"] == 1000.0 + 3 * INTERVAL_SECONDS  # at start, then three times
    reporter.stop()
    assert written(router)["state"] == "stopped"


def test_a_listener_shows_the_associations_open_on_it(router):
    configure_pynetdicom()
    listener = DicomListener(router.config.listeners[0], router.pipeline)
    listener.start()
    router.listeners.append(listener)
    reporter = StatusReporter(router, node="node-a")
    reporter.write()
    port = router.config.listeners[0].port
    assert written(router)["listeners"] == [{"name": "main", "port": port, "associations": 0}]

    ae = AE(ae_title="CT1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    try:
        assert assoc.is_established
        reporter.write()
        assert written(router)["listeners"][0]["associations"] == 1
        assert written(router)["processes"] == [{"pid": os.getpid(), "associations": [1], "accepted": [1]}]
    finally:
        assoc.release()
    deadline = time.monotonic() + 10
    while listener.slots.open_count() and time.monotonic() < deadline:
        time.sleep(0.05)  # the association's thread ends after the release
    reporter.write()
    assert written(router)["listeners"][0]["associations"] == 0
    assert written(router)["processes"] == [{"pid": os.getpid(), "associations": [0], "accepted": [1]}]


def test_a_reload_that_fails_is_written_with_its_findings_and_one_that_succeeds_clears_them(router, run_in):
    router.status = StatusReporter(router, node="node-a")
    running = router.rules.current.version
    write(run_in / "main.rules", BROKEN)
    reloader = Reloader(router)
    reloader.reload_everything()
    status = wait_for(router, lambda status: status.get("last_reload") is not None)
    assert status["ruleset_version"] == running
    reload = status["last_reload"]
    assert reload["ok"] is False and reload["time"] > 0
    [finding] = reload["findings"]
    assert (os.path.basename(finding["file"]), finding["line"]) == ("main.rules", 2)
    assert finding["code"] and "NOWHERE" in finding["message"] and finding["column"] >= 1

    write(run_in / "main.rules", ROUTING.replace("all", "everything"))
    reloader.reload_everything()
    status = wait_for(router, lambda status: status["last_reload"]["ok"])
    assert status["last_reload"]["findings"] == [] and status["ruleset_version"] != running


def test_a_configuration_that_is_not_valid_is_a_failed_reload(router, run_in):
    router.status = StatusReporter(router, node="node-a")
    write(run_in / "router.yaml", "storage: var\nprocesses: 1\nrules: main.rules\ndestinations: []\n")
    Reloader(router).reload_everything()
    status = wait_for(router, lambda status: status.get("last_reload") is not None)
    [finding] = status["last_reload"]["findings"]
    assert status["last_reload"]["ok"] is False and finding["code"] == "config" and finding["message"]


def wait_for(router, condition, timeout: float = 20) -> dict:
    """The status once the reload thread has written what `condition` looks for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = router.journal.statuses()
        if statuses and condition(statuses[0].status):
            return statuses[0].status
        time.sleep(0.05)
    raise AssertionError(f"the status never changed as expected: {router.journal.statuses()}")
