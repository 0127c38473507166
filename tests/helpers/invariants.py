"""The journal's invariant, checked by every suite that runs instances through the router
(pipeline, crash, conformance, fuzz): after processing, every instance the journal holds is
settled, each in one of these ways, and nothing is left half-done.

- routed: processed, with at least one delivery, each delivered, queued, retrying or dead
  (never left `sending` once the router is idle), whose file exists while it is not delivered;
- dropped or rejected: done, with nothing kept;
- quarantined: done, its file in the quarantine folder with a .json giving the reason.

No instance stays `accepted`, and the spool's temporary folder is empty once the router
has stopped.

    from helpers.invariants import assert_settled
    counts = assert_settled(tmp_path / "var")   # {"routed": 3, "quarantined": 1, ...}
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

SETTLED_DELIVERY_STATES = {"delivered", "queued", "retrying", "dead"}


def journal_rows(storage: Path | str, query: str, args: tuple = ()) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(Path(storage) / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query, args).fetchall()


def unsettled(storage: Path | str, sending_allowed: bool = False, temporaries_allowed: bool = False) -> list[str]:
    """What breaks the invariant, one line each; empty when everything is settled."""
    storage = Path(storage)
    problems = []
    deliveries: dict[int, list[sqlite3.Row]] = {}
    for row in journal_rows(storage, "SELECT * FROM deliveries ORDER BY id"):
        deliveries.setdefault(row["instance_id"], []).append(row)
    quarantine = storage / "quarantine"
    for row in journal_rows(storage, "SELECT * FROM instances ORDER BY id"):
        name = f"instance {row['id']} ({row['sop_instance_uid']})"
        state, outcome, mine = row["state"], row["outcome"], deliveries.get(row["id"], [])
        if state == "accepted":
            problems.append(f"{name} is still accepted, never processed")
        elif state == "processed":
            if outcome != "route" or not mine:
                problems.append(f"{name} is processed with outcome {outcome} and {len(mine)} deliveries")
        elif state == "done":
            if outcome == "quarantine":
                problems += _quarantine_problems(name, row, quarantine)
            elif outcome not in ("drop", "reject"):
                problems.append(f"{name} is done with outcome {outcome}")
            if mine:
                problems.append(f"{name} ended with outcome {outcome} yet has deliveries")
        else:
            problems.append(f"{name} is in an unknown state {state}")
        for delivery in mine:
            where = f"{name}: delivery {delivery['id']} to {delivery['destination']}"
            if delivery["state"] == "sending" and not sending_allowed:
                problems.append(f"{where} is still sending")
            elif delivery["state"] not in SETTLED_DELIVERY_STATES | {"sending"}:
                problems.append(f"{where} is in an unknown state {delivery['state']}")
            elif delivery["state"] != "delivered" and delivery["path"] and not os.path.exists(delivery["path"]):
                problems.append(f"{where} is {delivery['state']} but its file {delivery['path']} is gone")
    temporary = storage / "spool" / "tmp"
    if not temporaries_allowed and temporary.is_dir():
        left = sorted(p.name for p in temporary.iterdir())
        if left:
            problems.append(f"files left in spool/tmp: {left}")
    return problems


def _quarantine_problems(name: str, row: sqlite3.Row, quarantine: Path) -> list[str]:
    path = row["path"]
    if not path or not os.path.isfile(path):
        return [f"{name} is quarantined but its file {path} is missing"]
    if quarantine.resolve() not in Path(path).resolve().parents:
        return [f"{name} is quarantined outside the quarantine folder: {path}"]
    try:
        info = json.loads(Path(path + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{name} is quarantined without a readable .json: {exc}"]
    if not info.get("reason") or info["reason"] != row["reason"]:
        return [f"{name} is quarantined with reason {info.get('reason')!r}, the journal says {row['reason']!r}"]
    return []


def settled_counts(storage: Path | str) -> Counter:
    """How the instances ended: routed (delivered / waiting / dead deliveries), dropped,
    rejected, quarantined."""
    counts: Counter = Counter()
    states: dict[int, set[str]] = {}
    for delivery in journal_rows(storage, "SELECT instance_id, state FROM deliveries"):
        states.setdefault(delivery["instance_id"], set()).add(delivery["state"])
    for row in journal_rows(storage, "SELECT id, state, outcome FROM instances"):
        if row["outcome"] == "route" and row["state"] == "processed":
            mine = states.get(row["id"], set())
            counts["delivered" if mine == {"delivered"} else "dead" if "dead" in mine else "queued"] += 1
        else:
            counts[{"drop": "dropped", "reject": "rejected", "quarantine": "quarantined"}.get(
                row["outcome"], row["state"])] += 1
    return counts


def assert_settled(storage: Path | str, sending_allowed: bool = False, temporaries_allowed: bool = False) -> Counter:
    """Fail with every problem found; return how the instances ended (see settled_counts)."""
    problems = unsettled(storage, sending_allowed, temporaries_allowed)
    assert not problems, "the journal is not settled:\n  " + "\n  ".join(problems)
    return settled_counts(storage)
