"""The results table of the conformance matrix: one row per file, intake and destination,
written where CI keeps it (test-results/conformance.md, git-ignored) when the session ends."""

from __future__ import annotations

from collections import Counter

from helpers.peers import ROOT

from .harness import DESTINATIONS

RESULTS_FILE = ROOT / "test-results" / "conformance.md"
INTAKE_ORDER = ("listener (storescu)", "listener (dcmsend)", "watched folder", "dry-run",
                "listener (storescu), edited", "dry-run, edited")

ROWS: list = []  # verdicts.Row, in the order the tests ran


def record(rows) -> None:
    ROWS.extend(rows)


def write() -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(results_table(ROWS), encoding="utf-8")


def totals(rows) -> list[str]:
    lines = []
    for intake in dict.fromkeys(row.intake for row in rows):
        counts = Counter((row.destination, row.ok) for row in rows if row.intake == intake)
        parts = [f"{destination} {counts[(destination, True)]} ok, {counts[(destination, False)]} failed"
                 for destination in DESTINATIONS]
        lines.append(f"{intake}: " + "; ".join(parts))
    ok = sum(row.ok for row in rows)
    lines.append(f"all: {ok} of {len(rows)} file x intake x destination results as expected")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def results_table(rows) -> str:
    lines = ["# Conformance matrix", "",
             "Every file pydicom bundles, through each intake, to each destination "
             "(tests/conformance). `ok` means the file met its expectation "
             "(tests/conformance/corpus.py).", ""]
    lines += [f"- {line}" for line in totals(rows)]
    lines += ["", "| file | intake | destination | result | ok |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r.file, INTAKE_ORDER.index(r.intake) if r.intake in INTAKE_ORDER else 99,
                                           r.destination)):
        lines.append(f"| {_cell(row.file)} | {row.intake} | {row.destination} | {_cell(row.result)} | "
                     f"{'yes' if row.ok else '**no**'} |")
    return "\n".join(lines) + "\n"
