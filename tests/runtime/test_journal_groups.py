"""The journal's groups (group rules: per series, per study): joining, timers by an injected
clock, claims with leases across processes and nodes, firing, late instances, the files they keep.

Every test runs on SQLite and on PostgreSQL (`open_journal`: the journals of a cluster's
processes on one database).
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import (ACCEPTED, DONE, QUEUED, ClaimLost, GroupState, NewDelivery, Outcome,
                                         SQLiteJournal)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.8.498.1"
T0 = 1_800_000_000.0  # the tests' clock


def received(number: int) -> Arrival:
    return Arrival(calling_aet="MR1", called_aet="ROUTER", source_name="main", source_kind="listener",
                   sop_class_uid=CT_IMAGE, sop_instance_uid=f"{STUDY}.{number}", received_at=T0 + number)


def held_instance(journal, number: int) -> int:
    """An instance the instance rules routed nowhere, its file kept for its groups."""
    return journal.record(received(number), f"/spool/in/{number}.dcm",
                          Outcome("v1", "held", "held for its groups", (), ()), DONE)


def join(journal, instance_id: int, now: float, series: str | None = "1", rule: str = "AI", quiet: float = 60.0):
    return journal.join_group(rule, "v1", "series" if series else "study", STUDY, series, instance_id, quiet, now=now)


@pytest.fixture
def journal(open_journal):
    return open_journal("node-a", 1)


def test_the_first_instance_opens_the_group_and_each_arrival_restarts_its_timer(journal):
    first = held_instance(journal, 1)
    opened = join(journal, first, T0)
    assert not opened.late
    group = opened.group
    assert (group.rule, group.ruleset_version, group.level, group.study_uid, group.series_uid, group.state) == (
        "AI", "v1", "series", STUDY, "1", GroupState.OPEN)
    assert (group.first_arrival, group.last_arrival, group.due_at) == (T0, T0, T0 + 60)
    second = held_instance(journal, 2)
    again = join(journal, second, T0 + 30)
    assert again.group.id == group.id and not again.late
    assert (again.group.first_arrival, again.group.last_arrival, again.group.due_at) == (T0, T0 + 30, T0 + 90)
    assert [member.id for member in journal.group_members(group.id)] == [first, second]
    assert [(pending.id, pending.members) for pending in journal.pending_groups()] == [(group.id, 2)]


def test_an_instance_joining_twice_is_one_member(journal):
    instance_id = held_instance(journal, 1)
    group = join(journal, instance_id, T0).group
    join(journal, instance_id, T0 + 5)  # processed again after a crash
    assert [member.id for member in journal.group_members(group.id)] == [instance_id]


def test_groups_are_per_rule_study_and_series(journal):
    instance_id = held_instance(journal, 1)
    series = join(journal, instance_id, T0, series="1").group
    other_series = join(journal, held_instance(journal, 2), T0, series="2").group
    study = join(journal, instance_id, T0, series=None, rule="study rule").group
    assert len({series.id, other_series.id, study.id}) == 3
    assert (study.level, study.series_uid) == ("study", "")


def test_a_group_is_due_after_its_quiet_time_by_the_injected_clock(journal):
    group = join(journal, held_instance(journal, 1), T0).group
    assert journal.due_groups(now=T0 + 59.9) == []
    assert journal.claim_due_groups(10, now=T0 + 59.9) == []
    join(journal, held_instance(journal, 2), T0 + 50)  # a late arrival restarts the timer
    assert journal.due_groups(now=T0 + 60) == []
    assert [due.id for due in journal.due_groups(now=T0 + 110)] == [group.id]


def test_one_process_of_one_node_claims_a_due_group_and_fires_it_once(open_journal):
    a, b = open_journal("node-a", 1), open_journal("node-b", 1)
    group = join(a, held_instance(a, 1), T0).group
    claimed = a.claim_due_groups(10, now=T0 + 61)
    assert [(g.id, g.lease_owner, g.lease_process) for g in claimed] == [(group.id, "node-a", 1)]
    assert b.claim_due_groups(10, now=T0 + 62) == []
    assert b.claim_group(group.id, now=T0 + 62) is None
    with pytest.raises(ClaimLost):
        b.fire_group(group.id, [], now=T0 + 62)
    assert a.group(group.id).state == GroupState.OPEN  # the refused fire changed nothing


def test_a_claim_lost_at_lease_expiry_goes_to_another_node_and_the_first_cannot_fire(open_journal):
    a, b = open_journal("node-a", 1), open_journal("node-b", 1)
    instance_id = held_instance(a, 1)
    group = join(a, instance_id, T0).group
    assert a.claim_due_groups(10, now=T0 + 61)  # node a dies here
    assert b.claim_due_groups(10, now=T0 + 61 + a.lease_seconds - 1) == []
    taken = b.claim_due_groups(10, now=T0 + 62 + a.lease_seconds)
    assert [g.id for g in taken] == [group.id]
    with pytest.raises(ClaimLost):  # node a back too late
        a.fire_group(group.id, [(instance_id, NewDelivery("AI", "/spool/in/1.dcm", CT_IMAGE, "x", EXPLICIT_LE))])
    assert b.fire_group(group.id, [], now=T0 + 63 + a.lease_seconds) == []
    assert b.group(group.id).state == GroupState.FIRED
    assert a.deliveries() == []


def test_processes_claiming_at_once_never_get_the_same_group(open_journal):
    journals = [open_journal("node-a", process) for process in (1, 2, 3, 4)]
    groups = {join(journals[0], held_instance(journals[0], number), T0, series=str(number)).group.id
              for number in range(1, 13)}
    taken: list[list[int]] = [[] for _ in journals]

    def claim(index: int) -> None:
        while True:
            claimed = journals[index].claim_due_groups(2, now=T0 + 100)
            if not claimed:
                return
            taken[index].extend(group.id for group in claimed)

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(len(journals))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [group_id for ids in taken for group_id in ids]
    assert sorted(every) == sorted(groups)  # each once


def test_fire_queues_the_groups_deliveries_together_in_order_and_marks_it_fired(journal):
    ids = [held_instance(journal, number) for number in (1, 2, 3)]
    group = None
    for offset, instance_id in enumerate(ids):
        group = join(journal, instance_id, T0 + offset).group
    assert journal.claim_group(group.id, now=T0 + 3)  # `complete when` held: fired before it is due
    deliveries = [(instance_id, NewDelivery("AI", f"/spool/in/{number}.dcm", CT_IMAGE, f"{STUDY}.{number}",
                                            EXPLICIT_LE)) for number, instance_id in ((3, ids[2]), (1, ids[0]), (2, ids[1]))]
    delivery_ids = journal.fire_group(group.id, deliveries, now=T0 + 4)
    queued = sorted(journal.deliveries(states=[QUEUED]), key=lambda item: item.id)
    assert [item.id for item in queued] == delivery_ids
    assert [(item.instance_id, item.path) for item in queued] == [
        (ids[2], "/spool/in/3.dcm"), (ids[0], "/spool/in/1.dcm"), (ids[1], "/spool/in/2.dcm")]
    fired = journal.group(group.id)
    assert (fired.state, fired.fired_at, fired.lease_owner) == (GroupState.FIRED, T0 + 4, None)
    assert journal.pending_groups() == [] and journal.due_groups(now=T0 + 1000) == []
    with pytest.raises(ClaimLost):
        journal.fire_group(group.id, [], now=T0 + 5)  # never twice


def test_a_late_instance_finds_the_fired_group_and_a_former_member_is_not_late(journal):
    member = held_instance(journal, 1)
    group = join(journal, member, T0).group
    journal.claim_due_groups(1, now=T0 + 61)
    journal.fire_group(group.id, [], now=T0 + 61)
    late = join(journal, held_instance(journal, 2), T0 + 500)
    assert late.late and late.group.id == group.id and late.group.state == GroupState.FIRED
    assert (late.group.last_arrival, late.group.due_at) == (T0, T0 + 60)  # its timer stays as it fired
    assert not join(journal, member, T0 + 600).late  # processed again after a crash: it was fired with it
    assert len(journal.group_members(group.id)) == 2


def test_a_released_group_is_claimed_again(open_journal):
    a, b = open_journal("node-a", 1), open_journal("node-a", 2)
    group = join(a, held_instance(a, 1), T0).group
    a.claim_due_groups(1, now=T0 + 61)
    assert b.release_groups([group.id]) == 0  # not its claim
    assert a.release_groups([group.id]) == 1
    assert [g.id for g in b.claim_due_groups(1, now=T0 + 62)] == [group.id]
    assert a.renew_group_leases([group.id], now=T0 + 63) == 0
    assert b.renew_group_leases([group.id], now=T0 + 63) == 1
    assert b.group(group.id).lease_expires == T0 + 63 + b.lease_seconds


def test_members_files_are_in_use_until_their_group_fired(journal):
    first, second = held_instance(journal, 1), held_instance(journal, 2)
    group = join(journal, first, T0).group
    join(journal, second, T0 + 1)
    assert {"/spool/in/1.dcm", "/spool/in/2.dcm"} <= journal.paths_in_use()
    assert journal.path_in_use("/spool/in/1.dcm")
    assert journal.purge_instances() == 0  # an open group's instances stay in the journal
    journal.claim_group(group.id, now=T0 + 2)
    journal.fire_group(group.id, [(first, NewDelivery("AI", "/spool/in/1.dcm", CT_IMAGE, "x", EXPLICIT_LE))])
    assert journal.path_in_use("/spool/in/1.dcm")  # its delivery needs it
    assert not journal.path_in_use("/spool/in/2.dcm")
    assert "/spool/in/2.dcm" not in journal.paths_in_use()


def test_an_accepted_instance_joins_before_it_is_settled(journal):
    instance_id = journal.record(received(1), "/spool/in/1.dcm", None, ACCEPTED, "v1")
    group = join(journal, instance_id, T0).group
    assert [member.id for member in journal.group_members(group.id)] == [instance_id]


def test_a_restart_or_a_dead_process_frees_the_groups_it_was_firing_at_once(open_journal):
    a1, a2, b = open_journal("node-a", 1), open_journal("node-a", 2), open_journal("node-b", 1)
    first = join(a1, held_instance(a1, 1), T0, series="1").group
    second = join(a1, held_instance(a1, 2), T0, series="2").group
    third = join(a1, held_instance(a1, 3), T0, series="3").group
    assert a1.claim_group(first.id, now=T0 + 61) and a2.claim_group(second.id, now=T0 + 61)
    assert b.claim_group(third.id, now=T0 + 61)
    a2.requeue_process(1, now=T0 + 62)  # process 1 of node a died: its supervisor gives back what it held
    assert [g.id for g in a2.claim_due_groups(10, now=T0 + 62)] == [first.id]
    a1.requeue_interrupted()  # node a starts again: its processes' claims are free, node b's stay
    assert {g.id for g in a1.claim_due_groups(10, now=T0 + 63)} == {first.id, second.id}


def test_a_member_keeps_the_header_it_joined_with(open_journal):
    a, b = open_journal("node-a", 1), open_journal("node-b", 1)
    first, second, third = (held_instance(a, number) for number in (1, 2, 3))
    group = a.join_group("AI", "v1", "series", STUDY, "1", first, 60.0, now=T0, header='{"first": 1}').group
    b.join_group("AI", "v1", "series", STUDY, "1", third, 60.0, now=T0 + 2, header='{"third": "\u00e9"}')
    a.join_group("AI", "v1", "series", STUDY, "1", second, 60.0, now=T0 + 1)  # none kept: its file is read
    a.join_group("AI", "v1", "series", STUDY, "1", first, 60.0, now=T0 + 5, header='{"again": 1}')  # processed again
    assert b.group_member_ids(group.id) == [first, second, third]  # the order they joined in
    assert b.group_member_headers(group.id, [first, second, third]) == {
        first: '{"first": 1}', second: None, third: '{"third": "\u00e9"}'}
    assert a.group_member_headers(group.id, [third]) == {third: '{"third": "\u00e9"}'}
    assert a.group_member_headers(group.id, []) == {}
    other = join(a, held_instance(a, 4), T0, series="2").group
    assert a.group_member_headers(other.id, [first]) == {}  # another group's member: not this one's


def test_a_group_lease_is_renewed_only_by_the_process_firing_it(open_journal):
    a, b = open_journal("node-a", 1), open_journal("node-b", 1)
    group = join(a, held_instance(a, 1), T0).group
    assert a.claim_group(group.id, now=T0)
    assert a.renew_group_leases([group.id], now=T0 + 50) == 1
    assert b.claim_due_groups(10, now=T0 + 61 + 0.5 * a.lease_seconds) == []  # still a's: renewed at T0 + 50
    assert b.renew_group_leases([group.id], now=T0 + 51) == 0
    a.fire_group(group.id, [], now=T0 + 52)
    assert a.renew_group_leases([group.id], now=T0 + 53) == 0  # fired: nothing to renew


def test_a_sqlite_journal_from_before_gets_the_member_header_column(tmp_path):
    path = str(tmp_path / "journal.sqlite")
    SQLiteJournal(path).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE group_members DROP COLUMN member_header")
    journal = SQLiteJournal(path)
    try:
        instance_id = held_instance(journal, 1)
        group = journal.join_group("AI", "v1", "study", STUDY, None, instance_id, 60.0, now=T0, header="{}").group
        assert journal.group_member_headers(group.id, [instance_id]) == {instance_id: "{}"}
    finally:
        journal.close()
