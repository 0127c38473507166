"""The fuzzing campaign of `make test`: a few hundred mutated files, run once per session
when a test first needs it; its counts are printed at the end."""

from __future__ import annotations

import pytest

from helpers import summaries

from . import campaign

SEED = 6
COUNT = 560  # 40 of each kind of mutation: about a minute

_RUNS: list[campaign.Campaign] = []


@pytest.fixture(scope="session")
def fuzzed(tmp_path_factory) -> campaign.Campaign:
    result = campaign.run(SEED, COUNT, tmp_path_factory.mktemp("fuzz"))
    _RUNS.append(result)
    return result


def pytest_sessionfinish(session) -> None:
    """In the process that ran the campaign (a worker, under pytest-xdist); the root conftest prints it."""
    for result in _RUNS:
        summaries.write(f"fuzz: {result.count} files, seed {result.seed}, {result.seconds:.0f} s",
                        result.table().splitlines())
