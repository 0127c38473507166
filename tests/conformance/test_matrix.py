"""The conformance matrix: every file pydicom bundles, through every intake (the DICOM
listener fed by DCMTK's storescu and dcmsend, a watched folder, `dry-run`), to DCMTK's
storescp, Orthanc and a folder at once; and the same through the listener and `dry-run`
with a rule that edits every instance.

Each file is delivered to every destination with everything the rules did not touch
identical (compare.py lists the documented conversions), or refused at intake with a
named reason, as corpus.EXPECTED says; `dry-run` predicts what the router does with it.
The results table is written to test-results/conformance.md.
"""

from __future__ import annotations

import re

import pytest

from .corpus import EXPECTED, PEER_REFUSES, SENDER_MANGLES, SENDER_SKIPS, corpus
from .harness import FileResult
from .results import INTAKE_ORDER, record
from .verdicts import judge, sender_of

SOURCES = corpus()
SLUGS = {"listener (storescu)": "storescu", "listener (dcmsend)": "dcmsend", "watched folder": "watched",
         "dry-run": "dryrun", "listener (storescu), edited": "storescu-edited", "dry-run, edited": "dryrun-edited"}
CASES = [(intake, source.name) for intake in INTAKE_ORDER for source in SOURCES]


def test_the_expectations_name_every_file_of_the_corpus_and_nothing_else():
    """A pydicom release that adds, renames or removes a file fails here, not silently."""
    names = {source.name for source in SOURCES}
    assert sorted(names - set(EXPECTED)) == [], "files without an expectation in corpus.EXPECTED"
    assert sorted(set(EXPECTED) - names) == [], "expectations of files that are not in the corpus"
    for sender, skips in SENDER_SKIPS.items():
        assert sorted(set(skips) - names) == [], f"SENDER_SKIPS[{sender!r}] names files not in the corpus"
    for sender, mangled in SENDER_MANGLES.items():
        assert sorted(set(mangled) - names) == [], f"SENDER_MANGLES[{sender!r}] names files not in the corpus"
        assert not set(mangled) & set(SENDER_SKIPS.get(sender, {})), f"{sender}: a file both skipped and mangled"
    assert sorted({name for name, _ in PEER_REFUSES} - names) == []


@pytest.mark.parametrize(("intake", "name"), CASES, ids=[f"{SLUGS[i]}:{n}" for i, n in CASES])
def test_file_meets_its_expectation(runs, intake, name):
    run = runs.get(intake)
    result = run.results[name]
    rows, failures = judge(run, result)
    record(rows)
    expect = result.source.expect
    items = ", ".join(map(str, expect.items)) or "-"
    assert not failures, (f"{name} through {intake} (expected {expect.describe()}; issue 6 item(s) {items}):\n"
                          + "\n".join(f"  - {failure}" for failure in failures))


@pytest.mark.parametrize("intake", INTAKE_ORDER, ids=[SLUGS[i] for i in INTAKE_ORDER])
def test_every_round_settles(runs, intake):
    """Nothing stays accepted and unprocessed, no delivery stays queued, sending or retrying,
    no file stays in the watched folder, and nothing is taken twice."""
    run = runs.get(intake)
    assert not run.problems, f"{intake}:\n" + "\n".join(f"  - {problem}" for problem in run.problems)


@pytest.mark.parametrize("intake", INTAKE_ORDER, ids=[SLUGS[i] for i in INTAKE_ORDER])
def test_no_traceback_and_no_internal_error(runs, intake):
    """Expected failures (a file that is not DICOM, a refused delivery) are one line of log each."""
    run = runs.get(intake)
    found = [line for line in run.log.splitlines() if "Traceback" in line or "internal error" in line]
    assert not found, (f"{intake}: {len(found)} line(s) with a traceback or an internal error, the first:\n"
                       + _context(run.log, found[0]))


@pytest.mark.parametrize("intake", INTAKE_ORDER, ids=[SLUGS[i] for i in INTAKE_ORDER])
def test_every_copy_comes_from_a_file_sent(runs, intake):
    run = runs.get(intake)
    assert not run.unexplained, (f"{intake}: copies no file of the corpus accounts for:\n"
                                 + "\n".join(f"  - {copy}" for copy in run.unexplained))


@pytest.mark.parametrize("name", [source.name for source in SOURCES])
def test_dry_run_predicts_the_router(runs, name):
    """dry-run takes the same decision as the router on each file: routed, or refused with the
    same reason (a listener only sees what its sender sent, and answers at most 64 characters;
    what a sender mangles is not the file)."""
    predicted = decision(runs.get("dry-run").results[name])
    disagreements = []
    for intake in ("watched folder", "listener (storescu)", "listener (dcmsend)"):
        run = runs.get(intake)
        result = run.results[name]
        if not result.sent or name in SENDER_MANGLES.get(sender_of(run), {}):
            continue
        actual = decision(result)
        if not same_decision(predicted, actual):
            disagreements.append(f"{intake}: {_show(actual)}")
    assert not disagreements, (f"{name}: dry-run predicts {_show(predicted)}, but\n"
                               + "\n".join(f"  - {line}" for line in disagreements))


def decision(result: FileResult) -> tuple[str, str | None]:
    """(kind, reason): refused at intake, or what the rules decided (route, quarantine...)."""
    if result.accepted is False:
        return "refused", result.reason
    if result.accepted is None:
        return "no decision", result.answer
    if result.outcome is None:
        return "accepted", None  # no journal entry of its UID (it has none): its outcome is unknown
    kind, _, reason = result.outcome.partition(": ")
    return kind, reason or None


def same_decision(a: tuple[str, str | None], b: tuple[str, str | None]) -> bool:
    if "accepted" in (a[0], b[0]):
        return "refused" not in (a[0], b[0]) and "no decision" not in (a[0], b[0])
    return a[0] == b[0] and same_reason(a[1], b[1])


def _normal(reason: str | None) -> str:
    """A reason without the file's name or path, which differ from intake to intake."""
    text = re.sub(r"\S*/\S*|\S+\.(dcm|txt|json|gz|icc|dump)\b", "", reason or "")
    return " ".join(text.replace(":", " ").split()).lower()


def same_reason(a: str | None, b: str | None) -> bool:
    a, b = _normal(a), _normal(b)
    if bool(a) != bool(b):
        return False
    length = min(len(a), len(b), 50)
    return a[:length] == b[:length]


def _show(decided: tuple[str, str | None]) -> str:
    return decided[0] + (f" ({decided[1]})" if decided[1] else "")


def _context(log: str, line: str, after: int = 12) -> str:
    lines = log.splitlines()
    index = lines.index(line)
    return "\n".join(lines[max(0, index - 2):index + after])
