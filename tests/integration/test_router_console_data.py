"""What the operations console reads of a running router, from the journal only: the header
facts of each instance, its trace, its deliveries and attempts, the counters, and the status
the router writes at start, every few seconds, and at its stop."""

from __future__ import annotations

import pydicom
from helpers.files import SAMPLES
from helpers.peers import storescu, wait_until

from rulesengine.runtime.journal import DELIVERED, SQLiteJournal

RULES = """
rule "research copy" {
  when DataSet.Modality == "CT"
  then copy to RESEARCH {
    set DataSet.PatientName = "ANON"
  }
}

rule "everything" {
  then route to PACS
}
"""


def config(port: int, mode: str = "async") -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}, mode: {mode}}}\n"
            f"destinations:\n  PACS: {{type: folder, path: out/pacs}}\n"
            f"  RESEARCH: {{type: folder, path: out/research}}\n")


def test_an_instance_received_is_found_by_its_accession_number_with_its_trace(router_factory, port):
    router = router_factory(config(port), RULES, port)
    journal = SQLiteJournal(str(router.config.parent / "var" / "journal.sqlite"))  # as the console opens it
    try:
        status = wait_until(lambda: journal.statuses(), what="the router's status")[0].status
        assert status["pid"] == router.process.pid and status["state"] == "running"
        assert status["listeners"] == [{"name": "main", "port": port, "associations": 0}]

        sent = storescu(port, [SAMPLES / "ct_chest.dcm"], "CT1")
        assert sent.returncode == 0, sent.stderr
        [found] = wait_until(lambda: journal.search_instances(accession_number="ACC0001"), what="the instance")
        header = pydicom.dcmread(SAMPLES / "ct_chest.dcm", stop_before_pixels=True)
        assert (found.arrival.patient_id, found.arrival.study_instance_uid, found.arrival.calling_aet) == (
            "123456", header.StudyInstanceUID, "CT1")

        traced = wait_until(lambda: (lambda t: t if t.deliveries and all(
            d.delivery.state == DELIVERED for d in t.deliveries) else None)(journal.trace(found.id)),
            what="both deliveries")
        assert [rule["name"] for rule in traced.trace["rules_fired"]] == ["research copy", "everything"]
        [edit] = traced.trace["edits"]
        assert (edit["path"], edit["old"], edit["new"], edit["destination"]) == (
            "DataSet.PatientName", "DOE^JOHN", "ANON", "RESEARCH")
        assert all(len(item.attempts) == 1 and item.attempts[0].ok for item in traced.deliveries)
        counts = {(name, label): value for name, label, value in journal.counters()}
        assert counts[("instances_received", "main")] == 1 and counts[("instances_outcome", "route")] == 1
        assert counts[("deliveries_delivered", "PACS")] == counts[("deliveries_delivered", "RESEARCH")] == 1
        assert counts[("delivery_latency_seconds_count", "PACS")] == 1

        router.stop()
        assert journal.statuses()[0].status["state"] == "stopped"
    finally:
        journal.close()


def test_a_sync_delivery_keeps_the_same_facts_and_trace(router_factory, port):
    router = router_factory(config(port, "sync"), RULES, port)
    sent = storescu(port, [SAMPLES / "ct_head.dcm"], "CT1")
    assert sent.returncode == 0, sent.stderr
    journal = SQLiteJournal(str(router.config.parent / "var" / "journal.sqlite"))
    try:
        [found] = journal.search_instances(patient_id="654321")  # answered after the deliveries: no waiting
        traced = journal.trace(found.id)
        assert traced.trace["outcome"] == "route" and len(traced.trace["edits"]) == 1
        assert {item.delivery.destination: item.delivery.state for item in traced.deliveries} == {
            "PACS": DELIVERED, "RESEARCH": DELIVERED}
        counts = {(name, label): value for name, label, value in journal.counters()}
        assert counts[("instances_outcome", "route")] == 1 and counts[("deliveries_delivered", "PACS")] == 1
    finally:
        journal.close()
