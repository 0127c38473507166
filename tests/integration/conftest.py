"""Fixtures for the integration tests: peers started per test, on free loopback ports."""

from __future__ import annotations

import pytest

from helpers.peers import Orthanc, RouterProcess, StoreSCP, free_port


@pytest.fixture
def orthanc(tmp_path):
    peer = Orthanc(tmp_path / "orthanc").start()
    yield peer
    peer.stop()


@pytest.fixture
def storescp(tmp_path):
    peer = StoreSCP(tmp_path / "storescp").start()
    yield peer
    peer.stop()


@pytest.fixture
def router_factory(tmp_path):
    """Write a configuration and rules into tmp_path and start the router on them."""
    started: list[RouterProcess] = []

    def start(config: str, rules: str, port: int | None = None, files: dict[str, str] | None = None):
        (tmp_path / "main.rules").write_text(rules, encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text, encoding="utf-8")
        (tmp_path / "router.yaml").write_text(config, encoding="utf-8")
        router = RouterProcess(tmp_path / "router.yaml", port).start()
        started.append(router)
        return router

    yield start
    for router in started:
        if router.process is not None and router.process.poll() is None:
            router.stop()


@pytest.fixture
def port():
    return free_port()
