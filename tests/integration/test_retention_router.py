"""The router as a process: received instances retained after delivery survive a restart (the
start-up sweep keeps them, nothing is sent twice) and `dicom-rules cleanup` removes them once
their time is up; below storage_min_free a C-STORE is refused with Out of Resources and
nothing is stored."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pydicom
from helpers.cli import dicom_rules
from helpers.files import SAMPLES
from helpers.peers import DCMTK_ENV, RouterProcess, free_port, require, storescu, wait_until

from rulesengine.cli import main as cli_main
from rulesengine.runtime.disk_space import DISK_LOW_COMMENT

ROUTE_ALL = 'rule "all" {\n  then route to ARCHIVE\n}\n'


def config(port: int, archive_port: int, extra: str) -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\n{extra}\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            f"destinations:\n  ARCHIVE: {{type: dicom, ae_title: ARCHIVE, host: 127.0.0.1, port: {archive_port}}}\n")


def journal_rows(storage: Path, query: str) -> list[dict]:
    db = sqlite3.connect(storage / "journal.sqlite", timeout=10)
    try:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(query)]
    finally:
        db.close()


def spool_files(storage: Path) -> list[Path]:
    return sorted(p for p in (storage / "spool").rglob("*") if p.is_file())


def test_a_retained_instance_survives_a_restart_and_the_cleanup_command_removes_it_later(
        router_factory, storescp, tmp_path, port, capsys, monkeypatch):
    router = router_factory(config(port, storescp.port, "retention: {delivered: 7d}"), ROUTE_ALL, port)
    storage = tmp_path / "var"
    sent = storescu(port, [SAMPLES / "ct_head.dcm"])
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: journal_rows(storage, "SELECT state FROM deliveries") == [{"state": "delivered"}],
               what="the delivery")
    [instance] = journal_rows(storage, "SELECT path, retained_until FROM instances")
    assert instance["retained_until"] > time.time() + 6 * 86400
    assert spool_files(storage) == [Path(instance["path"])]

    router.stop()
    restarted = RouterProcess(tmp_path / "router.yaml", port).start()
    try:
        restarted.wait_for_log("rules ")
        assert "had no journal entry" not in restarted.output()
        assert spool_files(storage) == [Path(instance["path"])]  # kept by the start-up sweep
    finally:
        restarted.stop()
    assert len(storescp.files()) == 1  # sent once

    shown = dicom_rules("cleanup", tmp_path / "router.yaml", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^retained\s+0 file\(s\)\s+0 B\s+\(retention.delivered 7d\)$", shown.stdout, re.M), shown.stdout
    assert shown.stdout.rstrip().endswith("would remove 0 file(s), 0 B")

    monkeypatch.setattr("rulesengine.cli.cleanup.clock", lambda: time.time() + 8 * 86400)
    assert cli_main(["cleanup", str(tmp_path / "router.yaml"), "-v"]) == 0
    listed = capsys.readouterr().out
    size = Path(instance["path"]).stat().st_size
    assert f"    {instance['path']}\n" in listed and "would remove 1 file(s)" in listed
    assert spool_files(storage) == [Path(instance["path"])]  # shown, not removed
    assert cli_main(["cleanup", str(tmp_path / "router.yaml"), "--apply"]) == 0
    applied = capsys.readouterr().out
    assert applied.rstrip().endswith(f"removed 1 file(s), {size / 1000:.1f} kB") and spool_files(storage) == []
    assert journal_rows(storage, "SELECT retained_until FROM instances") == [{"retained_until": None}]


def test_below_storage_min_free_a_store_is_refused_and_nothing_is_kept(router_factory, storescp, tmp_path, port):
    router = router_factory(config(port, storescp.port, "storage_min_free: 100%"), ROUTE_ALL, port)
    storage = tmp_path / "var"
    refused = subprocess.run([require("storescu"), "-d", "-aet", "CT1", "-aec", "ROUTER", "127.0.0.1", str(port),
                              str(SAMPLES / "ct_head.dcm")], env=DCMTK_ENV, capture_output=True, text=True,
                             errors="replace", timeout=60, check=False)
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", refused.stderr)
    assert status and int(status.group(1), 16) == 0xA700, refused.stderr
    assert f"[{DISK_LOW_COMMENT}]" in refused.stderr
    router.wait_for_log("the disk of the router's storage is low")
    assert "storage_min_free is 100%; new instances are refused until space is back" in router.output()
    assert journal_rows(storage, "SELECT id FROM instances") == []
    assert spool_files(storage) == []
    assert storescp.files() == []
    assert str(pydicom.dcmread(SAMPLES / "ct_head.dcm").SOPInstanceUID) not in router.output()


def test_sync_mode_keeps_what_every_destination_has_and_nothing_its_sender_is_told_failed(
        router_factory, storescp, tmp_path, port):
    text = config(port, storescp.port, "retention: {delivered: 7d}").replace(
        "port: " + str(port) + "}", "port: " + str(port) + ", mode: sync}")
    text = text.replace("destinations:\n", f"destinations:\n  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, "
                        f"port: {free_port()}, timeouts: {{connect: 2}}}}\n")
    rules = ('rule "to the archive" {\n  when DataSet.Modality == "CT"\n  then route to ARCHIVE\n}\n'
             'rule "to nowhere" {\n  when DataSet.Modality == "MR"\n  then route to DOWN\n}\n')
    router_factory(text, rules, port)
    storage = tmp_path / "var"
    delivered = storescu(port, [SAMPLES / "ct_head.dcm"])
    assert delivered.returncode == 0, delivered.stderr
    [kept] = journal_rows(storage, "SELECT path, retained_until FROM instances WHERE retained_until IS NOT NULL")
    assert kept["retained_until"] > time.time() + 6 * 86400
    assert Path(kept["path"]).parent == storage / "spool" / "in"
    assert spool_files(storage) == [Path(kept["path"])]
    assert pydicom.dcmread(kept["path"]).SOPInstanceUID == pydicom.dcmread(SAMPLES / "ct_head.dcm").SOPInstanceUID
    failed = storescu(port, [SAMPLES / "mr_knee.dcm"])  # to DOWN: the sender is answered with a failure
    assert failed.returncode != 0 or "0xa700" in (failed.stdout + failed.stderr).lower(), failed.stderr
    assert len(journal_rows(storage, "SELECT id FROM instances")) == 2
    assert spool_files(storage) == [Path(kept["path"])]  # the failed one is not kept
