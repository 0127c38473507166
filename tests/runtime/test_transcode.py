"""Streamed conversion between the uncompressed transfer syntaxes (runtime/transcode.py),
checked value by value against pydicom reading both files: every file pydicom bundles in a
convertible transfer syntax, big-endian files against their little-endian twins, large
instances for memory, and broken files for clear errors."""

from __future__ import annotations

import array
import hashlib
import os
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pytest
from helpers.files import bundled
from helpers.dataset_values import differences
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from rulesengine.runtime.transcode import ConversionError, convert, deflated_for_the_network

# pydicom's own test files carry invalid values on purpose (badVR.dcm, the rtdose UIDs)
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

MB = 1 << 20
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# pydicom's big-endian files and the little-endian files holding the same values
TWINS = [
    ("MR_small_bigendian.dcm", "MR_small.dcm"),
    ("MR_small_expb.dcm", "MR_small.dcm"),
    ("rtdose_expb.dcm", "rtdose.dcm"),  # 32-bit samples
    ("rtdose_expb_1frame.dcm", "rtdose_1frame.dcm"),
    ("SC_rgb_small_odd_big_endian.dcm", "SC_rgb_small_odd.dcm"),  # 8-bit samples in OW
    ("liver_expb_1frame.dcm", "liver_1frame.dcm"),  # 1-bit samples in OB
]


def bundled_in(*syntaxes: str) -> list[str]:
    """Every file pydicom bundles whose file meta names one of `syntaxes`, by relative name."""
    found = []
    for path in sorted(TEST_FILES.rglob("*")):
        if not path.is_file():
            continue
        try:
            meta = pydicom.filereader.read_file_meta_info(path)
        except Exception:  # noqa: BLE001 - not a Part 10 file
            continue
        if meta.get("TransferSyntaxUID") in syntaxes:
            found.append(str(path.relative_to(TEST_FILES)))
    return found


@pytest.fixture(autouse=True)
def conversions_in_tmp(tmp_path, monkeypatch):
    """Converted copies go to the temporary folder (the router's is its spool's): here, tmp_path."""
    folder = tmp_path / "conversions"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def swapped(data: bytes, unit: int) -> bytes:
    values = array.array({2: "H", 4: "I", 8: "Q"}[unit], data)
    values.byteswap()
    return values.tobytes()


def data_set_offset(path) -> int:
    """Where the encoded data set of a Part 10 file starts, after its file meta information."""
    with open(path, "rb") as fp:
        pydicom.filereader.read_preamble(fp, False)
        pydicom.filereader.read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag.group != 2)
        return fp.tell()


def data_set_bytes(path) -> bytes:
    return Path(path).read_bytes()[data_set_offset(path):]


# ---- every bundled file -------------------------------------------------------------------------


@pytest.mark.parametrize("name", bundled_in(ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                             DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian))
def test_every_bundled_file_converts_to_both_little_endian_syntaxes_with_its_values(name):
    source = str(TEST_FILES / name)
    original = pydicom.dcmread(source)
    big_endian = original.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    for syntax in LITTLE_ENDIAN:
        if syntax == original.file_meta.TransferSyntaxUID:
            continue
        try:
            target = convert(source, syntax)
        except ConversionError as exc:
            # pydicom reads some broken files leniently; the converter names what is wrong (and
            # pynetdicom cannot send a file whose file meta lacks its UIDs either)
            if not original.file_meta.get("MediaStorageSOPInstanceUID"):
                assert "(0002,0003) Media Storage SOP Instance UID" in str(exc)
            else:
                assert "ends inside" in str(exc) and name in ("MR_truncated.dcm", "rtplan_truncated.dcm",
                                                              "dicomdirtests/DICOMDIR-nooffset"), exc
            continue
        converted = pydicom.dcmread(target)
        assert converted.file_meta.TransferSyntaxUID == syntax
        assert differences(original, converted, skip_bytes=big_endian) == [], (name, syntax)
        os.unlink(target)


def test_every_bundled_big_endian_file_has_a_little_endian_twin_or_is_checked_alone():
    twins = {big for big, _ in TWINS}
    assert set(bundled_in(ExplicitVRBigEndian)) - twins <= {"ExplVR_BigEnd.dcm", "dicomdirtests/DICOMDIR-bigEnd"}


@pytest.mark.parametrize("big, little", TWINS)
@pytest.mark.parametrize("syntax", LITTLE_ENDIAN)
def test_a_big_endian_file_converts_to_the_values_of_its_little_endian_twin(big, little, syntax):
    target = convert(bundled(big), syntax)
    converted, twin = pydicom.dcmread(target), pydicom.dcmread(bundled(little))
    assert converted.file_meta.TransferSyntaxUID == syntax
    # every element of the twin, pixel data included, byte for byte; the twin may have
    # trailing padding (FFFC,FFFC) the big-endian file does not
    assert [d for d in differences(twin, converted) if "(FFFC,FFFC) missing" not in d] == []
    assert converted.PixelData == twin.PixelData


def first_tag_of(vr: str) -> int:
    """The first standard element of the data set whose VR is `vr`, and only `vr`."""
    return next(tag for tag, (entry_vr, vm, *_) in sorted(DicomDictionary.items())
                if entry_vr == vr and vm in ("1", "1-n") and 0x0008 <= tag >> 16 < 0x7FE0 and tag & 0xFFFF)


def test_big_endian_values_of_every_vr_are_swapped_in_sequences_too(tmp_path):
    """A data set with a value of every VR that has a byte order, at the top and inside a
    sequence item, written by pydicom in big and in little endian: converted, the big-endian
    file is the little-endian one, byte for byte. (pydicom writes OB/OW... values as the
    bytes given, so the big-endian file gets them swapped.)"""
    numbers = {"US": 0xFEDC, "SS": -2, "UL": 0xFEDCBA98, "SL": -3, "FL": 1.5, "FD": -2.25, "SV": -(2 ** 40),
               "UV": 2 ** 60, "AT": 0x00100020}
    words = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
    tags = {vr: first_tag_of(vr) for vr in [*numbers, *words]}
    value = bytes(range(48))

    def data_set(big: bool) -> Dataset:
        ds = Dataset()
        for vr, number in numbers.items():
            ds.add_new(tags[vr], vr, number)
        for vr, unit in words.items():
            ds.add_new(tags[vr], vr, swapped(value, unit) if big else value)
        item = Dataset()
        for elem in ds:
            item.add(elem)
        item.add_new(0x7FE00010, "OB", b"\x01\x02\x03\x04")  # OB: never swapped
        ds.ReferencedImageSequence = [item]
        return ds

    big = write_part10(tmp_path / "big.dcm", data_set(True), ExplicitVRBigEndian)
    little = write_part10(tmp_path / "little.dcm", data_set(False), ExplicitVRLittleEndian)
    converted = convert(str(big), ExplicitVRLittleEndian)
    assert data_set_bytes(converted) == data_set_bytes(little)
    assert differences(pydicom.dcmread(little), pydicom.dcmread(convert(str(big), ImplicitVRLittleEndian))) == []


def test_a_deflated_file_is_inflated_to_exactly_its_data_set():
    source = bundled("image_dfl.dcm")
    target = convert(source, ExplicitVRLittleEndian)
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data_set_bytes(source))
    assert data_set_bytes(target) == inflated
    meta = pydicom.filereader.read_file_meta_info(target)
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPInstanceUID == pydicom.filereader.read_file_meta_info(source).MediaStorageSOPInstanceUID


def test_implicit_vr_takes_private_vrs_from_the_private_dictionary_and_private_creators_as_lo(tmp_path):
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")  # known to pydicom's private dictionary
    ds.add_new(0x70010010, "LO", "NOBODY KNOWS")
    ds.add_new(0x70011005, "LO", "PRIVATE TEXT")
    source = tmp_path / "implicit.dcm"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(source)
    assert pydicom.filereader.read_file_meta_info(source).TransferSyntaxUID == ImplicitVRLittleEndian

    converted = pydicom.dcmread(convert(str(source), ExplicitVRLittleEndian))
    assert [(converted[tag].VR, converted[tag].value) for tag in (0x00290010, 0x00291008, 0x70010010)] == [
        ("LO", "SIEMENS CSA HEADER"), ("CS", "IMAGE NUM 4"), ("LO", "NOBODY KNOWS")]
    assert (converted[0x70011005].VR, converted[0x70011005].value) == ("UN", b"PRIVATE TEXT")
    assert converted["PixelData"].VR == "OW" and converted.PixelData == ds.PixelData


def test_explicit_to_implicit_and_back_gives_the_same_bytes_for_sequences_nested_1000_deep(tmp_path):
    """Sequences nested 1000 deep (beyond Python's recursion limit), of undefined length:
    converted to Implicit VR and back, the data set is the same bytes."""
    data = b""
    for depth in reversed(range(1000)):
        uid = f"1.2.3.{depth}".encode()
        uid += b"\0" * (len(uid) % 2)
        item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + struct.pack("<HH2sH", 0x0008, 0x1150, b"UI", len(uid)) \
            + uid + data + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        data = struct.pack("<HH2s2xL", 0x0008, 0x1140, b"SQ", 0xFFFFFFFF) + item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    ds = Dataset()
    ds.PatientID = "DEEP"
    source = write_part10(tmp_path / "deep.dcm", ds, ExplicitVRLittleEndian)
    with open(source, "ab") as fh:
        fh.write(data)
    implicit = convert(str(source), ImplicitVRLittleEndian)
    back = convert(implicit, ExplicitVRLittleEndian)
    assert data_set_bytes(back) == data_set_bytes(source)


def test_a_compressed_instance_is_never_decompressed():
    with pytest.raises(ConversionError, match="cannot be converted to .* without decompressing"):
        convert(bundled("JPEG2000.dcm"), ExplicitVRLittleEndian)
    assert pydicom.filereader.read_file_meta_info(bundled("JPEG2000.dcm")).TransferSyntaxUID == JPEG2000


# ---- broken files: a clear error, nothing left behind --------------------------------------------


def write_part10(path: Path, ds: Dataset, syntax: str) -> Path:
    """`ds` as a Part 10 file in `syntax`, written by pydicom's own writer."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta)
    body = DicomBytesIO()
    body.is_little_endian = syntax != ExplicitVRBigEndian
    body.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(body, ds)
    data = body.getvalue()
    if syntax == DeflatedExplicitVRLittleEndian:
        deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        data = deflater.compress(data) + deflater.flush()
    path.write_bytes(out.getvalue() + data)
    return path


@pytest.mark.parametrize("cut", [20, 1000, -100])
def test_a_big_endian_file_cut_short_is_a_conversion_error(tmp_path, conversions_in_tmp, cut):
    data = Path(bundled("MR_small_bigendian.dcm")).read_bytes()
    start = len(data) - len(data_set_bytes(bundled("MR_small_bigendian.dcm")))
    broken = tmp_path / "cut.dcm"
    broken.write_bytes(data[:start + cut] if cut > 0 else data[:cut])
    with pytest.raises(ConversionError, match=f"cannot convert {broken}: the data set ends inside"):
        convert(str(broken), ExplicitVRLittleEndian)
    assert list(conversions_in_tmp.iterdir()) == []


def test_a_corrupt_deflate_stream_is_a_conversion_error(tmp_path, conversions_in_tmp):
    data = bytearray(Path(bundled("image_dfl.dcm")).read_bytes())
    start = len(data) - len(data_set_bytes(bundled("image_dfl.dcm")))
    data[start:start + 16] = b"\xff" * 16
    broken = tmp_path / "corrupt.dcm"
    broken.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="cannot be inflated"):
        convert(str(broken), ExplicitVRLittleEndian)
    broken.write_bytes(bytes(data[:start + 100]))  # cut inside the deflate stream
    with pytest.raises(ConversionError):
        convert(str(broken), ImplicitVRLittleEndian)
    assert list(conversions_in_tmp.iterdir()) == []


def test_an_element_without_a_valid_vr_is_named(tmp_path):
    ds = Dataset()
    ds.PatientID = "X"
    ds.PatientName = "Y"
    source = write_part10(tmp_path / "bad-vr.dcm", ds, ExplicitVRLittleEndian)
    data = source.read_bytes().replace(b"PN", b"Q?", 1)
    source.write_bytes(data)
    with pytest.raises(ConversionError, match=r"\(0010,0010\) has no valid VR \(b'Q\?'\)"):
        convert(str(source), ImplicitVRLittleEndian)


def test_a_big_endian_value_of_a_length_its_vr_cannot_have_is_named(tmp_path):
    ds = Dataset()
    ds.add_new(0x00280010, "US", 512)
    source = write_part10(tmp_path / "odd.dcm", ds, ExplicitVRBigEndian)
    data = bytearray(source.read_bytes())
    end = len(data)
    data[end - 4:end] = struct.pack(">H", 3) + b"\x02"  # a 3-byte US value
    data += b"\x00\x00"
    source.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"\(0028,0010\) US: 3 bytes is not a whole number of 2-byte values"):
        convert(str(source), ExplicitVRLittleEndian)


def test_a_file_without_file_meta_is_a_conversion_error(tmp_path):
    with pytest.raises(ConversionError, match="no DICM header"):
        convert(bundled("no_meta.dcm"), ExplicitVRLittleEndian)


# ---- deflated instances on the network ------------------------------------------------------------


def test_a_deflated_data_set_of_odd_length_is_padded_for_the_network(tmp_path):
    source = bundled("image_dfl.dcm")
    assert len(data_set_bytes(source)) % 2 == 1  # as pydicom ships it
    padded = deflated_for_the_network(source)
    assert data_set_bytes(padded) == data_set_bytes(source) + b"\0"
    assert pydicom.dcmread(padded).PixelData == pydicom.dcmread(source).PixelData
    even = tmp_path / "even.dcm"
    even.write_bytes(Path(padded).read_bytes())
    assert deflated_for_the_network(str(even)) is None  # goes as it is


# ---- large instances never enter memory -------------------------------------------------------------


def peak_growth(action):
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start, result


def large_header() -> Dataset:
    ds = pydicom.dcmread(bundled("MR_small.dcm"), stop_before_pixels=True)
    ds.Rows, ds.Columns = 5000, 6000  # 60 MB of 16-bit samples
    return ds


def test_a_60_mb_big_endian_instance_is_converted_without_entering_memory(tmp_path):
    source = write_part10(tmp_path / "big.dcm", large_header(), ExplicitVRBigEndian)
    length = 5000 * 6000 * 2
    chunk = bytes(range(256)) * (MB // 256)
    expected = hashlib.sha256()
    with open(source, "ab") as fh:
        fh.write(struct.pack(">HH2s2xL", 0x7FE0, 0x0010, b"OW", length))
        left = length
        while left:
            piece = chunk[:min(left, len(chunk))]
            fh.write(piece)
            expected.update(swapped(piece, 2))
            left -= len(piece)

    growth, target = peak_growth(lambda: convert(str(source), ExplicitVRLittleEndian))
    assert growth < 25 * MB, f"Python allocations peaked {growth / MB:.1f} MB above the start"
    header = pydicom.dcmread(target, stop_before_pixels=True)
    assert (header.Rows, header.Columns, header.file_meta.TransferSyntaxUID) == (5000, 6000, ExplicitVRLittleEndian)
    with open(target, "rb") as fh:
        fh.seek(os.path.getsize(target) - length - 12)
        assert fh.read(12) == struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", length)
        actual = hashlib.sha256()
        while piece := fh.read(MB):
            actual.update(piece)
    assert actual.hexdigest() == expected.hexdigest()


def test_a_deflated_instance_inflating_to_60_mb_is_inflated_without_entering_memory(tmp_path):
    """A few kilobytes that inflate to 60 MB (as a hostile sender could make them) are
    inflated chunk by chunk."""
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, large_header())
    length = 5000 * 6000 * 2
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    source = tmp_path / "bomb.dcm"
    expected = hashlib.sha256(header.getvalue() + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", length))
    with open(source, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta)
        fh.write(deflater.compress(header.getvalue() + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", length)))
        zeros = bytes(MB)
        for _ in range(length // MB):
            fh.write(deflater.compress(zeros))
            expected.update(zeros)
        rest = bytes(length % MB)
        fh.write(deflater.compress(rest) + deflater.flush())
        expected.update(rest)
    assert os.path.getsize(source) < 200_000

    for syntax in LITTLE_ENDIAN:
        growth, target = peak_growth(lambda: convert(str(source), syntax))
        assert growth < 25 * MB, f"Python allocations peaked {growth / MB:.1f} MB above the start"
        assert os.path.getsize(target) > length
        if syntax == ExplicitVRLittleEndian:
            actual = hashlib.sha256()
            with open(target, "rb") as fh:
                fh.seek(data_set_offset(target))
                while piece := fh.read(MB):
                    actual.update(piece)
            assert actual.hexdigest() == expected.hexdigest()
        os.unlink(target)

