"""The console benchmark's generated journal is one the journal reads as its own.

The benchmark writes its million instances with SQL directly, for speed; these tests keep
that writing from drifting away from the journal's schema and from what the router stores.
"""

from __future__ import annotations

import json
import time

import pytest

from benchmarks.console import DESTINATIONS, generate_journal
from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import PROCESSED, NewDelivery, Outcome, SQLiteJournal, trace_text

COUNT = 1000
END = 1_800_000_000.0


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console-bench")
    generated = generate_journal(folder / "journal.sqlite", COUNT, end=END)
    journal = SQLiteJournal(str(generated.path))
    yield generated, journal
    journal.close()


def test_the_counts_asked_for(generated):
    generated, journal = generated
    assert generated.instances == COUNT
    db = journal._connection()
    assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == COUNT
    assert db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == generated.deliveries
    assert db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == generated.attempts
    assert END - 30 * 86400 <= generated.first_received < generated.last_received <= END + 3600
    outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM instances GROUP BY outcome").fetchall())
    assert set(outcomes) == {"route", "quarantine", "drop"} and outcomes["route"] > 0.8 * COUNT


def test_ids_follow_arrival(generated):
    generated, journal = generated
    times = [row[0] for row in journal._connection().execute("SELECT received_at FROM instances ORDER BY id")]
    assert times == sorted(times)


def test_searches_find_the_generated_rows(generated):
    generated, journal = generated
    patient = generated.patients[0]
    page = journal.search_instances(patient_id=patient, limit=50)
    assert page and all(item.arrival.patient_id == patient for item in page)
    assert [item.id for item in page] == sorted((item.id for item in page), reverse=True)
    study = generated.studies[0]
    page = journal.search_instances(study_instance_uid=study, limit=20)
    assert page and all(item.arrival.study_instance_uid == study for item in page)
    assert all(item.arrival.series_instance_uid.startswith(study + ".") for item in page)
    middle = (generated.first_received + generated.last_received) / 2
    window = journal.search_instances(received_from=middle - 86400, received_to=middle + 86400, limit=10)
    assert window and all(middle - 86400 <= item.received_at < middle + 86400 for item in window)
    after = journal.search_instances(received_from=middle - 86400, received_to=middle + 86400, limit=10,
                                     before_id=window[-1].id)
    assert all(item.id < window[-1].id for item in after)


def test_a_routed_instance_has_its_trace_deliveries_and_attempts(generated):
    generated, journal = generated
    routed = journal.search_instances(outcome="route", limit=1)[0]
    trace = journal.trace(routed.id)
    assert trace.instance.outcome.outcome == "route"
    assert trace.instance.arrival.store_command is not None
    assert tuple(item.delivery.destination for item in trace.deliveries) == DESTINATIONS
    assert all(item.attempts and item.attempts[-1].delivery_id == item.delivery.id for item in trace.deliveries)
    assert 200 <= len(trace.instance.outcome.trace) <= 2000
    # the layout the pipeline writes (records.trace_text)
    written = json.loads(trace_text("route", None, "v", [{"name": "r", "file": "f", "line": 1}],
                                    [{"path": "p", "old": "a", "new": "b", "rule": "r", "file": "f", "line": 1,
                                      "destination": None}]))
    assert trace.trace.keys() == written.keys()
    assert trace.trace["rules_fired"][0].keys() == written["rules_fired"][0].keys()
    assert trace.trace["edits"][0].keys() == written["edits"][0].keys()


def test_quarantined_and_dropped_have_no_deliveries(generated):
    generated, journal = generated
    for outcome in ("quarantine", "drop"):
        item = journal.search_instances(outcome=outcome, limit=1)[0]
        trace = journal.trace(item.id)
        assert trace.deliveries == () and trace.trace["outcome"] == outcome


def test_the_generated_row_fills_the_columns_the_router_fills(generated, tmp_path):
    """A routed instance recorded through the journal's own calls, beside a generated one: the
    same columns hold a value."""
    generated, journal = generated
    real = SQLiteJournal(str(tmp_path / "real.sqlite"))
    arrival = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="10.0.0.1", peer_port=4000,
                      source_name="main", source_kind="listener", sop_class_uid="1.2", sop_instance_uid="1.2.3",
                      received_at=time.time(), store_command=(("CommandField", 1), ("MessageID", 7)),
                      patient_id="P1", patient_name="DOE^J", accession_number="A1", study_instance_uid="1.2.4",
                      series_instance_uid="1.2.4.1", modality="CT")
    number = real.record(arrival, "spool/x.dcm", None, "accepted", "v1")
    [delivery] = real.add_deliveries(number, [NewDelivery("PACS", "outgoing/x.dcm", "1.2", "1.2.3", "1.2.840.10008.1.2.1")],
                                     Outcome("v1", "route", None, ("r",), ("PACS",), trace_text("route", None, "v1")))
    real.delivered(real.claim("PACS", 1)[0], time.time())
    assert real.instance(number).state == PROCESSED

    def filled(db, table, key):
        row = db.execute(f"SELECT * FROM {table} WHERE {key}", ()).fetchone()
        return {name for name in row.keys() if row[name] is not None}
    ours = journal._connection()
    routed = ours.execute("SELECT id FROM instances WHERE outcome='route' LIMIT 1").fetchone()[0]
    theirs = real._connection()
    assert filled(ours, "instances", f"id={routed}") == filled(theirs, "instances", f"id={number}")
    assert (filled(ours, "deliveries", f"instance_id={routed} AND state='delivered'")
            == filled(theirs, "deliveries", f"id={delivery}"))
    real.close()
