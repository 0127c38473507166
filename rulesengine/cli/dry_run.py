"""`dicom-rules dry-run` and `dicom-rules diff`: evaluate rules on DICOM files and report;
never send anything."""

from __future__ import annotations

import json
import os
import sys

from ..document import DocumentReadError
from ..dryrun import (Scratch, diff_lines, dry_run_file, dry_run_groups, evaluate_file, fingerprint,
                      group_fingerprints, group_json_report, group_text_report, json_report, text_report)
from ..intake import reason_of, short_error
from ..lang.api import compile_file
from ..lang.ruleset import RuleSet
from .common import EXIT_FINDINGS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, UsageError, input_files
from .options import load_destinations, load_no_destination, load_notifiers, load_rules_folders, load_windows


def _compile(rules: str, args) -> RuleSet:
    """The rule file compiled; its findings are printed only when it has errors (main() prints
    them then), as `lint` is the command for warnings."""
    if not os.path.isfile(rules):
        raise UsageError(f"{rules}: no such rule file")
    return compile_file(rules, load_destinations(args), no_destination=load_no_destination(args),
                        folders=load_rules_folders(args), windows=load_windows(args),
                        notifiers=load_notifiers(args))


def cmd_dry_run(args) -> int:
    ruleset = _compile(args.rules, args)
    failures = internal = 0
    scratch = Scratch()
    grouped: list[tuple[str, str]] = []  # the inputs that join the group rules' groups
    try:
        for item in input_files(args.inputs):
            # Written out before the report: a reader that stops early must not lose files.
            try:
                decision = dry_run_file(ruleset, item.path, item.relative, args, scratch)
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
            if decision.unrouted or decision.outcome not in ("drop", "reject", "quarantine"):
                grouped.append((item.path, item.relative))
            if args.format == "json":
                print(json.dumps(json_report(item.path, decision, ruleset, args.explain), ensure_ascii=False))
            else:
                print(text_report(item.path, decision, ruleset, args.explain))
        if ruleset.group_rules and args.message == "C-STORE":
            failures += _report_groups(ruleset, grouped, args)
    finally:
        scratch.close()
    if internal:
        print(f"dicom-rules: internal error on {internal} input(s); please report it with the files named",
              file=sys.stderr)
        return EXIT_INTERNAL
    return EXIT_FINDINGS if failures else EXIT_OK


def _report_groups(ruleset: RuleSet, inputs: list[tuple[str, str]], args) -> int:
    """The group rules over the inputs that joined groups; returns how many decisions failed."""
    failures = 0
    for run in dry_run_groups(ruleset, inputs, args):
        failures += sum(1 for decision in run.decisions if decision.error)
        if args.format == "json":
            print(json.dumps(group_json_report(run, ruleset, args.explain), ensure_ascii=False))
        else:
            print(group_text_report(run, ruleset, args.explain))
    return failures


def _report_unreadable(path: str, reason: str, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps({"file": path, "outcome": None, "error": reason, "rules_fired": [], "edits": [],
                          "destinations": []}, ensure_ascii=False))
    else:
        print(f"{path}\n  error: {reason}")


# ---- diff ------------------------------------------------------------------------------


def cmd_diff(args) -> int:
    old_rules = _compile(args.old_rules, args)
    new_rules = _compile(args.new_rules, args)
    changed = total = unreadable = 0
    compared = []  # (path, old decision, new decision)
    for item in input_files(args.inputs):
        try:
            compared.append((item.path, evaluate_file(old_rules, item.path, args),
                             evaluate_file(new_rules, item.path, args)))
        except DocumentReadError as exc:
            unreadable += 1
            _report_unreadable(item.path, reason_of(exc, item.path), args.format)
    # Group rules decide over the inputs together: each input's part of its groups' decisions.
    groups = bool(old_rules.group_rules or new_rules.group_rules)
    old_groups = group_fingerprints(old_rules, [(p, o) for p, o, _ in compared], args) if groups else {}
    new_groups = group_fingerprints(new_rules, [(p, n) for p, _, n in compared], args) if groups else {}
    for path, old_decision, new_decision in compared:
        total += 1
        old, new = fingerprint(old_decision), fingerprint(new_decision)
        if groups:
            old["groups"], new["groups"] = old_groups.get(path, []), new_groups.get(path, [])
        if old == new:
            continue
        changed += 1
        if args.format == "json":
            print(json.dumps({"file": path, "old": old, "new": new}, ensure_ascii=False))
        else:
            print(path)
            print("\n".join(diff_lines(old, new)))
    if args.format == "text":
        unread = f" ({unreadable} could not be read)" if unreadable else ""
        print(f"{changed} of {total} documents change{unread}", file=sys.stderr)
    if unreadable:
        return EXIT_USAGE
    return EXIT_FINDINGS if changed else EXIT_OK
