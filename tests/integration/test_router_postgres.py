"""The router with its journal in PostgreSQL (`journal: postgresql://...`): `dicom-rules run`
in its own process, storescu sending, storescp receiving, and the journal read in the database."""

from __future__ import annotations

import psycopg

from helpers.cli import dicom_rules
from helpers.peers import ROOT, RouterProcess, StoreSCP, free_port, storescu, wait_until

SAMPLES = ROOT / "examples" / "samples"
PASSWORD = "router-Pa55-word"


def test_the_router_journals_in_postgresql_and_delivers(tmp_path, postgres, monkeypatch):
    database = f"router_e2e_{free_port()}"
    postgres.admin("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'router_e2e') THEN "
                   f"CREATE ROLE router_e2e LOGIN PASSWORD '{PASSWORD}'; END IF; END $$",
                   f"CREATE DATABASE {database} OWNER router_e2e TEMPLATE template0")
    monkeypatch.setenv("ROUTER_JOURNAL_PASSWORD", PASSWORD)  # the router's processes inherit it
    archive = StoreSCP(tmp_path / "archive").start()
    port = free_port()
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to ARCHIVE\n}\n', encoding="utf-8")
    config = tmp_path / "router.yaml"
    config.write_text(
        f"storage: var\nprocesses: 1\nrules: main.rules\n"
        f"journal: postgresql://router_e2e@127.0.0.1:{postgres.port}/{database}\n"
        f"journal_password_env: ROUTER_JOURNAL_PASSWORD\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
        f"destinations:\n  ARCHIVE: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {archive.port}}}\n",
        encoding="utf-8")
    router = RouterProcess(config, port).start()
    try:
        files = [SAMPLES / "ct_chest.dcm", SAMPLES / "ct_head.dcm", SAMPLES / "mr_knee.dcm"]
        sent = storescu(port, files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(lambda: len(archive.files()) == 3, timeout=60, what="three instances at the archive")
        with psycopg.connect(postgres.url(database)) as db:
            def delivered():
                return db.execute("SELECT COUNT(*) FROM deliveries WHERE destination = 'ARCHIVE' "
                                  "AND state = 'delivered'").fetchone()[0] == 3
            wait_until(delivered, timeout=30, what="three deliveries journaled as delivered")
            assert db.execute("SELECT calling_aet, outcome FROM instances ORDER BY id").fetchall() == [
                ("CT1", "route")] * 3
            assert db.execute("SELECT node FROM router_status").fetchall() != []  # its heartbeat
        assert not (tmp_path / "var" / "journal.sqlite").exists()  # no SQLite beside it
        queue = dicom_rules("queue", config, cwd=tmp_path)
        assert queue.returncode == 0 and "ARCHIVE" in queue.stdout, queue.stdout + queue.stderr
        assert PASSWORD not in router.output()
    finally:
        assert router.stop() == 0, router.output()
        archive.stop()
