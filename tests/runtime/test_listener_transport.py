"""The listener's refusal log and association count, on their own (the protocol suite in
tests/protocol runs them inside the router against real peers)."""

from __future__ import annotations

import logging
import threading

from rulesengine.runtime.transport import AssociationSlots, RefusalLog


class Scheduled:
    """Stands in for the timer: the summaries run when the test says the window is over."""

    def __init__(self):
        self.pending = []

    def __call__(self, delay, action):
        self.pending.append((delay, action))

    def window_ends(self):
        pending, self.pending = self.pending, []
        for _, action in pending:
            action()


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rulesengine.listener"]


def test_the_first_refusal_of_a_kind_is_logged_at_once_and_the_rest_summed_up(caplog):
    caplog.set_level(logging.WARNING, "rulesengine.listener")
    schedule = Scheduled()
    refusals = RefusalLog("main", window=10, schedule=schedule)
    for n in range(200):
        refusals.refused("connection", f"10.0.0.{n % 4}:{4000 + n}", f"10.0.0.{n % 4}", "closed",
                         "no association request within 5 s")
    assert lines(caplog) == ["listener main: connection from 10.0.0.0:4000 closed: no association request within 5 s"]
    assert [delay for delay, _ in schedule.pending] == [10]

    schedule.window_ends()
    assert lines(caplog)[1:] == [
        "listener main: 199 more connections closed in the last 10 s: no association request within 5 s "
        "(from 10.0.0.1, 10.0.0.2, 10.0.0.3, ...)"]

    # A new window: the next one is logged at once again; a single one is summed up as such.
    refusals.refused("connection", "10.0.0.9:1", "10.0.0.9", "closed", "no association request within 5 s")
    refusals.refused("connection", "10.0.0.9:2", "10.0.0.9", "closed", "no association request within 5 s")
    schedule.window_ends()
    assert lines(caplog)[2:] == [
        "listener main: connection from 10.0.0.9:1 closed: no association request within 5 s",
        "listener main: 1 more connection closed in the last 10 s: no association request within 5 s (from 10.0.0.9)"]


def test_kinds_are_counted_apart_and_details_do_not_split_them(caplog):
    caplog.set_level(logging.WARNING, "rulesengine.listener")
    schedule = Scheduled()
    refusals = RefusalLog("main", schedule=schedule)
    refusals.refused("connection", "h:1", "h", "closed", "association request longer than allowed",
                     "4294967295 bytes announced, at most 1048576")
    refusals.refused("connection", "h:2", "h", "closed", "association request longer than allowed",
                     "2147483648 bytes announced, at most 1048576")
    refusals.refused("association", "CT1 (h)", "h", "rejected", "32 associations already (max_associations)")
    schedule.window_ends()
    assert lines(caplog) == [
        "listener main: connection from h:1 closed: association request longer than allowed "
        "(4294967295 bytes announced, at most 1048576)",
        "listener main: association from CT1 (h) rejected: 32 associations already (max_associations)",
        "listener main: 1 more connection closed in the last 10 s: association request longer than allowed (from h)",
    ]


def test_quiet_windows_log_no_summary(caplog):
    caplog.set_level(logging.WARNING, "rulesengine.listener")
    schedule = Scheduled()
    refusals = RefusalLog("main", schedule=schedule)
    refusals.refused("connection", "h:1", "h", "closed", "TLS handshake failed", "WRONG_VERSION_NUMBER")
    schedule.window_ends()
    assert lines(caplog) == ["listener main: connection from h:1 closed: TLS handshake failed (WRONG_VERSION_NUMBER)"]


def test_association_slots_count_live_associations_only():
    """A slot is held by an association's thread while it runs; an ended one gives it back."""
    slots = AssociationSlots(2)
    release = threading.Event()
    running = [threading.Thread(target=release.wait) for _ in range(3)]
    for thread in running:
        thread.start()
    try:
        assert slots.take(running[0]) and slots.take(running[1])
        assert not slots.take(running[2])
    finally:
        release.set()
        for thread in running:
            thread.join()
    assert slots.take(running[2])  # the first two ended


def test_pending_summaries_are_written_when_the_listener_stops(caplog):
    caplog.set_level(logging.WARNING, "rulesengine.listener")
    schedule = Scheduled()
    refusals = RefusalLog("main", schedule=schedule)
    for n in range(3):
        refusals.refused("association", "MR1 (h)", "h", "rejected", "calling AE title not allowed", group="MR1")
    refusals.refused("association", "MR2 (h)", "h", "rejected", "calling AE title not allowed", group="MR2")
    refusals.flush()
    schedule.window_ends()  # the scheduled summaries find nothing left to say
    assert lines(caplog) == [
        "listener main: association from MR1 (h) rejected: calling AE title not allowed",
        "listener main: association from MR2 (h) rejected: calling AE title not allowed",
        "listener main: 2 more associations rejected in the last 1 s: calling AE title not allowed (MR1, from h)",
    ]
