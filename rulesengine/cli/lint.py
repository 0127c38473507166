"""`dicom-rules lint PATH...`: check rule files and their tests, and report findings."""

from __future__ import annotations

import sys

from ..diagnostics import Diagnostic
from ..lang.api import check_file
from ..ruletest import check_test_file
from .common import EXIT_FINDINGS, EXIT_OK, print_diagnostics, rule_files
from .options import load_destinations, load_notifiers, load_rules_folders, load_windows, searched_folders


def cmd_lint(args) -> int:
    destinations = load_destinations(args)
    folders = load_rules_folders(args)
    windows = load_windows(args)
    notifiers = load_notifiers(args)
    findings: list[Diagnostic] = []
    seen: set[tuple] = set()
    for path in rule_files(args.paths, include_tests=True):
        if path.endswith("_test.rules"):
            diagnostics = check_test_file(path, destinations, folders + searched_folders(path, args.paths), windows,
                                          notifiers)
        else:
            diagnostics = check_file(path, destinations, folders + searched_folders(path, args.paths), windows,
                                     notifiers)
        for d in diagnostics:  # an imported file's findings show once
            key = (d.code, d.message, d.span)
            if key not in seen:
                seen.add(key)
                findings.append(d)
    findings.sort(key=Diagnostic.sort_key)
    print_diagnostics(findings, args.format)
    errors = sum(d.is_error for d in findings)
    warnings = len(findings) - errors
    if args.format == "text":
        print(f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}", file=sys.stderr)
    return EXIT_FINDINGS if errors or (args.strict and warnings) else EXIT_OK
