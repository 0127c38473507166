"""`dicom-rules` run as a user runs it: in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.files import ROOT


def dicom_rules(*args, cwd: Path | str | None = None, timeout: float = 120,
                input_text: str | None = None) -> subprocess.CompletedProcess:
    """`python -m rulesengine ARGS` as a user runs `dicom-rules` (in the current folder unless
    `cwd` is given). Whatever it is asked, it never answers with a traceback."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "rulesengine", *map(str, args)], cwd=cwd, env=env, check=False,
                            input=input_text, capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output  # main() turns unexpected exceptions into this line
    return result
