"""`dry-run` and `diff`: evaluate rules on DICOM files and report; never send anything."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Iterator

from .cli import (EXIT_FINDINGS, EXIT_OK, UsageError, load_destinations, load_no_destination, load_rules_folders,
                  print_diagnostics)
from .document import Arrival, Document, DocumentReadError
from .explain import explain_lines
from .lang.api import compile_file
from .lang.ruleset import Decision, RuleSet
from .values import display, to_json

QUARANTINE_FOLDER = "_quarantine"


@dataclass
class Input:
    path: str
    relative: str  # the name under an --out destination folder


def input_files(inputs: list[str]) -> Iterator[Input]:
    """Files named, and every file under folders named (hidden ones skipped), sorted.
    Each gets a distinct name for --out: its base name, or its path when two clash."""
    used: set[str] = set()
    for found in _walk_inputs(inputs):
        if found.relative in used:
            found = Input(found.path, os.path.normpath(found.path).lstrip(os.sep).replace(".." + os.sep, ""))
        used.add(found.relative)
        yield found


def _walk_inputs(inputs: list[str]) -> Iterator[Input]:
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        path = os.path.join(folder, name)
                        yield Input(path, os.path.relpath(path, item))
        elif os.path.isfile(item):
            yield Input(item, os.path.basename(item))
        else:
            raise UsageError(f"{item}: no such file or folder")


def arrival_for(args, path: str) -> Arrival:
    return Arrival(calling_aet=args.calling_aet, called_aet=args.called_aet, source_name=args.source,
                   source_kind="file", source_path=path)


def evaluate_file(ruleset: RuleSet, path: str, args, trace: bool = False) -> Decision:
    document = Document.read(path, arrival_for(args, path))
    return ruleset.evaluate(document, trace=trace)


# ---- reports -------------------------------------------------------------------------


def _edit_line(edit, main_file: str) -> str:
    where = f"[{edit.destination}] " if edit.destination else ""
    new = "(deleted)" if edit.new is None else display(edit.new)
    old = "(absent)" if edit.old is None else display(edit.old)
    # An edit made by an imported block names that file; the rule's own lines need no file.
    at = f"line {edit.line}" if edit.span is None or edit.span.file == main_file else \
        f"{edit.span.file}:{edit.line}"
    return f"{where}{edit.path}: {old} -> {new}   (rule {edit.rule!r}, {at})"


def text_report(path: str, decision: Decision, ruleset: RuleSet, explain: bool) -> str:
    lines = [path]
    if decision.outcome == "route":
        lines.append(f"  outcome: route to {', '.join(decision.destinations)}")
    else:
        lines.append(f"  outcome: {decision.outcome}" + (f": {decision.reason}" if decision.reason else ""))
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


def write_outputs(out_dir: str, item: Input, decision: Decision) -> list[str]:
    """What each destination would receive: OUT/DESTINATION/<name>; quarantine keeps the original."""
    written = []
    if decision.outcome == "quarantine":
        target = os.path.join(out_dir, QUARANTINE_FOLDER, item.relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(item.path, target)
        with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
            fh.write((decision.reason or "") + "\n")
        written.append(target)
    for name, document in decision.destinations.items():
        target = os.path.join(out_dir, name, item.relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        document.write(target)
        written.append(target)
    return written


def _compile(rules: str, args) -> RuleSet:
    if not os.path.isfile(rules):
        raise UsageError(f"{rules}: no such rule file")
    ruleset = compile_file(rules, load_destinations(args), no_destination=load_no_destination(args),
                           folders=load_rules_folders(args))
    warnings = [d for d in ruleset.diagnostics if not d.is_error]
    if warnings and getattr(args, "format", "text") == "text":
        print_diagnostics(warnings, "text", sys.stderr)
    return ruleset


def cmd_dry_run(args) -> int:
    ruleset = _compile(args.rules, args)
    failures = 0
    for item in input_files(args.inputs):
        try:
            decision = evaluate_file(ruleset, item.path, args, trace=args.explain)
        except DocumentReadError as exc:
            failures += 1
            _report_unreadable(item.path, exc, args.format)
            continue
        if decision.error:
            failures += 1
        if args.out:  # before the report: a reader that stops early must not lose files
            write_outputs(args.out, item, decision)
        if args.format == "json":
            print(json.dumps(json_report(item.path, decision, ruleset, args.explain), ensure_ascii=False))
        else:
            print(text_report(item.path, decision, ruleset, args.explain))
    return EXIT_FINDINGS if failures else EXIT_OK


def _report_unreadable(path: str, exc: Exception, fmt: str) -> None:
    reason = str(exc).removeprefix(f"{path}: ")
    if fmt == "json":
        print(json.dumps({"file": path, "outcome": None, "error": reason, "rules_fired": [], "edits": [],
                          "destinations": []}, ensure_ascii=False))
    else:
        print(f"{path}\n  error: {reason}")


# ---- diff ------------------------------------------------------------------------------


def _fingerprint(decision: Decision) -> dict:
    """What a rule change can alter for one document: outcome, destinations, final values."""
    return {
        "outcome": decision.outcome,
        "reason": decision.reason,
        "destinations": sorted(decision.destinations),
        "edits": sorted({(e.destination or "", e.path, display(e.new)) for e in decision.edits}),
    }


def diff_lines(old: dict, new: dict) -> list[str]:
    lines = []
    if (old["outcome"], old["reason"]) != (new["outcome"], new["reason"]):
        lines.append(f"  outcome: {old['outcome']}{_reason(old)} -> {new['outcome']}{_reason(new)}")
    removed = [d for d in old["destinations"] if d not in new["destinations"]]
    added = [d for d in new["destinations"] if d not in old["destinations"]]
    if removed or added:
        lines.append("  destinations: " + " ".join([f"-{d}" for d in removed] + [f"+{d}" for d in added]))
    old_edits, new_edits = set(old["edits"]), set(new["edits"])
    for destination, path, value in sorted(old_edits - new_edits):
        lines.append(f"  - {_where(destination)}{path} = {value}")
    for destination, path, value in sorted(new_edits - old_edits):
        lines.append(f"  + {_where(destination)}{path} = {value}")
    return lines


def _reason(fingerprint: dict) -> str:
    return f" ({fingerprint['reason']})" if fingerprint["reason"] else ""


def _where(destination: str) -> str:
    return f"[{destination}] " if destination else ""


def cmd_diff(args) -> int:
    old_rules = _compile(args.old_rules, args)
    new_rules = _compile(args.new_rules, args)
    changed = total = unreadable = 0
    for item in input_files(args.inputs):
        try:
            old = _fingerprint(evaluate_file(old_rules, item.path, args))
            new = _fingerprint(evaluate_file(new_rules, item.path, args))
        except DocumentReadError as exc:
            unreadable += 1
            _report_unreadable(item.path, exc, args.format)
            continue
        total += 1
        if old == new:
            continue
        changed += 1
        if args.format == "json":
            print(json.dumps({"file": item.path, "old": old, "new": new}, ensure_ascii=False))
        else:
            print(item.path)
            print("\n".join(diff_lines(old, new)))
    if args.format == "text":
        unread = f" ({unreadable} could not be read)" if unreadable else ""
        print(f"{changed} of {total} documents change{unread}", file=sys.stderr)
    if unreadable:
        return 2
    return EXIT_FINDINGS if changed else EXIT_OK
