"""Every ```console block in docs/*.md is run, and its output must be what the page shows.

A block holds commands (lines starting with `$ `) each followed by its output
(stdout and stderr as they interleave). The commands run through a shell in a
scratch copy of rules/ and examples/, with `dicom-rules` on the PATH, so the
pages show real output and cannot rot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def console_blocks():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for number, match in enumerate(BLOCK.finditer(page.read_text(encoding="utf-8")), 1):
            yield pytest.param(match.group(1), id=f"{page.name}#{number}")


def commands(block: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(command, "\n".join(output).rstrip()) for command, output in steps]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("console")
    shutil.copytree(ROOT / "rules", folder / "rules")
    shutil.copytree(ROOT / "examples", folder / "examples")
    return folder


@pytest.mark.parametrize("block", list(console_blocks()))
def test_console_block_output(block, scratch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "dicom-rules"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rulesengine "$@"\n')
    launcher.chmod(0o755)
    work = tmp_path / "work"
    shutil.copytree(scratch, work)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT)}
    for command, expected in commands(block):
        result = subprocess.run(["sh", "-c", command + " 2>&1"], cwd=work, env=env, capture_output=True, text=True)
        assert result.stdout.rstrip() == expected, f"$ {command}\n--- actual ---\n{result.stdout}"
