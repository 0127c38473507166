"""The conformance matrix's runs, one per intake, made once per session when a test first
needs one; and the results table, written and summed up when the session ends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from . import harness, results  # noqa: E402
from .corpus import corpus  # noqa: E402

# intake name -> how it runs the corpus in a folder
INTAKES = {
    "listener (storescu)": lambda sources, root: harness.run_listener("storescu", sources, root),
    "listener (dcmsend)": lambda sources, root: harness.run_listener("dcmsend", sources, root),
    "watched folder": harness.run_watched_folder,
    "dry-run": harness.run_dry_run,
    "listener (storescu), edited": lambda sources, root: harness.run_listener("storescu", sources, root,
                                                                              harness.ROUTE_ALL_EDITED),
    "dry-run, edited": lambda sources, root: harness.run_dry_run(sources, root, harness.ROUTE_ALL_EDITED),
}
assert tuple(INTAKES) == results.INTAKE_ORDER


class Runs:
    def __init__(self, factory):
        self.factory = factory
        self.sources = corpus()
        self._runs: dict[str, harness.IntakeRun] = {}

    def get(self, intake: str) -> harness.IntakeRun:
        if intake not in self._runs:
            folder = self.factory.mktemp("".join(c if c.isalnum() else "-" for c in intake))
            run = INTAKES[intake](self.sources, folder)
            run.intake = intake
            self._runs[intake] = run
        return self._runs[intake]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory)


def pytest_terminal_summary(terminalreporter) -> None:
    if not results.ROWS:
        return
    results.write()
    terminalreporter.section("conformance matrix")
    for line in results.totals(results.ROWS):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"results table: {results.RESULTS_FILE}")
