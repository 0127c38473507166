"""A destination that promises order, when the process sending to it dies: the next holder
never sends past the deliveries the dead one was sending; they come back to the queue when
their leases expire, still first. Real journals (SQLite, and PostgreSQL on the tests' server);
the clock is given."""

from __future__ import annotations


from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import ACCEPTED, NewDelivery, Outcome

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
NOW = 1_000_000.0


def queue(journal, count: int, destination: str = "PEER") -> list[int]:
    ids = []
    for number in range(count):
        instance = journal.record(Arrival(source_kind="listener", sop_instance_uid=str(number)), f"/spool/{number}.dcm",
                                  Outcome("v1", "route", None, (), (destination,)), ACCEPTED)
        ids += journal.add_deliveries(instance, [NewDelivery(destination, f"/spool/{number}.dcm", CT_IMAGE,
                                                             str(number), "1.2.840.10008.1.2.1")])
    return ids


def test_the_next_holder_never_sends_past_what_a_dead_holder_was_sending(open_journal):
    dead, survivor = open_journal("b", 7), open_journal("a", 9)
    ids = queue(dead, 5)
    assert [d.id for d in dead.claim("PEER", 2, NOW, ordered=True)] == ids[:2]  # then b dies

    assert survivor.claim("PEER", 16, NOW + 1, ordered=True) == []
    # a destination that promises no order is sent past them
    assert [d.id for d in survivor.claim("PEER", 1, NOW + 1)] == [ids[2]]
    survivor.release([survivor.delivery(ids[2])])

    expired = NOW + dead.lease_seconds + 1
    assert survivor.requeue_expired(expired) == 2
    assert [d.id for d in survivor.claim("PEER", 16, expired, ordered=True)] == ids


def test_the_holders_own_sends_never_hold_it_back(open_journal):
    journal = open_journal("a", 9)
    ids = queue(journal, 3)
    [first] = journal.claim("PEER", 1, NOW, ordered=True)  # its own batch, still being sent
    assert [d.id for d in journal.claim("PEER", 16, NOW, ordered=True)] == ids[1:]
    assert first.id == ids[0]
