"""Where the project's files are (the PS3.15 profile's tables, generator and generated files among
them), pydicom's bundled test files, and writing a text file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLES = ROOT / "examples" / "samples"

# The PS3.15 Basic Application Level Confidentiality Profile: Table E.1-1 (its basic column and its
# option columns), the generator and the two rule files it writes.
BASIC_PROFILE_TABLE = ROOT / "data" / "ps3-15-basic-profile.csv"
PROFILE_OPTIONS_TABLE = ROOT / "data" / "ps3-15-profile-options.csv"
BASIC_PROFILE = ROOT / "rules" / "profiles" / "basic-confidentiality.rules"
PROFILE_OPTIONS = ROOT / "rules" / "profiles" / "basic-confidentiality-options.rules"
PROFILE_GENERATOR = ROOT / "tools" / "make_basic_profile.py"
SAFE_PRIVATE_TABLE = ROOT / "data" / "ps3-15-safe-private.csv"

# pydicom's bundled files the profile is checked on: CT, MR (the same instance twice, explicit and
# implicit VR), RT plan, structure set and dose, two SRs, an ECG waveform, a segmentation, an image
# with an overlay, a JPEG 2000 image, and a data set of nested private sequences.
BUNDLED_INSTANCES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm",
    "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm", "liver_1frame.dcm", "examples_overlay.dcm",
    "JPEG2000.dcm", "nested_priv_SQ.dcm",
)
NOT_AN_INSTANCE = {"nested_priv_SQ.dcm"}  # no SOP class or instance UID: no Part 10 file can be written


def bundled(name: str) -> str:
    """A test file bundled with pydicom (never one that would be downloaded)."""
    return get_testdata_file(name, download=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_profile_generator() -> ModuleType:
    """tools/make_basic_profile.py as a module (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location("make_basic_profile", PROFILE_GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module
