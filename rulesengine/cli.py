"""dicom-rules: one thin cmd_<verb>(args) -> exit status per subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Iterable

from . import __version__
from .config import ConfigError
from .diagnostics import Diagnostic, RulesError, SourceCache, render_github, render_json, render_text

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
DICT_LIMIT = 50  # dictionary matches shown for a search by words


class UsageError(Exception):
    """Bad command-line use: a missing file, a bad option value. Exit status 2."""


def rule_files(paths: Iterable[str], include_tests: bool = False) -> list[str]:
    """Rule files named on the command line, folders searched recursively (sorted)."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(".rules") and (include_tests or not name.endswith("_test.rules")):
                        found.append(os.path.join(folder, name))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return found


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


# ---- lint ----------------------------------------------------------------------


def cmd_lint(args) -> int:
    from .lang.api import check_file
    destinations = load_destinations(args)
    folders = load_rules_folders(args)
    findings: list[Diagnostic] = []
    seen: set[tuple] = set()
    for path in rule_files(args.paths, include_tests=True):
        if path.endswith("_test.rules"):
            from .ruletest import check_test_file
            diagnostics = check_test_file(path, destinations, folders + searched_folders(path, args.paths))
        else:
            diagnostics = check_file(path, destinations, folders + searched_folders(path, args.paths))
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


def load_destinations(args):
    """Destinations from --destinations NAME,... and/or the config file's destinations."""
    names = None
    if getattr(args, "destinations", None):
        names = {name.strip(): {} for name in args.destinations.split(",") if name.strip()}
    if getattr(args, "config", None):
        from .config import destinations_from_config
        names = {**(names or {}), **destinations_from_config(args.config)}
    return names


def load_rules_folders(args) -> tuple[str, ...]:
    """Folders besides the rule file's own that imports and tables may read: the configuration's
    rules_folders; none without --config."""
    if getattr(args, "config", None):
        from .config import load_config
        return load_config(args.config, secrets=False).rules_folders
    return ()


def searched_folders(path: str, paths: Iterable[str]) -> tuple[str, ...]:
    """The folders named on the command line that `path` was found in: a library file deep in
    `lint rules/` may read what its importers in rules/ may."""
    where = os.path.abspath(path)
    return tuple(folder for folder in paths if os.path.isdir(folder)
                 and where.startswith(os.path.abspath(folder).rstrip(os.sep) + os.sep))


def load_no_destination(args) -> str:
    """What happens to a document no rule routes: the config file's no_destination, else quarantine."""
    if getattr(args, "config", None):
        from .config import load_config
        return load_config(args.config, secrets=False).no_destination
    return "quarantine"


# ---- dict ----------------------------------------------------------------------


def cmd_dict(args) -> int:
    from .lang.paths import lookup_name, suggest_keywords
    matches = lookup_name(" ".join(args.name))
    if not matches:
        suggestions = suggest_keywords(" ".join(args.name).replace(" ", ""))
        hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
        print(f"nothing in the dictionary matches {' '.join(args.name)!r}{hint}", file=sys.stderr)
        return EXIT_FINDINGS
    if args.format == "json":
        print(json.dumps([{"tag": m.tag_text, "keyword": m.keyword,
                           "name": m.name, "vr": m.vr, "vm": m.vm, "retired": m.retired} for m in matches],
                         indent=2))
        return EXIT_OK
    shown = matches[:DICT_LIMIT]
    for m in shown:
        retired = "  (retired)" if m.retired else ""
        print(f"{m.tag_text}  {m.keyword:<40} {m.vr:<8} VM {m.vm:<5} {m.name}{retired}")
    if len(matches) > len(shown):
        print(f"... and {len(matches) - len(shown)} more; add words to narrow the search", file=sys.stderr)
    return EXIT_OK


# ---- the parser -------------------------------------------------------------------


def _add_format(parser: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0], help="output format")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-rules", description="Lint, test, dry-run and format DICOM routing rules, and run the router on them.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    lint = sub.add_parser("lint", help="check rule files and report findings")
    lint.add_argument("paths", nargs="+", metavar="PATH", help="rule files or folders")
    _add_format(lint, ("text", "json", "github"))
    lint.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    lint.add_argument("--config", help="router configuration: its destinations are known")
    lint.add_argument("--destinations", help="known destination names, comma-separated")
    lint.set_defaults(func=cmd_lint)

    dry = sub.add_parser("dry-run", help="evaluate rules on DICOM files; sends nothing")
    dry.add_argument("rules", help="the rule file")
    dry.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    dry.add_argument("--calling-aet", help="the sender's AE title to assume")
    dry.add_argument("--called-aet", help="the router's AE title to assume")
    dry.add_argument("--source", help="the listener or watched folder name to assume (Source.Name)")
    _add_format(dry, ("text", "json"))
    dry.add_argument("--out", metavar="DIR", help="write each destination's copy to DIR/DESTINATION/")
    dry.add_argument("--explain", action="store_true", help="show every condition with the values it compared")
    dry.add_argument("--config", help="router configuration: its destinations are known")
    dry.set_defaults(func=lambda a: _lazy("dryrun", "cmd_dry_run")(a))

    diff = sub.add_parser("diff", help="show documents whose decision changes between two rule files")
    diff.add_argument("old_rules")
    diff.add_argument("new_rules")
    diff.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    diff.add_argument("--calling-aet", help="the sender's AE title to assume")
    diff.add_argument("--called-aet", help="the router's AE title to assume")
    diff.add_argument("--source", help="the listener or watched folder name to assume (Source.Name)")
    diff.add_argument("--config", help="router configuration: its destinations are known")
    _add_format(diff, ("text", "json"))
    diff.set_defaults(func=lambda a: _lazy("dryrun", "cmd_diff")(a))

    fmt = sub.add_parser("fmt", help="rewrite rule files in the canonical layout")
    fmt.add_argument("paths", nargs="+", metavar="PATH")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    fmt.add_argument("--diff", action="store_true", help="print what would change")
    fmt.set_defaults(func=lambda a: _lazy("formatting", "cmd_fmt")(a))

    test = sub.add_parser("test", help="run the tests in *_test.rules files")
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.add_argument("--run", metavar="REGEX", help="only tests whose name matches")
    test.add_argument("--coverage", action="store_true", help="list rules and branches no test reached")
    _add_format(test, ("text", "json", "junit"))
    test.add_argument("--config", help="router configuration: its destinations are known")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(func=lambda a: _lazy("ruletest", "cmd_test")(a))

    run = sub.add_parser("run", help="run the router")
    run.add_argument("config", help="router configuration (YAML)")
    run.add_argument("-v", "--verbose", action="count", default=0, help="log more (each delivery, pynetdicom)")
    run.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_run")(a))

    check = sub.add_parser("check-config", help="check a router configuration and its rules together")
    check.add_argument("config", help="router configuration (YAML)")
    _add_format(check, ("text", "json", "github"))
    check.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_check_config")(a))

    schema = sub.add_parser("schema", help="print the JSON Schema of the configuration")
    schema.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_schema")(a))

    echo = sub.add_parser("echo", help="C-ECHO a destination of a configuration")
    echo.add_argument("config", help="router configuration (YAML)")
    echo.add_argument("destination", help="a destination named in it")
    echo.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_echo")(a))

    send = sub.add_parser("send", help="send files or folders to a destination (no rules)")
    send.add_argument("config", help="router configuration (YAML)")
    send.add_argument("destination", help="a destination named in it")
    send.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER", help="DICOM files; folders are searched")
    send.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_send")(a))

    queue = sub.add_parser("queue", help="what is queued, dead or delivered; retry or purge")
    queue.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    queue.add_argument("action", nargs="?", choices=("list", "retry", "purge"), default="list",
                       help="list (the default): counts and items; retry: queue dead items again; "
                            "purge: forget finished items")
    queue.add_argument("--destination", help="only this destination")
    queue.add_argument("--state", action="append", choices=("queued", "sending", "delivered", "retrying", "dead"),
                       help="list or purge: only this state (repeatable); purge defaults to delivered, and "
                            "takes queued or retrying only with --destination naming a removed destination")
    queue.add_argument("--id", type=int, action="append", help="retry: only this delivery (repeatable)")
    queue.add_argument("--older-than", type=float, metavar="SECONDS", help="purge: only entries older than this")
    queue.add_argument("--limit", type=int, default=50, help="list: at most this many items")
    queue.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_queue")(a))

    quarantine = sub.add_parser("quarantine", help="list quarantined instances; release them to the rules again")
    quarantine.add_argument("config", help="router configuration (YAML); its storage holds the quarantine")
    quarantine.add_argument("action", nargs="?", choices=("list", "release"), default="list",
                            help="list (the default): what is kept aside and why; release: route again")
    quarantine.add_argument("instances", nargs="*", metavar="INSTANCE",
                            help="release: a SOP Instance UID or a path as `list` shows it (DAY/NAME.dcm)")
    quarantine.add_argument("--all", action="store_true", help="release: every quarantined instance")
    quarantine.set_defaults(func=lambda a: _lazy("runtime.commands", "cmd_quarantine")(a))

    dictionary = sub.add_parser("dict", help="look up a data element by keyword, tag or name")
    dictionary.add_argument("name", nargs="+", metavar="NAME_OR_TAG")
    _add_format(dictionary, ("text", "json"))
    dictionary.set_defaults(func=cmd_dict)
    return parser


def _lazy(module: str, function: str) -> Callable:
    import importlib
    return getattr(importlib.import_module(f"rulesengine.{module}"), function)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"dicom-rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RulesError as exc:
        return report_rules_error(exc)
    except ConfigError as exc:
        print(f"dicom-rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, with what to report
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        origin = f" at {os.path.basename(where.tb_frame.f_code.co_filename)}:{where.tb_lineno}" if where else ""
        print(f"dicom-rules: internal error: {type(exc).__name__}: {exc}{origin}; "
              "please report it with the command that caused it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
