"""/metrics beside a running router (`dicom-rules run` as a process; DCMTK's storescu sends, its
storescp receives, a second destination is down): scraped over HTTP and parsed with
prometheus-client's own parser, its counts are what was sent; the latency histogram is
cumulative with +Inf equal to its count; a refused reload is counted. With a token file, a
scrape without the right bearer token is refused. docs/operations.md lists exactly what it exposes."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from helpers.console import USERS, ConsoleUnderTest, ServerThread, router_folder, write_config
from helpers.files import ROOT, SAMPLES
from helpers.peers import RouterProcess, StoreSCP, free_port, storescu, wait_until
from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.console.app import create_app
from rulesengine.runtime.journal import DONE, Outcome

RULES = """\
rule "CT to the store and the archive" {
  when DataSet.Modality == "CT"
  then route to STORE, DOWN
}
"""


def scrape(port: int, headers: dict | None = None) -> dict:
    """{sample name: {frozenset of labels: value}} of what /metrics answers."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["content-type"].startswith("text/plain; version=")
        text = answer.read().decode()
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get(name, {}).get(frozenset(labels.items()))


@pytest.fixture
def site(tmp_path):
    config_path, listener_port, store_port = router_folder(tmp_path, RULES, down=True)
    console_port = free_port()
    peer = StoreSCP(tmp_path / "received", port=store_port).start()
    router = RouterProcess(config_path, listener_port).start()
    app = create_app(load_config(config_path, secrets=False), users=USERS)
    with ServerThread(app, console_port):
        yield tmp_path, router, peer, listener_port, console_port
    router.stop()
    peer.stop()


def test_the_metrics_count_what_the_router_did(site):
    folder, router, peer, listener_port, console_port = site
    sent = [SAMPLES / "ct_head.dcm", SAMPLES / "ct_chest.dcm"]
    assert storescu(listener_port, sent).returncode == 0
    assert storescu(listener_port, [SAMPLES / "mr_knee.dcm"]).returncode == 0  # no rule: quarantined

    def settled() -> dict | None:
        samples = scrape(console_port)
        done = (value(samples, "rulesengine_deliveries_delivered_total", destination="STORE") == 2
                and value(samples, "rulesengine_deliveries_dead_total", destination="DOWN") == 2
                and value(samples, "rulesengine_quarantined_instances") == 1)
        return samples if done else None
    samples = wait_until(settled, timeout=60, what="the deliveries settled")
    assert len(peer.files()) == 2
    assert value(samples, "rulesengine_instances_received_total", source="main") == 3
    assert value(samples, "rulesengine_instances_outcome_total", outcome="route") == 2
    assert value(samples, "rulesengine_instances_outcome_total", outcome="quarantine") == 1
    assert value(samples, "rulesengine_delivery_attempts_failed_total", destination="DOWN") == 2
    assert value(samples, "rulesengine_delivery_attempts_failed_total", destination="STORE") is None
    assert value(samples, "rulesengine_queue_deliveries", destination="DOWN", state="dead") == 2
    assert value(samples, "rulesengine_queue_deliveries", destination="DOWN", state="queued") == 0
    assert value(samples, "rulesengine_queue_deliveries", destination="STORE", state="queued") == 0  # none left

    # the histogram: cumulative buckets, +Inf equal to the count, the count the deliveries
    buckets = {dict(labels)["le"]: count for labels, count in samples["rulesengine_delivery_latency_seconds_bucket"].items()
               if dict(labels)["destination"] == "STORE"}
    ordered = sorted(buckets.items(), key=lambda item: float(item[0]))
    assert [count for _, count in ordered] == sorted(count for _, count in ordered)
    assert buckets["+Inf"] == value(samples, "rulesengine_delivery_latency_seconds_count", destination="STORE") == 2
    assert value(samples, "rulesengine_delivery_latency_seconds_sum", destination="STORE") > 0

    assert value(samples, "rulesengine_router_up", node=next(iter(dict(k)["node"] for k in samples["rulesengine_router_up"]))) == 1
    [(listener_labels, associations)] = samples["rulesengine_listener_associations_open"].items()
    assert dict(listener_labels)["listener"] == "main" and associations == 0
    assert value(samples, "rulesengine_journal_size_bytes") > 0
    assert list(samples["rulesengine_router_heartbeat_age_seconds"].values())[0] < 15

    # a reload that fails is counted, and the router says so
    (folder / "main.rules").write_text(RULES.replace("STORE, DOWN", "NOWHERE"), encoding="utf-8")
    reloaded = wait_until(lambda: (lambda s: s if value(s, "rulesengine_reloads_total", result="failed") == 1 else None)(
        scrape(console_port)), timeout=30, what="the failed reload was counted")
    assert list(reloaded["rulesengine_last_reload_success"].values()) == [0]
    assert value(reloaded, "rulesengine_reloads_total", result="ok") is None

    # a router that stops is down, and /metrics answers all the same
    router.stop()
    stopped = scrape(console_port)
    assert list(stopped["rulesengine_router_up"].values()) == [0]
    assert value(stopped, "rulesengine_deliveries_delivered_total", destination="STORE") == 2


@pytest.fixture
def guarded(tmp_path):
    (tmp_path / "metrics.token").write_text("s3cret-token-for-prometheus\nthe first line only\n", encoding="utf-8")
    config = load_config(write_config(tmp_path, extra="  metrics_token_file: metrics.token\n"), secrets=False)
    return TestClient(create_app(config, users=USERS), base_url="http://127.0.0.1"), tmp_path


def test_with_a_token_file_a_scrape_needs_the_bearer_token(guarded):
    client, folder = guarded
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "Bearer "},
                    {"authorization": "Basic s3cret-token-for-prometheus"},
                    {"authorization": "Bearer s3cret-token-for-prometheus-and-more"},
                    {"authorization": "Bearer s3cret-token-for-prometheus\nthe first line only"}):
        answer = client.get("/metrics", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer" and "rulesengine_" not in answer.text
    answer = client.get("/metrics", headers={"authorization": "Bearer s3cret-token-for-prometheus"})
    assert answer.status_code == 200 and "rulesengine_journal_size_bytes" in answer.text
    # a token changed in the file holds at once; an unreadable file opens nothing
    (folder / "metrics.token").write_text("another\n", encoding="utf-8")
    assert client.get("/metrics", headers={"authorization": "Bearer s3cret-token-for-prometheus"}).status_code == 401
    assert client.get("/metrics", headers={"authorization": "Bearer another"}).status_code == 200
    (folder / "metrics.token").write_text("\n", encoding="utf-8")  # an empty token matches nothing
    assert client.get("/metrics", headers={"authorization": "Bearer "}).status_code == 401
    (folder / "metrics.token").unlink()
    assert client.get("/metrics", headers={"authorization": "Bearer another"}).status_code == 503


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """The table of docs/operations.md's Metrics section: {name: (type, labels)}."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index("\n### Metrics\n"):]
    section = section[:section.index("\n#", 1)]
    table = {}
    for name, kind, labels in re.findall(r"^\| `(rulesengine_\w+)` \| (\w+) \| ([^|]*) \|", section, re.M):
        table[name] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return table


def test_the_documentation_lists_what_metrics_exposes(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    console.delivery("PACS", "delivered")
    console.delivery("PACS", "dead")
    console.journal.count_reload(True)
    console.journal.record(Arrival(source_name="main", source_kind="listener"), None,
                           Outcome("v1", "drop", None, (), ()), DONE)
    console.journal.write_status("node-a", {"state": "running", "heartbeat": console.clock.now, "ruleset_version": "v1",
                                            "last_reload": {"time": 1.0, "ok": True, "findings": []},
                                            "listeners": [{"name": "main", "port": 104, "associations": 0}]})
    exposed = {}
    for family in text_string_to_metric_families(console.client().get("/metrics").text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        assert family.samples, name  # each one has a sample here, so that its labels are compared
        exposed[name] = (family.type, labels)
    assert documented_metrics() == exposed


def test_the_latency_buckets_become_cumulative_whatever_the_destination_is_named():
    from rulesengine.console.metrics import latency_histograms
    counters = {("delivery_latency_seconds_bucket", "DICOM:PACS:0.1"): 2.0,
                ("delivery_latency_seconds_bucket", "DICOM:PACS:5"): 1.0,
                ("delivery_latency_seconds_bucket", "DICOM:PACS:+Inf"): 1.0,
                ("delivery_latency_seconds_sum", "DICOM:PACS"): 400.2,
                ("delivery_latency_seconds_count", "DICOM:PACS"): 4.0}
    [(destination, (buckets, total))] = latency_histograms(counters).items()
    assert destination == "DICOM:PACS" and total == 400.2
    assert dict(buckets) == {"0.05": 0, "0.1": 2, "0.25": 2, "0.5": 2, "1": 2, "2.5": 2, "5": 3, "10": 3, "30": 3,
                             "60": 3, "300": 3, "+Inf": 4}
