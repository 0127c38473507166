"""Fixtures of the runtime's unit tests."""

from __future__ import annotations

import pytest

from helpers.peers import StoreSCP
from rulesengine.runtime.journal import SQLiteJournal


@pytest.fixture
def storescp_factory(tmp_path):
    started: list[StoreSCP] = []

    def start(*options: str) -> StoreSCP:
        peer = StoreSCP(tmp_path / f"received-{len(started)}", extra=("-v", *options)).start()
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def open_journal(request, tmp_path):
    """(node, process) -> a journal of its own connections, all on one database (SQLite, or
    PostgreSQL on the tests' server): as the processes and nodes of one router cluster open it."""
    opened = []
    if request.param == "sqlite":
        path = str(tmp_path / "journal.sqlite")

        def open_one(node: str, process: int):
            opened.append(SQLiteJournal(path, node=node, process=process))
            return opened[-1]
    else:
        from rulesengine.runtime.journal.postgres import PostgresJournal
        url = request.getfixturevalue("postgres").new_schema()

        def open_one(node: str, process: int):
            opened.append(PostgresJournal(url, node=node, process=process))
            return opened[-1]
    yield open_one
    for journal in opened:
        journal.close()
