"""dicom-rules cleanup: what the retention settings would remove now, and removing it (--apply)."""

from __future__ import annotations

import json
import sys
import time

from ..config import format_duration, load_config
from ..runtime.cleanup import KINDS, LOCK_NAME, Cleanup, CleanupPlan
from ..runtime.disk_space import in_bytes
from ..runtime.storage import Storage
from .common import EXIT_FINDINGS, EXIT_OK, require_journal

clock = time.time  # what "now" is (tests move it instead of waiting for files to age)

_SETTING = {"retained": "retention.delivered", "quarantine": "retention.quarantine", "done": "retention.done",
            "failed": "retention.failed"}


def add_cleanup_command(sub) -> None:
    cleanup = sub.add_parser("cleanup", help="show what the retention settings remove now; remove it with --apply")
    cleanup.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    cleanup.add_argument("--apply", action="store_true",
                         help="remove it (without it, nothing is removed: a dry run)")
    cleanup.add_argument("-v", "--verbose", action="store_true", help="list the files too")
    cleanup.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    cleanup.set_defaults(func=cmd_cleanup)


def cmd_cleanup(args) -> int:
    config = load_config(args.config, secrets=False)
    require_journal(config)
    storage = Storage.of(config)
    journal = storage.journal()
    cleanup = Cleanup(storage, journal, config.retention, config.watch, clock=lambda: clock())
    if not args.apply:
        plan = cleanup.plan()
        _print(plan, args, "would remove")
        return EXIT_OK
    lock = journal.try_exclusive(LOCK_NAME)
    if lock is None:
        print("dicom-rules: a cleanup is running on this storage folder (a router's); nothing removed, try again "
              "in a minute", file=sys.stderr)
        return EXIT_FINDINGS
    try:
        removed = cleanup.run()
    finally:
        lock.release()
    _print(removed, args, "removed")
    return EXIT_OK


def _print(plan: CleanupPlan, args, verb: str) -> None:
    if args.format == "json":
        print(json.dumps({"applied": bool(args.apply), **plan.to_json(files=args.verbose)}, indent=2))
        return
    for kind in KINDS:
        seconds = plan.configured.get(kind)
        if kind == "retained":
            setting = f"{_SETTING[kind]} {format_duration(seconds)}" if seconds else f"{_SETTING[kind]} 0: not retained"
        else:
            setting = f"{_SETTING[kind]} {format_duration(seconds)}" if seconds is not None else \
                f"{_SETTING[kind]} not set: kept"
        print(f"{kind:<11}{plan.count(kind):>8} file(s) {in_bytes(plan.size(kind)):>10}   ({setting})")
        if args.verbose:
            for removal in plan.removals[kind]:
                note = "  (a dead delivery still names it: kept with it, retention ends)" if removal.needed else ""
                print(f"    {removal.path}{note}")
    count, size = plan.total()
    tail = "" if args.apply or not count else "; --apply removes them"
    print(f"{verb} {count} file(s), {in_bytes(size)}{tail}")
