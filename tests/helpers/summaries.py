"""Sections printed at the end of a test run (the conformance matrix, the fuzz counts), alike
with and without pytest-xdist: the process that ran the tests writes its section to a file when
its session ends, and the process that prints the report prints every section of this run."""

from __future__ import annotations

import re
import shutil

from helpers.peers import ROOT

SUMMARIES = ROOT / "test-results" / "summaries"


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def clear_stale(config) -> None:
    """Before any test runs: sections of an earlier run must not be printed as this run's."""
    if not _is_worker(config):
        shutil.rmtree(SUMMARIES, ignore_errors=True)


def write(title: str, lines: list[str]) -> None:
    SUMMARIES.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    (SUMMARIES / f"{name}.txt").write_text("\n".join([title, *lines]) + "\n", encoding="utf-8")


def print_all(terminalreporter) -> None:
    for path in sorted(SUMMARIES.glob("*.txt")) if SUMMARIES.is_dir() else ():
        title, *lines = path.read_text(encoding="utf-8").splitlines()
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
