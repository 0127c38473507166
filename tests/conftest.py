"""Fixtures shared by every test; which module tests which part is in tests/README.md.

Shared helpers (files, the CLI, peers, instances) are in tests/helpers and imported from
there (`from helpers.files import SAMPLES`): tests/ is on the path (pyproject's pytest
`pythonpath`), and no test module imports a conftest or another test module."""

from __future__ import annotations

import os

import pytest

from helpers import summaries
from helpers.files import SAMPLES
from rulesengine import Arrival, Document


@pytest.fixture
def ct_document() -> Document:
    return Document.read(SAMPLES / "ct_chest.dcm", Arrival(calling_aet="CT1", called_aet="ROUTER",
                                                            source_name="main", source_kind="listener"))


@pytest.fixture
def run_in(tmp_path, monkeypatch):
    """Work inside tmp_path, so findings show short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


os.environ.setdefault("PYTHONIOENCODING", "utf-8")


def pytest_configure(config) -> None:
    summaries.clear_stale(config)


def pytest_terminal_summary(terminalreporter) -> None:
    summaries.print_all(terminalreporter)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the tests' own (helpers/postgres.py), started at the first test
    that needs it and stopped after the last."""
    from helpers.postgres import start_postgres
    server = start_postgres()
    yield server
    server.stop()
