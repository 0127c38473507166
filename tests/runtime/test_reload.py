"""Router.swap_rules, what both hot reload and a changed configuration go through: new rules
and a new configuration are put in place together, or nothing changes."""

from __future__ import annotations

import pytest
from helpers.files import write

from rulesengine.config import load_config
from rulesengine.runtime.service import Router

CONFIG = """
storage: var
processes: 1
rules: main.rules
destinations:
  PACS: {type: folder, path: out}
"""
ROUTING = 'rule "all" {\n  then route to PACS\n}\n'
TO_ARCHIVE = 'rule "all" {\n  then route to ARCHIVE\n}\n'
WITH_ARCHIVE = CONFIG + "  ARCHIVE: {type: folder, path: archive}\n"


@pytest.fixture
def router(run_in):
    write(run_in / "router.yaml", CONFIG)
    write(run_in / "main.rules", ROUTING)
    router = Router(load_config(run_in / "router.yaml"))  # not started: no worker process to tell
    yield router
    router.journal.close()


def test_changed_rule_files_are_swapped_in(router, run_in):
    running = router.rules.current
    write(run_in / "main.rules", ROUTING.replace("all", "everything"))
    assert router.swap_rules()
    assert router.rules.current.version != running.version


def test_rules_that_do_not_compile_change_nothing(router, run_in):
    running, config = router.rules.current, router.config
    write(run_in / "main.rules", TO_ARCHIVE)  # ARCHIVE is not a destination of the configuration
    assert not router.swap_rules()
    assert (router.rules.current, router.config) == (running, config)


def test_a_changed_configuration_comes_in_with_the_rules_it_compiles(router, run_in):
    write(run_in / "main.rules", TO_ARCHIVE)
    write(run_in / "router.yaml", WITH_ARCHIVE)
    changed = load_config(run_in / "router.yaml")
    router.apply_config(changed)
    assert router.config is changed and router.rules.config is changed
    assert "ARCHIVE" in router.rules.current.destinations
