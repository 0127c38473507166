"""What the router says of itself in the journal, for the operations console (a process of its
own, which reads the journal and nothing of the router's memory).

One row per node (`Journal.write_status`): the heartbeat time, the process id, the rule set
version in use, how the last reload went (with its findings), the delivery windows open or closed, each listener with the
associations open on it in all the receiving processes together, and each receiving process
with its own (open now, accepted since it started). Written at start, every INTERVAL_SECONDS, at each reload, and at
the stop (state "stopped"); a heartbeat older than a few intervals means the router is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from typing import Callable

from .journal.errors import in_words, unreachable
from .logs import Repeats

log = logging.getLogger("rulesengine.router")
_failures = Repeats()  # the journal's database away: said once a minute, not at every heartbeat

INTERVAL_SECONDS = 5.0
# A heartbeat older than this many intervals: the router is gone (killed, crashed, restarting).
STALE_SECONDS = 3 * INTERVAL_SECONDS


def heartbeat_of(row) -> float:
    """When a router last said it was alive (a journal's RouterStatus row)."""
    return row.status.get("heartbeat") or row.updated_at


def is_running(row, now: float) -> bool:
    """Whether the router of a status row runs: it said so, and not longer ago than STALE_SECONDS."""
    return row.status.get("state") == "running" and now - heartbeat_of(row) <= STALE_SECONDS


class StatusReporter:
    """Writes the router's status row; `start` refreshes it from a thread of its own.
    `wait(seconds)` waits between two writes and says whether to stop (by default, until `stop`)."""

    def __init__(self, router, node: str | None = None, clock: Callable[[], float] = time.time,
                 interval: float = INTERVAL_SECONDS, wait: Callable[[float], bool] | None = None):
        self.router = router
        self.node = node or socket.gethostname()
        self.clock = clock
        self.interval = interval
        self._stopped = threading.Event()
        self._wait = wait or self._stopped.wait
        self._thread: threading.Thread | None = None
        self.started_at = clock()

    def snapshot(self, state: str = "running") -> dict:
        router = self.router
        now = self.clock()
        receivers = getattr(router, "receivers", [])  # receiving processes 1, 2, ...: their own counts
        receiving = [receiver.associations() for receiver in receivers]
        return {
            "state": state,
            "heartbeat": now,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "ruleset_version": router.rules.current.version,
            "last_reload": router.rules.last_reload,
            "listeners": [{"name": listener.config.name, "port": listener.config.port,
                           "associations": _open_associations(listener)
                           + sum(counts[index][0] for counts in receiving)}
                          for index, listener in enumerate(router.listeners)],
            "processes": [{"pid": os.getpid(), "associations": [_open_associations(l) for l in router.listeners],
                           "accepted": [_accepted_associations(l) for l in router.listeners]}]
            + [{"pid": receiver.pid, "associations": [open_ for open_, _ in counts],
                "accepted": [accepted for _, accepted in counts]}
               for receiver, counts in zip(receivers, receiving)],
            **_windows(router, now),
        }

    def write(self, state: str = "running") -> None:
        """Write the status now. A journal busy or failing costs a heartbeat, never the router."""
        status = self.snapshot(state)
        try:
            self.router.journal.write_status(self.node, status, now=status["heartbeat"])
        except Exception as exc:
            if not (isinstance(exc, sqlite3.Error) or unreachable(exc)):
                raise
            _failures.log(log, logging.WARNING, "status", "the router's status could not be written to the journal: "
                          "%s", in_words(exc))

    def start(self) -> None:
        self.write()
        self._thread = threading.Thread(target=self._run, name="router-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing, and say so."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.write("stopped")

    def _run(self) -> None:
        while not self._wait(self.interval):
            self.write()


def _windows(router, now: float) -> dict:
    """The delivery windows, each open or closed now (none when none is configured)."""
    windows = getattr(getattr(router, "config", None), "windows", None) or {}
    if not windows:
        return {}
    return {"windows": {name: {"open": window.is_open(now), "hours": window.describe()}
                        for name, window in windows.items()}}


def _open_associations(listener) -> int:
    slots = getattr(listener, "slots", None)  # made when the listener starts
    return slots.open_count() if slots is not None else 0


def _accepted_associations(listener) -> int:
    slots = getattr(listener, "slots", None)
    return slots.taken if slots is not None else 0
