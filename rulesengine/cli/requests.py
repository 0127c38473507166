"""`dicom-rules requests CONFIG`: the queries, retrievals and MPPS messages the router answered,
newest first: who asked what, which destinations answered and how, the counts, how long it
took; `purge` forgets finished ones."""

from __future__ import annotations

import json
import time

from ..config import load_config
from ..runtime.journal import Journal, Request
from ..runtime.storage import Storage
from .common import EXIT_OK, require_journal

MESSAGES = ("C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET")


def cmd_requests(args) -> int:
    journal = _journal(args.config)
    if args.action == "purge":
        older = time.time() - args.older_than if args.older_than is not None else None
        count = journal.purge_requests(older)
        print(f"purged {count} finished request{'s' * (count != 1)}")
        return EXIT_OK
    requests = journal.requests(args.message or (), args.limit)
    if args.format == "json":
        print(json.dumps([_as_json(request) for request in requests], indent=2))
    elif not requests:
        print("no requests")
    else:
        for request in requests:
            print(describe(request))
    return EXIT_OK


def _journal(config_path: str) -> Journal:
    config = load_config(config_path, secrets=False)
    require_journal(config)
    return Storage.of(config).journal()


def describe(request: Request) -> str:
    """One line: when, which message from whom, the keys, and how it ended."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(request.received_at))
    arrival = request.arrival
    asker = arrival.calling_aet or arrival.source_name or "?"
    if arrival.peer_address:
        asker += f" ({arrival.peer_address})"
    keys = " ".join(f"{key}={value}" for key, value in request.matching_keys.items())
    head = " ".join(part for part in (f"{when} #{request.id} {request.message}", request.level,
                                      f"from {asker}", keys) if part)
    if request.move_destination:
        head += f" to {request.move_destination}"
    return f"{head}: {_ending(request)}"


def _ending(request: Request) -> str:
    result = request.result
    if result is None:
        return "not finished (running, or the router stopped before it ended)"
    counts = []
    if request.message == "C-FIND":
        counts.append(f"{result.matches} match{'es' * (result.matches != 1)}")
    elif request.message in ("C-MOVE", "C-GET"):
        counts.append(f"{result.completed} completed, {result.failed} failed, {result.warning} warning")
    counts.append(f"{request.seconds:.2f} s")
    text = f"{result.outcome} (status 0x{result.status:04X}), {', '.join(counts)}"
    if result.error:
        text += f"; {result.error}"
    for answer in result.answers:
        how = answer.error or (f"status 0x{answer.status:04X}" if answer.status is not None else "no status")
        text += f"; {answer.destination}: {how}"
        if request.message == "C-FIND" and answer.error is None:
            text += f", {answer.matches} match{'es' * (answer.matches != 1)}"
    return text


def _as_json(request: Request) -> dict:
    result = request.result
    return {
        "id": request.id, "received_at": request.received_at, "finished_at": request.finished_at,
        "message": request.message, "level": request.level, "matching_keys": dict(request.matching_keys),
        "move_destination": request.move_destination,
        "from": {"calling_aet": request.arrival.calling_aet, "called_aet": request.arrival.called_aet,
                 "peer": request.arrival.peer, "listener": request.arrival.source_name},
        "sop_class_uid": request.arrival.sop_class_uid,
        "result": None if result is None else {
            "outcome": str(result.outcome), "status": result.status, "matches": result.matches,
            "completed": result.completed, "failed": result.failed, "warning": result.warning,
            "error": result.error, "destinations": [answer.to_json() for answer in result.answers]},
    }
