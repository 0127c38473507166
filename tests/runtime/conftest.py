"""Fixtures of the runtime's unit tests."""

from __future__ import annotations

import pytest

from helpers.peers import StoreSCP


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
