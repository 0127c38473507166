"""`dicom-rules cleanup CONFIG [--apply] [-v] [--format json]` on a real configuration and real
files: what the retention settings remove now, by kind with counts and bytes, removed only
with --apply; refused without a journal, and while another cleanup runs. The command's clock
is moved (rulesengine.cli.cleanup.clock) to age files instead of waiting."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.cli import dicom_rules
from helpers.files import write

from rulesengine.cli import main
from rulesengine.config import load_config
from rulesengine.runtime.cleanup import LOCK_NAME
from rulesengine.runtime.storage import Storage

DAY = 86400

CONFIG = """storage: var
rules: main.rules
retention: {quarantine: 30d, done: 7d}
watch:
  - {name: inbox, path: inbox}
destinations:
  PACS: {type: folder, path: out}
"""


@pytest.fixture
def site(tmp_path):
    """A configuration whose storage has a journal, a quarantined instance, and files in done/ and failed/."""
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    storage = Storage.of(load_config(tmp_path / "router.yaml"))
    storage.journal().close()
    write(tmp_path / "var" / "quarantine" / "20261101" / "1.2.3.dcm", "q" * 100)
    write(tmp_path / "var" / "quarantine" / "20261101" / "1.2.3.dcm.json", "{}")
    write(tmp_path / "inbox" / "done" / "study" / "a.dcm", "d" * 1000)
    write(tmp_path / "inbox" / "failed" / "b.dcm", "f" * 10)
    return tmp_path


def run(site: Path, *args: str, days: float = 0, monkeypatch=None, capsys=None) -> tuple[int, str, str]:
    monkeypatch.setattr("rulesengine.cli.cleanup.clock", lambda: time.time() + days * DAY)
    code = main(["cleanup", str(site / "router.yaml"), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_it_shows_what_would_go_by_kind_and_removes_nothing(site, monkeypatch, capsys):
    code, out, _ = run(site, "-v", days=8, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    assert out.splitlines() == [
        "retained          0 file(s)        0 B   (retention.delivered 0: not retained)",
        "quarantine        0 file(s)        0 B   (retention.quarantine 30d)",
        "done              1 file(s)     1.0 kB   (retention.done 7d)",
        f"    {site / 'inbox' / 'done' / 'study' / 'a.dcm'}",
        "failed            0 file(s)        0 B   (retention.failed not set: kept)",
        "would remove 1 file(s), 1.0 kB; --apply removes them",
    ]
    assert (site / "inbox" / "done" / "study" / "a.dcm").exists()


def test_apply_removes_it_and_says_what_went(site, monkeypatch, capsys):
    code, out, _ = run(site, "--apply", "--format", "json", days=31, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    report = json.loads(out)
    assert report["applied"] is True
    kinds = report["kinds"]
    assert (kinds["quarantine"]["count"], kinds["quarantine"]["bytes"]) == (1, 102)
    assert (kinds["done"]["count"], kinds["done"]["bytes"]) == (1, 1000)
    assert kinds["failed"] == {"retention_seconds": None, "count": 0, "bytes": 0}
    assert kinds["done"]["retention_seconds"] == 7 * DAY
    assert not (site / "var" / "quarantine" / "20261101").exists()
    assert not (site / "inbox" / "done" / "study").exists() and (site / "inbox" / "done").is_dir()
    assert (site / "inbox" / "failed" / "b.dcm").exists()  # failed: no retention set


def test_today_nothing_is_old_enough(site):
    result = dicom_rules("cleanup", site / "router.yaml", "--apply", cwd=site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("removed 0 file(s), 0 B")
    assert (site / "inbox" / "done" / "study" / "a.dcm").exists()


def test_without_a_journal_it_says_so(tmp_path):
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    result = dicom_rules("cleanup", tmp_path / "router.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "no journal in" in result.stderr and "has the router run" in result.stderr
    assert not (tmp_path / "var").exists()  # nothing made where nothing was


def test_while_another_cleanup_runs_apply_removes_nothing(site, monkeypatch, capsys):
    journal = Storage.of(load_config(site / "router.yaml")).journal()
    held = journal.try_exclusive(LOCK_NAME)
    try:
        code, out, err = run(site, "--apply", days=31, monkeypatch=monkeypatch, capsys=capsys)
    finally:
        held.release()
        journal.close()
    assert code == 1 and out == ""
    assert "a cleanup is running on this storage folder" in err
    assert (site / "inbox" / "done" / "study" / "a.dcm").exists()


@pytest.mark.parametrize("retention, problem", [
    ("{done: 7 days}", "retention.done: '7 days' is not valid: a duration"),
    ("{done: -1d}", "retention.done: '-1d' is not valid"),
    ("{quarantine: 0}", "retention.quarantine: 0 would remove every file of quarantine at each cleanup"),
    ("{failed: 0d}", "retention.failed: 0 would remove every file of failed"),
    ("{delivered: 99999999d}", "retention.delivered: '99999999d' is more than 100 years"),
    ("{delivered: 12}", "retention.delivered: 12 is not valid"),
    ("{delivered: 1.5d}", "retention.delivered: '1.5d' is not valid"),
    ("{forever: 1d}", "retention: unknown key 'forever'"),
    ("7d", "retention: must be a mapping"),
])
def test_a_bad_retention_is_refused_naming_the_line_and_the_key(tmp_path, capsys, retention, problem):
    write(tmp_path / "router.yaml", CONFIG.replace("{quarantine: 30d, done: 7d}", retention))
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    assert main(["cleanup", str(tmp_path / "router.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"router.yaml:3: {problem}" in err, err
    assert "Traceback" not in err


def test_zero_keeps_nothing_retained(tmp_path):
    write(tmp_path / "router.yaml", CONFIG.replace("{quarantine: 30d, done: 7d}", "{delivered: 0, done: 30m}"))
    retention = load_config(tmp_path / "router.yaml").retention
    assert (retention.delivered, retention.done, retention.quarantine) == (0, 1800, None)
