"""A fuzzing campaign: mutated files through `dry-run`, a watched folder and the DICOM
listener of one router, to DCMTK's storescp, Orthanc and a folder; then a normal storescu.

For each intake it counts the files, and what became of them: delivered (to every
destination), quarantined, failed or refused (at intake, or by a destination, always with
a reason: a delivery that failed and waits its backoff, its error recorded, is accounted
for), internal errors (a traceback or "internal error" in a log or an output), stuck (no
progress and no reason: an instance never processed, a delivery queued or being sent when
the round has stopped moving, a retry long overdue, a file left in the watched folder),
lost (acknowledged, then nowhere: answered Success or moved to done/ without a journal
entry, or no report from dry-run); and, for the listener, sends that got no answer at all.

Every destination runs throughout, so a delivery that fails is the instance's own failure:
one taken for "destination unreachable" (the whole queue made to wait) or an "unexpected
error" is misjudged (issue 10). A peer that never answers a C-STORE (a defect of the peer:
Orthanc does this when it cannot parse a data set) must be reported as "no answer within
N s", and the destination must go on delivering after it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset

from conformance.harness import ROUTE_ALL, Destinations, RouterUnderTest, journal_rows, wait_settled
from helpers.peers import DCMTK_ENV, ROOT, free_port, require

from . import mutate

MAX_CONTEXTS = 120  # presentation contexts on one association (the standard allows 128)
MAX_SILENT = 5
ROUTER_AE = "ROUTER"


@dataclass
class Tally:
    intake: str
    files: int = 0
    delivered: int = 0
    quarantined: int = 0
    refused: int = 0  # failed or refused, with a reason
    internal_errors: int = 0
    stuck: int = 0
    lost: int = 0
    no_answer: int = 0  # listener: sends answered by no status at all
    duplicates: int = 0  # instances journaled more than once for one file
    misjudged: int = 0  # delivery failures taken for the destination's, or for an unexpected error
    unanswered: int = 0  # deliveries a peer never answered (its defect), reported as such
    moved: int | None = None  # watched folder: files in done/ and failed/ (must be `files`)
    problems: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)  # refusals, failures, quarantines without a reason
    silences: list[tuple[int, str, float, str]] = field(default_factory=list)  # C-STORE attempts not answered

    COLUMNS = ("files", "delivered", "quarantined", "refused", "internal_errors", "stuck", "lost", "no_answer",
               "duplicates", "misjudged", "unanswered")

    def note(self, problem: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(problem)

    def no_reason(self, what: str) -> None:
        if len(self.unexplained) < 50:
            self.unexplained.append(what)

    @property
    def accounted(self) -> int:
        return self.delivered + self.quarantined + self.refused


@dataclass
class Campaign:
    seed: int
    count: int
    root: Path
    tallies: dict[str, Tally] = field(default_factory=dict)
    normal_sender: list[str] = field(default_factory=list)  # what went wrong with a normal storescu afterwards
    log_lines: int = 0
    seconds: float = 0.0

    def table(self) -> str:
        header = ("intake", "files", "delivered", "quarantined", "failed/refused", "internal errors", "stuck",
                  "lost", "no answer", "taken twice", "misjudged", "peer silent")
        rows = [header] + [(t.intake, *(str(getattr(t, c)) for c in Tally.COLUMNS)) for t in self.tallies.values()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths))) for row in rows)

    @property
    def clean(self) -> bool:
        return not self.normal_sender and all(
            t.internal_errors == t.stuck == t.lost == t.no_answer == t.duplicates == t.misjudged == 0
            and t.accounted == t.files
            and not t.unexplained and t.moved in (None, t.files) for t in self.tallies.values())


def _internal_errors(text: str) -> int:
    return text.count("Traceback") + len(re.findall(r"internal error", text))


# ---- dry-run ---------------------------------------------------------------------------------


def run_dry_run(corpus: Path, root: Path, count: int) -> Tally:
    tally = Tally("dry-run", files=count)
    (root / "main.rules").write_text(ROUTE_ALL, encoding="utf-8")
    (root / "router.yaml").write_text(
        "storage: var\nprocesses: 1\nrules: main.rules\ndestinations:\n"
        "  STORESCP: {type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: 104}\n"
        "  ORTHANC: {type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: 104}\n"
        "  FOLDER: {type: folder, path: folder}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "rulesengine", "dry-run", "--config", "router.yaml", "--format",
                           "json", "main.rules", str(corpus)],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"},
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=3600)
    (root / "dry-run.out").write_text(done.stdout + done.stderr, encoding="utf-8")
    tally.internal_errors = _internal_errors(done.stdout + done.stderr) + (done.returncode == 3)
    if done.returncode not in (0, 1):
        tally.note(f"dry-run exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    reported = set()
    for line in done.stdout.splitlines():
        try:
            report = json.loads(line)
        except ValueError:
            tally.note(f"not a JSON line: {line[:200]}")
            continue
        name = Path(report.get("file") or "").name
        reported.add(name)
        outcome, reason, error = report.get("outcome"), report.get("reason"), report.get("error")
        if outcome == "route":
            tally.delivered += 1
        elif outcome == "quarantine":
            tally.quarantined += 1
            if not reason:
                tally.no_reason(f"{name}: quarantined without a reason")
        else:
            tally.refused += 1
            if not (error or reason):
                tally.no_reason(f"{name}: {outcome or 'an error'} without a reason")
    tally.lost = count - len(reported)
    if tally.lost:
        tally.note(f"{tally.lost} file(s) without a report (dry-run stopped early?)")
    return tally


# ---- the router's journal --------------------------------------------------------------------------


OVERDUE_SECONDS = 10.0  # a retry this long past its time made no progress: stuck


def _stuck(delivery: dict, now: float) -> bool:
    """Queued or being sent once the round stopped moving, or retrying long after its time;
    a failed delivery waiting its backoff, its error recorded, is accounted for."""
    if delivery["state"] in ("queued", "sending"):
        return True
    return delivery["state"] == "retrying" and (not delivery["last_error"]
                                                or delivery["next_attempt_at"] < now - OVERDUE_SECONDS)


def tally_journal(tally: Tally, storage: Path, source_kind: str, after: int, until: int | None = None) -> int:
    """Count what became of the instances of one intake; returns how many there are."""
    query = "SELECT * FROM instances WHERE source_kind = ? AND id > ?" + (" AND id <= ?" if until else "")
    instances = journal_rows(storage, query, source_kind, after, *([until] if until else []))
    now = time.time()
    for row in instances:
        deliveries = journal_rows(storage, "SELECT id, state, last_error, destination, next_attempt_at "
                                  "FROM deliveries WHERE instance_id = ?", row["id"])
        uid = row["sop_instance_uid"] or f"instance {row['id']}"
        tally_failures(tally, storage, uid, deliveries)
        if row["state"] == "accepted" or any(_stuck(d, now) for d in deliveries):
            tally.stuck += 1
            tally.note(f"{uid}: stuck ({row['state']}; deliveries "
                       f"{', '.join(d['destination'] + ' ' + d['state'] for d in deliveries) or 'none'})")
        elif row["outcome"] == "route" and deliveries and all(d["state"] == "delivered" for d in deliveries):
            tally.delivered += 1
        elif row["outcome"] == "route":
            tally.refused += 1  # failed at a destination (dead, or waiting its backoff), with the error it gave
            for delivery in deliveries:
                if delivery["state"] in ("dead", "retrying") and not delivery["last_error"]:
                    tally.no_reason(f"{uid}: delivery to {delivery['destination']} {delivery['state']} "
                                    f"without a reason")
            if not deliveries:
                tally.no_reason(f"{uid}: routed, without a delivery")
        elif row["outcome"] == "quarantine":
            tally.quarantined += 1
            if not row["reason"]:
                tally.no_reason(f"{uid}: quarantined without a reason")
        else:
            tally.refused += 1
            if not row["reason"]:
                tally.no_reason(f"{uid}: {row['outcome']} without a reason")
    return len(instances)


INSTANCE_FAILED = "instance failed: "  # how the router's last_error starts for an instance's own failure
NO_ANSWER = re.compile(r"no answer within [0-9.]+ s to the C-STORE of .*; the destination answers C-ECHO")


def tally_failures(tally: Tally, storage: Path, uid: str, deliveries: list[dict]) -> None:
    """Every failed attempt must be the instance's own (the peers run throughout); a C-STORE a
    peer never answered must say so, and its destination must deliver again after it. Counts
    deliveries, not attempts."""
    for delivery in deliveries:
        where = f"{uid} to {delivery['destination']}"
        misjudged = silent = False
        for attempt in journal_rows(storage, "SELECT * FROM attempts WHERE delivery_id = ? AND ok = 0 ORDER BY id",
                                    delivery["id"]):
            detail = attempt["detail"] or ""
            if not detail.startswith(INSTANCE_FAILED):
                misjudged = True
                tally.note(f"{where}: misjudged failure: {detail[:300]}")
            elif "no answer within" in detail:
                silent = True
                if NO_ANSWER.search(detail):
                    tally.silences.append((delivery["id"], delivery["destination"], attempt["finished_at"], where))
                else:
                    misjudged = True
                    tally.note(f"{where}: a peer's silence reported unlike the others: {detail[:300]}")
        tally.misjudged += misjudged
        tally.unanswered += silent


def check_went_on(tally: Tally, storage: Path) -> None:
    """After the campaign (the normal sender's instance included): each destination that did
    not answer a C-STORE delivered something after it."""
    stalled = set()
    for delivery, destination, finished_at, where in tally.silences:
        later = journal_rows(storage, "SELECT a.id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
                             "WHERE d.destination = ? AND a.ok = 1 AND a.started_at >= ? LIMIT 1",
                             destination, finished_at)
        if not later and delivery not in stalled:
            stalled.add(delivery)
            tally.misjudged += 1
            tally.note(f"{where}: {destination} delivered nothing after it did not answer")


def last_instance(storage: Path) -> int:
    rows = journal_rows(storage, "SELECT MAX(id) AS id FROM instances")
    return (rows[0]["id"] or 0) if rows else 0


# ---- the watched folder ------------------------------------------------------------------------------


def run_watched_folder(mutants: list[mutate.Mutant], corpus: Path, drop: Path, router: RouterUnderTest) -> Tally:
    tally = Tally("watched folder", files=len(mutants))
    done, failed = drop / "done", drop / "failed"

    def waiting() -> int:
        return sum(1 for p in drop.iterdir() if p.is_file())

    for item in mutants:  # renamed in: each file appears whole
        os.rename(corpus / item.name, drop / item.name)
    stalled = wait_settled(router.storage, 0, len(mutants), waiting, "the watched folder",
                           limit=max(60.0, len(mutants) * 0.5))
    if stalled:
        tally.note(stalled)
    left = sorted(p for p in drop.iterdir() if p.is_file())
    tally.stuck += len(left)
    for path in left:
        tally.note(f"{path.name}: never taken, or taken and left in the watched folder")
        path.unlink()  # so the router stops taking it again
    taken = [p for p in done.iterdir() if p.is_file()] if done.is_dir() else []
    refused = [p for p in failed.iterdir() if p.is_file() and not p.name.endswith(".reason.txt")] \
        if failed.is_dir() else []
    tally.refused += len(refused)
    tally.moved = len(taken) + len(refused)
    for path in refused:
        reason = path.with_name(path.name + ".reason.txt")
        if not reason.exists() or not reason.read_text(errors="replace").strip():
            tally.no_reason(f"{path.name}: in failed/ without a reason")
    journaled = tally_journal(tally, router.storage, "folder", 0)
    tally.lost = max(0, len(taken) - journaled)
    tally.duplicates = max(0, journaled - len(taken))
    if tally.lost:
        tally.note(f"{tally.lost} file(s) moved to done/ without a journal entry")
    if tally.duplicates:
        tally.note(f"{journaled} instance(s) journaled for {len(taken)} file(s) in done/: taken more than once")
    return tally


# ---- the listener ------------------------------------------------------------------------------------


def send_all(mutants: list[mutate.Mutant], folder: Path, port: int) -> dict[str, tuple[int | None, str]]:
    """Each mutant's data set in a C-STORE of its own, as a broken modality would send it:
    pynetdicom sends the bytes after the file meta without reading them. Returns
    {name: (status or None when no answer came, Error Comment)}."""
    from pynetdicom import AE, _config

    folder.mkdir(parents=True, exist_ok=True)
    answers: dict[str, tuple[int | None, str]] = {}
    groups: dict[tuple[str, str], list[mutate.Mutant]] = {}
    for item in mutants:
        groups.setdefault((item.network.sop_class, item.network.syntax), []).append(item)
    keys = sorted(groups)
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    silent = 0  # sends in a row without an answer: a router that stopped answering ends the run
    try:
        for start in range(0, len(keys), MAX_CONTEXTS):
            ae = AE(ae_title="FUZZER")
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
            for sop_class, syntax in keys[start:start + MAX_CONTEXTS]:
                ae.add_requested_context(sop_class, [syntax])
            assoc = None
            for key in keys[start:start + MAX_CONTEXTS]:
                for item in groups[key]:
                    if silent >= MAX_SILENT:
                        answers[item.name] = (None, f"not sent: the router answered none of the last {silent}")
                        continue
                    if assoc is None or not assoc.is_established:
                        assoc = ae.associate("127.0.0.1", port, ae_title=ROUTER_AE)
                    if not assoc.is_established:
                        answers[item.name] = (None, "association not established")
                        assoc = None
                        silent += 1
                        continue
                    path = mutate.network_file(item, folder)
                    try:
                        status = assoc.send_c_store(path)
                    except (RuntimeError, ValueError, AttributeError, OSError) as exc:
                        status = None
                        answers[item.name] = (None, f"the sender failed: {exc}")
                    if status is not None and "Status" in status:
                        answers[item.name] = (int(status.Status), str(status.get("ErrorComment") or ""))
                        silent = 0
                        continue
                    silent += 1
                    if item.name not in answers:
                        answers[item.name] = (None, "no answer (association aborted or lost)")
            if assoc is not None and assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return answers


def _is_success(status: int) -> bool:
    return status in (0x0000, 0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF


def run_listener(mutants: list[mutate.Mutant], root: Path, router: RouterUnderTest, port: int) -> Tally:
    sent = [item for item in mutants if item.network is not None]
    tally = Tally("listener", files=len(sent))
    before = last_instance(router.storage)
    answers = send_all(sent, root / "network", port)
    successes = 0
    for item in sent:
        status, comment = answers.get(item.name, (None, "never sent"))
        if status is None:
            tally.no_answer += 1
            tally.note(f"{item.name}: {comment}")
        elif _is_success(status):
            successes += 1
        else:
            tally.refused += 1
            if not comment:
                tally.no_reason(f"{item.name}: failure status 0x{status:04X} without an Error Comment")
    stalled = wait_settled(router.storage, before, successes, what="the listener",
                           limit=max(60.0, len(sent) * 0.5))
    if stalled:
        tally.note(stalled)
    journaled = tally_journal(tally, router.storage, "listener", before)
    tally.lost = max(0, successes - journaled)
    tally.duplicates = max(0, journaled - successes)
    if tally.lost:
        tally.note(f"{tally.lost} instance(s) answered Success without a journal entry")
    if tally.duplicates:
        tally.note(f"{journaled} instance(s) journaled for {successes} answered Success")
    return tally


# ---- afterwards: a normal sender ------------------------------------------------------------------------


def normal_instance(path: Path, seed: int) -> str:
    uid = f"2.25.7{seed}{int(time.time())}"
    ds = Dataset()
    ds.SOPClassUID = mutate.SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid + ".1", uid + ".2"
    ds.PatientID, ds.PatientName, ds.Modality = "NORMAL", "NORMAL^SENDER", "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, uid
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return uid


def check_normal_sender(root: Path, router: RouterUnderTest, port: int, seed: int) -> list[str]:
    """A normal storescu afterwards: answered Success promptly, and delivered everywhere."""
    path = root / "normal.dcm"
    uid = normal_instance(path, seed)
    done = subprocess.run([require("storescu"), "-v", "-to", "10", "-ta", "10", "-td", "30", "-aet", "NORMAL",
                           "-aec", ROUTER_AE, "127.0.0.1", str(port), str(path)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "Received Store Response (Success)" not in done.stderr:
        return [f"storescu failed (exit {done.returncode}): {done.stderr.strip()[-400:]}"]
    deadline = time.monotonic() + 60
    states: list[dict] = []
    while time.monotonic() < deadline:
        states = journal_rows(router.storage, "SELECT d.destination, d.state, d.last_error FROM deliveries d "
                              "JOIN instances i ON i.id = d.instance_id WHERE i.sop_instance_uid = ?", uid)
        if len(states) == 3 and all(s["state"] in ("delivered", "dead") for s in states):
            break
        time.sleep(0.1)
    bad = [f"{s['destination']} {s['state']} {s['last_error'] or ''}" for s in states if s["state"] != "delivered"]
    if len(states) != 3 or bad:
        return [f"the normal instance was not delivered everywhere: {bad or states}"]
    return []


# ---- the campaign ------------------------------------------------------------------------------------------


def run(seed: int, count: int, root: Path, progress=lambda text: None) -> Campaign:
    started = time.monotonic()
    campaign = Campaign(seed, count, root)
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    mutants = list(mutate.mutants(seed, count))
    for item in mutants:
        (corpus / item.name).write_bytes(item.data)
    progress(f"{count} files generated (seed {seed}) in {corpus}")

    campaign.tallies["dry-run"] = run_dry_run(corpus, root, count)
    progress("dry-run done")

    destinations = Destinations(root / "peers").start()
    port = free_port()
    drop = root / "drop"
    drop.mkdir()
    router = RouterUnderTest(root / "router", destinations,
                             f"listeners:\n  - {{name: main, ae_title: {ROUTER_AE}, port: {port}}}\n"
                             f"watch:\n  - {{name: dropbox, path: {drop}, settle_seconds: 0.2}}\n", ROUTE_ALL)
    log = ""
    try:
        router.start(port)
        router.process.wait_for_log("router running")
        mark = _log_size(router)
        campaign.tallies["watched folder"] = run_watched_folder(mutants, corpus, drop, router)
        folder_log, mark = _log_since(router, mark)
        progress("watched folder done")
        campaign.tallies["listener"] = run_listener(mutants, root, router, port)
        listener_log, mark = _log_since(router, mark)
        progress("listener done")
        campaign.normal_sender = check_normal_sender(root, router, port, seed)
        for intake in ("watched folder", "listener"):
            check_went_on(campaign.tallies[intake], router.storage)
        campaign.tallies["watched folder"].internal_errors = _internal_errors(folder_log)
        campaign.tallies["listener"].internal_errors = _internal_errors(listener_log)
    finally:
        log = router.stop()
        destinations.stop()
    campaign.log_lines = log.count("\n")
    _trim(router.process.log_path)
    campaign.seconds = time.monotonic() - started
    return campaign


LOG_KEPT = 8 << 20  # bytes of a router log kept at each end: a broken router writes hundreds of MB


def _trim(path: Path) -> None:
    size = path.stat().st_size
    if size <= 2 * LOG_KEPT:
        return
    with open(path, "rb") as fh:
        head = fh.read(LOG_KEPT)
        fh.seek(size - LOG_KEPT)
        tail = fh.read()
    path.write_bytes(head + f"\n[... {size - 2 * LOG_KEPT} bytes of log left out ...]\n".encode() + tail)


def _log_size(router: RouterUnderTest) -> int:
    return router.process.log_path.stat().st_size


def _log_since(router: RouterUnderTest, mark: int) -> tuple[str, int]:
    router.process.log.flush()
    with open(router.process.log_path, "rb") as fh:
        fh.seek(mark)
        data = fh.read()
    return data.decode("utf-8", "replace"), mark + len(data)


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
