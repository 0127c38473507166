"""The Overview page: traffic in and out, the queues, the quarantine, the rules in use and the
last reload, the listeners, whether the router runs, and a chart of the last hours. Its numbers
are read from the journal in short indexed reads (never the whole journal) and refreshed in the
browser from the /api twin by static/live.js."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ...runtime.journal import DEAD, QUEUED, RETRYING, SENDING
from ...runtime.router_status import heartbeat_of, is_running
from ..rules_in_use import DISK, rule_link

# A heartbeat older than this (a few of the router's intervals) means no router writes it.
CHART_BUCKET_SECONDS = 600  # 10 minutes a bar
CHART_BUCKETS = 18  # 3 hours
# The chart's drawing box (SVG user units) and the height of the tallest bar.
CHART_WIDTH, CHART_HEIGHT, CHART_TOP = 720, 160, 20


def router_view(statuses, now: float) -> dict:
    """The router as its latest status row tells it: running, or "not running" when it said it
    stopped or its heartbeat is older than STALE_SECONDS (killed, crashed, restarting)."""
    if not statuses:
        return {"running": False, "state": "not running", "node": None, "heartbeat": None, "heartbeat_age": None,
                "pid": None, "started_at": None, "ruleset_version": None, "last_reload": None, "listeners": []}
    node, _updated_at, status = statuses[0]
    heartbeat = heartbeat_of(statuses[0])
    age = max(0.0, now - heartbeat)
    running = is_running(statuses[0], now)
    return {"running": running, "state": "running" if running else "not running", "node": node,
            "heartbeat": heartbeat, "heartbeat_age": round(age, 1), "pid": status.get("pid"),
            "started_at": status.get("started_at"), "ruleset_version": status.get("ruleset_version"),
            "last_reload": status.get("last_reload"),
            "listeners": [{"name": str(listener.get("name")), "port": listener.get("port"),
                           "associations": listener.get("associations", 0)}
                          for listener in status.get("listeners") or ()]}


def routers_view(statuses, now: float) -> dict:
    """Every router (node) that wrote its status to this journal, and whether the running ones
    use different rule set versions (a node whose reload was refused, or not yet made)."""
    nodes = [{"node": row.node, "running": is_running(row, now), "ruleset_version": row.status.get("ruleset_version"),
              "heartbeat_age": round(max(0.0, now - heartbeat_of(row)), 1)} for row in statuses]
    versions = {node["ruleset_version"] for node in nodes if node["running"]}
    return {"nodes": nodes, "versions_differ": len(versions) > 1}


def destinations_view(config, counts: dict) -> list[dict]:
    """Per destination (configured, or still in the journal): its queue depth (queued, sending,
    retrying) and its dead deliveries."""
    names = sorted(set(counts) | {n for n, d in config.destinations.items() if d.type != "worklist"})
    out = []
    for name in names:
        by_state = counts.get(name, {})
        out.append({"name": name, "configured": name in config.destinations,
                    "queued": by_state.get(QUEUED, 0), "sending": by_state.get(SENDING, 0),
                    "retrying": by_state.get(RETRYING, 0), "dead": by_state.get(DEAD, 0),
                    "depth": by_state.get(QUEUED, 0) + by_state.get(SENDING, 0) + by_state.get(RETRYING, 0)})
    return out


def chart_view(buckets: list[tuple[float, int, int]]) -> dict:
    """The bars of the chart, placed in SVG user units: per bucket, in (received) and out
    (delivered) side by side, scaled to the tallest."""
    tallest = max([1] + [max(received, delivered) for _start, received, delivered in buckets])
    slot = CHART_WIDTH / max(1, len(buckets))
    bar = slot * 0.4
    bars = []
    for index, (start, received, delivered) in enumerate(buckets):
        x = index * slot + slot * 0.1
        for kind, count, offset in (("in", received, 0.0), ("out", delivered, bar)):
            height = CHART_HEIGHT * count / tallest
            bars.append({"kind": kind, "count": count, "start": start, "x": round(x + offset, 1),
                         "y": round(CHART_TOP + CHART_HEIGHT - height, 1), "width": round(bar, 1),
                         "height": round(height, 1)})
    return {"bucket_seconds": CHART_BUCKET_SECONDS, "tallest": tallest, "bars": bars,
            "width": CHART_WIDTH, "height": CHART_TOP + CHART_HEIGHT + 20, "baseline": CHART_TOP + CHART_HEIGHT,
            "buckets": [{"start": start, "received": received, "delivered": delivered}
                        for start, received, delivered in buckets]}


def overview(config, journal, storage, now: float) -> dict:
    """What the page shows, as its API answers it."""
    [(_start, received, delivered)] = journal.activity(now - 60, 60, 1)
    # Bars aligned on whole spans, so that they stay put from one refresh to the next; the last
    # is the span under way.
    first = (now // CHART_BUCKET_SECONDS - (CHART_BUCKETS - 1)) * CHART_BUCKET_SECONDS
    buckets = journal.activity(first, CHART_BUCKET_SECONDS, CHART_BUCKETS)
    statuses = journal.statuses()
    router = router_view(statuses, now)
    reload = router["last_reload"]
    if isinstance(reload, dict) and not reload.get("ok") and reload.get("findings"):
        # A refused reload's findings are in the files on disk, which the Rules page shows apart
        # from the version in use.
        router["last_reload"] = {**reload, "findings": [
            {**finding, "link": rule_link(finding.get("file"), finding.get("line"), config, DISK)}
            for finding in reload["findings"] if isinstance(finding, dict)]}
    return {
        "now": now,
        "received_per_minute": received,
        "delivered_per_minute": delivered,
        "destinations": destinations_view(config, journal.counts()),
        "quarantined": storage.quarantined_count(),
        "router": router,
        "routers": routers_view(statuses, now),
        "chart": chart_view(buckets),
    }


def register(console) -> None:
    config, storage, journal = console.config, console.storage, console.journal

    @console.both("/overview", "GET", "viewer")
    async def show_overview(request, user, params, api):
        """Instances received and delivered in the last minute; per destination, the queue depth
        and the dead deliveries; the quarantine's count; the router (running or not, its
        heartbeat, the rule set version in use, the last reload and its findings, the listeners
        and their open associations); received and delivered per 10 minutes over the last 3 hours."""
        data = await run_in_threadpool(overview, config, journal, storage, console.clock())
        if api:
            return JSONResponse(data)
        return console.page(request, "overview.html", user, **data)
