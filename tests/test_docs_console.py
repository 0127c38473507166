"""Every ```console block in docs/*.md is run, and its output must be what the page shows.

A block holds commands (lines starting with `$ `) each followed by its output
(stdout and stderr as they interleave). The commands run through a shell in a
scratch copy of rules/ and examples/, with `dicom-rules` on the PATH, so the
pages show real output and cannot rot. A fenced block right after a line
`<!-- file: NAME -->` is written to NAME first, for the page's commands to use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.files import ROOT

BLOCK = re.compile(r"```console\n(.*?)```", re.S)
FILE = re.compile(r"<!-- file: (\S+) -->\s*\n```[\w-]*\n(.*?)```", re.S)


def console_blocks():
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text(encoding="utf-8")
        files = {name: body for name, body in FILE.findall(text)}
        for number, match in enumerate(BLOCK.finditer(text), 1):
            yield pytest.param(match.group(1), files, id=f"{page.name}#{number}")


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


def run_block(block: str, files: dict[str, str], scratch: Path, tmp_path: Path):
    """Run a block's commands in a fresh copy of `scratch`; yield (command, output)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    launcher = bin_dir / "dicom-rules"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rulesengine "$@"\n')
    launcher.chmod(0o755)
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(scratch, work)
    for name, body in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(body, encoding="utf-8")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT)}
    for command, _expected in commands(block):
        result = subprocess.run(["sh", "-c", "{ " + command + "\n} 2>&1"], cwd=work, env=env,
                                capture_output=True, text=True)
        yield command, result.stdout.rstrip()


# Timings differ from run to run; they are compared as placeholders.
_TIMINGS = re.compile(r'(time="|"seconds": )[0-9.]+')


def _comparable(text: str) -> str:
    return _TIMINGS.sub(r"\1#", text)


@pytest.mark.parametrize("block,files", list(console_blocks()))
def test_console_block_output(block, files, scratch, tmp_path):
    expected = dict(commands(block))
    for command, output in run_block(block, files, scratch, tmp_path):
        assert _comparable(output) == _comparable(expected[command]), f"$ {command}\n--- actual ---\n{output}"
