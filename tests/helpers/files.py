"""Where the project's files are, pydicom's bundled test files, and writing a text file."""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLES = ROOT / "examples" / "samples"


def bundled(name: str) -> str:
    """A test file bundled with pydicom (never one that would be downloaded)."""
    return get_testdata_file(name, download=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
