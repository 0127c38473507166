"""Running a whole corpus through one intake of one router, to three real destinations.

One router process per intake (a DICOM listener fed by DCMTK's storescu or dcmsend, or a
watched folder), one rule that routes everything to DCMTK's storescp, to Orthanc and to a
folder, and the corpus sent in as few rounds as its SOP Instance UIDs allow (see
corpus.rounds). After each round the harness waits for the journal to settle (nothing
accepted and unprocessed, no delivery queued, being sent or waiting for a retry), then
takes what each destination holds, so that the next round's instances of the same UID
do not meet them. `dry-run` is run once on the whole corpus, with `--out`.

Everything waited for is a positive event with a bound: a round that makes no progress
for STALL_SECONDS is given up, and what did not happen is reported file by file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from helpers.peers import DCMTK_ENV, ROOT, Orthanc, RouterProcess, StoreSCP, free_port, require

from .corpus import Source, matches, rounds

DESTINATIONS = ("STORESCP", "ORTHANC", "FOLDER")
STALL_SECONDS = 8.0  # a round whose work left does not shrink for this long is given up
ROUND_LIMIT_SECONDS = 60.0
RETRY = "{delay: 0.1, multiplier: 1, cap: 0.1, max_attempts: 2}"
# A peer that stops answering in the middle of an instance must not hold a round for the
# default 30 to 60 s: both attempts of a delivery end well within STALL_SECONDS.
TIMEOUTS = "{acse: 3, dimse: 3, network: 3}"
ACTIVE_DELIVERY_STATES = ("queued", "sending", "retrying")

ROUTE_ALL = """rule "everything to every destination" {
  then route to STORESCP, ORTHANC, FOLDER
}
"""
# The edited variant: a value no ISO 2022 or single-byte non-Latin character set can hold.
EDITED_INSTITUTION = "Hôpital Genève"
ROUTE_ALL_EDITED = f"""rule "everything to every destination, with the institution named" {{
  then {{
    set DataSet.InstitutionName = "{EDITED_INSTITUTION}"
    route to STORESCP, ORTHANC, FOLDER
  }}
}}
"""
EDITS = {"InstitutionName": EDITED_INSTITUTION}


# ---- what happened to one file ------------------------------------------------------------------


@dataclass
class FileResult:
    source: Source
    round: int = 0
    sent: bool = True  # False: the sender did not send it (it never reached the router)
    answer: str | None = None  # what the intake told the sender: a status, done/, failed/, dry-run's outcome
    accepted: bool | None = None  # the intake took it (None: unknown, it never reached the router)
    reason: str | None = None  # why it was refused, or why the sender skipped it
    outcome: str | None = None  # the journal's outcome for it (route, quarantine, ...), with its reason
    deliveries: dict[str, str] = field(default_factory=dict)  # destination -> state and detail
    copies: dict[str, Path] = field(default_factory=dict)  # destination -> the copy it holds


@dataclass
class IntakeRun:
    intake: str
    kind: str  # listener, folder or dry-run
    results: dict[str, FileResult]
    unexplained: list[str] = field(default_factory=list)  # copies no source file accounts for
    problems: list[str] = field(default_factory=list)  # rounds that did not settle, tools that failed
    log: str = ""  # the router's log (or dry-run's standard error)
    seconds: float = 0.0
    edits: dict[str, str] | None = None


# ---- the three destinations ----------------------------------------------------------------------


class Destinations:
    """storescp (bit-preserving: it writes what travelled), Orthanc and a folder; both peers
    take any SOP class, as archives commonly do, so that a private one can be delivered."""

    def __init__(self, root: Path):
        self.root = root
        self.storescp = StoreSCP(root / "storescp", ae_title="STORESCP", extra=("+B", "--promiscuous"))
        self.orthanc = Orthanc(root / "orthanc", settings={"UnknownSopClassAccepted": True})
        self.folder = root / "folder"

    def start(self) -> "Destinations":
        self.storescp.start()
        try:
            self.orthanc.start()
        except BaseException:
            self.storescp.stop()
            raise
        return self

    def stop(self) -> None:
        self.storescp.stop()
        self.orthanc.stop()

    def emptied(self, aside: Path) -> "Destinations":
        """Shared by several routers in turn: what an earlier one left goes aside first."""
        self.collect(aside)
        return self

    def config(self) -> str:
        return (f"  STORESCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {self.storescp.port}, "
                f"retry: {RETRY}, timeouts: {TIMEOUTS}}}\n"
                f"  ORTHANC: {{type: dicom, ae_title: {self.orthanc.ae_title}, host: 127.0.0.1, "
                f"port: {self.orthanc.dicom_port}, retry: {RETRY}, timeouts: {TIMEOUTS}}}\n"
                f"  FOLDER: {{type: folder, path: {self.folder}, retry: {RETRY}}}\n")

    def collect(self, into: Path) -> dict[str, list[Path]]:
        """Move what each destination holds into `into/DESTINATION/`; Orthanc's instances are
        downloaded and deleted."""
        taken: dict[str, list[Path]] = {name: [] for name in DESTINATIONS}
        for name, folder in (("STORESCP", self.storescp.folder), ("FOLDER", self.folder)):
            target = into / name
            target.mkdir(parents=True, exist_ok=True)
            if folder.is_dir():
                for index, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
                    moved = target / f"{index:04d}-{path.name}"
                    shutil.move(path, moved)
                    taken[name].append(moved)
        target = into / "ORTHANC"
        target.mkdir(parents=True, exist_ok=True)
        for instance in self.orthanc.get("/instances"):
            url = f"http://127.0.0.1:{self.orthanc.http_port}/instances/{instance}"
            with urllib.request.urlopen(f"{url}/file", timeout=30) as response:
                path = target / f"{instance}.dcm"
                path.write_bytes(response.read())
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=30).close()
            taken["ORTHANC"].append(path)
        return taken


def instance_uid_of(path: Path) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            uid = ds.get("SOPInstanceUID")
        except Exception:  # noqa: BLE001 - unreadable: explained by nothing
            return None
        meta = getattr(ds, "file_meta", None)
        if not uid and meta is not None:
            uid = meta.get("MediaStorageSOPInstanceUID")
    return str(uid).strip() if uid else None


# ---- the journal -----------------------------------------------------------------------------------


def journal_rows(storage: Path, query: str, *args) -> list[dict]:
    path = storage / "journal.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=10)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query, args)]
    finally:
        db.close()


def round_state(storage: Path, after_instance: int) -> tuple[int, int, int, int]:
    """Of the instances journaled after `after_instance`: (instances, those still accepted,
    deliveries finished, deliveries still active). Finished: delivered, dead, or failed with
    its error recorded and waiting a backoff that outlasts STALL_SECONDS (accounted for: it
    is not waited for); active: queued, sending, or retrying soon."""
    instances = journal_rows(storage, "SELECT state, COUNT(*) AS n FROM instances WHERE id > ? GROUP BY state",
                             after_instance)
    deliveries = journal_rows(
        storage, "SELECT CASE WHEN state = 'retrying' AND last_error IS NOT NULL AND next_attempt_at > ? "
        "THEN 'waiting' ELSE state END AS state, COUNT(*) AS n FROM deliveries WHERE instance_id > ? GROUP BY 1",
        time.time() + STALL_SECONDS, after_instance)
    return (sum(r["n"] for r in instances), sum(r["n"] for r in instances if r["state"] == "accepted"),
            sum(r["n"] for r in deliveries if r["state"] not in ACTIVE_DELIVERY_STATES),
            sum(r["n"] for r in deliveries if r["state"] in ACTIVE_DELIVERY_STATES))


def wait_settled(storage: Path, after_instance: int, files: int, pending_files=lambda: 0,
                 what: str = "the round", limit: float = ROUND_LIMIT_SECONDS) -> str | None:
    """Until the round's instances (journaled after `after_instance`) are all processed, none
    of their deliveries is active and no file waits in a watched folder (pending_files() == 0).
    None when it settled. Progress is a file taken, or an instance or delivery finished while
    no more instances were journaled than `files` (a file taken again and again makes none);
    without progress for STALL_SECONDS, or after `limit` seconds, what was left is returned."""
    started = since = time.monotonic()
    last_waiting, last_finished = None, -1
    while True:
        instances, accepted, finished, active = round_state(storage, after_instance)
        waiting = pending_files()
        if accepted == 0 and active == 0 and waiting == 0:
            # settled: check once more that nothing arrived in between
            if round_state(storage, after_instance)[:2] == (instances, 0) and pending_files() == 0:
                return None
        done = instances - accepted + finished
        if (last_waiting is not None and waiting < last_waiting) or (done > last_finished and instances <= files):
            since = time.monotonic()
        last_waiting, last_finished = waiting, max(last_finished, done)
        now = time.monotonic()
        if now - since > STALL_SECONDS or now - started > limit:
            return (f"{what} did not settle in {now - started:.0f} s: {instances} instance(s) journaled for "
                    f"{files} file(s), {accepted} accepted and never processed, {active} delivery(ies) queued, "
                    f"sending or retrying, {waiting} file(s) not taken")
        time.sleep(0.1)


def record_journal(storage: Path, results: list[FileResult], after_instance: int) -> int:
    """Fill in outcome and deliveries of each result from the journal rows of its round
    (instances after `after_instance`), matched by SOP Instance UID. Returns the last id."""
    instances = journal_rows(storage, "SELECT * FROM instances WHERE id > ? ORDER BY id", after_instance)
    by_uid: dict[str, list[dict]] = {}
    for row in instances:
        by_uid.setdefault(row["sop_instance_uid"] or "", []).append(row)
    for result in results:
        rows = by_uid.get(result.source.uid or "\0", [])
        if len(rows) != 1:
            continue
        row = rows[0]
        result.outcome = row["outcome"] or row["state"]
        if row["reason"]:
            result.outcome += f": {row['reason']}"
        for delivery in journal_rows(storage, "SELECT * FROM deliveries WHERE instance_id = ?", row["id"]):
            detail = delivery["last_error"] if delivery["state"] != "delivered" else ""
            result.deliveries[delivery["destination"]] = delivery["state"] + (f": {detail}" if detail else "")
    return max([after_instance] + [row["id"] for row in instances])


def match_copies(results: list[FileResult], taken: dict[str, list[Path]]) -> list[str]:
    """Give each result the copy of its UID at each destination; return the copies no
    result of the round accounts for."""
    wanted = {r.source.uid: r for r in results if r.source.uid}
    unexplained = []
    for destination, paths in taken.items():
        for path in paths:
            uid = instance_uid_of(path)
            result = wanted.get(uid)
            if result is None or destination in result.copies:
                unexplained.append(f"{destination}: {path.name} (SOP Instance UID {uid})")
                continue
            result.copies[destination] = path
    return unexplained


# ---- a router for one intake ----------------------------------------------------------------------


class RouterUnderTest:
    def __init__(self, root: Path, destinations: Destinations, intake_config: str, rules: str):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "main.rules").write_text(rules, encoding="utf-8")
        (root / "router.yaml").write_text(
            f"storage: var\nprocesses: 1\nrules: main.rules\n{intake_config}destinations:\n{destinations.config()}",
            encoding="utf-8")
        self.storage = root / "var"
        self.process = RouterProcess(root / "router.yaml")

    def start(self, port: int | None = None) -> "RouterUnderTest":
        self.process.start(wait_for=port)
        return self

    def stop(self) -> str:
        if self.process.process is None:
            return ""
        self.process.stop()
        return self.process.log_path.read_text(errors="replace")


# ---- intakes ----------------------------------------------------------------------------------------


def _syntax_and_class(path: Path) -> tuple[str, str] | None:
    """(transfer syntax, SOP class) a sender would propose for a file; None without a SOP class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            sop_class = ds.get("SOPClassUID")
        except Exception:  # noqa: BLE001
            return None
    if not sop_class:
        return None
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        implicit, little = ds.original_encoding
        syntax = "1.2.840.10008.1.2" if implicit else ("1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
    return str(syntax), str(sop_class)


def storescu_profile(sources: list[Source], path: Path) -> None:
    """A DCMTK association profile proposing, for each SOP class and transfer syntax of the
    files, one presentation context: the file's own transfer syntax first, then Explicit and
    Implicit VR Little Endian, as modalities commonly propose."""
    pairs = sorted({pair for s in sources if (pair := _syntax_and_class(s.path))})
    syntaxes = sorted({syntax for syntax, _ in pairs})
    lines = ["[[TransferSyntaxes]]"]
    for index, syntax in enumerate(syntaxes):
        lines.append(f"[TS{index}]")
        for number, uid in enumerate(dict.fromkeys([syntax, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]), 1):
            lines.append(f"TransferSyntax{number} = {uid}")
    lines += ["[[PresentationContexts]]", "[CORPUS]"]
    for number, (syntax, sop_class) in enumerate(pairs, 1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[CORPUS]", "PresentationContexts = CORPUS"]
    assert len(pairs) <= 128, f"{len(pairs)} presentation contexts: more than one association can carry"
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def parse_storescu(output: str, sources: list[Source]) -> dict[str, tuple[bool, str]]:
    """storescu -d output -> {path: (sent, what happened)}: for a file sent, the DIMSE status
    and Error Comment (and the conversion storescu made to fit the accepted transfer syntax);
    for a file not sent, storescu's own reason."""
    found: dict[str, tuple[bool, str]] = {}
    blocks = re.split(r"^I: Sending file: ", output, flags=re.MULTILINE)[1:]
    for block in blocks:
        path, _, body = block.partition("\n")
        path = path.strip()
        status = re.search(r"DIMSE Status\s*:\s*(0x[0-9A-Fa-f]{4})(?::\s*(.*))?", body)
        comment = re.search(r"\(0000,0902\) LO \[(.*?)\]", body)
        converted = re.search(r"^I: Converting transfer syntax: (.*)$", body, re.MULTILINE)
        if status:
            text = status.group(1).lower() + (f" {status.group(2).strip()}" if status.group(2) else "")
            if comment:
                text += f" [{comment.group(1)}]"
            found[path] = (True, text + (f" (storescu converted {converted.group(1).strip()})"
                                         if converted and len(set(converted.group(1).split(" -> "))) > 1 else ""))
            continue
        unconvertible = re.search(r"unable to convert dataset from (.*)$", body, re.MULTILINE)
        if unconvertible:
            found[path] = (False, f"storescu could not send it in the transfer syntax the router accepted: "
                                  f"unable to convert dataset from {unconvertible.group(1).strip()}")
            continue
        errors = [line[3:].replace(path, "").strip(" :") for line in body.splitlines() if line.startswith("E: ")]
        found[path] = (False, "; ".join(errors) or "storescu neither sent it nor said why")
    return found


def parse_dcmsend(output: str, report: str, sources: list[Source]) -> dict[str, tuple[bool, str]]:
    """dcmsend's log and --create-report-file -> {path: (sent, what happened)}."""
    found: dict[str, tuple[bool, str]] = {}
    for source in sources:
        path = str(source.path)
        skipped = re.search(r"^W: bad DICOM file: " + re.escape(path) + r": (.*?)(, ignoring file)?$", output,
                            re.MULTILINE)
        if skipped:
            found[path] = (False, skipped.group(1))
    for block in report.split("\n\n"):
        filename = re.search(r"^Filename\s*:\s*(.*)$", block, re.MULTILINE)
        status = re.search(r"^DIMSE Status\s*:\s*(.*)$", block, re.MULTILINE)
        if not filename:
            continue
        path = filename.group(1).strip()
        text = status.group(1).strip() if status else ""
        if text.startswith("0x"):
            found[path] = (True, text)
            continue
        why = re.search(r"^E: cannot send SOP instance from file: " + re.escape(path) + r": (.*)$", output,
                        re.MULTILINE)
        found[path] = (False, f"dcmsend did not send it ({text or 'no status'})" +
                       (f": {why.group(1).strip()}" if why else ""))
    return found


def status_ok(answer: str) -> bool:
    """A C-STORE status a sender counts as stored: success or warning."""
    match = re.match(r"0x([0-9a-fA-F]{4})", answer or "")
    if not match:
        return False
    code = int(match.group(1), 16)
    return code in (0x0000, 0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF


def _error_comment(answer: str) -> str | None:
    match = re.search(r"\[(.*)\]$", answer or "")
    return match.group(1) if match else answer


def run_listener(sender: str, sources: list[Source], root: Path, rules: str = ROUTE_ALL,
                 destinations: Destinations | None = None) -> IntakeRun:
    """The corpus sent by DCMTK's `sender` (storescu or dcmsend) to the router's listener."""
    started = time.monotonic()
    run = IntakeRun(f"listener ({sender})", "listener", {}, edits=EDITS if rules is ROUTE_ALL_EDITED else None)
    own = destinations is None
    destinations = Destinations(root / "peers").start() if own else destinations.emptied(root / "before")
    port = free_port()
    router = RouterUnderTest(root / "router", destinations,
                             f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n", rules)
    try:
        router.start(port)
        last_id = 0
        for number, batch in enumerate(rounds(sources)):
            results = [FileResult(s, number) for s in batch]
            run.results.update({r.source.name: r for r in results})
            folder = root / f"round-{number}"
            folder.mkdir(parents=True, exist_ok=True)
            paths = [str(s.path) for s in batch]
            if sender == "storescu":
                storescu_profile(batch, folder / "storescu.cfg")
                done = subprocess.run(
                    [require("storescu"), "-d", "-nh", "-xf", str(folder / "storescu.cfg"), "CORPUS", "-aet", "CT1",
                     "-aec", "ROUTER", "127.0.0.1", str(port), *paths],
                    env=DCMTK_ENV, capture_output=True, text=True, errors="replace", timeout=300)
                output = done.stdout + done.stderr
                answers = parse_storescu(output, batch)
            else:
                report = folder / "dcmsend-report.txt"
                done = subprocess.run(
                    [require("dcmsend"), "-v", "-nh", "-aet", "CT1", "-aec", "ROUTER", "--create-report-file",
                     str(report), "127.0.0.1", str(port), *paths],
                    env=DCMTK_ENV, capture_output=True, text=True, errors="replace", timeout=300)
                output = done.stdout + done.stderr
                answers = parse_dcmsend(output, report.read_text(errors="replace") if report.exists() else "", batch)
            (folder / f"{sender}.log").write_text(output)
            for result in results:
                sent, text = answers.get(str(result.source.path), (False, f"{sender} said nothing about it"))
                result.sent = sent
                result.answer = text
                if sent:
                    result.accepted = status_ok(text)
                    result.reason = None if result.accepted else _error_comment(text)
                else:
                    result.reason = text
            stalled = wait_settled(router.storage, last_id, sum(1 for r in results if r.sent), what=f"round {number}")
            if stalled:
                run.problems.append(stalled)
            last_id = record_journal(router.storage, results, last_id)
            run.unexplained += match_copies(results, destinations.collect(folder / "copies"))
    finally:
        run.log = router.stop()
        if own:
            destinations.stop()
    run.seconds = time.monotonic() - started
    return run


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def watch_layout(source: Source, number: int) -> str:
    """Where a file goes in the watched folder: the CD (dicomdirtests/) is dropped as a folder
    in the first round; everything else is dropped as a file of its own name."""
    if number == 0 and source.name.startswith("dicomdirtests/"):
        return source.name
    return source.name.rsplit("/", 1)[-1]


def run_watched_folder(sources: list[Source], root: Path, rules: str = ROUTE_ALL,
                       destinations: Destinations | None = None) -> IntakeRun:
    started = time.monotonic()
    run = IntakeRun("watched folder", "folder", {}, edits=EDITS if rules is ROUTE_ALL_EDITED else None)
    own = destinations is None
    destinations = Destinations(root / "peers").start() if own else destinations.emptied(root / "before")
    drop = root / "drop"
    staging = root / "staging"
    router = RouterUnderTest(root / "router", destinations,
                             f"watch:\n  - {{name: dropbox, path: {drop}, settle_seconds: 0.2}}\n", rules)
    done, failed = drop / "done", drop / "failed"

    def waiting() -> int:
        # os.walk, not rglob: the router removes the subfolders it empties while they are listed
        count = 0
        for folder, folders, files in os.walk(drop):
            folders[:] = [name for name in folders if Path(folder, name) not in (done, failed)]
            count += len(files)
        return count

    try:
        router.start()
        last_id = 0
        for number, batch in enumerate(rounds(sources)):
            results = [FileResult(s, number) for s in batch]
            run.results.update({r.source.name: r for r in results})
            folder = root / f"round-{number}"
            # Files are put together aside, then moved in at once: each appears complete.
            layout = {s.name: watch_layout(s, number) for s in batch}
            for source in batch:
                target = staging / layout[source.name]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.path, target)
            for entry in sorted(staging.iterdir()):
                os.rename(entry, drop / entry.name)
            stalled = wait_settled(router.storage, last_id, len(batch), waiting, what=f"round {number}")
            if stalled:
                run.problems.append(stalled)
            last_id = record_journal(router.storage, results, last_id)
            # Where each file went: done/, failed/ (with its reason) or nowhere.
            moved = folder / "taken"
            moved.mkdir(parents=True, exist_ok=True)
            left = folder / "left"
            # The files only: the router owns done/ and failed/ (and made them at its start).
            for path in sorted(p for p in drop.rglob("*") if p.is_file()):
                kept = path.is_relative_to(done) or path.is_relative_to(failed)
                target = (moved if kept else left) / path.relative_to(drop)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
            for path in sorted(drop.iterdir()):  # the CD's folders, once empty
                if path not in (done, failed):
                    shutil.rmtree(path, ignore_errors=True)
            _where_files_went(results, layout, moved, left)
            run.unexplained += match_copies(results, destinations.collect(folder / "copies"))
    finally:
        run.log = router.stop()
        if own:
            destinations.stop()
    run.seconds = time.monotonic() - started
    return run


def _where_files_went(results: list[FileResult], layout: dict[str, str], taken: Path, left: Path) -> None:
    digests: dict[str, list[Path]] = {}
    for path in taken.rglob("*"):
        if path.is_file() and not path.name.endswith(".reason.txt"):
            digests.setdefault(_digest(path), []).append(path)
    for result in results:
        relative = layout[result.source.name]
        if (left / relative).exists():
            result.answer = "left in the watched folder"
            continue
        candidates = digests.get(_digest(result.source.path), [])
        # the same bytes may be two corpus files (JPEG-lossy.dcm, JPGExtended.dcm): prefer the name
        named = [p for p in candidates if p.name == Path(relative).name or p.name.startswith(Path(relative).stem)]
        found = (named or candidates or [None])[0]
        if found is None:
            result.answer = "gone from the watched folder, in neither done/ nor failed/"
            continue
        candidates.remove(found)
        kind = found.relative_to(taken).parts[0]
        result.answer = f"{kind}/"
        result.accepted = kind == "done"
        reason_file = found.with_name(found.name + ".reason.txt")
        if kind == "failed":
            result.reason = reason_file.read_text(encoding="utf-8", errors="replace").strip() \
                if reason_file.exists() else "(no .reason.txt beside it)"


def run_dry_run(sources: list[Source], root: Path, rules: str = ROUTE_ALL) -> IntakeRun:
    """`dicom-rules dry-run --out` on the whole corpus, laid out under one folder."""
    started = time.monotonic()
    run = IntakeRun("dry-run", "dry-run", {}, edits=EDITS if rules is ROUTE_ALL_EDITED else None)
    inputs, out = root / "inputs", root / "out"
    for source in sources:
        target = inputs / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path, target)
        run.results[source.name] = FileResult(source)
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.rules").write_text(rules, encoding="utf-8")
    (root / "router.yaml").write_text(
        "storage: var\nprocesses: 1\nrules: main.rules\ndestinations:\n"
        "  STORESCP: {type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: 104}\n"
        "  ORTHANC: {type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: 104}\n"
        "  FOLDER: {type: folder, path: folder}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "rulesengine", "dry-run", "--config", "router.yaml", "--format",
                           "json", "--out", str(out), "main.rules", str(inputs)],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"},
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=600)
    run.log = done.stderr
    if done.returncode not in (0, 1):
        run.problems.append(f"dry-run exited with status {done.returncode}: {done.stderr.strip()[-500:]}")
    for line in done.stdout.splitlines():
        try:
            report = json.loads(line)
        except ValueError:
            run.problems.append(f"dry-run printed a line that is not JSON: {line[:200]}")
            continue
        name = Path(report.get("file", "")).relative_to(inputs).as_posix() if report.get("file") else None
        result = run.results.get(name)
        if result is None:
            run.problems.append(f"dry-run reported a file that is not in the corpus: {report.get('file')}")
            continue
        outcome, error = report.get("outcome"), report.get("error")
        if outcome is None:
            result.answer, result.accepted, result.reason = f"error: {error}", False, error
            continue
        result.answer = outcome + (f": {report.get('reason')}" if report.get("reason") else "")
        result.accepted = True
        result.outcome = result.answer
        for destination in report.get("destinations") or []:
            result.deliveries[destination] = "would be sent"
            copy = out / destination / name
            if copy.exists():
                result.copies[destination] = copy
    for result in run.results.values():
        if result.answer is None:
            result.answer = "no report from dry-run"
    run.seconds = time.monotonic() - started
    return run
