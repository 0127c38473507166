"""The protocol-abuse suite's router: one real router process for the whole package (its
listeners and what it may keep after a test: protocol/router.py)."""

from __future__ import annotations

import pytest

from .router import Router


@pytest.fixture(scope="package")
def router(tmp_path_factory):
    router = Router(tmp_path_factory.mktemp("protocol"))
    yield router
    router.stop()
