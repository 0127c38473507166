"""The crash suite: the router killed under load, as real processes (DCMTK storescu senders,
`dicom-rules run`, DCMTK storescp as the destination). What it checks: nothing a sender saw
acknowledged is lost, and the journal ends settled (nothing `accepted`, nothing `sending`)."""

from __future__ import annotations

import threading

import pytest

from helpers.peers import StoreSCP, free_port
from helpers.senders import Sender


@pytest.fixture
def storescp(tmp_path):
    peer = StoreSCP(tmp_path / "storescp").start()
    yield peer
    peer.stop()


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def senders(tmp_path, port):
    """Start(n) senders on the router's port; they are stopped and joined after the test."""
    stop = threading.Event()
    started: list[Sender] = []

    def start(count: int) -> list[Sender]:
        for number in range(count):
            sender = Sender(port, tmp_path / f"sent-{number}", f"CT{number}", stop)
            sender.start()
            started.append(sender)
        return started

    start.stop = stop
    yield start
    stop.set()
    for sender in started:
        sender.join(180)
