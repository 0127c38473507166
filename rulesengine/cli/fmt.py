"""`dicom-rules fmt [--check] [--diff] PATH...`: put rule files in the canonical layout."""

from __future__ import annotations

import difflib
import os
import sys
import tempfile

from ..diagnostics import RulesError
from ..lang.formatter import format_source
from .common import EXIT_FINDINGS, EXIT_OK, print_diagnostics, rule_files


def cmd_fmt(args) -> int:
    """Format every rule file named (folders recursively, tests included).

    Rewrites changed files in place, unless --check or --diff asks only to report.
    Exits 1 when a file has a syntax error, or with --check when a file would change.
    """
    write = not (args.check or args.diff)
    status = EXIT_OK
    for path in rule_files(args.paths, include_tests=True):
        if not _format_path(path, write=write, show_diff=args.diff, check=args.check):
            status = EXIT_FINDINGS
    return status


def _format_path(path: str, *, write: bool, show_diff: bool, check: bool) -> bool:
    """Format one file; False when it has errors or, under --check, would change."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:  # newline="": CRLF counts as a change
            original = fh.read()
        # A byte order mark is read past, as the loader does, and kept when the file is rewritten.
        bom = "\ufeff" if original.startswith("\ufeff") else ""
        original = original[len(bom):]
        formatted = format_source(original, path)
    except RulesError as exc:
        print_diagnostics(exc.diagnostics, "text", sys.stderr)
        return False
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return False
    if formatted == original:
        return True
    if show_diff:
        sys.stdout.write(unified_diff(original, formatted, path))
    if write:
        _replace(path, bom + formatted)
        print(f"reformatted {path}", file=sys.stderr)
        return True
    print(f"would reformat {path}", file=sys.stderr)
    return not check


def unified_diff(original: str, formatted: str, path: str) -> str:
    lines = difflib.unified_diff(original.splitlines(keepends=True), formatted.splitlines(keepends=True),
                                 fromfile=path, tofile=path, fromfiledate="(original)",
                                 tofiledate="(formatted)")
    # A last line without a newline gets the marker `patch` expects.
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _replace(path: str, text: str) -> None:
    """Write `text` to `path` atomically: a temporary file in the same folder, then a rename."""
    path = os.path.realpath(path)  # through a symbolic link, not over it
    folder = os.path.dirname(path)
    mode = os.stat(path).st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".fmt-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, mode)  # keep the file's permissions, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
