"""dicom-rules: the command line. Each command is a cmd_<verb>(args) -> exit status in the
module of its group; this module builds the parser and runs one command."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime

from .. import __version__
from ..config import ConfigError
from ..diagnostics import RulesError
from ..lang.nodes import MESSAGES
from ..runtime.storage import JournalUnavailable
from .cleanup import add_cleanup_command
from .compile import cmd_compile
from .console import add_console_commands
from .common import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, report_rules_error
from .dictionary import cmd_dict
from .dry_run import cmd_diff, cmd_dry_run
from .fmt import cmd_fmt
from .lint import cmd_lint
from .query import add_query_arguments, cmd_query
from .replay import add_replay_commands
from .requests import MESSAGES as REQUEST_MESSAGES, cmd_requests
from .notifications import STATES, cmd_notifications
from .router import cmd_check_config, cmd_echo, cmd_quarantine, cmd_queue, cmd_run, cmd_schema, cmd_send
from .rule_tests import cmd_test


# ---- the parser -------------------------------------------------------------------


def _arrival_time(text: str) -> float:
    """--arrival: a local date and time, YYYYMMDDHHMMSS (seconds may be left out), in seconds."""
    try:
        return datetime.strptime(text.strip().ljust(14, "0"), "%Y%m%d%H%M%S").timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date and time YYYYMMDDHHMMSS, "
                                         "e.g. 20240106183000") from None


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
    dry.add_argument("--arrival", type=_arrival_time, metavar="YYYYMMDDHHMMSS",
                     help="the arrival time to assume (Arrival.*, today(), now()); default: now")
    _add_format(dry, ("text", "json"))
    dry.add_argument("--out", metavar="DIR", help="write each destination's copy to DIR/DESTINATION/")
    dry.add_argument("--explain", action="store_true", help="show every condition with the values it compared")
    dry.add_argument("--config", help="router configuration: its destinations are known")
    dry.add_argument("--message", default="C-STORE", choices=MESSAGES,
                     help="evaluate each file as this request's identifier (default: C-STORE, an instance)")
    dry.set_defaults(func=cmd_dry_run)

    diff = sub.add_parser("diff", help="show documents whose decision changes between two rule files")
    diff.add_argument("old_rules")
    diff.add_argument("new_rules")
    diff.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    diff.add_argument("--calling-aet", help="the sender's AE title to assume")
    diff.add_argument("--called-aet", help="the router's AE title to assume")
    diff.add_argument("--source", help="the listener or watched folder name to assume (Source.Name)")
    diff.add_argument("--arrival", type=_arrival_time, metavar="YYYYMMDDHHMMSS",
                      help="the arrival time to assume (Arrival.*, today(), now()); default: now")
    diff.add_argument("--config", help="router configuration: its destinations are known")
    _add_format(diff, ("text", "json"))
    diff.set_defaults(func=cmd_diff)

    compile_ = sub.add_parser("compile", help="check and compile a rule file; print the Python it compiles to")
    compile_.add_argument("rules", help="the rule file")
    compile_.add_argument("--show-code", action="store_true",
                          help="print the generated Python, each line with its rule-file position")
    compile_.add_argument("--traced", action="store_true",
                          help="print the traced variant (what --explain, test and --coverage run)")
    compile_.add_argument("--config", help="router configuration: its destinations are known")
    compile_.add_argument("--destinations", help="known destination names, comma-separated")
    compile_.set_defaults(func=cmd_compile)

    fmt = sub.add_parser("fmt", help="rewrite rule files in the canonical layout")
    fmt.add_argument("paths", nargs="+", metavar="PATH")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    fmt.add_argument("--diff", action="store_true", help="print what would change")
    fmt.set_defaults(func=cmd_fmt)

    test = sub.add_parser("test", help="run the tests in *_test.rules files")
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.add_argument("--run", metavar="REGEX", help="only tests whose name matches")
    test.add_argument("--coverage", action="store_true", help="list rules and branches no test reached")
    _add_format(test, ("text", "json", "junit"))
    test.add_argument("--config", help="router configuration: its destinations are known")
    test.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    test.set_defaults(func=cmd_test)

    run = sub.add_parser("run", help="run the router")
    run.add_argument("config", help="router configuration (YAML)")
    run.add_argument("-v", "--verbose", action="count", default=0, help="log more (each delivery, pynetdicom)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="check a router configuration and its rules together")
    check.add_argument("config", help="router configuration (YAML)")
    _add_format(check, ("text", "json", "github"))
    check.set_defaults(func=cmd_check_config)

    schema = sub.add_parser("schema", help="print the JSON Schema of the configuration")
    schema.set_defaults(func=cmd_schema)

    echo = sub.add_parser("echo", help="C-ECHO a destination of a configuration")
    echo.add_argument("config", help="router configuration (YAML)")
    echo.add_argument("destination", help="a destination named in it")
    echo.set_defaults(func=cmd_echo)

    send = sub.add_parser("send", help="send files or folders to a destination (no rules)")
    send.add_argument("config", help="router configuration (YAML)")
    send.add_argument("destination", help="a destination named in it")
    send.add_argument("files", nargs="+", metavar="FILE_OR_FOLDER", help="DICOM files; folders are searched")
    send.set_defaults(func=cmd_send)

    query = sub.add_parser("query", help="send a C-FIND to a destination and print the matches")
    add_query_arguments(query)
    query.set_defaults(func=cmd_query)

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
    queue.set_defaults(func=cmd_queue)

    notifications = sub.add_parser("notifications", help="notifications waiting, sent or dead; purge finished ones")
    notifications.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    notifications.add_argument("action", nargs="?", choices=("list", "purge"), default="list",
                               help="list (the default): counts, then those waiting and dead with their last error; "
                                    "purge: forget those sent or dead")
    notifications.add_argument("--state", action="append", choices=STATES,
                               help="list: only this state (repeatable; by default queued, retrying and dead)")
    notifications.add_argument("--older-than", type=float, metavar="SECONDS", help="purge: only those older than this")
    notifications.add_argument("--limit", type=int, default=50, help="list: at most this many")
    notifications.set_defaults(func=cmd_notifications)

    quarantine = sub.add_parser("quarantine", help="list quarantined instances; release them to the rules again")
    quarantine.add_argument("config", help="router configuration (YAML); its storage holds the quarantine")
    quarantine.add_argument("action", nargs="?", choices=("list", "release"), default="list",
                            help="list (the default): what is kept aside and why; release: route again")
    quarantine.add_argument("instances", nargs="*", metavar="INSTANCE",
                            help="release: a SOP Instance UID or a path as `list` shows it (DAY/NAME.dcm)")
    quarantine.add_argument("--all", action="store_true", help="release: every quarantined instance")
    quarantine.set_defaults(func=cmd_quarantine)

    requests = sub.add_parser("requests", help="the queries, retrievals and MPPS messages the router answered")
    requests.add_argument("config", help="router configuration (YAML); its storage holds the journal")
    requests.add_argument("action", nargs="?", choices=("list", "purge"), default="list",
                          help="list (the default): newest first; purge: forget finished requests")
    requests.add_argument("--message", action="append", choices=REQUEST_MESSAGES, help="list: only this message (repeatable)")
    requests.add_argument("--limit", type=int, default=50, help="list: at most this many")
    requests.add_argument("--older-than", type=float, metavar="SECONDS", help="purge: only requests older than this")
    _add_format(requests, ("text", "json"))
    requests.set_defaults(func=cmd_requests)

    dictionary = sub.add_parser("dict", help="look up a data element by keyword, tag or name")
    dictionary.add_argument("name", nargs="+", metavar="NAME_OR_TAG")
    _add_format(dictionary, ("text", "json"))
    dictionary.set_defaults(func=cmd_dict)

    add_cleanup_command(sub)
    add_replay_commands(sub)
    add_console_commands(sub)
    return parser


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
    except (ConfigError, JournalUnavailable) as exc:
        print(f"dicom-rules: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - a bug: say so in one line, with what to report
        where = exc.__traceback__
        while where is not None and where.tb_next is not None:
            where = where.tb_next
        origin = f" at {os.path.basename(where.tb_frame.f_code.co_filename)}:{where.tb_lineno}" if where else ""
        print(f"dicom-rules: internal error: {type(exc).__name__}: {exc}{origin}; "
              "please report it with the command that caused it", file=sys.stderr)
        return EXIT_INTERNAL

