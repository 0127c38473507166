"""`dicom-rules replay CONFIG --since WHEN`: retained instances (retention.delivered) through
the rules again. With --dry-run, what would change against what was done the first time, in
`diff`'s words; without it, queued for processing again (runtime/replay.py), recorded as a
replay in the journal. `dicom-rules replays CONFIG` lists the replays and how far each got."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from ..config import Config, load_config
from ..document import DocumentReadError
from ..dryrun import changed_parts, diff_lines, recorded_fingerprint
from ..intake import read_instance, reason_of
from ..lang.ruleset import RuleSet
from ..runtime.journal import Instance, Journal
from ..runtime.journal.records import Replay
from ..runtime.replay import (NoRulesInPlace, RulesUnavailable, arrival_of, queue_replay, retained_between,
                              rules_from_file, rules_in_place)
from ..runtime.rules import NoRulesError
from ..runtime.storage import Storage
from .common import EXIT_FINDINGS, EXIT_OK, UsageError, require_journal

clock = time.time  # what "now" is (tests move it rather than wait)

_AGO = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WHEN_FORMS = "a date and time (2026-12-01, 2026-12-01T08:30, 2026-12-01T08:30:00+01:00) or a time before now " \
              "(30m, 12h, 2d)"


@dataclass(frozen=True)
class When:
    """--since / --until as written: a time (`at`, seconds since 1970) or a span before now (`ago`)."""

    text: str
    at: float | None = None
    ago: float | None = None

    def resolve(self, now: float) -> float:
        # never before 1970: the journal has nothing older, and times before it cannot be shown
        return max(0.0, self.at if self.at is not None else now - self.ago)


def parse_when(text: str) -> When:
    """An ISO 8601 date and time (local time unless it says its offset), or a span before now."""
    stripped = text.strip()
    ago = _AGO.fullmatch(stripped)
    if ago:
        return When(text, ago=float(int(ago.group(1)) * _UNITS[ago.group(2)]))
    try:
        return When(text, at=datetime.fromisoformat(stripped).timestamp())
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {_WHEN_FORMS}") from None


def add_replay_commands(sub) -> None:
    replay = sub.add_parser("replay", help="run retained instances through the rules again; --dry-run shows what "
                                           "would change")
    replay.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    replay.add_argument("--since", required=True, type=parse_when, metavar="WHEN",
                        help="instances received from then on: a date and time (2026-12-01T08:00) or a time "
                             "before now (2d, 12h)")
    replay.add_argument("--until", type=parse_when, metavar="WHEN", help="and received before then (default: now)")
    replay.add_argument("--rules", metavar="OTHER.rules",
                        help="another rule file, compiled with the configuration (default: the rules in place)")
    replay.add_argument("--dry-run", action="store_true",
                        help="report what would change against the first time; queue nothing")
    replay.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    replay.add_argument("-v", "--verbose", action="store_true",
                        help="list unchanged instances too (--dry-run), each instance queued (without it)")
    replay.set_defaults(func=cmd_replay)

    replays = sub.add_parser("replays", help="the replays recorded in the journal, and how far the router got")
    replays.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    replays.add_argument("--limit", type=int, default=20, help="at most this many, newest first")
    replays.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    replays.add_argument("-v", "--verbose", action="store_true",
                         help="list each replay's instances: which instance each replays, and how it ended")
    replays.set_defaults(func=cmd_replays)


def _when(seconds: float | None) -> str:
    return "now" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _period(since: float | None, until: float | None) -> str:
    return f"{_when(since)} - {_when(until)}"


def _journal(config: Config) -> tuple[Storage, Journal]:
    require_journal(config)
    storage = Storage.of(config)
    return storage, storage.journal()


def _requested_by() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no name for this user id (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def cmd_replay(args) -> int:
    now = clock()
    since = args.since.resolve(now)
    until = args.until.resolve(now) if args.until is not None else now
    if since > now:
        raise UsageError(f"--since {args.since.text}: {_when(since)} is in the future; nothing was received then yet")
    if until <= since:
        raise UsageError(f"--until {args.until.text} ({_when(until)}) is not after --since {args.since.text} "
                         f"({_when(since)})")
    if args.rules is not None and not os.path.isfile(args.rules):
        raise UsageError(f"--rules {args.rules}: no such rule file")
    # the secrets only for a dry-run, which evaluates here: hash() and uid() then give what the router's gave
    config = load_config(args.config, secrets=args.dry_run)
    storage, journal = _journal(config)
    try:
        ruleset = _rules(args, config, journal)
        if ruleset is None:
            return EXIT_FINDINGS
        instances = retained_between(journal, since, until)
        if args.dry_run:
            return _dry_run(args, config, ruleset, instances, since, until)
        return _queue(args, config, storage, journal, ruleset, instances, since, until)
    finally:
        journal.close()


def _rules(args, config: Config, journal: Journal) -> RuleSet | None:
    """The rules to replay with: --rules compiled with the configuration (its errors raise
    RulesError: printed with their positions, exit 1), else the rules in place. None: said why."""
    try:
        if args.rules is not None:
            return rules_from_file(args.rules, config)
        return rules_in_place(journal, config)
    except NoRulesError:
        print(f"dicom-rules: {args.rules} has no rules: nothing would be routed (a file of blocks is imported by a "
              "rule file, not run)", file=sys.stderr)
    except OSError as exc:
        print(f"dicom-rules: cannot read {args.rules}: {exc.strerror or exc}", file=sys.stderr)
    except (NoRulesInPlace, RulesUnavailable) as exc:
        print(f"dicom-rules: the rules in place: {exc}", file=sys.stderr)
    return None


def _rules_named(args, ruleset: RuleSet) -> str:
    return f"rules {ruleset.version} ({args.rules if args.rules else 'in place'})"


def _nothing(args, config: Config, since: float, until: float | None) -> int:
    why = ""
    if not config.retention.delivered:
        why = f"; retention.delivered is not set in {config.path}: the router keeps no instance once delivered"
    print(f"dicom-rules: no retained instances received {_period(since, until)}{why}", file=sys.stderr)
    return EXIT_FINDINGS


def _describe(instance: Instance) -> str:
    arrival = instance.arrival
    source = arrival.calling_aet or arrival.source_name or arrival.source_kind or "?"
    return (f"instance {instance.id} {arrival.sop_instance_uid or '?'} from {source}, received "
            f"{_when(instance.received_at)} (rules {instance.outcome.ruleset_version or '?'})")


# ---- --dry-run -------------------------------------------------------------------------------


def _first_time(instance: Instance) -> tuple[dict, str | None]:
    """What was done the first time, as the journal recorded it, and why its edits cannot be
    compared (None: they can)."""
    outcome = instance.outcome
    trace = None
    if outcome.trace:
        try:
            trace = json.loads(outcome.trace)
        except ValueError:
            trace = None
    note = None
    edits = trace.get("edits", []) if trace else []
    if trace is None:
        note = "the journal kept no trace of its edits"
    elif trace.get("truncated"):
        note = f"the journal kept {len(edits)} of its edits ({trace['truncated']} left out)"
    return recorded_fingerprint(outcome.outcome, outcome.reason, outcome.destinations, edits), note


def _dry_run(args, config: Config, ruleset: RuleSet, instances, since: float, until: float | None) -> int:
    total = unchanged = 0
    changes = {"outcome": 0, "destinations": 0, "edits": 0}
    missing: list[dict] = []
    changed: list[dict] = []
    for instance in instances:
        total += 1
        old, note = _first_time(instance)
        if not instance.path or not os.path.isfile(instance.path):
            missing.append(_missing(instance, f"its retained file is gone: {instance.path}"))
            continue
        try:
            decision = ruleset.evaluate(read_instance(instance.path, arrival_of(instance), instance.checked))
        except DocumentReadError as exc:
            missing.append(_missing(instance, f"its retained file cannot be read: {reason_of(exc, instance.path)}"))
            continue
        new = recorded_fingerprint(decision.outcome, decision.reason, decision.destinations,
                                   [edit.to_json() for edit in decision.edits])
        if note is not None:  # what the journal does not have cannot be compared
            old["edits"] = new["edits"] = []
        parts = changed_parts(old, new)
        entry = {"instance": instance.id, "sop_instance_uid": instance.arrival.sop_instance_uid,
                 "received_at": instance.received_at, "rules_version": instance.outcome.ruleset_version,
                 "changes": parts, "old": old, "new": new, **({"note": f"edits not compared: {note}"} if note else {})}
        if not parts:
            unchanged += 1
        for part in parts:
            changes[part] += 1
        if parts or args.verbose:
            changed.append(entry)
            if args.format == "text":
                print(_describe(instance))
                print("\n".join(diff_lines(old, new)) if parts else "  unchanged")
                if note:
                    print(f"  (edits not compared: {note})")
    if total == 0:
        return _nothing(args, config, since, until)
    would_change = total - unchanged - len(missing)
    summary = {"instances": total, "changed": would_change, "unchanged": unchanged, "missing": len(missing),
               "outcome_changed": changes["outcome"], "destinations_changed": changes["destinations"],
               "edits_changed": changes["edits"]}
    if args.format == "json":
        print(json.dumps({"dry_run": True, "received_from": since, "received_to": until,
                          "rules_version": ruleset.version, "rules_file": args.rules, "instances": changed,
                          "missing": missing, "summary": summary}, indent=2, ensure_ascii=False))
    else:
        for item in missing:
            print(f"instance {item['instance']} {item['sop_instance_uid'] or '?'}: {item['reason']}")
        print(f"{total} retained instance(s) received {_period(since, until)} through {_rules_named(args, ruleset)}: "
              f"{would_change} would change (outcome {changes['outcome']}, destinations {changes['destinations']}, "
              f"edits {changes['edits']}), {unchanged} unchanged" + (f", {len(missing)} missing" if missing else ""))
    return EXIT_FINDINGS if would_change or missing else EXIT_OK


def _missing(instance: Instance, reason: str) -> dict:
    return {"instance": instance.id, "sop_instance_uid": instance.arrival.sop_instance_uid,
            "path": instance.path, "reason": reason}


# ---- replaying -------------------------------------------------------------------------------


def _queue(args, config: Config, storage: Storage, journal: Journal, ruleset: RuleSet, instances, since: float,
           until: float | None) -> int:
    if args.rules is not None:
        # processed with this file's rules: the journal keeps its files, as it keeps every version put in place
        journal.keep_ruleset(ruleset.version, ruleset.program.sources)
    rules_file = os.path.abspath(args.rules) if args.rules is not None else None
    queued = queue_replay(storage, journal, instances, _requested_by(), ruleset.version, rules_file, since, until)
    if not queued.queued and not queued.missing:
        return _nothing(args, config, since, until)
    missing = [_missing(instance, reason) for instance, reason in queued.missing]
    if args.format == "json":
        print(json.dumps({"dry_run": False, "replay": queued.replay_id, "received_from": since, "received_to": until,
                          "rules_version": ruleset.version, "rules_file": rules_file,
                          "queued": [{"instance": item.original.id, "path": item.path} for item in queued.queued],
                          "missing": missing}, indent=2, ensure_ascii=False))
    else:
        if args.verbose:
            for item in queued.queued:
                print(f"{_describe(item.original)}: queued again")
        for item in missing:
            print(f"instance {item['instance']} {item['sop_instance_uid'] or '?'}: {item['reason']}")
        if queued.replay_id is None:
            print(f"nothing replayed: every retained instance received {_period(since, until)} has lost its file")
        else:
            print(f"replay {queued.replay_id}: {len(queued.queued)} instance(s) received {_period(since, until)} "
                  f"queued again with {_rules_named(args, ruleset)}" + (f"; {len(missing)} missing" if missing else ""))
            print("a running router processes them at once, a stopped one when it starts; "
                  "`dicom-rules replays` shows how far it got")
    return EXIT_FINDINGS if missing else EXIT_OK


# ---- replays ---------------------------------------------------------------------------------


def cmd_replays(args) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give 1 or more")
    config = load_config(args.config, secrets=False)
    _, journal = _journal(config)
    try:
        replays = journal.replays(args.limit)
        instances = {replay.id: _replayed(journal, replay.id) for replay in replays} if args.verbose else {}
    finally:
        journal.close()
    if args.format == "json":
        print(json.dumps([{**_replay_json(replay), **({"replayed": [_replayed_json(original, instance) for
                                                                     original, instance in instances[replay.id]]}
                                                        if args.verbose else {})} for replay in replays],
                         indent=2, ensure_ascii=False))
    elif not replays:
        print("no replays")
    else:
        for replay in replays:
            print(describe_replay(replay))
            for original, instance in instances.get(replay.id, ()):
                print(f"    instance {instance.id} replays {original} ({instance.arrival.sop_instance_uid or '?'}): "
                      f"{_ended(instance)}")
    return EXIT_OK


def _replayed(journal: Journal, replay_id: int) -> list[tuple[int, Instance]]:
    found: list[tuple[int, Instance]] = []
    while True:
        batch = journal.replayed_instances(replay_id, after=found[-1][1].id if found else 0)
        found += batch
        if len(batch) < 1000:
            return found


def _ended(instance: Instance) -> str:
    outcome = instance.outcome
    if outcome.outcome is None:
        return "waiting"
    if outcome.outcome == "route":
        return "route to " + ", ".join(outcome.destinations)
    return outcome.outcome + (f": {outcome.reason}" if outcome.reason else "")


def _replayed_json(original: int, instance: Instance) -> dict:
    return {"instance": instance.id, "replays": original, "sop_instance_uid": instance.arrival.sop_instance_uid,
            "outcome": instance.outcome.outcome, "reason": instance.outcome.reason,
            "destinations": list(instance.outcome.destinations)}


def describe_replay(replay: Replay) -> str:
    """Two lines: who replayed what with which rules, and how far the router got."""
    rules = f"rules {replay.rules_version} ({replay.rules_file or 'in place'})"
    head = (f"replay {replay.id} {_when(replay.created_at)} by {replay.requested_by}: {replay.instances} instance(s) "
            f"received {_period(replay.received_from, replay.received_to)}, {rules}")
    if replay.missing:
        head += f", {replay.missing} missing"
    processed = ", ".join(f"{count} {outcome}" for outcome, count in sorted(replay.outcomes.items())) or "none yet"
    deliveries = ", ".join(f"{count} {state}" for state, count in sorted(replay.deliveries.items())) or "none"
    return f"{head}\n  {replay.waiting} waiting; processed: {processed}; deliveries: {deliveries}"


def _replay_json(replay: Replay) -> dict:
    return {"id": replay.id, "created_at": replay.created_at, "requested_by": replay.requested_by,
            "rules_version": replay.rules_version, "rules_file": replay.rules_file,
            "received_from": replay.received_from, "received_to": replay.received_to,
            "instances": replay.instances, "missing": replay.missing, "waiting": replay.waiting,
            "outcomes": dict(replay.outcomes), "deliveries": dict(replay.deliveries)}
