"""The router SIGKILLed while a group fires: after its worker claimed the group (its lease in
the journal) and before the group's deliveries are queued. The moment is made certain, not
waited for: one member's spool file is swapped for a named pipe before the group is due, so
the worker that fires it blocks reading that member as it writes the member's edited copy (the
headers the rules read are kept in the journal and in memory: only a copy reads the file),
holding its claim; the test kills the
router there, puts the file back, and starts it again. Once the lease expires the group fires
again, and every acknowledged instance of it is delivered (duplicates would be allowed, losses
not); nothing stays leased, nothing in the spool is left behind."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

from helpers.instances import make_study, received_by_uid
from helpers.peers import RouterProcess, free_port, storescu, wait_until

RULES = """
rule "whole study to the store" per study {
  complete after 2s
  when count() >= 4
  then {
    set DataSet.InstitutionName = "GROUPED"
    route to STORE
  }
}
"""


def config(port: int, peer_port: int) -> str:
    return f"""
storage: var
processes: 1
rules: main.rules
journal_lease_seconds: 2
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  STORE: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {peer_port},
           retry: {{delay: 0.2, multiplier: 1, max_attempts: 1000}}}}
"""


def rows(tmp_path: Path, query: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query).fetchall()


def worker_pids(router: RouterProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker process (\d+) started", router.output())]


def test_a_router_killed_while_a_group_fires_delivers_the_whole_group_after_a_restart(tmp_path, storescp):
    port = free_port()
    (tmp_path / "main.rules").write_text(RULES, encoding="utf-8")
    (tmp_path / "router.yaml").write_text(config(port, storescp.port), encoding="utf-8")
    router = RouterProcess(tmp_path / "router.yaml", port).start()
    files = [instance.path for instance in make_study(tmp_path / "study", [("Axial T2", 2, 1), ("Sag T1", 2, 2)])]
    assert storescu(port, files).returncode == 0  # acknowledged: each must reach the store
    wait_until(lambda: rows(tmp_path, "SELECT COUNT(*) AS n FROM group_members")[0]["n"] == 4, timeout=20,
               what="the four instances held in their group")

    # The last member's spool file becomes a named pipe: reading it blocks the worker that fires.
    [last] = rows(tmp_path, "SELECT i.path FROM instances i JOIN group_members m ON m.instance_id = i.id "
                            "ORDER BY i.id DESC LIMIT 1")
    spooled = Path(last["path"])
    content = spooled.read_bytes()
    spooled.unlink()
    os.mkfifo(spooled)
    wait_until(lambda: rows(tmp_path, "SELECT lease_owner FROM groups WHERE lease_owner IS NOT NULL"), timeout=20,
               interval=0.02, what="the group claimed by the worker firing it")
    assert rows(tmp_path, "SELECT * FROM deliveries") == []  # claimed, nothing queued yet
    for pid in worker_pids(router):
        os.kill(pid, signal.SIGKILL)
    router.kill()
    router.process.wait(10)

    spooled.unlink()
    spooled.write_bytes(content)
    router.start()
    wait_until(lambda: len(received_by_uid(storescp.folder)) == 4, timeout=60,
               what="the whole group delivered after the restart")
    wait_until(lambda: {row["state"] for row in rows(tmp_path, "SELECT state FROM deliveries")} == {"delivered"},
               timeout=30, what="every delivery recorded as delivered")
    [group] = rows(tmp_path, "SELECT * FROM groups")
    assert group["state"] == "fired" and group["lease_owner"] is None and group["lease_expires"] is None
    assert len(rows(tmp_path, "SELECT * FROM deliveries")) == 4  # fired once, whole, after the crash
    assert "Traceback" not in router.output()
    assert router.stop() == 0
    spool = tmp_path / "var" / "spool"
    assert [path for path in spool.rglob("*") if path.is_file()] == []  # nothing of the group left behind
