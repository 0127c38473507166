"""Urgent deliveries and delivery windows in the journal's queue, on each backend (SQLite,
and PostgreSQL on the tests' server): what a claim takes first, what it leaves waiting, and
what `next_due` says of a queue whose rest waits for a closed window."""

from __future__ import annotations

import pytest

from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import (ACCEPTED, QUEUED, RETRYING, SENDING, URGENT, Journal, NewDelivery, Outcome,
                                         SQLiteJournal)
from rulesengine.runtime.journal.postgres import PostgresJournal

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request, tmp_path):
    if request.param == "sqlite":
        opened = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    else:
        opened = PostgresJournal(request.getfixturevalue("postgres").new_schema())
    yield opened
    opened.close()


def queue(journal: Journal, number: int, destination: str = "PACS", priority: int = 0,
          window: str | None = None) -> int:
    """An instance numbered `number`, processed, with one delivery; returns the delivery's id."""
    arrival = Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main", source_kind="listener",
                      sop_class_uid=CT_IMAGE, sop_instance_uid=f"1.2.3.{number}")
    path = f"/spool/in/{number}.dcm"
    instance_id = journal.record(arrival, path, Outcome("v1", "route", None, ("r",), (destination,)), ACCEPTED)
    [delivery_id] = journal.add_deliveries(instance_id, [NewDelivery(destination, path, CT_IMAGE, f"1.2.3.{number}",
                                                                     EXPLICIT_LE, priority, window)])
    return delivery_id


def uids(batch) -> list[str]:
    return [item.sop_instance_uid.rpartition(".")[2] for item in batch]


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_urgent_deliveries_are_claimed_first_in_the_order_of_their_instances(journal, ordered):
    for number in (1, 2, 3):
        queue(journal, number)
    queue(journal, 4, priority=URGENT)
    queue(journal, 5)
    queue(journal, 6, priority=URGENT)

    assert uids(journal.claim("PACS", 3, ordered=ordered)) == ["4", "6", "1"]
    assert uids(journal.claim("PACS", 10, ordered=ordered)) == ["2", "3", "5"]


def test_a_claimed_delivery_keeps_its_priority_and_window(journal):
    first = queue(journal, 1, priority=URGENT, window="night")
    [claimed] = journal.claim("PACS", 5)
    assert (claimed.id, claimed.priority, claimed.delivery_window, claimed.state) == (first, URGENT, "night", SENDING)
    listed = journal.deliveries([SENDING])
    assert [(item.priority, item.delivery_window) for item in listed] == [(URGENT, "night")]


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_deliveries_waiting_for_a_closed_window_stay_queued_and_the_others_go_on(journal, ordered):
    waiting = queue(journal, 1, window="night")
    queue(journal, 2)
    urgent_waiting = queue(journal, 3, priority=URGENT, window="night")
    queue(journal, 4, window="weekend")

    assert uids(journal.claim("PACS", 10, ordered=ordered, closed_windows={"night", "weekend"})) == ["2"]
    # Untouched while they wait: queued, no attempt counted, no lease.
    for delivery_id in (waiting, urgent_waiting):
        delivery = journal.delivery(delivery_id)
        assert (delivery.state, delivery.attempts) == (QUEUED, 0)
        assert journal.lease(delivery_id) is None
    assert journal.attempts(waiting) == []

    # The night opens (the weekend does not): the urgent one first.
    assert uids(journal.claim("PACS", 10, ordered=ordered, closed_windows={"weekend"})) == ["3", "1"]
    assert uids(journal.claim("PACS", 10, ordered=ordered)) == ["4"]


def test_a_window_no_longer_configured_does_not_hold_its_deliveries(journal):
    """The manager passes the windows closed now, by name: one removed from the configuration
    is closed for nobody, so what waited for it goes."""
    queue(journal, 1, window="removed")
    assert uids(journal.claim("PACS", 10, closed_windows={"night"})) == ["1"]


def test_a_window_of_one_destination_leaves_the_others_alone(journal):
    queue(journal, 1, destination="ARCHIVE", window="night")
    queue(journal, 2, destination="PACS")
    assert journal.claim("ARCHIVE", 10, closed_windows={"night"}) == []
    assert uids(journal.claim("PACS", 10, closed_windows={"night"})) == ["2"]


def test_next_due_leaves_out_what_waits_for_a_closed_window(journal):
    queue(journal, 1, window="night")
    assert journal.next_due("PACS", {"night"}) is None  # nothing the worker could send: it idles
    assert journal.next_due("PACS") is not None
    queue(journal, 2)
    assert journal.next_due("PACS", {"night"}) is not None


def test_a_retried_urgent_delivery_is_still_claimed_first_when_due(journal):
    urgent = queue(journal, 1, priority=URGENT)
    queue(journal, 2)
    [claimed] = journal.claim("PACS", 1, now=1000.0)
    assert claimed.id == urgent
    journal.failed(claimed, 1000.0, "instance failed: 0xA700", retry_at=1060.0)
    assert journal.delivery(urgent).state == RETRYING
    assert uids(journal.claim("PACS", 1, now=1001.0)) == ["2"]  # not due yet: the queue goes on
    queue(journal, 3)
    assert uids(journal.claim("PACS", 5, now=1061.0)) == ["1", "3"]


def test_an_ordered_claim_with_urgent_ones_still_stops_at_an_instance_not_processed(journal):
    queue(journal, 1)
    arrival = Arrival(calling_aet="CT1", source_name="main", source_kind="listener", sop_class_uid=CT_IMAGE,
                      sop_instance_uid="1.2.3.2")
    journal.record(arrival, "/spool/in/2.dcm", None, ACCEPTED)  # received, not processed yet
    queue(journal, 3, priority=URGENT)
    # The urgent delivery of a later instance waits for the one still to be processed, as any other.
    assert uids(journal.claim("PACS", 10, ordered=True)) == ["1"]
    assert uids(journal.claim("PACS", 10, ordered=False)) == ["3"]
