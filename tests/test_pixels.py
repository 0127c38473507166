"""`blank pixels`: rectangles of the pixel data set to a fill value, every other pixel unchanged.

On pydicom's bundled files (uncompressed, big endian, JPEG baseline, extended and lossless,
JPEG 2000, RLE, JPEG-LS lossless and near-lossless; grey and colour) and on images made here
(multi-frame, planar configuration 1, signed with bits stored < bits allocated, float), through
the rules as the router runs them: read without the pixel data, evaluated, written, read back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, \
    JPEGLSLossless, JPEGLSNearLossless, RLELossless, generate_uid

from helpers.cli import dicom_rules
from rulesengine import compile_source, check_file
from rulesengine.document import Document


def bundled(name: str) -> str:
    return get_testdata_file(name, download=False)


def blank_with(rules_body: str, source: str | Path, tmp_path: Path, destinations=("OUT",)):
    """Run `rules_body` (the actions of one rule) on `source` read as the router reads it; the
    decision, and the copy for OUT as written and read back."""
    ruleset = compile_source(f'rule "r" {{\n then {{\n {rules_body}\n route to OUT\n }}\n}}\n', list(destinations))
    errors = [d for d in ruleset.diagnostics if d.is_error]
    assert not errors, errors
    document = Document.read_header(source)
    decision = ruleset.evaluate(document)
    if decision.outcome != "route":
        return decision, None
    written = tmp_path / "out.dcm"
    decision.destinations["OUT"].write(written)
    return decision, pydicom.dcmread(written)


def region_mask(shape: tuple[int, int], *regions) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x, y, width, height in regions:
        mask[max(y, 0):max(y + height, 0), max(x, 0):max(x + width, 0)] = True
    return mask


def assert_blanked(before: np.ndarray, after: np.ndarray, mask: np.ndarray, fill, frames: bool = False) -> None:
    """Inside the mask every sample is `fill`; outside, every pixel is as it was."""
    assert before.shape == after.shape
    if frames:
        for frame_before, frame_after in zip(before, after):
            assert_blanked(frame_before, frame_after, mask, fill)
        return
    assert np.array_equal(after[~mask], before[~mask]), "a pixel outside the regions changed"
    inside = after[mask]
    assert inside.size and np.all(inside == np.asarray(fill, dtype=inside.dtype)), np.unique(inside)


# ---- uncompressed: edited where it lies, transfer syntax kept -------------------------------------


@pytest.mark.parametrize("name, syntax", [("CT_small.dcm", ExplicitVRLittleEndian),
                                          ("MR_small.dcm", ExplicitVRLittleEndian),
                                          ("MR_small_bigendian.dcm", ExplicitVRBigEndian)])
def test_uncompressed_grey_images_keep_every_pixel_outside_the_regions(name, syntax, tmp_path):
    source = bundled(name)
    before = pydicom.dcmread(source).pixel_array
    decision, after = blank_with("blank pixels (2, 3, 10, 5), (40, 0, 8, 64) with 7", source, tmp_path)
    assert after.file_meta.TransferSyntaxUID == syntax
    assert_blanked(before, after.pixel_array, region_mask(before.shape, (2, 3, 10, 5), (40, 0, 8, 64)), 7)
    assert [edit.path for edit in decision.edits] == ["DataSet.PixelData"]


def test_the_fill_value_is_zero_unless_given_and_the_header_is_kept(tmp_path):
    source = bundled("CT_small.dcm")
    original = pydicom.dcmread(source)
    _, after = blank_with("blank pixels (0, 0, 16, 16)", source, tmp_path)
    assert_blanked(original.pixel_array, after.pixel_array, region_mask((128, 128), (0, 0, 16, 16)), 0)
    for element in original:
        if element.tag != 0x7FE00010:
            assert after[element.tag].value == element.value, element.keyword


def test_regions_from_expressions_and_a_copy_of_its_own(tmp_path):
    """Regions computed from the data set; a copy blanks for its destination alone."""
    source = bundled("CT_small.dcm")
    before = pydicom.dcmread(source).pixel_array
    ruleset = compile_source('rule "r" {\n then {\n  route to MAIN\n  copy to RESEARCH {\n'
                             '   blank pixels (0, DataSet.Rows, DataSet.Columns, 1), (0, 0, DataSet.Columns, 10)\n'
                             '  }\n }\n}\n', ["MAIN", "RESEARCH"])
    decision = ruleset.evaluate(Document.read_header(source))
    assert decision.outcome == "route"
    decision.destinations["MAIN"].write(tmp_path / "main.dcm")
    decision.destinations["RESEARCH"].write(tmp_path / "research.dcm")
    assert np.array_equal(pydicom.dcmread(tmp_path / "main.dcm").pixel_array, before)
    research = pydicom.dcmread(tmp_path / "research.dcm").pixel_array
    assert_blanked(before, research, region_mask(before.shape, (0, 0, 128, 10)), 0)


def test_regions_partly_outside_are_clipped_and_wholly_outside_change_nothing(tmp_path):
    source = bundled("MR_small.dcm")
    before = pydicom.dcmread(source).pixel_array
    decision, after = blank_with("blank pixels (-5, -5, 10, 10), (60, 60, 100, 100), (64, 0, 5, 5), "
                                 "(-20, 0, 10, 10) with 1", source, tmp_path)
    assert_blanked(before, after.pixel_array, region_mask(before.shape, (0, 0, 5, 5), (60, 60, 4, 4)), 1)
    assert "2 outside the image" in decision.edits[-1].new


def test_blocks_blank_pixels_too(tmp_path):
    source = bundled("CT_small.dcm")
    before = pydicom.dcmread(source).pixel_array
    ruleset = compile_source('block screen {\n blank pixels (0, 0, 128, 20) with 3\n}\n'
                             'rule "r" {\n then {\n apply screen\n route to OUT\n }\n}\n', ["OUT"])
    decision = ruleset.evaluate(Document.read_header(source))
    decision.destinations["OUT"].write(tmp_path / "out.dcm")
    assert_blanked(before, pydicom.dcmread(tmp_path / "out.dcm").pixel_array,
                   region_mask(before.shape, (0, 0, 128, 20)), 3)


# ---- compressed: decoded, written in Explicit VR Little Endian --------------------------------------


@pytest.mark.parametrize("name, photometric", [
    ("JPEG2000.dcm", "MONOCHROME2"),
    ("JPGExtended.dcm", "MONOCHROME2"),
    ("MR_small_RLE.dcm", "MONOCHROME2"),
    ("SC_rgb_rle.dcm", "RGB"),
    ("SC_rgb_jpeg_gdcm.dcm", "RGB"),  # JPEG lossless
    ("SC_rgb_jpeg_dcmtk.dcm", "RGB"),  # JPEG baseline, YBR_FULL: decoded to RGB
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "RGB"),  # JPEG baseline, YBR_FULL_422
    ("MR_small_jpeg_ls_lossless.dcm", "MONOCHROME2"),  # JPEG-LS lossless, signed
    ("JPEGLSNearLossless_08.dcm", "MONOCHROME2"),  # near-lossless: the original as decoded is the reference
    ("JPEGLSNearLossless_16.dcm", "MONOCHROME2"),
    ("SC_rgb_jls_lossy_line.dcm", "RGB"),  # near-lossless colour, interleaved by line
    ("SC_rgb_jls_lossy_sample.dcm", "RGB"),  # ... and by sample
])
def test_compressed_images_are_decoded_blanked_and_written_uncompressed(name, photometric, tmp_path):
    source = bundled(name)
    original = pydicom.dcmread(source)
    before = original.pixel_array  # decoded as pydicom decodes it, YBR to RGB
    decision, after = blank_with("blank pixels (1, 2, 30, 7)", source, tmp_path)
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not after["PixelData"].is_undefined_length
    assert after.PhotometricInterpretation == photometric
    assert after.SOPInstanceUID == original.SOPInstanceUID
    assert_blanked(before, after.pixel_array, region_mask(before.shape[:2], (1, 2, 30, 7)), 0)
    paths = [edit.path for edit in decision.edits]
    assert paths[0] == "FileMeta.TransferSyntaxUID" and paths[-1] == "DataSet.PixelData"
    if original.PhotometricInterpretation != photometric:
        assert "DataSet.PhotometricInterpretation" in paths


def test_encapsulated_data_that_cannot_be_decoded_quarantines_with_the_reason(tmp_path):
    ds = grey_image(16, 16, 8)
    ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = save(ds, tmp_path / "broken.dcm", JPEGBaseline8Bit)
    decision, _ = blank_with("blank pixels (0, 0, 4, 4)", path, tmp_path)
    assert decision.outcome == "quarantine"
    assert "blank pixels: the pixel data (JPEG Baseline (Process 1)) cannot be decoded" in decision.reason
    assert "Traceback" not in decision.reason


# ---- JPEG-LS: decoded by CharLS (pyjpegls); a damaged stream is refused, never blanked -------------


def jpeg_ls_image(tmp_path: Path, name: str = "MR_small_jpeg_ls_lossless.dcm", damage=None) -> Path:
    """A bundled JPEG-LS file, its one frame passed through `damage` (bytes -> bytes)."""
    ds = pydicom.dcmread(bundled(name))
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([damage(frame) if damage else frame])
    path = tmp_path / f"damaged-{name}"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_damaged_jpeg_ls_stream_quarantines_with_the_decoders_reason(tmp_path):
    """libjpeg would return this stream as an image; CharLS refuses it, and the instance is kept."""
    scrambled = jpeg_ls_image(tmp_path, damage=lambda frame: frame[:40] + bytes(b ^ 0x5A for b in frame[40:200])
                              + frame[200:])
    decision, _ = blank_with("blank pixels (0, 0, 4, 4)", scrambled, tmp_path)
    assert decision.outcome == "quarantine"
    assert ("blank pixels: the pixel data (JPEG-LS Lossless Image Compression) cannot be decoded: "
            "pyjpegls: Decoding error: Invalid JPEG-LS stream") in decision.reason, decision.reason
    assert "Traceback" not in decision.reason and "\n" not in decision.reason


@pytest.mark.parametrize("name, cut", [("JPEGLSNearLossless_16.dcm", 30), ("JPEGLSNearLossless_16.dcm", 100),
                                       ("MR_small_jpeg_ls_lossless.dcm", 2000), ("MR_small_jpeg_ls_lossless.dcm", -1)])
def test_a_jpeg_ls_stream_cut_short_is_refused_before_decoding(name, cut, tmp_path):
    """Without its end-of-image marker: refused at once (CharLS takes seconds to refuse it)."""
    path = jpeg_ls_image(tmp_path, name, damage=lambda frame: frame[:cut])
    decision, _ = blank_with("blank pixels (0, 0, 4, 4)", path, tmp_path)
    assert decision.outcome == "quarantine"
    assert "blank pixels: the pixel data (JPEG-LS " in decision.reason, decision.reason
    assert "cannot be decoded: the frame is cut short (no end-of-image marker)" in decision.reason, decision.reason


def test_jpeg_ls_multi_frame_signed_with_fewer_bits_stored(tmp_path):
    rng = np.random.default_rng(80)
    pixels = rng.integers(-2048, 2047, size=(3, 24, 20), dtype=np.int16)
    ds = grey_image(24, 20, 16, frames=3, signed=True, stored=12)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls", generate_instance_uid=False)
    path = save(ds, tmp_path / "jls-frames.dcm", JPEGLSLossless)
    decision, after = blank_with("blank pixels (15, 20, 10, 10) with -2048", path, tmp_path)
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert_blanked(pixels, after.pixel_array, region_mask((24, 20), (15, 20, 10, 10)), -2048, frames=True)
    assert "3 frames" in decision.edits[-1].old
    frames = list(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=3))
    ds.PixelData = encapsulate([frames[0], frames[1][:len(frames[1]) // 2], frames[2]])
    decision, _ = blank_with("blank pixels (0, 0, 1, 1)", save(ds, tmp_path / "cut.dcm", JPEGLSLossless), tmp_path)
    assert decision.outcome == "quarantine" and "frame 2 is cut short (no end-of-image marker)" in decision.reason


def test_jpeg_ls_near_lossless_keeps_the_decoded_original_outside_the_regions(tmp_path):
    rng = np.random.default_rng(81)
    pixels = rng.integers(0, 4095, size=(32, 40), dtype=np.uint16)
    ds = grey_image(32, 40, 16, stored=12)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(JPEGLSNearLossless, encoding_plugin="pyjpegls", jls_error=3, generate_instance_uid=False)
    path = save(ds, tmp_path / "jls-near.dcm", JPEGLSNearLossless)
    decoded = pydicom.dcmread(path).pixel_array
    assert not np.array_equal(decoded, pixels) and np.abs(decoded.astype(int) - pixels).max() <= 3
    _, after = blank_with("blank pixels (0, 0, 40, 5)", path, tmp_path)
    assert_blanked(decoded, after.pixel_array, region_mask((32, 40), (0, 0, 40, 5)), 0)


def test_jpeg_ls_colour_by_plane_is_written_with_planar_configuration_0(tmp_path):
    """Interleave mode 0 (one scan per colour) decodes plane by plane; written colour by pixel."""
    import jpeg_ls

    rng = np.random.default_rng(82)
    pixels = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
    ds = grey_image(12, 16, 8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 1
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # interleave mode 0 takes (samples, rows, columns)
    ds.PixelData = encapsulate([bytes(jpeg_ls.encode_array(planes, interleave_mode=0))])
    path = save(ds, tmp_path / "jls-ilv0.dcm", JPEGLSLossless)
    _, after = blank_with("blank pixels (3, 3, 4, 4) with [0, 255, 0]", path, tmp_path)
    assert after.PlanarConfiguration == 0
    assert_blanked(pixels, after.pixel_array, region_mask((12, 16), (3, 3, 4, 4)), [0, 255, 0])


def test_jpeg_ls_without_its_decoder_quarantines_saying_which_is_missing(tmp_path):
    """An installation without pyjpegls (hidden from the interpreter): the instance is quarantined
    with the reason, not decoded by another library."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["jpeg_ls"] = None  # as if pyjpegls were not installed
        from rulesengine import compile_source
        from rulesengine.document import Document
        ruleset = compile_source('rule "r" {{ then {{ blank pixels (0, 0, 4, 4) route to OUT }} }}', ["OUT"])
        decision = ruleset.evaluate(Document.read_header({bundled("MR_small_jpeg_ls_lossless.dcm")!r}))
        print(decision.outcome, decision.reason)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("quarantine "), done.stdout
    assert ("the pixel data (JPEG-LS Lossless Image Compression) cannot be decoded: a decoder is missing "
            "(pyjpegls is not installed)") in done.stdout, done.stdout


# ---- images made here: frames, colour, planar configuration, signed, float --------------------------


def grey_image(rows: int, columns: int, bits: int, frames: int = 1, signed: bool = False,
               stored: int | None = None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored = bits, stored or bits
    ds.HighBit = (stored or bits) - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    return ds


def save(ds: Dataset, path: Path, syntax=ExplicitVRLittleEndian) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_every_frame_of_a_multi_frame_image_is_blanked(tmp_path):
    rng = np.random.default_rng(9)
    pixels = rng.integers(1, 4000, size=(5, 20, 30), dtype=np.uint16)
    ds = grey_image(20, 30, 16, frames=5)
    ds.PixelData = pixels.tobytes()
    path = save(ds, tmp_path / "frames.dcm", ImplicitVRLittleEndian)
    _, after = blank_with("blank pixels (25, 15, 10, 10)", path, tmp_path)
    assert after.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert_blanked(pixels, after.pixel_array, region_mask((20, 30), (25, 15, 10, 10)), 0, frames=True)


def test_a_compressed_multi_frame_image(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, size=(3, 16, 16), dtype=np.uint8)
    ds = grey_image(16, 16, 8, frames=3)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path = save(ds, tmp_path / "rle.dcm", RLELossless)
    _, after = blank_with("blank pixels (0, 0, 4, 16) with 255", path, tmp_path)
    assert after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert_blanked(pixels, after.pixel_array, region_mask((16, 16), (0, 0, 4, 16)), 255, frames=True)


@pytest.mark.parametrize("planar", [0, 1])
def test_colour_in_either_planar_configuration_takes_one_fill_value_per_sample(planar, tmp_path):
    rng = np.random.default_rng(planar)
    pixels = rng.integers(1, 250, size=(2, 12, 10, 3), dtype=np.uint8)
    ds = grey_image(12, 10, 8, frames=2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", planar
    ds.PixelData = (pixels.transpose(0, 3, 1, 2) if planar else pixels).tobytes()
    path = save(ds, tmp_path / "rgb.dcm")
    _, after = blank_with("blank pixels (2, 2, 3, 4) with [255, 0, 10]", path, tmp_path)
    assert after.PlanarConfiguration == planar
    mask = region_mask((12, 10), (2, 2, 3, 4))
    result = after.pixel_array  # pydicom gives (frames, rows, columns, samples) for both
    for frame in range(2):
        assert np.array_equal(result[frame][~mask], pixels[frame][~mask])
        assert (result[frame][mask] == [255, 0, 10]).all()


def test_signed_pixels_with_fewer_bits_stored_than_allocated(tmp_path):
    rng = np.random.default_rng(12)
    pixels = rng.integers(-2048, 2047, size=(8, 8), dtype=np.int16)
    ds = grey_image(8, 8, 16, signed=True, stored=12)
    ds.PixelData = pixels.tobytes()
    path = save(ds, tmp_path / "signed.dcm")
    _, after = blank_with("blank pixels (0, 0, 3, 3) with -2048", path, tmp_path)
    assert_blanked(pixels, after.pixel_array, region_mask((8, 8), (0, 0, 3, 3)), -2048)
    decision, _ = blank_with("blank pixels (0, 0, 3, 3) with 2048", path, tmp_path)
    assert decision.outcome == "quarantine"
    assert "the fill value 2048 does not fit 12 bits stored, signed (-2048 to 2047)" in decision.reason


def test_float_pixel_data(tmp_path):
    pixels = np.linspace(-1, 1, 36, dtype=np.float32).reshape(6, 6)
    ds = grey_image(6, 6, 32)
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.FloatPixelData = pixels.tobytes()
    path = save(ds, tmp_path / "float.dcm")
    decision, after = blank_with("blank pixels (1, 1, 2, 2) with 0.5", path, tmp_path)
    result = np.frombuffer(after.FloatPixelData, dtype="<f4").reshape(6, 6)
    assert_blanked(pixels, result, region_mask((6, 6), (1, 1, 2, 2)), 0.5)
    assert decision.edits[-1].path == "DataSet.FloatPixelData"


# ---- errors at run time: quarantined with the reason, never a traceback ------------------------------


@pytest.mark.parametrize("actions, reason", [
    ("blank pixels (0, 0, DataSet.NumberOfFrames, 4)",
     "region 1: its width has no value"),
    ("let w = 0\n blank pixels (0, 0, w, 4)", "region 1 (0, 0, 0, 4): its width and height must be at least 1"),
    ("let w = 1.5\n blank pixels (0, 0, w, 4)", "region 1: its width is 1.5, not a whole number of pixels"),
    ("let h = -4\n blank pixels (0, 0, 4, h), (1, 1, 1, 1)", "region 1 (0, 0, 4, -4): its width and height"),
    ("blank pixels (0, 0, 4, 4) with [1, 2]", "the fill value has 2 values; the image has 1 sample(s) per pixel"),
])
def test_bad_regions_and_fill_values_computed_at_run_time(actions, reason, tmp_path):
    decision, _ = blank_with(actions, bundled("MR_small.dcm"), tmp_path)
    assert decision.outcome == "quarantine"
    assert reason in decision.reason, decision.reason


def test_no_pixel_data_or_pixel_data_cut_short(tmp_path):
    ds = grey_image(8, 8, 8)
    path = save(ds, tmp_path / "none.dcm")
    decision, _ = blank_with("blank pixels (0, 0, 2, 2)", path, tmp_path)
    assert decision.outcome == "quarantine" and "there is no pixel data to blank" in decision.reason
    ds.PixelData = bytes(10)
    path = save(ds, tmp_path / "short.dcm")
    decision, _ = blank_with("blank pixels (0, 0, 2, 2)", path, tmp_path)
    assert decision.outcome == "quarantine"
    assert "the pixel data holds 10 bytes" in decision.reason and "need 64" in decision.reason
    del ds.Rows
    path = save(ds, tmp_path / "no-rows.dcm")
    decision, _ = blank_with("blank pixels (0, 0, 2, 2)", path, tmp_path)
    assert decision.outcome == "quarantine" and "Rows is missing" in decision.reason


def test_a_rule_that_does_not_blank_never_loads_the_pixel_data(tmp_path):
    source = tmp_path / "ct.dcm"
    shutil.copy(bundled("CT_small.dcm"), source)
    ruleset = compile_source('rule "r" {\n when DataSet.Modality == "MR"\n then {\n blank pixels (0, 0, 1, 1)\n'
                             ' }\n}\nrule "all" {\n then {\n set DataSet.PatientName = "X"\n route to OUT\n }\n}\n',
                             ["OUT"])
    document = Document.read_header(source)
    ruleset.evaluate(document)
    assert "PixelData" not in document.dataset and document.tail is not None


# ---- lint, formatter ---------------------------------------------------------------------------------


def lint(tmp_path: Path, text: str) -> list:
    path = tmp_path / "pixels.rules"
    path.write_text(text, encoding="utf-8")
    return check_file(path, ["OUT"])


def test_lint_warns_at_each_use_that_compressed_instances_change_transfer_syntax(tmp_path):
    findings = lint(tmp_path, 'rule "r" {\n then {\n blank pixels (0, 0, DataSet.Columns, 40)\n'
                    ' route to OUT\n }\n}\n')
    assert [(d.code, d.severity.name.lower(), d.span.line) for d in findings] == \
        [("pixels-transcoded", "warning", 3)]


@pytest.mark.parametrize("action, code, message", [
    ("blank pixels (0, 0, 0, 10)", "bad-region", "a region's width is 0"),
    ("blank pixels (0, 0, 10, -4)", "bad-region", "a region's height is -4"),
    ("blank pixels (0, 0.5, 10, 4)", "bad-region", "regions are whole pixels"),
    ('blank pixels (0, 0, DataSet.PatientName, 4)', "type-mismatch", "a region's width must be a number"),
    ('blank pixels (0, 0, 4, 4) with "black"', "type-mismatch", "the fill value must be a number"),
    ("blank pixels (0, 0, 4, 4) with []", "bad-value", "the fill value is an empty list"),
])
def test_lint_errors_on_literal_regions_and_fill_values(action, code, message, tmp_path):
    findings = [d for d in lint(tmp_path, f'rule "r" {{\n then {{\n {action}\n route to OUT\n }}\n}}\n')
                if d.is_error]
    assert [d.code for d in findings] == [code] and message in findings[0].message


def test_lint_refuses_blank_pixels_for_requests_and_responses(tmp_path):
    findings = lint(tmp_path, 'rule "q" on C-FIND {\n then {\n blank pixels (0, 0, 1, 1)\n route to OUT\n'
                    ' on response { blank pixels (0, 0, 1, 1) }\n }\n}\n')
    assert sorted(d.code for d in findings if d.is_error) == ["response-action", "wrong-message-action"]


def test_pixels_is_a_keyword(tmp_path):
    findings = lint(tmp_path, 'rule "r" {\n then {\n let pixels = 1\n route to OUT\n }\n}\n')
    assert any(d.is_error for d in findings)


# ---- the command line: dry-run --out ------------------------------------------------------------------


def test_dry_run_out_writes_the_blanked_copy(tmp_path):
    rules = tmp_path / "pixels.rules"
    rules.write_text('rule "r" {\n then {\n blank pixels (0, 0, DataSet.Columns, 12)\n route to OUT\n }\n}\n',
                     encoding="utf-8")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(bundled("CT_small.dcm"), inputs / "ct.dcm")
    shutil.copy(bundled("SC_rgb_jpeg_dcmtk.dcm"), inputs / "jpeg.dcm")
    out = tmp_path / "out"
    result = dicom_rules("dry-run", rules, inputs, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    written = {pydicom.dcmread(path).SOPInstanceUID: pydicom.dcmread(path) for path in out.rglob("*.dcm")}
    for name in ("CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        original = pydicom.dcmread(bundled(name))
        copy = written[original.SOPInstanceUID]
        before = original.pixel_array
        assert_blanked(before, copy.pixel_array, region_mask(before.shape[:2], (0, 0, before.shape[1], 12)), 0)
    assert written[pydicom.dcmread(bundled("SC_rgb_jpeg_dcmtk.dcm")).SOPInstanceUID] \
        .file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_uncompressed_ybr_is_written_as_rgb(tmp_path):
    """YBR_FULL_422 (two pixels share their colour) and YBR_FULL: converted to RGB as pydicom
    decodes them, so that a fill value means one colour in every colour image."""
    source = bundled("SC_ybr_full_422_uncompressed.dcm")
    original = pydicom.dcmread(source)
    before = original.pixel_array  # RGB, as pydicom decodes YBR
    decision, after = blank_with("blank pixels (3, 4, 11, 6) with [0, 255, 0]", source, tmp_path)
    assert after.PhotometricInterpretation == "RGB" and after.PlanarConfiguration == 0
    assert after.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    mask = region_mask(before.shape[:2], (3, 4, 11, 6))
    result = after.pixel_array
    assert np.array_equal(result[~mask], before[~mask])
    assert (result[mask] == [0, 255, 0]).all()
    assert "DataSet.PhotometricInterpretation" in [edit.path for edit in decision.edits]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_uncompressed_ybr_full_of_either_byte_order(syntax, tmp_path):
    rng = np.random.default_rng(5)
    ybr = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
    ds = grey_image(6, 8, 8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL", 0
    ds.PixelData = ybr.tobytes()
    path = save(ds, tmp_path / "ybr.dcm", syntax)
    before = pydicom.dcmread(path).pixel_array
    _, after = blank_with("blank pixels (0, 0, 2, 2) with 9", path, tmp_path)
    assert after.PhotometricInterpretation == "RGB"
    assert_blanked(before, after.pixel_array, region_mask((6, 8), (0, 0, 2, 2)), 9)


def test_an_empty_region_value_is_said_as_such(tmp_path):
    decision, _ = blank_with("blank DataSet.Columns\n blank pixels (0, 0, DataSet.Columns, 4)", bundled("MR_small.dcm"),
                             tmp_path)
    assert decision.outcome == "quarantine"
    assert "region 1: its width has no value" in decision.reason


def test_lint_refuses_a_multi_valued_region_value(tmp_path):
    findings = [d for d in lint(tmp_path, 'rule "r" {\n then {\n blank pixels (0, 0, DataSet.WindowWidth, 4)\n'
                                ' route to OUT\n }\n}\n') if d.is_error]
    assert [d.code for d in findings] == ["type-mismatch"]
    assert "a region's width must be a number, not one or more values" in findings[0].message


def test_dry_run_explain_shows_the_blanking_edit(tmp_path):
    rules = tmp_path / "pixels.rules"
    rules.write_text('rule "r" {\n then {\n blank pixels (0, 0, 10, 10)\n route to OUT\n }\n}\n', encoding="utf-8")
    result = dicom_rules("dry-run", rules, bundled("CT_small.dcm"), "--explain")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DataSet.PixelData" in result.stdout and "(0, 0, 10, 10) set to 0" in result.stdout


def test_no_transcoding_warning_where_the_transfer_syntax_is_tested(tmp_path):
    findings = lint(tmp_path, 'rule "only uncompressed" {\n when FileMeta.TransferSyntaxUID in '
                    '["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]\n then {\n blank pixels (0, 0, 9, 9)\n'
                    ' route to OUT\n }\n}\n'
                    'rule "in an if" {\n then {\n if DataSet.Modality == "US" {\n'
                    '  if FileMeta.TransferSyntaxUID == "1.2.840.10008.1.2.1" { blank pixels (0, 0, 9, 9) }\n'
                    '  else { quarantine "compressed" }\n }\n route to OUT\n }\n}\n'
                    'rule "untested" {\n then {\n blank pixels (0, 0, 9, 9)\n route to OUT\n }\n}\n')
    assert [(d.code, d.span.line) for d in findings] == [("pixels-transcoded", 19)]


def test_a_compressed_image_declaring_an_absurd_size_is_not_decoded(tmp_path):
    ds = grey_image(16, 16, 8)
    ds.NumberOfFrames = 100000
    ds.Rows = ds.Columns = 60000
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = save(ds, tmp_path / "absurd.dcm", JPEGBaseline8Bit)
    decision, _ = blank_with("blank pixels (0, 0, 4, 4)", path, tmp_path)
    assert decision.outcome == "quarantine"
    assert "GiB decoded" in decision.reason and "at most 4 GiB are decoded" in decision.reason


@pytest.mark.parametrize("action", ["blank pixels 0, 0, 10, 10", "blank pixels (0, 0, 10)", "blank pixels"])
def test_a_mistyped_region_is_explained(action, tmp_path):
    (finding,) = lint(tmp_path, f'rule "r" {{\n then {{\n {action}\n route to OUT\n }}\n}}\n')
    assert finding.code == "syntax"
    assert finding.hint == "blank pixels takes regions (x, y, width, height), separated by commas, then `with` " \
                           "a fill value"


def test_pixel_data_cut_short_in_the_file_is_unreadable(tmp_path):
    """The header reads; the pixel data element, read when a rule blanks, is cut short."""
    ds = grey_image(8, 8, 16)
    ds.PixelData = bytes(128)
    ds.add_new(0xFFFAFFFA, "SQ", [Dataset()])  # Digital Signatures Sequence: an element after the pixel data
    path = save(ds, tmp_path / "cut.dcm")
    data = path.read_bytes()
    path.write_bytes(data[:-6])
    document = Document.read_header(path)  # the header is whole: intake takes it
    ruleset = compile_source('rule "r" {\n then {\n blank pixels (0, 0, 2, 2)\n route to OUT\n }\n}\n', ["OUT"])
    decision = ruleset.evaluate(document)
    assert decision.outcome == "quarantine" and "blank pixels: " in decision.reason
    assert "the pixel data cannot be read" in decision.reason
