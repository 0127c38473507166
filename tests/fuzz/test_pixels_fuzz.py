"""`blank pixels` on mutated files (the fuzzing campaign's mutations of pydicom's images:
JPEG, JPEG 2000, RLE, big endian, deflated, multi-frame): each file is refused at intake,
blanked, or quarantined with a reason that says what `blank pixels` could not do; never
another failure, and a blanked copy is always a file pydicom reads back."""

from __future__ import annotations

import warnings

import pydicom
import pytest

from rulesengine import compile_source
from rulesengine.copies import CopyError, write_copy
from rulesengine.document import Document, DocumentReadError

from . import mutate

SEED, COUNT = 9, 300
RULES = 'rule "r" {\n then {\n blank pixels (0, 0, DataSet.Columns, 4), (3, 3, 2, 2) with 1\n route to OUT\n }\n}\n'


def test_mutated_files_are_blanked_or_quarantined_with_the_reason(tmp_path):
    ruleset = compile_source(RULES, ["OUT"])
    outcomes: dict[str, int] = {}
    for item in mutate.mutants(SEED, COUNT):
        path = tmp_path / item.name
        path.write_bytes(item.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                document = Document.read_header(path)
            except DocumentReadError:
                outcomes["refused"] = outcomes.get("refused", 0) + 1
                continue
            decision = ruleset.evaluate(document)
            outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
            if decision.outcome == "quarantine":
                assert "blank pixels: " in decision.reason, (item.name, decision.reason)
                assert "Traceback" not in decision.reason
                continue
            assert decision.outcome == "route", (item.name, decision.reason)
            written = tmp_path / "out.dcm"
            try:
                write_copy(decision.destinations["OUT"], "OUT", written)
            except CopyError:  # a mutated value the copy cannot encode: quarantined with the reason
                outcomes["copy failed"] = outcomes.get("copy failed", 0) + 1
                continue
            pydicom.dcmread(written)
    assert outcomes.get("route") and outcomes.get("quarantine"), outcomes
