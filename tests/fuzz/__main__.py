"""`make fuzz`: a long fuzzing campaign that prints its counts.

    PYTHONPATH=tests python -m fuzz [--count N] [--seed S] [--keep]

FUZZ_COUNT (5000) and FUZZ_SEED (6) are the defaults. The exit status is 0 when there was
no internal error, nothing stuck, nothing lost, no failed delivery misjudged, every file
was accounted for with a reason and a normal storescu still succeeded afterwards; 1
otherwise, and the campaign's
folder (files, logs, journal) is kept for a look.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import campaign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=int(os.environ.get("FUZZ_COUNT") or 5000))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED") or 6))
    parser.add_argument("--keep", action="store_true", help="keep the campaign's folder even when all is well")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dicom-rules-fuzz-"))
    result = campaign.run(args.seed, args.count, root, progress=lambda text: print(text, flush=True))
    print()
    print(f"fuzz: {args.count} files, seed {args.seed}, {result.seconds:.0f} s, "
          f"router log {result.log_lines} lines")
    print(result.table())
    print("normal storescu afterwards: " + ("; ".join(result.normal_sender) or "Success, delivered everywhere"))
    for tally in result.tallies.values():
        for problem in tally.problems[:10] + tally.unexplained[:10]:
            print(f"  {tally.intake}: {problem}")
    if result.clean and not args.keep:
        campaign.remove(root)
    else:
        print(f"campaign folder kept: {root}")
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
