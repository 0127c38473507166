"""Group rules at run time (runtime/groups.py) through the pipeline: instances held in their
group after the instance rules, fired by the timer (an injected clock, never a sleep) or at
once by `complete when`, their deliveries queued together in group order, late instances by
each `late` policy, and processes of a cluster that never fire one group twice."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from helpers.clock import StoppedClock
from helpers.files import write
from helpers.instances import make_study
from pydicom.uid import generate_uid

from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.runtime.journal import DONE, PROCESSED, GroupChanged, GroupState
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder, rule_file_findings
from rulesengine.runtime.storage import Storage

CONFIG = """
storage: storage
processes: 1
rules: main.rules
group_quiet_time: 1m
destinations:
  AI: {type: folder, path: out/ai}
  PACS: {type: folder, path: out/pacs}
"""

STUDY_RULE = """
rule "every CT to the PACS" {
  when DataSet.Modality == "CT" and DataSet.PatientID != "HOLD"
  then route to PACS
}

rule "hold some" {
  when DataSet.PatientID == "HOLD"
  then quarantine "held for review"
}

rule "AI study" per study {
  late LATE
  when count() >= 2
  then {
    set DataSet.InstitutionName = "FOR AI " + count()
    route to AI
  }
}
"""

ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")


@dataclass
class Router:
    """One process's pipeline on the test's storage: its journal, its clock, what it notified."""

    folder: Path
    storage: Storage
    journal: object
    pipeline: Pipeline
    clock: StoppedClock
    notified: list

    def send(self, source: Path) -> int:
        path = self.storage.temp_path()
        with open(source, "rb") as fh, open(path, "wb") as out:
            out.write(fh.read())
        return self.pipeline.receive(path, ARRIVAL).instance_id

    def process(self) -> None:
        self.pipeline.process_pending()

    def deliveries(self, destination: str | None = None) -> list:
        return sorted((row for row in self.journal.deliveries(limit=10_000)
                       if destination is None or row.destination == destination), key=lambda row: row.id)


@pytest.fixture
def router(tmp_path):
    made: list[Router] = []

    def make(rules: str = STUDY_RULE, late: str = "refire", journal=None, clock: StoppedClock | None = None,
             config: str = CONFIG) -> Router:
        if not (tmp_path / "router.yaml").exists():
            write(tmp_path / "router.yaml", config)
            write(tmp_path / "main.rules", rules.replace("LATE", late))
        loaded = load_config(tmp_path / "router.yaml")
        storage = Storage(loaded.storage)
        journal = journal or storage.journal()
        clock = clock or StoppedClock()
        notified: list = []
        pipeline = Pipeline(storage, journal, RulesHolder(loaded, journal), notified.append,
                            on_accepted=lambda _id: None, clock=clock)
        made.append(Router(tmp_path, storage, journal, pipeline, clock, notified))
        return made[-1]

    yield make
    for one in made:
        one.pipeline.claims.stop()
        one.journal.close()


def study_files(folder: Path, series: list[tuple[int, str, int]], study: str | None = None,
                patient: str | None = None) -> list[Path]:
    """The files of a new study (or more of `study`): for each (series number, description,
    instances) a series; `patient`: its PatientID."""
    made = [instance.path for instance in make_study(folder, [(description, count, number)
                                                             for number, description, count in series],
                                                     study_uid=study)]
    if patient is not None:
        for path in made:
            dataset = pydicom.dcmread(path)
            dataset.PatientID = patient
            dataset.save_as(path, enforce_file_format=True)
    return made


def uid_of(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_a_group_is_held_until_its_quiet_time_then_its_deliveries_are_queued_together_in_group_order(router, tmp_path):
    one = router()
    # series 2 arrives first: group order puts series 1 first all the same
    files = study_files(tmp_path / "study", [(2, "Sag T1", 2), (1, "Axial T2", 1)])
    ids = [one.send(path) for path in files]
    one.process()
    assert {row.instance_id for row in one.deliveries("PACS")} == set(ids)  # instance rules ran first
    assert one.deliveries("AI") == []
    [pending] = one.journal.pending_groups()
    assert (pending.rule, pending.level, pending.members) == ("AI study", "study", 3)
    assert pending.due_at == pytest.approx(one.clock.now + 60)
    spooled = {one.journal.instance(instance_id).path for instance_id in ids}
    assert spooled <= one.journal.paths_in_use()  # the start-up sweep keeps them
    assert all(os.path.exists(path) for path in spooled)

    one.clock.advance(59.9)
    assert one.pipeline.groups.fire_due() == 0
    one.clock.advance(0.2)
    assert one.pipeline.groups.fire_due() == 1
    ai = one.deliveries("AI")
    assert [row.instance_id for row in ai] == [ids[2], ids[0], ids[1]]  # series 1, then series 2 by number
    assert len({row.id for row in ai}) == 3 and {"AI"} in one.notified
    edited = pydicom.dcmread(ai[0].path)
    assert edited.InstitutionName == "FOR AI 3"  # the group's aggregate, on a copy of its own
    assert uid_of(files[0]) == str(pydicom.dcmread(ai[1].path).SOPInstanceUID)
    assert one.journal.group(pending.id).state == GroupState.FIRED
    assert one.journal.pending_groups() == []
    assert one.pipeline.groups.fire_due() == 0  # never twice


def test_each_arrival_restarts_the_timer(router, tmp_path):
    one = router()
    first, second = study_files(tmp_path / "study", [(1, "Axial", 2)])
    one.send(first)
    one.process()
    one.clock.advance(50)
    one.send(second)
    one.process()
    one.clock.advance(50)  # 100 s after the first, 50 after the last
    assert one.pipeline.groups.fire_due() == 0
    one.clock.advance(10)
    assert one.pipeline.groups.fire_due() == 1


def test_an_instance_routed_nowhere_by_the_instance_rules_is_held_then_routed_by_the_group(router, tmp_path, caplog):
    rules = """
rule "AI series" per series {
  complete after 30s
  then route to AI
}
"""
    one = router(rules)
    [path] = study_files(tmp_path / "study", [(1, "Axial", 1)])
    instance_id = one.send(path)
    caplog.set_level(logging.INFO, logger="rulesengine.router")
    one.process()
    assert "fired none held for group 1 of rule 'AI series' (series " in caplog.text  # not "quarantine"
    held = one.journal.instance(instance_id)
    assert (held.state, held.outcome.outcome) == (DONE, "held")
    assert "group" in held.outcome.reason and "AI series" in held.outcome.reason
    assert os.path.exists(held.path) and held.path in one.journal.paths_in_use()
    one.clock.advance(30)
    assert one.pipeline.groups.fire_due() == 1
    [delivery] = one.deliveries()
    assert (delivery.destination, delivery.path, delivery.instance_id) == ("AI", held.path, instance_id)
    routed = one.journal.instance(instance_id).outcome  # its final decision, the group rule's
    assert (routed.outcome, routed.destinations, routed.rules_fired) == ("route", ("AI",), ("AI series",))


def test_a_no_destination_policy_of_reject_lets_an_instance_held_for_its_groups_in(router, tmp_path):
    rules = """
rule "AI series" per series {
  then route to AI
}
"""
    one = router(rules, config=CONFIG + "no_destination: reject\n")
    [path] = study_files(tmp_path / "study", [(1, "Axial", 1)])
    instance_id = one.send(path)
    assert one.journal.instance(instance_id).state.value == "accepted"
    one.process()
    assert one.journal.instance(instance_id).outcome.outcome == "held"


def test_instances_the_instance_rules_quarantine_join_no_group(router, tmp_path):
    one = router()
    [kept] = study_files(tmp_path / "kept", [(1, "Axial", 1)], patient="HOLD")
    one.send(kept)
    one.process()
    assert one.journal.pending_groups() == []


def test_complete_when_fires_at_the_arrival_that_completes_the_group(router, tmp_path):
    rules = """
rule "two series" per study {
  complete after 1h
  complete when any(DataSet.SeriesDescription matches /axial/i) and any(DataSet.SeriesDescription matches /sag/i)
  then route to AI
}
"""
    one = router(rules)
    files = study_files(tmp_path / "study", [(1, "Axial T2", 2), (2, "Sag T1", 1)])
    for path in files[:2]:
        one.send(path)
    one.process()
    assert one.deliveries() == [] and len(one.journal.pending_groups()) == 1
    one.send(files[2])
    one.process()  # no clock moved
    assert len(one.deliveries("AI")) == 3
    assert one.journal.pending_groups() == []
    # nothing needs the received files but their deliveries
    paths = {row.path for row in one.deliveries("AI")}
    assert all(os.path.exists(path) for path in paths)


def test_a_group_fired_with_no_route_leaves_no_file_behind(router, tmp_path):
    rules = """
rule "only big series" per series {
  complete after 10s
  when count() >= 5
  then route to AI
}
"""
    one = router(rules)
    files = study_files(tmp_path / "study", [(1, "Axial", 2)])
    ids = [one.send(path) for path in files]
    one.process()
    paths = [one.journal.instance(instance_id).path for instance_id in ids]
    one.clock.advance(10)
    assert one.pipeline.groups.fire_due() == 1
    assert one.deliveries() == []
    assert not any(os.path.exists(path) for path in paths)
    assert not set(paths) & one.journal.paths_in_use()
    # routed by no rule, instance or group: the no_destination policy (quarantine) applies, once
    assert sorted(uid_of(kept) for kept, _ in one.storage.quarantined()) == sorted(uid_of(path) for path in files)
    for instance_id in ids:
        outcome = one.journal.instance(instance_id).outcome
        assert outcome.outcome == "quarantine"
        assert outcome.reason == "no rule routed this document (nor group 1 of rule 'only big series' (series " + \
            one.journal.group(1).series_uid + "))"


def test_an_instance_held_in_two_groups_meets_the_no_destination_policy_only_when_both_fired(router, tmp_path):
    rules = """
rule "series" per series {
  complete after 10s
  when count() > 99
  then route to AI
}

rule "study" per study {
  complete after 20s
  when count() > 99
  then route to AI
}
"""
    one = router(rules, config=CONFIG + "no_destination: drop\n")
    [path] = study_files(tmp_path / "study", [(1, "Axial", 1)])
    instance_id = one.send(path)
    one.process()
    one.clock.advance(10)
    assert one.pipeline.groups.fire_due() == 1
    assert one.journal.instance(instance_id).outcome.outcome == "held"  # the study group may still route it
    assert os.listdir(one.storage.incoming) != []
    one.clock.advance(10)
    assert one.pipeline.groups.fire_due() == 1
    assert one.journal.instance(instance_id).outcome.outcome == "drop"
    assert os.listdir(one.storage.incoming) == [] and one.storage.quarantined() == []


@pytest.mark.parametrize("late", ["refire", "quarantine", "drop"])
def test_a_late_instance_is_handled_by_the_rules_late_policy(router, tmp_path, late, caplog):
    one = router(late=late)
    study = generate_uid()
    first = study_files(tmp_path / "first", [(1, "Axial", 2)], study=study)
    [late_file] = study_files(tmp_path / "late", [(1, "Axial", 1)], study=study)
    for path in first:
        one.send(path)
    one.process()
    [pending] = one.journal.pending_groups()
    one.clock.advance(61)
    assert one.pipeline.groups.fire_due() == 1
    before = len(one.deliveries("AI"))
    caplog.set_level(logging.INFO, logger="rulesengine.router")
    late_id = one.send(late_file)
    one.process()
    instance = one.journal.instance(late_id)
    assert {row.instance_id for row in one.deliveries("PACS")} >= {late_id}  # its instance rules ran as ever
    if late == "refire":
        [refired] = [row for row in one.deliveries("AI") if row.instance_id == late_id]
        assert len(one.deliveries("AI")) == before + 1
        assert pydicom.dcmread(refired.path).InstitutionName == "FOR AI 3"  # aggregates over the whole group
        assert "refired" in caplog.text
    elif late == "quarantine":
        assert len(one.deliveries("AI")) == before
        [(kept, facts)] = one.storage.quarantined()
        assert "fired" in facts["reason"] and "AI study" in facts["reason"] and "late quarantine" in facts["reason"]
        assert uid_of(kept) == uid_of(late_file)
    else:
        assert len(one.deliveries("AI")) == before
        assert "late drop" in caplog.text and f"instance {late_id}" in caplog.text
    group = one.journal.group(pending.id)
    assert (group.state, group.members) == (GroupState.FIRED, 3)
    assert instance.state == PROCESSED  # its instance rules routed it to the PACS


def test_a_late_instance_nothing_else_routes_is_quarantined_or_dropped_itself(router, tmp_path):
    rules = """
rule "AI series" per series {
  complete after 10s
  late quarantine
  then route to AI
}
"""
    one = router(rules)
    study = generate_uid()
    [first] = study_files(tmp_path / "first", [(1, "Axial", 1)], study=study)
    one.send(first)
    one.process()
    one.clock.advance(10)
    one.pipeline.groups.fire_due()
    # the same series again: a late instance of the fired group
    dataset = pydicom.dcmread(first)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late_file = tmp_path / "late.dcm"
    dataset.save_as(late_file, enforce_file_format=True)
    late_id = one.send(late_file)
    one.process()
    instance = one.journal.instance(late_id)
    assert (instance.state, instance.outcome.outcome) == (DONE, "quarantine")
    assert "late quarantine" in instance.outcome.reason
    [(kept, facts)] = one.storage.quarantined()
    assert kept == instance.path


def test_two_processes_never_fire_one_group_twice(router, tmp_path, open_journal):
    clock = StoppedClock()
    first = router(journal=open_journal("node-a", 1), clock=clock)
    second = router(journal=open_journal("node-b", 2), clock=clock)
    studies = [study_files(tmp_path / f"study{number}", [(1, "Axial", 2)]) for number in range(6)]
    ids = [first.send(path) for files in studies for path in files]
    first.process()
    assert len(first.journal.pending_groups()) == 6
    clock.advance(61)
    fired = [0, 0]

    def fire(index: int, one) -> None:
        fired[index] = one.pipeline.groups.fire_due()

    threads = [threading.Thread(target=fire, args=(index, one)) for index, one in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(fired) == 6
    ai = first.deliveries("AI")
    assert sorted(row.instance_id for row in ai) == sorted(ids)  # each instance once
    assert first.journal.pending_groups() == []


def test_a_member_joining_while_its_group_fires_is_evaluated_with_it(router, tmp_path):
    one = router()
    study = generate_uid()
    files = study_files(tmp_path / "study", [(1, "Axial", 3)], study=study)
    for path in files[:2]:
        one.send(path)
    one.process()
    one.clock.advance(61)
    [group] = one.journal.claim_due_groups(1, now=one.clock())
    members = one.journal.group_members(group.id)
    third = one.send(files[2])
    one.process()  # joins the group this process is about to fire
    with pytest.raises(GroupChanged):
        one.journal.fire_group(group.id, [], members=[member.id for member in members], now=one.clock())
    assert one.pipeline.groups.fire(group)
    assert third in {row.instance_id for row in one.deliveries("AI")}
    assert len(one.deliveries("AI")) == 3


def test_a_restarted_process_fires_the_group_its_predecessor_held(router, tmp_path):
    clock = StoppedClock()
    before = router(clock=clock)
    for path in study_files(tmp_path / "study", [(1, "Axial", 2)]):
        before.send(path)
    before.process()
    before.pipeline.claims.stop()
    before.journal.close()
    after = router(clock=clock)  # a new process: its journal opened again, nothing kept in memory
    assert after.journal is not before.journal
    clock.advance(61)
    assert after.pipeline.groups.fire_due() == 1
    assert len(after.deliveries("AI")) == 2


def test_a_group_completed_by_its_last_instance_and_routing_nothing_leaves_the_spool_empty(router, tmp_path):
    rules = """
rule "pairs" per series {
  complete when count() >= 2
  when count() > 2
  then route to AI
}
"""
    one = router(rules)
    for path in study_files(tmp_path / "study", [(1, "Axial", 2)]):
        one.send(path)
    one.process()  # the second instance completes the group, which routes nothing
    assert one.journal.pending_groups() == [] and one.deliveries() == []
    assert os.listdir(one.storage.incoming) == []  # neither member's file


def test_an_instance_processed_again_after_its_group_fired_with_it_keeps_the_file_its_delivery_needs(router, tmp_path):
    rules = """
rule "AI series" per series {
  complete after 30s
  then route to AI
}
"""
    one = router(rules)
    [path] = study_files(tmp_path / "study", [(1, "Axial", 1)])
    instance_id = one.send(path)
    accepted = one.journal.instance(instance_id)
    series = pydicom.dcmread(accepted.path, stop_before_pixels=True)
    # joined, then the process crashed before settling it; another process fired the group meanwhile
    one.journal.join_group("AI series", accepted.outcome.ruleset_version, "series", series.StudyInstanceUID,
                           series.SeriesInstanceUID, instance_id, 30, now=one.clock())
    one.clock.advance(30)
    assert one.pipeline.groups.fire_due() == 1
    [delivery] = one.deliveries("AI")
    assert delivery.path == accepted.path
    one.process()  # processed again: not late (it was fired with its group), nothing more queued
    assert len(one.deliveries()) == 1
    assert os.path.exists(accepted.path)  # its delivery still needs it


# ---- what evaluating `complete when` reads: the members' headers the journal kept --------------

COUNTING_RULE = """
rule "mark" {
  then set DataSet.SeriesDescription = "EDITED BY AN INSTANCE RULE"
}

rule "AI: a whole study with a sagittal series" per study {
  complete after 1h
  complete when count() >= 24 and any(DataSet.SeriesDescription matches /sag/i)
  then route to AI
}
"""


def _spy(monkeypatch, name: str) -> list:
    """Calls of a function of runtime/groups.py, counted, the function itself still doing its work."""
    import rulesengine.runtime.groups as groups
    real, calls = getattr(groups, name), []

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(groups, name, counted)
    return calls


def test_complete_when_reads_no_member_file_and_decodes_each_kept_header_once(router, tmp_path, open_journal,
                                                                             monkeypatch):
    clock = StoppedClock()
    first = router(COUNTING_RULE, journal=open_journal("node-a", 1), clock=clock)
    second = router(COUNTING_RULE, journal=open_journal("node-b", 1), clock=clock)
    files = study_files(tmp_path / "study", [(1, "Axial T2", 12), (2, "Sag T1", 12)])
    read = _spy(monkeypatch, "read_instance")
    decoded = _spy(monkeypatch, "document_of_header")
    ids = []
    for path in files[:-1]:
        ids.append(first.send(path))
        first.process()  # `complete when` after each arrival: from what this process kept at joining
    assert read == [] and decoded == []
    assert first.deliveries("AI") == []
    second.send(files[-1])
    second.process()  # another node: the 23 other members' kept headers, each decoded once
    assert len(decoded) == 23
    # the firing reads once the file of each member another process processed (its own instance
    # it kept as received)
    assert sorted(call[0] for call in read) == sorted(first.journal.instance(i).path for i in ids)
    assert len(second.deliveries("AI")) == 24
    assert len(decoded) == 23  # nothing decoded again
    # the instance rule's edit is the instance's own: the group saw the series as received
    assert all(pydicom.dcmread(row.path).SeriesDescription != "EDITED BY AN INSTANCE RULE"
               for row in second.deliveries("AI"))


def test_a_late_refire_counts_members_whose_files_left_the_spool(router, tmp_path):
    one = router(late="refire")
    study = generate_uid()
    first = study_files(tmp_path / "first", [(1, "Axial", 2)], study=study)
    [late_file] = study_files(tmp_path / "late", [(1, "Axial", 1)], study=study)
    ids = [one.send(path) for path in first]
    one.process()
    one.clock.advance(61)
    assert one.pipeline.groups.fire_due() == 1
    for row in one.deliveries():  # delivered (and their files gone): the spool keeps no member's file
        one.journal.delivered(row, one.clock(), "sent")
        one.storage.remove(row.path)
    for instance_id in ids:
        path = one.journal.instance(instance_id).path
        if path and os.path.exists(path):
            os.remove(path)
    late_id = one.send(late_file)
    one.process()
    [refired] = [row for row in one.deliveries("AI") if row.instance_id == late_id]
    assert pydicom.dcmread(refired.path).InstitutionName == "FOR AI 3"  # its 2 members counted, files or not


def test_a_group_lease_is_renewed_while_it_fires(router, tmp_path, open_journal, monkeypatch):
    clock = StoppedClock()
    one = router(journal=open_journal("node-a", 1), clock=clock)
    other = router(journal=open_journal("node-b", 1), clock=clock)
    for path in study_files(tmp_path / "study", [(1, "Axial", 3)]):
        one.send(path)
    one.process()
    clock.advance(61)
    real, taken = one.pipeline.write_copies, []

    def slow_copies(*args, **kwargs):  # each copy takes 45 s: the firing outlasts its 60 s lease
        clock.advance(45)
        assert one.pipeline.group_leases.tick() == 1  # the renewing thread's round, run here
        taken.extend(other.journal.claim_due_groups(10, now=clock()))
        return real(*args, **kwargs)

    monkeypatch.setattr(one.pipeline, "write_copies", slow_copies)
    assert one.pipeline.groups.fire_due() == 1
    assert taken == []  # never taken over while it fired
    assert len(one.deliveries("AI")) == 3
    assert one.pipeline.group_leases.held() == []  # fired: no lease left to renew
    one.pipeline.group_leases.stop()


@pytest.mark.parametrize("mode, warned", [("sync", True), ("async", False)])
def test_check_config_warns_of_group_rules_with_a_sync_listener(tmp_path, mode, warned):
    write(tmp_path / "router.yaml", CONFIG + f"listeners:\n  - {{name: scanners, ae_title: ROUTER, port: 11112, "
                                            f"mode: {mode}}}\n")
    write(tmp_path / "main.rules", STUDY_RULE.replace("LATE", "refire"))
    findings = [d for d in rule_file_findings(load_config(tmp_path / "router.yaml")) if d.code == "group-sync-listener"]
    if not warned:
        assert findings == []
        return
    [finding] = findings
    assert finding.severity.value == "warning"
    assert "'AI study'" in finding.message and "'scanners'" in finding.message and "join no group" in finding.message
    assert finding.span.line == STUDY_RULE.splitlines().index('rule "AI study" per study {') + 1


def test_check_config_does_not_warn_of_a_sync_listener_without_group_rules(tmp_path):
    write(tmp_path / "router.yaml", CONFIG + "listeners:\n  - {name: scanners, ae_title: ROUTER, port: 11112, "
                                            "mode: sync}\n")
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    assert [d for d in rule_file_findings(load_config(tmp_path / "router.yaml")) if d.code == "group-sync-listener"] \
        == []
