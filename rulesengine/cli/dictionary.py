"""`dicom-rules dict NAME_OR_TAG...`: look up data elements in the DICOM dictionary."""

from __future__ import annotations

import json
import sys

from ..lang.paths import lookup_name, suggest_keywords
from .common import EXIT_FINDINGS, EXIT_OK

DICT_LIMIT = 50  # dictionary matches shown for a search by words


def cmd_dict(args) -> int:
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
