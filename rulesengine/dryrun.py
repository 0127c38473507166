"""What `dry-run` and `diff` do with one DICOM file: the rules evaluated as the router would,
the copies written, the decision reported or compared; never sent anywhere."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Iterable, Mapping

from .copies import CopyError, is_received_file, keep_with_file_meta, write_copy
from .document import Arrival, DocumentReadError
from .explain import explain_lines
from .intake import needs_file_meta, read_instance, reason_of
from .document import Document
from .lang.groups import group_notifications
from .lang.ruleset import STORE, Decision, RuleSet
from .ruletest import fill_command_set, group_decisions
from .values import display, to_json

QUARANTINE_FOLDER = "_quarantine"


def arrival_for(args, path: str) -> Arrival:
    if getattr(args, "arrival", None) is None:  # one time for the whole run: diff compares like with like
        args.arrival = time.time()
    return Arrival(calling_aet=args.calling_aet, called_aet=args.called_aet, source_name=args.source,
                   source_kind="file", source_path=path, received_at=args.arrival)


def evaluate_file(ruleset: RuleSet, path: str, args, trace: bool = False) -> Decision:
    """What the router decides for this file: read as the router takes it in (`rulesengine.intake`:
    the same reader, the same refusals), then the rules. Raises DocumentReadError."""
    return ruleset.evaluate(read_instance(path, arrival_for(args, path)), trace=trace)


# ---- reports -------------------------------------------------------------------------


def _edit_line(edit, main_file: str) -> str:
    where = f"[{edit.destination}] " if edit.destination else ""
    new = "(deleted)" if edit.new is None else display(edit.new)
    old = "(absent)" if edit.old is None else display(edit.old)
    # An edit made by an imported block names that file; the rule's own lines need no file.
    at = f"line {edit.line}" if edit.span is None or edit.span.file == main_file else \
        f"{edit.span.file}:{edit.line}"
    return f"{where}{edit.path}: {old} -> {new}   (rule {edit.rule!r}, {at})"


def notification_lines(notifications) -> list[str]:
    """`notify: ops "message" (rule 'r')`: what the router would queue (nothing is sent here)."""
    return [f"  notify: {note.notifier}" + (f" {note.message!r}" if note.message is not None else "")
            + (f"   (rule {note.rule!r})" if note.rule else "") for note in notifications]


def text_report(path: str, decision: Decision, ruleset: RuleSet, explain: bool) -> str:
    lines = [path]
    if decision.message != STORE:
        lines.append(f"  message: {decision.message}")
    if decision.outcome == "route":
        windows = decision.windows or {}
        routes = ", ".join(f"{name} (during {windows[name]})" if name in windows else name
                           for name in decision.destinations)
        lines.append(f"  outcome: route to {routes}")
        if decision.urgent:
            lines.append("  urgent: its deliveries go before the others in each queue")
    else:
        lines.append(f"  outcome: {decision.outcome}" + (f": {decision.reason}" if decision.reason else ""))
    lines.extend(notification_lines(decision.notifications))
    fired = ", ".join(f"{r.name!r} (line {r.line})" for r in decision.rules_fired) or "none"
    lines.append(f"  rules fired: {fired}")
    for name, why in decision.skipped.items():
        lines.append(f"  not sent to {name}: {why}")
    if decision.edits:
        lines.append("  edits:")
        lines.extend(f"    {_edit_line(edit, ruleset.program.main.path)}" for edit in decision.edits)
    for entry in decision.log:
        if entry.rule is not None:
            lines.append(f"  log: {entry.message}   (rule {entry.rule!r}, line {entry.span.line})")
    if explain:
        lines.append("  explain:")
        lines.extend(f"    {line}" for line in explain_lines(ruleset, decision))
    return "\n".join(lines)


def json_report(path: str, decision: Decision, ruleset: RuleSet, explain: bool) -> dict:
    report = {"file": path, **decision.to_json()}
    if explain:
        report["explain"] = [
            {"rule": ruleset.rules[event.rule].name, "condition": ruleset.predicates[event.predicate].text,
             "left": to_json(event.left), "right": to_json(event.right), "result": event.result}
            for event in decision.trace or ()
        ]
    return report


def write_quarantined(out_dir: str, relative: str, received: str, reason: str | None) -> str:
    """A quarantined input, as the router keeps it (`received`: the input, with file meta if it
    had none): OUT/_quarantine/<relative>, with its reason."""
    target = os.path.join(out_dir, QUARANTINE_FOLDER, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(received, target)
    with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
        fh.write((reason or "") + "\n")
    return target


class Scratch:
    """Where copies are written when --out is not given (each is written all the same, so that
    one the router could not write is found here too), and where an input without file meta
    is kept with it, as the router keeps it. Two files, rewritten for each input."""

    def __init__(self):
        self._folder = tempfile.TemporaryDirectory(prefix="dicom-rules-")
        self.path = os.path.join(self._folder.name, "copy.dcm")
        self.received = os.path.join(self._folder.name, "received.dcm")

    def close(self) -> None:
        self._folder.cleanup()


def dry_run_file(ruleset: RuleSet, path: str, relative: str, args, scratch: Scratch) -> Decision:
    """One input as the router would handle it, its copies written to --out (or to `scratch`)
    as OUT/DESTINATION/<relative>: a copy that cannot be written quarantines the input, with
    the router's reason, and no copy of it is left. Raises DocumentReadError when the router
    would refuse the file."""
    arrival = arrival_for(args, path)
    message = getattr(args, "message", STORE)
    if message != STORE:
        return _dry_run_request(ruleset, path, arrival, message, args.explain)
    document = read_instance(path, arrival)
    received = path  # the file a destination whose copy nothing edits receives
    if needs_file_meta(document):
        # The router keeps such a file with file meta made from its data set, and reads it again.
        try:
            keep_with_file_meta(document, scratch.received)
        except CopyError as exc:
            raise DocumentReadError(f"{path}: cannot be kept with file meta information: {exc}") from None
        received = scratch.received
        try:
            document = read_instance(received, arrival)
        except DocumentReadError as exc:
            raise DocumentReadError(f"{path}: {reason_of(exc, received)}") from None
    decision = ruleset.evaluate(document, trace=args.explain)
    written: list[str] = []
    try:
        for name, copy in decision.destinations.items():
            target = os.path.join(args.out, name, relative) if args.out else scratch.path
            if args.out:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                written.append(target)
            if is_received_file(document, copy, decision):
                if args.out:
                    shutil.copyfile(received, target)
            else:
                write_copy(copy, name, target)
    except CopyError as exc:
        for target in written:
            if os.path.exists(target):
                os.remove(target)
        decision = dataclasses.replace(decision, outcome="quarantine", reason=str(exc), destinations={},
                                       error=str(exc))
    if args.out and decision.outcome == "quarantine":
        write_quarantined(args.out, relative, received, decision.reason)
    return decision


def _dry_run_request(ruleset: RuleSet, path: str, arrival: Arrival, message: str, trace: bool) -> Decision:
    """A file read as a request's identifier (a C-FIND query, a C-MOVE key, an N-CREATE data set),
    with the command field of `message` in its command set, evaluated by the rules for `message`.
    Nothing is written: what the destinations would get is the identifier the edits report."""
    document = Document.read(path, arrival)
    fill_command_set(document, message, response=False)
    return ruleset.evaluate(document, trace=trace, message=message)


# ---- diff ------------------------------------------------------------------------------


def fingerprint(decision: Decision) -> dict:
    """What a rule change can alter for one document: outcome, destinations, final values."""
    return {
        "outcome": decision.outcome,
        "reason": decision.reason,
        "destinations": sorted(decision.destinations),
        "edits": sorted({(e.destination or "", e.path, display(e.new)) for e in decision.edits}),
        # only when there is something to say: the JSON of `diff` stays as it was for the rest
        **({"urgent": True} if decision.urgent else {}),
        **({"windows": sorted(decision.windows.items())} if decision.windows else {}),
    }


def recorded_fingerprint(outcome: str | None, reason: str | None, destinations: Iterable[str],
                         edits: Iterable[Mapping[str, Any]]) -> dict:
    """fingerprint() of a decision as a journal's trace keeps it, its edits as JSON objects
    (Edit.to_json): what `replay --dry-run` compares, for the first processing and the new one alike."""
    return {
        "outcome": outcome,
        "reason": reason,
        "destinations": sorted(destinations),
        "edits": sorted({(e.get("destination") or "", e["path"], display(e.get("new"))) for e in edits}),
    }


def changed_parts(old: dict, new: dict) -> list[str]:
    """Which parts of two fingerprints differ: outcome, destinations, edits."""
    parts = []
    if (old["outcome"], old["reason"]) != (new["outcome"], new["reason"]):
        parts.append("outcome")
    if old["destinations"] != new["destinations"]:
        parts.append("destinations")
    if set(old["edits"]) != set(new["edits"]):
        parts.append("edits")
    return parts


def group_fingerprints(ruleset: RuleSet, decided: list[tuple[str, Decision]], args) -> dict[str, list[dict]]:
    """For `diff`: the group rules over the inputs that join groups (read again as received), as
    each input's list of fingerprints, one per group rule that has it, named by the rule."""
    joined = [path for path, decision in decided
              if decision.unrouted or decision.outcome not in ("drop", "reject", "quarantine")]
    documents = {path: read_instance(path, arrival_for(args, path)) for path in joined}
    found = group_decisions(ruleset, list(documents.values()))
    return {path: [{"rule": decision.rules_fired[0].name if decision.rules_fired else None, **fingerprint(decision)}
                   for decision in found.get(id(document), [])]
            for path, document in documents.items()}


def diff_lines(old: dict, new: dict) -> list[str]:
    lines = []
    if old.get("groups") != new.get("groups"):
        lines.append(f"  group rules: {_groups_text(old.get('groups'))} -> {_groups_text(new.get('groups'))}")
    if (old["outcome"], old["reason"]) != (new["outcome"], new["reason"]):
        lines.append(f"  outcome: {old['outcome']}{_reason(old)} -> {new['outcome']}{_reason(new)}")
    removed = [d for d in old["destinations"] if d not in new["destinations"]]
    added = [d for d in new["destinations"] if d not in old["destinations"]]
    if removed or added:
        lines.append("  destinations: " + " ".join([f"-{d}" for d in removed] + [f"+{d}" for d in added]))
    if old.get("urgent") != new.get("urgent"):
        lines.append(f"  urgent: {'yes' if old.get('urgent') else 'no'} -> {'yes' if new.get('urgent') else 'no'}")
    old_windows, new_windows = dict(old.get("windows", ())), dict(new.get("windows", ()))
    for name in sorted(set(old_windows) | set(new_windows)):
        if old_windows.get(name) != new_windows.get(name) and name in new["destinations"]:
            lines.append(f"  window of {name}: {old_windows.get(name) or 'none'} -> {new_windows.get(name) or 'none'}")
    old_edits, new_edits = set(old["edits"]), set(new["edits"])
    for destination, path, value in sorted(old_edits - new_edits):
        lines.append(f"  - {_where(destination)}{path} = {value}")
    for destination, path, value in sorted(new_edits - old_edits):
        lines.append(f"  + {_where(destination)}{path} = {value}")
    return lines


def _groups_text(groups: list[dict] | None) -> str:
    """What the group rules decided for one input, in a line: `route to AI (rule 'X')`, ..."""
    shown = []
    for entry in groups or ():
        what = f"route to {', '.join(entry['destinations'])}" if entry["outcome"] == "route" else entry["outcome"]
        edits = f", {len(entry['edits'])} edit(s)" if entry["edits"] else ""
        shown.append(what + edits + (f" (rule {entry['rule']!r})" if entry["rule"] else ""))
    return "; ".join(shown) or "none"


def _reason(fingerprint: dict) -> str:
    return f" ({fingerprint['reason']})" if fingerprint["reason"] else ""


def _where(destination: str) -> str:
    return f"[{destination}] " if destination else ""


# ---- group rules ----------------------------------------------------------------------


@dataclasses.dataclass
class GroupRun:
    """One group of a group rule, as dry-run sees it: the inputs are the whole series or study."""

    rule: object  # lang.groups.GroupRule
    key: tuple[str, str | None]
    paths: list[str]  # in group order, as the decisions
    relatives: list[str]
    decisions: list[Decision]
    completed_by: int | None  # how many instances (in input order) made `complete when` hold; None: never

    def completion(self) -> str:
        if self.completed_by is not None:
            return f"complete when holds after instance {self.completed_by} of {len(self.paths)}"
        rule = self.rule
        quiet = f"{_seconds_text(rule.quiet_seconds)}" if rule.quiet_seconds is not None else "the configured"
        held = "complete when never holds; " if rule.has_completion else ""
        return f"{held}complete after {quiet} quiet time (the inputs are the whole group)"


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def dry_run_groups(ruleset: RuleSet, inputs: list[tuple[str, str]], args) -> list[GroupRun]:
    """The group rules over the inputs (path, relative name) that joined groups, in input order:
    each read again as received (instance rules' edits are theirs), grouped per series or study.
    Copies are written as for instances (--out: OUT/DESTINATION/<relative>)."""
    runs: list[GroupRun] = []
    documents = []
    for path, relative in inputs:
        documents.append((path, relative, read_instance(path, arrival_for(args, path))))
    for rule in ruleset.group_rules:
        groups: dict = {}
        for entry in documents:
            key = rule.key(entry[2])
            if key is not None:
                groups.setdefault(key, []).append(entry)
        for key, members in groups.items():
            docs = [entry[2] for entry in members]
            completed_by = next((count for count in range(1, len(docs) + 1) if rule.is_complete(docs[:count])),
                                None) if rule.has_completion else None
            ordered = rule.order(docs)
            by_doc = {id(entry[2]): entry for entry in members}
            decisions = rule.evaluate(docs, trace=args.explain)
            run = GroupRun(rule, key, [by_doc[id(d)][0] for d in ordered], [by_doc[id(d)][1] for d in ordered],
                           decisions, completed_by)
            _write_group_copies(run, args)
            runs.append(run)
    return runs


def _write_group_copies(run: GroupRun, args) -> None:
    if not args.out:
        return
    for relative, decision in zip(run.relatives, run.decisions):
        for name, copy in decision.destinations.items():
            target = os.path.join(args.out, name, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            write_copy(copy, name, target)


def group_text_report(run: GroupRun, ruleset: RuleSet, explain: bool) -> str:
    study, series = run.key
    where = f"study {study}" + (f", series {series}" if series else "")
    fired = any(decision.rules_fired for decision in run.decisions)
    lines = [f"group rule {run.rule.name!r} (line {run.rule.span.line}) per {run.rule.level}: {where}",
             f"  instances: {len(run.paths)}",
             f"  completion: {run.completion()}",
             f"  when: {'true' if fired else 'false'}; late instances: {run.rule.late}"]
    # the group is notified once, not each of its instances
    lines.extend(notification_lines(group_notifications(run.decisions)))
    for path, decision in zip(run.paths, run.decisions):
        decision = dataclasses.replace(decision, notifications=())
        lines.extend("  " + line for line in text_report(path, decision, ruleset, explain).split("\n"))
    return "\n".join(lines)


def group_json_report(run: GroupRun, ruleset: RuleSet, explain: bool) -> dict:
    study, series = run.key
    return {"group": {"rule": run.rule.name, "line": run.rule.span.line, "level": run.rule.level,
                      "study": study, "series": series, "instances": len(run.paths),
                      "completed_by": run.completed_by, "quiet_seconds": run.rule.quiet_seconds,
                      "late": run.rule.late,
                      "notifications": [note.to_json() for note in group_notifications(run.decisions)]},
            "decisions": [json_report(path, dataclasses.replace(decision, notifications=()), ruleset, explain)
                          for path, decision in zip(run.paths, run.decisions)]}
