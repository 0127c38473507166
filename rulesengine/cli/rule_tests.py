"""`dicom-rules test PATH...`: run the tests of *_test.rules files and report them as text,
JSON or JUnit XML."""

from __future__ import annotations

import json
import os
import re
import sys
import xml.etree.ElementTree as ET

from ..diagnostics import Span
from ..lang.loader import display_path
from ..ruletest import TEST_SUFFIX, Failure, TestResult, coverage_lines, load_suite, run_suite, why_not_run
from .common import EXIT_FINDINGS, EXIT_OK, UsageError, print_diagnostics, rule_files
from .options import (load_destinations, load_no_destination, load_notifiers, load_rules_folders, load_windows,
                      searched_folders)


def files_to_test(paths: list[str]) -> list[str]:
    """The test files named, found in folders named, or beside a rule file named."""
    found = []
    for path in rule_files(paths, include_tests=True):
        if path.endswith(TEST_SUFFIX):
            found.append(path)
        elif os.path.isfile(path[: -len(".rules")] + TEST_SUFFIX) and not os.path.isdir(path):
            found.append(path[: -len(".rules")] + TEST_SUFFIX)
    return list(dict.fromkeys(found))


def cmd_test(args) -> int:
    try:
        pattern = re.compile(args.run) if args.run else None
    except re.error as exc:
        raise UsageError(f"--run: bad regular expression: {exc}") from None
    destinations = load_destinations(args)
    no_destination = load_no_destination(args)
    folders = load_rules_folders(args)
    windows = load_windows(args)
    notifiers = load_notifiers(args)
    files = files_to_test(args.paths)
    if not files:
        print("no *_test.rules files found", file=sys.stderr)
        return EXIT_FINDINGS
    results_by_file: dict[str, list[TestResult]] = {}
    broken = 0
    coverage: list[str] = []
    for path in files:
        suite = load_suite(path, destinations, no_destination, folders + searched_folders(path, args.paths), windows,
                           notifiers)
        if suite.errors:
            print_diagnostics([d for d in suite.diagnostics if d.is_error], "text", sys.stderr)
            print(f"{display_path(path)}: its tests did not run: {why_not_run(suite)}", file=sys.stderr)
            broken += 1
            if args.format == "text":
                continue
            # Reports for CI show a broken file as a failing entry, not as silence.
            failures = [Failure(d.span or Span.point(display_path(path), 1, 1), d.message) for d in suite.errors]
            results_by_file[display_path(path)] = [
                TestResult(display_path(path), f"(not run: {why_not_run(suite)})",
                           Span.point(display_path(path), 1, 1), failures)]
            continue
        results = run_suite(suite, pattern)
        results_by_file[display_path(path)] = results
        if args.coverage:
            coverage.extend(coverage_lines(suite, results))
    all_results = [r for results in results_by_file.values() for r in results]
    failed = [r for r in all_results if not r.passed]
    if args.format == "json":
        print(_json(all_results))
    elif args.format == "junit":
        print(_junit(results_by_file))
    else:
        for file, results in results_by_file.items():
            for result in results:
                if result.passed and not args.verbose:
                    continue
                print(f"{'ok  ' if result.passed else 'FAIL'}  {file}:{result.span.line}: {result.name}")
                for failure in result.failures:
                    print(f"      {failure.span.file}:{failure.span.line}:{failure.span.column}: {failure.message}")
        count = len(all_results)
        not_run = f", {broken} test file{'s' * (broken != 1)} not run (see above)" if broken else ""
        print(f"{count} test{'s' * (count != 1)}, {count - len(failed)} passed, {len(failed)} failed{not_run}")
    if coverage:
        print("\n".join(coverage), file=sys.stderr if args.format != "text" else sys.stdout)
    if pattern is not None and not all_results:
        print(f"no test matches --run {args.run!r}", file=sys.stderr)
        return EXIT_FINDINGS
    return EXIT_FINDINGS if failed or broken else EXIT_OK


# ---- output ----------------------------------------------------------------------------


def _junit(results_by_file: dict[str, list[TestResult]]) -> str:
    root = ET.Element("testsuites")
    for file, results in results_by_file.items():
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(results)),
                              failures=str(sum(not r.passed for r in results)),
                              time=f"{sum(r.seconds for r in results):.3f}")
        for result in results:
            case = ET.SubElement(suite, "testcase", classname=file, name=result.name, time=f"{result.seconds:.3f}")
            for failure in result.failures:
                node = ET.SubElement(case, "failure", message=failure.message)
                node.text = f"{failure.span.file}:{failure.span.line}:{failure.span.column}: {failure.message}"
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _json(results: list[TestResult]) -> str:
    return json.dumps([
        {"file": r.file, "name": r.name, "line": r.span.line, "passed": r.passed, "seconds": round(r.seconds, 4),
         "failures": [{"line": f.span.line, "column": f.span.column, "message": f.message} for f in r.failures]}
        for r in results
    ], indent=2, ensure_ascii=False)
