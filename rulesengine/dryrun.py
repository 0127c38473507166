"""`dry-run` and `diff`: evaluate rules on DICOM files and report; never send anything."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator

from .cli import EXIT_FINDINGS, EXIT_OK, UsageError, load_destinations, load_no_destination, load_rules_folders
from .copies import CopyError, is_received_file, keep_with_file_meta, write_copy
from .document import Arrival, DocumentReadError
from .explain import explain_lines
from .intake import needs_file_meta, read_instance, reason_of, short_error
from .lang.api import compile_file
from .lang.ruleset import Decision, RuleSet
from .values import display, to_json

QUARANTINE_FOLDER = "_quarantine"
EXIT_INTERNAL = 3  # as main() exits for a bug; here after every input was tried


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


def write_quarantined(out_dir: str, item: Input, received: str, reason: str | None) -> str:
    """A quarantined input, as the router keeps it (`received`: the input, with file meta if it
    had none): OUT/_quarantine/<name>, with its reason."""
    target = os.path.join(out_dir, QUARANTINE_FOLDER, item.relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(received, target)
    with open(target + ".reason.txt", "w", encoding="utf-8") as fh:
        fh.write((reason or "") + "\n")
    return target


def _compile(rules: str, args) -> RuleSet:
    """The rule file compiled; its findings are printed only when it has errors (main() prints
    them then), as `lint` is the command for warnings."""
    if not os.path.isfile(rules):
        raise UsageError(f"{rules}: no such rule file")
    return compile_file(rules, load_destinations(args), no_destination=load_no_destination(args),
                        folders=load_rules_folders(args))


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


def dry_run_file(ruleset: RuleSet, item: Input, args, scratch: Scratch) -> Decision:
    """One input as the router would handle it, its copies written to --out (or to `scratch`):
    a copy that cannot be written quarantines the input, with the router's reason, and no
    copy of it is left. Raises DocumentReadError when the router would refuse the file."""
    arrival = arrival_for(args, item.path)
    document = read_instance(item.path, arrival)
    received = item.path  # the file a destination whose copy nothing edits receives
    if needs_file_meta(document):
        # The router keeps such a file with file meta made from its data set, and reads it again.
        try:
            keep_with_file_meta(document, scratch.received)
        except CopyError as exc:
            raise DocumentReadError(f"{item.path}: cannot be kept with file meta information: {exc}") from None
        received = scratch.received
        try:
            document = read_instance(received, arrival)
        except DocumentReadError as exc:
            raise DocumentReadError(f"{item.path}: {reason_of(exc, received)}") from None
    decision = ruleset.evaluate(document, trace=args.explain)
    written: list[str] = []
    try:
        for name, copy in decision.destinations.items():
            target = os.path.join(args.out, name, item.relative) if args.out else scratch.path
            if args.out:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                written.append(target)
            if is_received_file(document, copy, decision):
                if args.out:
                    shutil.copyfile(received, target)
            else:
                write_copy(copy, name, target)
    except CopyError as exc:
        for path in written:
            if os.path.exists(path):
                os.remove(path)
        decision = dataclasses.replace(decision, outcome="quarantine", reason=str(exc), destinations={},
                                       error=str(exc))
    if args.out and decision.outcome == "quarantine":
        write_quarantined(args.out, item, received, decision.reason)
    return decision


def cmd_dry_run(args) -> int:
    ruleset = _compile(args.rules, args)
    failures = internal = 0
    scratch = Scratch()
    try:
        for item in input_files(args.inputs):
            # Written out before the report: a reader that stops early must not lose files.
            try:
                decision = dry_run_file(ruleset, item, args, scratch)
            except DocumentReadError as exc:
                failures += 1
                _report_unreadable(item.path, reason_of(exc, item.path), args.format)
                continue
            except OSError as exc:  # writing to --out
                failures += 1
                _report_unreadable(item.path, f"cannot write what the destinations would receive: "
                                              f"{short_error(exc)}", args.format)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug: say so for this input, and go on with the others
                internal += 1
                _report_unreadable(item.path, f"internal error: {type(exc).__name__}: {short_error(exc)} (a bug in dicom-rules: please "
                                              f"report it with this file)", args.format)
                continue
            if decision.error:
                failures += 1
            if args.format == "json":
                print(json.dumps(json_report(item.path, decision, ruleset, args.explain), ensure_ascii=False))
            else:
                print(text_report(item.path, decision, ruleset, args.explain))
    finally:
        scratch.close()
    if internal:
        print(f"dicom-rules: internal error on {internal} input(s); please report it with the files named",
              file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_FINDINGS if failures else EXIT_OK


def _report_unreadable(path: str, reason: str, fmt: str) -> None:
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
            _report_unreadable(item.path, reason_of(exc, item.path), args.format)
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
