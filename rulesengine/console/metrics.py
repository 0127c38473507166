"""/metrics: the router's figures in Prometheus's text format, read from the journal and the
storage folder at each scrape (a custom collector: nothing is kept in this process, so the
figures are the router's whatever restarts, and those of every router process at once).

Open without a session (Prometheus has none); with `console: metrics_token_file`, a scrape must
send `Authorization: Bearer TOKEN` (the file's first line), else 401. docs/operations.md lists
each metric; tests/console/test_console_metrics.py checks that the list and this agree.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..runtime.journal import DEAD, QUEUED, RETRYING, SENDING
from ..runtime.journal.sql import LATENCY_BUCKETS
from ..runtime.router_status import heartbeat_of, is_running

PREFIX = "rulesengine_"
QUEUE_STATES = (QUEUED, SENDING, RETRYING, DEAD)


def latency_histograms(counters: dict[tuple[str, str], float]) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """The journal's latency counters as Prometheus histograms, per destination: the journal
    counts each bucket on its own (label DESTINATION:BOUND); Prometheus's buckets are cumulative
    (`le`), the last, +Inf, equal to the count. Returns {destination: ([(le, count)], sum)}."""
    per_bound: dict[str, dict[str, float]] = {}
    for (name, label), value in counters.items():
        if name == "delivery_latency_seconds_bucket":
            destination, _, bound = label.rpartition(":")
            per_bound.setdefault(destination, {})[bound] = value
    destinations = set(per_bound) | {label for name, label in counters if name == "delivery_latency_seconds_count"}
    out = {}
    for destination in sorted(destinations):
        counts = per_bound.get(destination, {})
        running, buckets = 0.0, []
        for bound in [f"{limit:g}" for limit in LATENCY_BUCKETS]:
            running += counts.get(bound, 0.0)
            buckets.append((bound, running))
        total = counters.get(("delivery_latency_seconds_count", destination), running + counts.get("+Inf", 0.0))
        buckets.append(("+Inf", total))
        out[destination] = (buckets, counters.get(("delivery_latency_seconds_sum", destination), 0.0))
    return out


class JournalCollector:
    """Reads the figures at each scrape: the counters, the unfinished deliveries, the routers'
    statuses (each a short read from an index or a small table), the quarantine's file names
    and the journal's file sizes."""

    def __init__(self, journal, storage, clock):
        self.journal, self.storage, self.clock = journal, storage, clock

    def collect(self):
        counters = {(name, label): value for name, label, value in self.journal.counters()}
        unfinished = self.journal.counts()  # kept by the journal as deliveries change: a small table
        statuses = self.journal.statuses()
        now = self.clock()

        def counter(name: str, documentation: str, label: str, source: str):
            family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
            for (counted, value_label), value in sorted(counters.items()):
                if counted == source:
                    family.add_metric([value_label], value)
            return family

        yield counter("instances_received", "Instances received and journaled, by source.", "source",
                      "instances_received")
        yield counter("instances_outcome", "Instances decided, by outcome (route, drop, quarantine, reject).",
                      "outcome", "instances_outcome")
        yield counter("deliveries_delivered", "Deliveries delivered, by destination.", "destination",
                      "deliveries_delivered")
        yield counter("delivery_attempts_failed", "Failed delivery attempts, by destination.", "destination",
                      "delivery_attempts_failed")
        yield counter("deliveries_dead", "Deliveries given up (dead), by destination.", "destination",
                      "deliveries_dead")
        yield counter("reloads", "Reloads of the rules or the configuration, by result (ok, failed).", "result",
                      "reloads")

        latency = HistogramMetricFamily(PREFIX + "delivery_latency_seconds",
                                        "Seconds from an instance's arrival to its delivery, by destination.",
                                        labels=["destination"])
        for destination, (buckets, total) in latency_histograms(counters).items():
            latency.add_metric([destination], buckets, total)
        yield latency

        depth = GaugeMetricFamily(PREFIX + "queue_deliveries", "Deliveries not delivered, by destination and "
                                  "state (queued, sending, retrying, dead).", labels=["destination", "state"])
        for destination, states in sorted(unfinished.items()):
            for state in QUEUE_STATES:
                depth.add_metric([destination, str(state)], states.get(state, 0))
        yield depth

        up = GaugeMetricFamily(PREFIX + "router_up", "1 while the router's heartbeat is fresh and it runs, "
                               "else 0.", labels=["node"])
        age = GaugeMetricFamily(PREFIX + "router_heartbeat_age_seconds", "Seconds since the router's last "
                                "heartbeat.", labels=["node"])
        associations = GaugeMetricFamily(PREFIX + "listener_associations_open", "Associations open on each "
                                         "listener, as the router last said.", labels=["node", "listener"])
        last_reload = GaugeMetricFamily(PREFIX + "last_reload_success", "1 if the router's last reload put "
                                        "its changes in place, 0 if it was refused.", labels=["node"])
        ruleset = GaugeMetricFamily(PREFIX + "ruleset_info", "The rule set version the router uses (always 1).",
                                    labels=["node", "version"])
        for row in statuses:
            node, status = row.node, row.status
            heartbeat = heartbeat_of(row)
            fresh = is_running(row, now)
            up.add_metric([node], 1 if fresh else 0)
            age.add_metric([node], max(0.0, now - heartbeat))
            if fresh:  # a router gone has no associations open, whatever it said last
                for listener in status.get("listeners") or ():
                    associations.add_metric([node, str(listener.get("name"))], listener.get("associations", 0))
            if status.get("last_reload"):
                last_reload.add_metric([node], 1 if status["last_reload"].get("ok") else 0)
            if status.get("ruleset_version"):
                ruleset.add_metric([node, str(status["ruleset_version"])], 1)
        yield from (up, age, associations, last_reload, ruleset)

        yield GaugeMetricFamily(PREFIX + "quarantined_instances", "Instances the quarantine holds.",
                                value=self.storage.quarantined_count())
        yield GaugeMetricFamily(PREFIX + "journal_size_bytes", "Bytes the journal takes: its files (SQLite's "
                                "database and write-ahead log), or its PostgreSQL database.",
                                value=self.journal.size_bytes())


def _token(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().strip()


def metrics_routes(console) -> list[Route]:
    """GET /metrics, beside the login routes: outside the session's guard."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(console.journal, console.storage, console.clock))
    token_file = console.config.console.metrics_token_file if console.config.console else None

    async def metrics(request: Request) -> Response:
        if token_file:
            try:
                # Read at each scrape: a token changed in the file holds at once.
                expected = await run_in_threadpool(_token, token_file)
            except OSError:
                return PlainTextResponse("the metrics token file cannot be read\n", status_code=503)
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if not expected or scheme.lower() != "bearer" or \
                    not hmac.compare_digest(value.strip().encode(), expected.encode()):
                return PlainTextResponse("a bearer token is needed (Authorization: Bearer TOKEN)\n", status_code=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics, methods=["GET"])]
