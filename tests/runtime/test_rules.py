"""A rule set without rules (an empty file, a library of blocks) is refused as the router's rule
file: by `run` at start, by hot reload (the running rules stay), by `check-config`; `lint`
still takes a library file."""

from __future__ import annotations

import logging

import pytest
from helpers.cli import dicom_rules
from helpers.files import write

from rulesengine.config import load_config
from rulesengine.runtime.rules import NoRulesError, RulesHolder

ROUTING = 'rule "all" {\n  then route to PACS\n}\n'
LIBRARY = 'block tidy {\n  set DataSet.InstitutionName = "H"\n}\n'
RULELESS = {"empty": "", "comments only": "# nothing yet\n", "a library of blocks": LIBRARY}

CONFIG = """
storage: var
processes: 1
rules: main.rules
destinations:
  PACS: {type: folder, path: out}
"""


@pytest.fixture
def config(run_in):
    write(run_in / "router.yaml", CONFIG)
    write(run_in / "main.rules", ROUTING)
    return run_in / "router.yaml"


@pytest.mark.parametrize("text", RULELESS.values(), ids=RULELESS.keys())
def test_run_refuses_a_rule_file_without_rules(config, text):
    write(config.parent / "main.rules", text)
    result = dicom_rules("run", "router.yaml", timeout=60)  # a router that started would run until the timeout
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(
        "dicom-rules: router.yaml: rules: main.rules has no rules: the router would route nothing (a file of "
        "blocks is imported by a rule file, not run)"), result.stderr
    assert "router running" not in result.stderr


@pytest.mark.parametrize("text", RULELESS.values(), ids=RULELESS.keys())
def test_check_config_reports_a_rule_file_without_rules(config, text):
    write(config.parent / "main.rules", text)
    result = dicom_rules("check-config", "router.yaml")
    assert result.returncode == 1
    assert "error config router.yaml: rules: main.rules has no rules" in result.stdout
    assert result.stderr.strip() == "1 error, 0 warnings"


def test_lint_still_takes_a_library_of_blocks(run_in):
    write(run_in / "library.rules", LIBRARY)
    result = dicom_rules("lint", "library.rules")
    assert (result.returncode, result.stdout, result.stderr.strip()) == (0, "", "0 errors, 0 warnings")


@pytest.mark.parametrize("text", RULELESS.values(), ids=RULELESS.keys())
def test_a_reload_to_a_rule_file_without_rules_keeps_the_running_rules(config, text, caplog):
    holder = RulesHolder(load_config(config))
    running = holder.current
    write(config.parent / "main.rules", text)
    with caplog.at_level(logging.ERROR, logger="rulesengine.rules"):
        assert not holder.reload()
    assert holder.current is running
    assert [record.getMessage() for record in caplog.records] == [
        f"{config}: rules: main.rules has no rules: the router would route nothing (a file of blocks is imported "
        f"by a rule file, not run); the running rules (version {running.version}) stay in place"]
    write(config.parent / "main.rules", ROUTING.replace("all", "everything"))
    assert holder.reload() and holder.current.version != running.version


def test_a_router_never_starts_without_rules(config):
    write(config.parent / "main.rules", LIBRARY)
    with pytest.raises(NoRulesError):
        RulesHolder(load_config(config))
