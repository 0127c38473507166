"""The operations console on a large journal: searches, traces, its HTTP answers, and the
router's throughput while it is open.

`python -m benchmarks.console [--instances N]` (or `--only console`): a journal of a
million instances (by default) is generated, then measured. What each figure means:
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rulesengine.runtime.journal import SQLiteJournal

INSTANCES = 1_000_000
INSTANCES_ENV = "CONSOLE_BENCH_INSTANCES"  # or --instances: a small journal for a quick check
DAYS = 30
QUERIES = 200  # random queries of each kind
PAGE = 50  # the console's page of messages
CHUNK = 50_000  # instances a transaction while generating
SEED = 10

TARGET_SEARCH_MS = 200.0  # p95
TARGET_TRACE_MS = 100.0  # p95
TARGET_THROUGHPUT_SHARE = 0.95  # with the console open, of the rate without

DESTINATIONS = ("PACS", "ARCHIVE")
RULESET_VERSION = "3f9c2a7be041"
RULES_FILE = "site.rules"
TRANSFER_SYNTAX = "1.2.840.10008.1.2.1"
# (calling AE title, source name, modality, SOP class, instances a series: low, high)
SENDERS = (
    ("CT_EAST_1", "main", "CT", "1.2.840.10008.5.1.4.1.1.2", 40, 160),
    ("CT_WEST_2", "main", "CT", "1.2.840.10008.5.1.4.1.1.2", 40, 160),
    ("MR_WEST_2", "main", "MR", "1.2.840.10008.5.1.4.1.1.4", 20, 100),
    ("CR_ER_1", "emergency", "CR", "1.2.840.10008.5.1.4.1.1.1", 1, 2),
    ("US_CARDIO", "emergency", "US", "1.2.840.10008.5.1.4.1.1.6.1", 1, 12),
    ("PACS_OLD", "migration", "MR", "1.2.840.10008.5.1.4.1.1.4", 10, 60),
)
PEERS = {sender[0]: f"10.20.1.{10 + number}" for number, sender in enumerate(SENDERS)}
LAST_NAMES = ("SMITH", "NGUYEN", "MUELLER", "GARCIA", "ROSSI", "DUBOIS", "KOWALSKI", "TANAKA", "OKAFOR", "LARSEN")
FIRST_NAMES = ("ANNA", "JOHN", "MARIA", "PETER", "LEA", "OMAR", "SOFIA", "IVAN", "MEI", "TOM")


# ---- the journal -------------------------------------------------------------------------------


@dataclass
class GeneratedJournal:
    path: Path
    instances: int
    deliveries: int
    attempts: int
    seconds: float
    first_received: float
    last_received: float
    patients: list[str] = field(repr=False)
    studies: list[str] = field(repr=False)

    @property
    def megabytes(self) -> float:
        return sum(os.path.getsize(p) for p in (str(self.path), f"{self.path}-wal") if os.path.exists(p)) / 1e6


def _rule_trace(outcome: str, reason: str | None, rules: list[tuple[str, int]], edits: list[dict]) -> str:
    """The trace column as the pipeline writes it (records.trace_text's layout)."""
    return json.dumps({"outcome": outcome, "reason": reason, "ruleset_version": RULESET_VERSION,
                       "rules_fired": [{"name": name, "file": RULES_FILE, "line": line} for name, line in rules],
                       "edits": edits, "truncated": 0}, separators=(",", ":"))


def _studies(count: int, rng: random.Random, start: float):
    """Studies until `count` instances: (arrival, patient, study, series list), a patient with
    one to four studies, a study with one to four series from one sender."""
    made, patient_number = 0, 0
    while made < count:
        patient_number += 1
        patient = (f"P{patient_number:07d}", f"{rng.choice(LAST_NAMES)}^{rng.choice(FIRST_NAMES)}")
        for _ in range(rng.randint(1, 4)):
            sender = rng.choice(SENDERS)
            day = rng.randrange(DAYS)
            hour = rng.choice((7, 8, 9, 10, 10, 11, 11, 13, 14, 14, 15, 16, 17, 19, 22, 2))  # busy days, quiet nights
            arrival = start + day * 86400 + hour * 3600 + rng.random() * 3600
            study_number = rng.getrandbits(60)
            series = []
            for series_index in range(rng.randint(1, 4)):
                size = min(rng.randint(sender[4], sender[5]), count - made)
                if size <= 0:
                    break
                series.append((series_index + 1, size))
                made += size
            if series:
                yield arrival, patient, sender, study_number, series
            if made >= count:
                return


def _instance_skeletons(count: int, rng: random.Random, start: float):
    """(received_at, study key, series number, instance number) for every instance, in arrival order."""
    skeletons, studies = [], {}
    for arrival, patient, sender, study_number, series in _studies(count, rng, start):
        studies[study_number] = (patient, sender)
        at = arrival
        for series_number, size in series:
            for number in range(1, size + 1):
                at += 0.05 + rng.random() * 0.3
                skeletons.append((at, study_number, series_number, number))
    skeletons.sort()
    return skeletons, studies


def generate_journal(path: Path, count: int, seed: int = SEED, end: float | None = None) -> GeneratedJournal:
    """A journal of `count` instances received over the DAYS before `end`, written as the router
    would have: the journal's own schema (SQLiteJournal creates it), rows inserted in bulk.
    Mostly routed to both DESTINATIONS (delivered, a few after a failed attempt, a few dead),
    some quarantined, some dropped."""
    started = time.perf_counter()
    SQLiteJournal(str(path)).close()  # the schema, its migrations and its indexes
    end = time.time() if end is None else end
    first_day = end - DAYS * 86400
    rng = random.Random(seed)
    skeletons, studies = _instance_skeletons(count, rng, first_day)
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")  # a benchmark's journal: rebuilt, not recovered
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes of random UIDs stay in memory
    instance_columns = ("id", "received_at", "source_kind", "source_name", "calling_aet", "called_aet", "peer",
                        "sop_class_uid", "sop_instance_uid", "store_command", "path", "state", "ruleset_version",
                        "outcome", "reason", "rules_fired", "destinations", "processed_at", "patient_id",
                        "patient_name", "accession_number", "study_instance_uid", "series_instance_uid", "modality",
                        "trace")
    insert_instance = (f"INSERT INTO instances ({', '.join(instance_columns)}) "
                       f"VALUES ({', '.join('?' * len(instance_columns))})")
    insert_delivery = ("INSERT INTO deliveries (id, instance_id, destination, path, sop_class_uid, sop_instance_uid, "
                       "transfer_syntax, state, attempts, next_attempt_at, last_error, created_at, updated_at, "
                       "delivered_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    insert_attempt = ("INSERT INTO attempts (id, delivery_id, started_at, finished_at, ok, detail) "
                      "VALUES (?,?,?,?,?,?)")
    route_trace = _rule_trace("route", None, [("stamp the institution", 4), ("CT and MR to the PACS", 12),
                                              ("everything to the archive", 27)],
                              [{"path": "DataSet.InstitutionName", "old": "GENERAL HOSP", "new": "General Hospital",
                                "rule": "stamp the institution", "file": RULES_FILE, "line": 6,
                                "destination": None}])
    quarantine_trace = _rule_trace("quarantine", "no station name", [("stamp the institution", 4),
                                                                     ("quarantine missing station", 33)], [])
    drop_trace = _rule_trace("drop", None, [("drop test patients", 40)], [])
    routed_fired = json.dumps(["stamp the institution", "CT and MR to the PACS", "everything to the archive"])
    counts = {"delivery": 0, "attempt": 0}
    counters: dict[tuple[str, str], float] = {}

    def bump(name: str, label: str) -> None:
        counters[name, label] = counters.get((name, label), 0) + 1

    def rows(chunk):
        instances, deliveries, attempts = [], [], []
        for number, (at, study_number, series_number, instance_number) in chunk:
            (patient_id, patient_name), (calling, source, modality, sop_class, _, _) = studies[study_number]
            study_uid = f"1.2.826.0.1.3680043.10.{study_number}"
            series_uid = f"{study_uid}.{series_number}"
            sop_uid = f"{series_uid}.{instance_number}"
            draw = rng.random()
            processed = at + 0.02 + rng.random() * 0.05
            if draw < 0.04:
                outcome, state, reason, trace = "quarantine", "done", "no station name", quarantine_trace
                path = f"quarantine/{time.strftime('%Y%m%d', time.gmtime(at))}/{sop_uid}.dcm"
                fired, destinations = json.dumps(["stamp the institution", "quarantine missing station"]), "[]"
            elif draw < 0.06:
                outcome, state, reason, trace, path = "drop", "done", None, drop_trace, None
                fired, destinations = json.dumps(["drop test patients"]), "[]"
            else:
                outcome, state, reason, trace = "route", "processed", None, route_trace
                path = f"spool/{number:x}.dcm"
                fired, destinations = routed_fired, json.dumps(list(DESTINATIONS))
            command = json.dumps({"CommandField": 1, "MessageID": instance_number, "Priority": 0,
                                  "AffectedSOPClassUID": sop_class, "AffectedSOPInstanceUID": sop_uid,
                                  "MoveOriginatorApplicationEntityTitle": None, "MoveOriginatorMessageID": None},
                                 separators=(",", ":"))
            instances.append((number, at, "listener", source, calling, "ROUTER",
                              f"{PEERS[calling]}:{40000 + study_number % 20000}",
                              sop_class, sop_uid, command, path, state, RULESET_VERSION, outcome, reason, fired,
                              destinations, processed, patient_id, patient_name, f"A{study_number % 10 ** 9:09d}",
                              study_uid, series_uid, modality, trace))
            bump("instances_received", source)
            bump("instances_outcome", outcome)
            if outcome != "route":
                continue
            for destination in DESTINATIONS:
                counts["delivery"] += 1
                delivery_id = counts["delivery"]
                created = processed
                fate = rng.random()
                tries = []
                if fate < 0.01:  # delivered after one failed attempt
                    tries = [(0, "destination unreachable: connection refused"), (1, None)]
                elif fate < 0.0015 + 0.01:  # dead after its attempts
                    tries = [(0, "association rejected: called AE title not recognised")] * 3
                else:
                    tries = [(1, None)]
                clock = created
                for ok, detail in tries:
                    counts["attempt"] += 1
                    attempts.append((counts["attempt"], delivery_id, clock + 0.01, clock + 0.2, ok, detail))
                    clock += 0.2 if ok else 30.0
                delivered = tries[-1][0] == 1
                deliveries.append((delivery_id, number, destination, f"outgoing/{number}-{destination}.dcm",
                                   sop_class, sop_uid, TRANSFER_SYNTAX, "delivered" if delivered else "dead",
                                   len(tries), clock, None if delivered else tries[-1][1], created, clock,
                                   clock if delivered else None))
                bump("deliveries_delivered" if delivered else "deliveries_dead", destination)
        return instances, deliveries, attempts

    numbered = list(enumerate(skeletons, start=1))
    for offset in range(0, len(numbered), CHUNK):
        instances, deliveries, attempts = rows(numbered[offset:offset + CHUNK])
        db.execute("BEGIN")
        db.executemany(insert_instance, instances)
        db.executemany(insert_delivery, deliveries)
        db.executemany(insert_attempt, attempts)
        db.execute("COMMIT")
    db.executemany("INSERT INTO counters (name, label, value) VALUES (?,?,?) ON CONFLICT (name, label) "
                   "DO UPDATE SET value = value + excluded.value",
                   [(name, label, value) for (name, label), value in counters.items()])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    patients = sorted({patient for patient, _ in studies.values()})
    return GeneratedJournal(path, len(skeletons), counts["delivery"], counts["attempt"],
                            time.perf_counter() - started, skeletons[0][0], skeletons[-1][0],
                            [patient_id for patient_id, _ in patients],
                            [f"1.2.826.0.1.3680043.10.{number}" for number in studies])


# ---- searches and traces, through the journal ---------------------------------------------------------


@dataclass
class Timing:
    name: str
    milliseconds: list[float]
    rows: int | None = None  # rows answered, all queries together (None: not counted)
    note: str = ""

    def quantile(self, share: float) -> float:
        ordered = sorted(self.milliseconds)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.milliseconds)

    @property
    def p95(self) -> float:
        return self.quantile(0.95)

    @property
    def worst(self) -> float:
        return max(self.milliseconds)


def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1000, result


def search_kinds(generated: GeneratedJournal, rng: random.Random):
    """(name, a function giving the filters of one random query) for each kind of search."""
    span = generated.last_received - generated.first_received

    def window(seconds: float):
        return lambda: (lambda start: {"received_from": start, "received_to": start + seconds})(
            generated.first_received + rng.random() * max(0.0, span - seconds))
    return (("patient_id", lambda: {"patient_id": rng.choice(generated.patients)}),
            ("study_instance_uid", lambda: {"study_instance_uid": rng.choice(generated.studies)}),
            ("one hour", window(3600)),
            ("one day", window(86400)))


def measure_searches(journal, generated: GeneratedJournal, queries: int, seed: int = SEED) -> list[Timing]:
    """Each kind of search, `queries` random ones: the first page, and (from those with a full
    first page) the next page, by `before_id`."""
    rng = random.Random(seed)
    timings = []
    for name, filters_of in search_kinds(generated, rng):
        first, paged = Timing(f"search by {name}", [], 0), Timing(f"search by {name}, next page", [], 0)
        for _ in range(queries):
            filters = filters_of()
            milliseconds, page = _timed(lambda: journal.search_instances(limit=PAGE, **filters))
            first.milliseconds.append(milliseconds)
            first.rows += len(page)
            if len(page) == PAGE:
                milliseconds, after = _timed(lambda: journal.search_instances(limit=PAGE, before_id=page[-1].id,
                                                                               **filters))
                paged.milliseconds.append(milliseconds)
                paged.rows += len(after)
        timings.append(first)
        if paged.milliseconds:
            timings.append(paged)
    return timings


def measure_traces(journal, generated: GeneratedJournal, queries: int, seed: int = SEED) -> Timing:
    rng = random.Random(seed)
    timing = Timing("trace(id)", [], 0)
    for _ in range(queries):
        milliseconds, trace = _timed(lambda: journal.trace(rng.randint(1, generated.instances)))
        timing.milliseconds.append(milliseconds)
        timing.rows += len(trace.deliveries)
    return timing


# ---- the console over HTTP -----------------------------------------------------------------------------

PASSWORD = "a benchmark's long password"
USER = "bench"


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


# The console's routes measured over HTTP: (name, path, parameters of one random request, from
# (generated journal, rng)). A route answering 404 (not in this version) is left out with a note.
HTTP_ROUTES = (
    ("GET /api/queues", "/api/queues", lambda g, rng: {}),
    ("GET /queues", "/queues", lambda g, rng: {}),
    ("GET /api/overview", "/api/overview", lambda g, rng: {}),
    ("GET /api/messages?patient_id", "/api/messages", lambda g, rng: {"patient_id": rng.choice(g.patients)}),
    ("GET /api/messages?study_instance_uid", "/api/messages",
     lambda g, rng: {"study_instance_uid": rng.choice(g.studies)}),
    ("GET /api/messages?received_from&to (1 h)", "/api/messages",
     lambda g, rng: (lambda start: {"received_from": _iso(start), "received_to": _iso(start + 3600)})(
         g.first_received + rng.random() * (g.last_received - g.first_received - 3600))),
    ("GET /api/messages?received_from&to (1 day)", "/api/messages",
     lambda g, rng: (lambda start: {"received_from": _iso(start), "received_to": _iso(start + 86400)})(
         g.first_received + rng.random() * (g.last_received - g.first_received - 86400))),
    ("GET /api/messages/{id}", "/api/messages/{id}", lambda g, rng: {"id": rng.randint(1, g.instances)}),
)
# What a browser tab left open on the console fetches again every second.
REFRESHED_PAGES = ("/api/queues", "/queues", "/api/overview", "/overview", "/api/messages", "/messages")


def console_config(folder: Path, port: int, extra: str = "") -> Path:
    """A configuration whose storage is `folder`/storage, with a console and a user of each role."""
    from rulesengine.console.auth import hash_password
    (folder / "bench.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    path = folder / "console.yaml"
    path.write_text(
        "storage: storage\nrules: bench.rules\nlog: {level: warning}\nprocesses: 1\n"
        "destinations:\n  PACS: {type: folder, path: out/pacs}\n  ARCHIVE: {type: folder, path: out/archive}\n"
        f"console:\n  bind: 127.0.0.1\n  port: {port}\n"
        f"  users:\n    - {{name: {USER}, role: viewer, password_hash: '{hash_password(PASSWORD)}'}}\n" + extra,
        encoding="utf-8")
    return path


@contextlib.contextmanager
def console_process(config: Path, port: int, log: Path):
    """`dicom-rules console` on `config`, stopped by its PID."""
    from .router import ROOT, stop, wait_for_port
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "rulesengine", "console", str(config)],
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=config.parent)
    try:
        wait_for_port(port, process)
        yield process
    finally:
        stop(process)


def logged_in(port: int):
    """An httpx client with a session of the console's viewer."""
    import httpx
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, follow_redirects=False)
    token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
    answer = client.post("/login", json={"name": USER, "password": PASSWORD}, headers={"x-csrf-token": token})
    answer.raise_for_status()
    return client


def _request(client, path: str, parameters: dict):
    if "{id}" in path:
        parameters = dict(parameters)
        path = path.replace("{id}", str(parameters.pop("id")))
    return client.get(path, params=parameters, headers={"accept": "application/json"})


def measure_http(port: int, generated: GeneratedJournal, queries: int, seed: int = SEED) -> list[Timing]:
    rng = random.Random(seed)
    timings = []
    with contextlib.closing(logged_in(port)) as client:
        for name, path, parameters_of in HTTP_ROUTES:
            first = _request(client, path, parameters_of(generated, rng))
            if first.status_code != 200:
                why = "not in this version" if first.status_code == 404 else first.text[:120].replace("\n", " ")
                timings.append(Timing(name, [], note=f"left out: answered {first.status_code} ({why})"))
                continue
            timing = Timing(name, [])
            for _ in range(queries):
                parameters = parameters_of(generated, rng)
                milliseconds, answer = _timed(lambda: _request(client, path, parameters))
                if answer.status_code != 200:
                    raise RuntimeError(f"{name} {parameters}: {answer.status_code} {answer.text[:300]}")
                timing.milliseconds.append(milliseconds)
            timings.append(timing)
    return timings


class RefreshingTabs:
    """`tabs` clients, each logged in, fetching the console's pages every second as an open
    browser tab that refreshes itself would, in threads of this process."""

    def __init__(self, port: int, tabs: int):
        self.port, self.tabs = port, tabs
        self.stopping = threading.Event()
        self.requests = 0
        self.errors: list[str] = []
        self.pages: list[str] = []
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> "RefreshingTabs":
        with contextlib.closing(logged_in(self.port)) as client:
            self.pages = [page for page in REFRESHED_PAGES if _request(client, page, {}).status_code != 404]
        for _ in range(self.tabs):
            thread = threading.Thread(target=self._tab, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _tab(self) -> None:
        with contextlib.closing(logged_in(self.port)) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                for page in self.pages:
                    answer = _request(client, page, {})
                    self.requests += 1
                    if answer.status_code != 200:
                        self.errors.append(f"{page}: {answer.status_code}")
                self.stopping.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)


# ---- the router with and without the console ---------------------------------------------------------


@dataclass
class Throughput:
    plain: list[float]
    with_console: list[float]
    pages: list[str]
    requests: int
    errors: list[str]

    @property
    def ratio(self) -> float:
        return statistics.median(self.with_console) / statistics.median(self.plain)


def measure_throughput(work: Path, storage: Path, runs: int, tabs: int) -> Throughput:
    """The router benchmark's small set (storescu -> router async -> storescp), on the generated
    journal, `runs` times plain and `runs` times with the console open and `tabs` refreshing
    tabs, alternating."""
    from . import router
    from .router import Bench, free_port, make_set
    inputs = work / "small"
    paths = make_set(inputs, router.SMALL_COUNT, router.SMALL_SIDE * router.SMALL_SIDE * 2)
    size = sum(p.stat().st_size for p in paths)
    bench = Bench(work)
    port = free_port()
    config = console_config(work, port)
    plain, console, pages, requests, errors = [], [], [], 0, []
    try:
        for _ in range(runs):
            plain.append(router.measure_router(bench, inputs, len(paths), size, "async", storage=storage).per_second)
            with console_process(config, port, work / "console.log"), RefreshingTabs(port, tabs) as open_tabs:
                console.append(router.measure_router(bench, inputs, len(paths), size, "async",
                                                     storage=storage).per_second)
            pages, requests, errors = open_tabs.pages, requests + open_tabs.requests, errors + open_tabs.errors
    finally:
        bench.stop_all()
    return Throughput(plain, console, pages, requests, errors)


# ---- the report -------------------------------------------------------------------------------------------


def _print_timings(title: str, timings: list[Timing], target: float | None) -> list[bool]:
    print(title)
    print(f"  {'query':<44} {'n':>4} {'rows':>7} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    verdicts = []
    for timing in timings:
        if not timing.milliseconds:
            print(f"  {timing.name:<44} {timing.note}")
            continue
        rows = "-" if timing.rows is None else timing.rows
        print(f"  {timing.name:<44} {len(timing.milliseconds):>4} {rows:>7} {timing.p50:>8.1f} "
              f"{timing.p95:>8.1f} {timing.worst:>8.1f}")
        if target is not None:
            verdicts.append(timing.p95 < target)
    return verdicts


def run(count: int | None = None, queries: int = QUERIES, runs: int = 3, tabs: int = 3,
        throughput: bool = True) -> int:
    from .router import DCMTK_PATH, free_port
    count = count or int(os.environ.get(INSTANCES_ENV, INSTANCES))
    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    storage = work / "storage"
    storage.mkdir()
    try:
        generated = generate_journal(storage / "journal.sqlite", count)
        print()
        print(f"Console on a generated journal: {generated.instances:,} instances over {DAYS} days, "
              f"{len(generated.patients):,} patients, {len(generated.studies):,} studies, "
              f"{generated.deliveries:,} deliveries, {generated.attempts:,} attempts; "
              f"generated in {generated.seconds:.0f} s, {generated.megabytes:.0f} MB")
        journal = SQLiteJournal(str(storage / "journal.sqlite"))
        searches = measure_searches(journal, generated, queries)
        trace = measure_traces(journal, generated, queries)
        journal.close()
        verdicts = _print_timings(f"  journal.search_instances, {PAGE} a page, {queries} random queries each:",
                                  searches, TARGET_SEARCH_MS)
        trace_ok = _print_timings("  journal.trace:", [trace], TARGET_TRACE_MS)
        port = free_port()
        config = console_config(work, port)
        with console_process(config, port, work / "console.log"):
            http = measure_http(port, generated, queries)
        _print_timings("  the console over HTTP (dicom-rules console, one logged-in client):", http, None)
        result = None
        if throughput and all(shutil.which(p, path=DCMTK_PATH) for p in ("storescu", "storescp")):
            result = measure_throughput(work, storage, runs, tabs)
            print(f"  router async, 200 instances by storescu, on this journal (median of {runs}, alternating): "
                  f"{statistics.median(result.plain):.1f} inst/s without the console, "
                  f"{statistics.median(result.with_console):.1f} with it and {tabs} tabs refreshing "
                  f"{', '.join(result.pages)} every second ({result.requests} requests"
                  f"{', ' + str(len(result.errors)) + ' errors' if result.errors else ''}): {result.ratio:.0%}")
            print(f"    runs without: {', '.join(f'{r:.1f}' for r in result.plain)}; "
                  f"with: {', '.join(f'{r:.1f}' for r in result.with_console)}")
        elif throughput:
            print("  router throughput left out: DCMTK's storescu and storescp are missing")
        print("Targets:")
        print(f"  {'PASS' if all(verdicts) else 'MISS'}  search p95 < {TARGET_SEARCH_MS:.0f} ms: worst p95 "
              f"{max(t.p95 for t in searches):.1f} ms")
        print(f"  {'PASS' if all(trace_ok) else 'MISS'}  trace p95 < {TARGET_TRACE_MS:.0f} ms: {trace.p95:.1f} ms")
        if result is not None:
            print(f"  {'PASS' if result.ratio >= TARGET_THROUGHPUT_SHARE else 'MISS'}  router throughput with the "
                  f"console open >= {TARGET_THROUGHPUT_SHARE:.0%} of without: {result.ratio:.0%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, help=f"instances in the journal (default {INSTANCES:,}, "
                                                      f"or ${INSTANCES_ENV})")
    parser.add_argument("--queries", type=int, default=QUERIES, help="random queries of each kind")
    parser.add_argument("--runs", type=int, default=3, help="router runs with and without the console (median)")
    parser.add_argument("--tabs", type=int, default=3, help="browser tabs refreshing the console")
    parser.add_argument("--no-router", action="store_true", help="leave the router's throughput out")
    options = parser.parse_args(argv)
    return run(options.instances, options.queries, options.runs, options.tabs, not options.no_router)


if __name__ == "__main__":
    sys.exit(main())
