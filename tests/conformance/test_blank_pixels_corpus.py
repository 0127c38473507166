"""`blank pixels` over every file of the conformance corpus (every file pydicom bundles, and
the generated ones): each instance the intake reads either leaves blanked, every pixel
outside the region as pydicom decodes the original and the region at the fill value, or is
quarantined with a reason that says what `blank pixels` could not do. Never another failure.
Every bundled compressed image but the two named in UNDECODABLE is decoded (JPEG, JPEG 2000,
RLE, and JPEG-LS lossless and near-lossless), and the JPEG-LS ones are compared pixel by pixel
(near-lossless against the original as decoded)."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest

from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

from rulesengine import compile_source
from rulesengine.document import Document, DocumentReadError

from .corpus import corpus

RULES = 'rule "r" {\n then {\n blank pixels (1, 2, 5, 3) with 0\n route to OUT\n }\n}\n'
SOURCES = corpus()
IMAGES = [source for source in SOURCES if not source.name.startswith("generated/")]
# What no installed decoder reads (pydicom cannot either): quarantined with the decoder's reason.
UNDECODABLE = {
    "JPEG-lossy.dcm",  # JPEG extended whose scan libjpeg refuses ("a misplaced marker segment")
    "JPEG2000-embedded-sequence-delimiter.dcm",  # a sequence delimiter inside the fragment's J2K header
}


@pytest.fixture(scope="module")
def ruleset():
    return compile_source(RULES, ["OUT"])


def _decoded(path) -> np.ndarray | None:
    """The original's pixels as pydicom decodes them (colour as RGB), or None when it cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001 - pydicom cannot decode it either: nothing to compare with
        return None


@pytest.mark.parametrize("source", IMAGES, ids=[source.name for source in IMAGES])
def test_blank_pixels_blanks_or_quarantines_with_the_reason(source, ruleset, tmp_path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            document = Document.read_header(source.path)
    except DocumentReadError:
        return  # refused at intake, before any rule runs
    decision = ruleset.evaluate(document)
    jpeg_ls = document.file_meta is not None and document.file_meta.get("TransferSyntaxUID") in (
        JPEGLSLossless, JPEGLSNearLossless)
    if decision.outcome == "quarantine":
        assert decision.exception is None or "blank pixels: " in decision.reason, decision.reason
        assert "blank pixels: " in decision.reason, decision.reason
        assert ("cannot be decoded" in decision.reason) == (source.name in UNDECODABLE), decision.reason
        assert not jpeg_ls, decision.reason
        return
    assert decision.outcome == "route", decision.reason
    written = tmp_path / "out.dcm"
    decision.destinations["OUT"].write(written)
    before, after = _decoded(source.path), _decoded(written)
    assert after is not None, "the blanked copy cannot be decoded"
    if jpeg_ls:
        assert before is not None and before.shape == after.shape, "the JPEG-LS original is compared with its copy"
    if before is None or before.shape != after.shape:
        return
    frames = before if int(pydicom.dcmread(source.path, stop_before_pixels=True).get("NumberOfFrames") or 1) > 1 \
        else before[np.newaxis]
    result = after if frames is before else after[np.newaxis]
    rows, columns = frames.shape[1:3]
    mask = np.zeros((rows, columns), bool)
    mask[2:5, 1:6] = True
    for original, blanked in zip(frames, result):
        assert np.array_equal(blanked[~mask], original[~mask]), "a pixel outside the region changed"
        assert (blanked[mask] == 0).all()
