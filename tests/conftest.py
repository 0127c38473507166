"""Shared fixtures: real DICOM files and a helper to compile and evaluate rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

import rulesengine
from rulesengine import Arrival, Document

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "samples"


def bundled(name: str) -> str:
    """A test file bundled with pydicom (never one that would be downloaded)."""
    return get_testdata_file(name, download=False)


@pytest.fixture
def ct_document() -> Document:
    return Document.read(SAMPLES / "ct_chest.dcm", Arrival(calling_aet="CT1", called_aet="ROUTER",
                                                            source_name="main", source_kind="listener"))


def evaluate(source: str, document: Document | None = None, destinations=None, **values):
    """Compile `source`, build a document from keyword values when none is given, evaluate."""
    ruleset = rulesengine.compile_source(source, destinations)
    if document is None:
        document = Document()
        for path, value in values.items():
            document.set(path.replace("__", "."), value)
    return ruleset.evaluate(document)


@pytest.fixture
def run_in(tmp_path, monkeypatch):
    """Work inside tmp_path, so findings show short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dicom_rules(*args, cwd: Path | str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m rulesengine ARGS` as a user runs `dicom-rules` (in the current folder unless
    `cwd` is given). Whatever it is asked, it never answers with a traceback."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "rulesengine", *map(str, args)], cwd=cwd, env=env, check=False,
                            capture_output=True, text=True, encoding="utf-8", timeout=timeout)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "internal error" not in output, output  # main() turns unexpected exceptions into this line
    return result


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


os.environ.setdefault("PYTHONIOENCODING", "utf-8")
