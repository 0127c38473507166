"""`dicom-rules replay` SIGKILLed between linking the retained files into the spool and
recording the replay: the moment is made certain by holding the journal's write lock, so that
the replay waits to record with its links made. The replay did not happen: the router's next
start removes its files (the retained originals stay) instead of routing them again without a
record; asked again, the replay is recorded and delivered once. No instance is lost, none is
routed twice without a record, nothing stays accepted."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from helpers.instances import make_instances
from helpers.peers import RouterProcess, free_port, storescu, wait_until

from rulesengine.cli import main as cli_main

RULES = 'rule "everything to the PACS" {\n  then route to PACS\n}\n'


def config(port: int) -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nretention: {{delivered: 1d}}\nlisteners:\n"
            f"  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            "destinations:\n  PACS: {type: folder, path: out/pacs}\n")


def rows(storage: Path, query: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(storage / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query).fetchall()


def replay_files(storage: Path) -> list[Path]:
    return sorted((storage / "spool" / "in").glob("replay-*"))


def replay(router_yaml: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rulesengine", "replay", str(router_yaml), "--since", "1h"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_replay_killed_before_it_is_recorded_did_not_happen_and_can_be_asked_again(tmp_path):
    port = free_port()
    (tmp_path / "main.rules").write_text(RULES, encoding="utf-8")
    router_yaml = tmp_path / "router.yaml"
    router_yaml.write_text(config(port), encoding="utf-8")
    storage = tmp_path / "var"
    router = RouterProcess(router_yaml, port).start()
    sent = make_instances(tmp_path / "sent", 3)
    assert storescu(port, [instance.path for instance in sent]).returncode == 0
    wait_until(lambda: len(rows(storage, "SELECT id FROM deliveries WHERE state='delivered'")) == 3,
               what="the three deliveries")
    assert router.stop() == 0

    with closing(sqlite3.connect(storage / "journal.sqlite", timeout=30, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # the replay links its files, then waits here to record them
        interrupted = replay(router_yaml)
        try:
            wait_until(lambda: len(replay_files(storage)) == 3 or interrupted.poll() is not None, timeout=30,
                       interval=0.02, what="the replay's links in the spool")
            assert interrupted.poll() is None, interrupted.communicate()[0]
        finally:
            interrupted.send_signal(signal.SIGKILL)
            interrupted.wait(10)
        holder.execute("ROLLBACK")
    assert rows(storage, "SELECT * FROM replays") == [] and len(replay_files(storage)) == 3

    router.start()
    wait_until(lambda: "replay interrupted before it was recorded" in router.output(), timeout=30,
               what="the interrupted replay's files removed")
    assert "removed 3 spool file(s) of a replay interrupted before it was recorded" in router.output()
    assert replay_files(storage) == [] and len(rows(storage, "SELECT id FROM instances")) == 3  # not routed again
    assert all(Path(row["path"]).is_file() for row in rows(storage, "SELECT path FROM instances"))  # retained

    assert cli_main(["replay", str(router_yaml), "--since", "1h"]) == 0  # asked again, beside the router
    wait_until(lambda: len(rows(storage, "SELECT id FROM deliveries WHERE state='delivered'")) == 6, timeout=30,
               what="the replay delivered")
    [recorded] = rows(storage, "SELECT * FROM replays")
    assert len(rows(storage, f"SELECT id FROM instances WHERE replay_id = {recorded['id']}")) == 3
    assert rows(storage, "SELECT id FROM instances WHERE state = 'accepted'") == []
    assert "Traceback" not in router.output()
    assert router.stop() == 0
