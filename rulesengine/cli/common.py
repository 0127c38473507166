"""What every dicom-rules command shares: exit statuses, bad usage, the files named on the
command line, and findings printed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..diagnostics import Diagnostic, RulesError, SourceCache, render_github, render_json, render_text

EXIT_OK = 0
EXIT_FINDINGS = 1  # a finding, a failed test, a changed or unreadable document: see docs/cli.md
EXIT_USAGE = 2
EXIT_INTERNAL = 3  # a bug in dicom-rules
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a command stopped by SIGINT


class UsageError(Exception):
    """Bad command-line use: a missing file, a bad option value. Exit status 2."""


@dataclass(frozen=True)
class InputFile:
    path: str
    relative: str  # a name distinct among the files found: what dry-run --out writes it as


def require_journal(config) -> None:
    """Before a command opens the journal of `config`: a SQLite journal that is not there is a
    usage error (opening it would create an empty one, and a wrong storage path would read as
    "nothing there")."""
    if config.journal is None and not os.path.isfile(os.path.join(config.storage, "journal.sqlite")):
        raise UsageError(f"no journal in {config.storage} (storage of {config.path}): has the router run "
                         "with this configuration?")


def not_hidden(name: str) -> bool:
    return not name.startswith(".")


def input_files(paths: Iterable[str], wanted: Callable[[str], bool] = not_hidden) -> Iterator[InputFile]:
    """Files named, and the files under folders named whose name is `wanted` (hidden folders
    skipped), in sorted order. Each is named relative to the folder named (a file named: by
    its base name), or by its path where two names clash. Raises UsageError for a path that
    does not exist."""
    used: set[str] = set()
    for found in _walk(paths, wanted):
        if found.relative in used:
            found = InputFile(found.path, os.path.normpath(found.path).lstrip(os.sep).replace(".." + os.sep, ""))
        used.add(found.relative)
        yield found


def _walk(paths: Iterable[str], wanted: Callable[[str], bool]) -> Iterator[InputFile]:
    for item in paths:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if wanted(name):
                        path = os.path.join(folder, name)
                        yield InputFile(path, os.path.relpath(path, item))
        elif os.path.isfile(item):
            yield InputFile(item, os.path.basename(item))
        else:
            raise UsageError(f"{item}: no such file or folder")


def rule_files(paths: Iterable[str], include_tests: bool = False) -> list[str]:
    """Rule files named on the command line, folders searched recursively (sorted)."""
    def is_rule_file(name: str) -> bool:
        return name.endswith(".rules") and (include_tests or not name.endswith("_test.rules"))
    return [found.path for found in input_files(paths, is_rule_file)]


def print_diagnostics(diagnostics: list[Diagnostic], fmt: str, stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        print(render_json(diagnostics), file=stream)
    elif fmt == "github":
        if diagnostics:
            print(render_github(diagnostics), file=stream)
    elif diagnostics:
        print(render_text(diagnostics, SourceCache()), file=stream)


def report_rules_error(exc: RulesError) -> int:
    print_diagnostics(exc.diagnostics, "text", sys.stderr)
    return EXIT_FINDINGS
