"""`dicom-rules compile RULES`: check and compile a rule file; with --show-code, print the
Python it compiles to, each line with the rule-file position it came from."""

from __future__ import annotations

import os
import sys

from ..lang.api import compile_file
from .common import EXIT_OK, UsageError
from .options import load_destinations, load_no_destination, load_notifiers, load_rules_folders, load_windows


def cmd_compile(args) -> int:
    if not os.path.isfile(args.rules):
        raise UsageError(f"{args.rules}: no such rule file")
    # A rule file with errors raises RulesError: main() prints its findings and exits 1.
    ruleset = compile_file(args.rules, load_destinations(args), no_destination=load_no_destination(args),
                           folders=load_rules_folders(args), windows=load_windows(args),
                           notifiers=load_notifiers(args))
    if args.show_code or args.traced:
        print(ruleset.generated_code(traced=args.traced), flush=True)  # before the summary on stderr
    count = len(ruleset.rules)
    print(f"{args.rules}: {count} rule{'s' * (count != 1)} compiled, version {ruleset.version[:12]}",
          file=sys.stderr)
    return EXIT_OK
