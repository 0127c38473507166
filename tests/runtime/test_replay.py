"""Replay in the journal and the spool, on both backends: retained instances queued again as new
accepted instances (their original's arrival, a file of their own, the replay's rule set
version), recorded as a replay whose progress the journal tells; the cleanup never removes a
replayed instance's file before it is processed; processing uses the replay's rules."""

from __future__ import annotations

import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

from helpers.files import SAMPLES, write

from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.runtime.cleanup import Cleanup
from rulesengine.runtime.delivery import DestinationWorker
from rulesengine.runtime.journal import ACCEPTED, DONE, PROCESSED, NewDelivery, Outcome
from rulesengine.runtime.journal.records import NewReplay, ReplayedInstance
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.replay import queue_replay, retained_between, rules_from_file, rules_in_place
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage

DAY = 86400.0
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")


def arrival(number: int) -> Arrival:
    return replace(ARRIVAL, sop_class_uid=CT_IMAGE, sop_instance_uid=f"1.2.3.{number}", received_at=1000.0 + number)


def retained_instance(journal, path: str, number: int) -> int:
    instance_id = journal.record(arrival(number), path, None, ACCEPTED, "v1")
    journal.add_deliveries(instance_id, [NewDelivery("PACS", path, CT_IMAGE, f"1.2.3.{number}", None)],
                           Outcome("v1", "route", None, ("all",), ("PACS",)))
    journal.retain(instance_id, 1e12)
    return instance_id


def test_a_replay_queues_new_accepted_instances_with_their_originals_arrival(open_journal):
    journal = open_journal("a", 1)
    first, second = (retained_instance(journal, f"/spool/in/{n}.dcm", n) for n in (1, 2))
    received_before = {(c.name, c.label): c.value for c in journal.counters()}[("instances_received", "main")]
    originals = list(retained_between(journal, None, None))
    assert [i.id for i in originals] == [first, second]
    journal.keep_ruleset("v2", {"other.rules": b'rule "x" { then drop }\n'})
    assert journal.latest_ruleset() is None  # kept, not put in place
    assert journal.ruleset_sources("v2") == {"other.rules": b'rule "x" { then drop }\n'}

    replay_id = journal.record_replay(
        NewReplay("alice@host", "v2", "/rules/other.rules", 1000.0, 2000.0, missing=1),
        [ReplayedInstance(original, f"/spool/in/replay-{original.id}.dcm") for original in originals], now=5000.0)

    claimed = journal.claim_instances(10)
    assert [(i.path, i.state, i.outcome.ruleset_version, i.received_at, i.arrival.sop_instance_uid)
            for i in claimed] == [("/spool/in/replay-%d.dcm" % first, ACCEPTED, "v2", 1001.0, "1.2.3.1"),
                                  ("/spool/in/replay-%d.dcm" % second, ACCEPTED, "v2", 1002.0, "1.2.3.2")]
    assert claimed[0].arrival.calling_aet == "CT1" and claimed[0].arrival.peer_port == 40123
    assert journal.path_in_use(claimed[0].path)  # an accepted instance's file: no sweep, no cleanup removes it
    # what a later replay finds: the originals only, never a replayed copy (it keeps the arrival time)
    assert [i.id for i in journal.retained_instances()] == [first, second]
    counters = {(c.name, c.label): c.value for c in journal.counters()}
    assert counters[("instances_received", "main")] == received_before  # replays are not received again

    assert [(original, instance.id) for original, instance in journal.replayed_instances(replay_id)] == [
        (first, claimed[0].id), (second, claimed[1].id)]
    assert [original for original, _ in journal.replayed_instances(replay_id, after=claimed[0].id, limit=5)] == [second]
    assert journal.replayed_instances(replay_id + 1) == []
    [listed] = journal.replays()
    assert (listed.id, listed.requested_by, listed.rules_version, listed.rules_file, listed.received_from,
            listed.received_to, listed.instances, listed.missing, listed.waiting, dict(listed.outcomes)) == (
        replay_id, "alice@host", "v2", "/rules/other.rules", 1000.0, 2000.0, 2, 1, 2, {})
    assert listed.created_at == 5000.0

    journal.add_deliveries(claimed[0].id, [NewDelivery("ARCHIVE", claimed[0].path, CT_IMAGE, "1.2.3.1", None)],
                           Outcome("v2", "route", None, ("x",), ("ARCHIVE",)))
    journal.settle(claimed[1].id, Outcome("v2", "drop", "not wanted", ("x",), ()), None)
    [listed] = journal.replays()
    assert (listed.waiting, dict(listed.outcomes), dict(listed.deliveries)) == (0, {"route": 1, "drop": 1},
                                                                              {"queued": 1})
    assert journal.instance(claimed[0].id).state == PROCESSED and journal.instance(claimed[1].id).state == DONE

    # its delivery's latency runs from the replay, not from the first arrival a day before
    [delivery] = journal.claim("ARCHIVE", 1)
    journal.delivered(delivery, time.time())
    counters = {(c.name, c.label): c.value for c in journal.counters()}
    assert counters[("delivery_latency_seconds_sum", "ARCHIVE")] >= time.time() - 5000.0 - 60
    assert counters[("delivery_latency_seconds_bucket", "ARCHIVE:+Inf")] == 1

    second_id = journal.record_replay(NewReplay("bob@host", "v1", None, None, None), [])
    assert [r.id for r in journal.replays()] == [second_id, replay_id]
    assert [r.id for r in journal.replays(limit=1)] == [second_id]
    assert [r.id for r in journal.replays(before_id=second_id)] == [replay_id]


CONFIG = """
storage: storage
processes: 1
rules: main.rules
retention: {delivered: 1d}
destinations:
  PACS: {type: folder, path: out/pacs}
  RESEARCH: {type: folder, path: out/research}
"""

RULES = 'rule "to the PACS" {\n  then route to PACS\n}\n'
OTHER_RULES = ('rule "CT to research" {\n  when DataSet.Modality == "CT"\n  then copy to RESEARCH {\n'
               '    set DataSet.InstitutionName = "REPLAYED"\n  }\n}\n')


def test_replayed_instances_have_files_of_their_own_which_the_cleanup_leaves_until_processed(open_journal, tmp_path):
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    write(tmp_path / "other.rules", OTHER_RULES)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage.of(config)
    journal = open_journal("a", 1)
    holder = RulesHolder(config, journal)
    pipeline = Pipeline(storage, journal, holder, lambda names: None)
    ids = []
    for sample in ("ct_head.dcm", "mr_knee.dcm", "ct_chest.dcm"):
        path = storage.temp_path()
        shutil.copyfile(SAMPLES / sample, path)
        result = pipeline.receive(path, ARRIVAL)
        pipeline.process(result.instance_id)
        ids.append(result.instance_id)
    worker = DestinationWorker(config.destinations["PACS"], journal, storage, threading.Event())
    worker._claim_and_send()  # one round: the three are delivered to the PACS folder
    worker.sender.close()
    assert len(list((tmp_path / "out" / "pacs").rglob("*.dcm"))) == 3
    originals = {i.id: i for i in retained_between(journal, None, None)}
    assert list(originals) == ids
    assert rules_in_place(journal, config).version == holder.current.version
    os.unlink(originals[ids[2]].path)  # gone (removed by hand): reported, the others are queued

    other = rules_from_file(str(tmp_path / "other.rules"), config)
    journal.keep_ruleset(other.version, other.program.sources)
    queued = queue_replay(storage, journal, originals.values(), "alice@host", other.version, "other.rules", None, None)
    assert [item.original.id for item in queued.queued] == ids[:2]
    assert [(instance.id, reason) for instance, reason in queued.missing] == [
        (ids[2], f"its retained file is gone: {originals[ids[2]].path}")]
    for item in queued.queued:
        assert Path(item.path).parent == Path(storage.incoming) and item.path != item.original.path
        assert os.path.samefile(item.path, item.original.path)  # a link: no second copy on the disk
        assert abs(Storage.facts_from_name(item.path).received_at - item.original.received_at) < 0.001  # ms

    # the originals' retention ends (a day later): the cleanup removes their files, not the replay's
    removed = Cleanup(storage, journal, config.retention).run(now=time.time() + 2 * DAY)
    assert sorted(r.instance_id for r in removed.removals["retained"]) == ids  # the gone one's mark ends too
    assert not any(os.path.exists(item.original.path) for item in queued.queued)
    assert all(os.path.exists(item.path) for item in queued.queued)

    # processed with the replay's rules, not the rules in place
    assert pipeline.process_pending() == 2
    ct, mr = (journal.instance(item.original.id) for item in queued.queued)
    replayed = [journal.trace(i.id) for i in journal.search_instances(outcome="route")
                if i.id not in ids]
    assert len(replayed) == 1  # the CT goes to RESEARCH; the MR now reaches no rule
    [delivery] = replayed[0].deliveries
    assert delivery.delivery.destination == "RESEARCH"
    assert replayed[0].instance.outcome.ruleset_version == other.version
    assert replayed[0].trace["edits"][0]["new"] == "REPLAYED"
    [listed] = journal.replays()
    assert (listed.waiting, listed.instances, listed.missing, dict(listed.outcomes)) == (0, 2, 1, {
        "route": 1, "quarantine": 1})
    assert ct.outcome.outcome == "route" and mr.outcome.outcome == "route"  # the first time stands
