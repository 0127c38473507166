"""How long the PS3.15 basic profile block takes per document: a rule file that routes a
de-identified copy (`copy to RESEARCH { apply deid.basic }`, as tests/test_basic_profile.py
checks it), evaluated on pydicom's bundled instances; the median of 3, the copy included."""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import rulesengine

ROOT = Path(__file__).resolve().parent.parent
DEID_RULES = """\
import "profiles/basic-confidentiality.rules" as deid
rule "deid" {
  then copy to RESEARCH { apply deid.basic }
}
"""
DEID_RULES_PATH = ROOT / "rules" / "deid_basic_profile_check.rules"  # never written: names the import's folder
SAMPLES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm",
    "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm", "liver_1frame.dcm", "examples_overlay.dcm",
    "JPEG2000.dcm", "nested_priv_SQ.dcm",
)
RUNS = 3


def _elements(ds: Dataset) -> int:
    """Every element at every depth (reading them all, so that the timing measures the rules only)."""
    return sum(1 + sum(_elements(item) for item in elem.value) if elem.VR == "SQ" and elem.value else 1
               for elem in ds)


def milliseconds(ruleset, document: rulesengine.Document) -> float:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        ruleset.evaluate(document)  # edits go to the copy: the document itself stays as read
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def table() -> None:
    warnings.filterwarnings("ignore", "Invalid value for VR UI")  # rtdose.dcm holds a UID with a leading zero
    ruleset = rulesengine.compile_source(DEID_RULES, filename=str(DEID_RULES_PATH))
    print(f"apply deid.basic (median of {RUNS}, copy included):")
    for name in SAMPLES:
        document = rulesengine.Document.read(get_testdata_file(name, download=False))
        elements = _elements(document.dataset)
        print(f"  {name:24} {elements:6d} elements  {milliseconds(ruleset, document):8.1f} ms")
