"""The conformance matrix's runs, one per intake, made once when a test first needs one;
and the results table, written and summed up when the session ends."""

from __future__ import annotations

import pytest

from helpers import summaries

from . import harness, results
from .corpus import corpus

# intake name -> how it runs the corpus in a folder, with the destinations shared by all
INTAKES = {
    "listener (storescu)": lambda sources, root, peers: harness.run_listener("storescu", sources, root,
                                                                             destinations=peers),
    "listener (dcmsend)": lambda sources, root, peers: harness.run_listener("dcmsend", sources, root,
                                                                            destinations=peers),
    "watched folder": lambda sources, root, peers: harness.run_watched_folder(sources, root, destinations=peers),
    "dry-run": lambda sources, root, peers: harness.run_dry_run(sources, root),
    "listener (storescu), edited": lambda sources, root, peers: harness.run_listener(
        "storescu", sources, root, harness.ROUTE_ALL_EDITED, destinations=peers),
    "dry-run, edited": lambda sources, root, peers: harness.run_dry_run(sources, root, harness.ROUTE_ALL_EDITED),
}
assert tuple(INTAKES) == results.INTAKE_ORDER


class Runs:
    """The runs of the session; the three destinations are started once, for all of them."""

    def __init__(self, factory):
        self.factory = factory
        self.sources = corpus(factory.mktemp("generated"))
        self._runs: dict[str, harness.IntakeRun] = {}
        self.peers: harness.Destinations | None = None

    def get(self, intake: str) -> harness.IntakeRun:
        if intake not in self._runs:
            if self.peers is None and not intake.startswith("dry-run"):
                self.peers = harness.Destinations(self.factory.mktemp("peers")).start()
            folder = self.factory.mktemp("".join(c if c.isalnum() else "-" for c in intake))
            run = INTAKES[intake](self.sources, folder, self.peers)
            run.intake = intake
            self._runs[intake] = run
        return self._runs[intake]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    made = Runs(tmp_path_factory)
    yield made
    if made.peers is not None:
        made.peers.stop()


def pytest_sessionfinish(session) -> None:
    """In the process that ran the matrix (a worker, under pytest-xdist); the root conftest prints it."""
    if not results.ROWS:
        return
    results.write()
    summaries.write("conformance matrix",
                    [*results.totals(results.ROWS), f"results table: {results.RESULTS_FILE}"])
