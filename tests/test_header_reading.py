"""Reading a header (`dicomfile.read_header`) gives what pydicom gives reading the file, element
for element: whether the header is found by the plain reader (Explicit VR Little Endian, every
length defined), by pydicom from the bytes read in memory, or by pydicom from the file (a header
longer than what is read at once, or one cut short at that point)."""

from __future__ import annotations

import glob
import os
import shutil
import struct

import pydicom
import pytest
from helpers.files import SAMPLES
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _at_pixel_data, read_partial
from pydicom.uid import ExplicitVRLittleEndian

from rulesengine import dicomfile
from rulesengine.dicomfile import DocumentReadError

PYDICOM_FILES = sorted(glob.glob(os.path.join(os.path.dirname(get_testdata_file("CT_small.dcm")), "*.dcm")))
FILES = sorted(str(path) for path in SAMPLES.glob("*.dcm")) + PYDICOM_FILES


def pydicom_header(path: str):
    """What read_header read before it read from memory: pydicom's read of the file."""
    with open(path, "rb") as fp:
        ds = read_partial(fp, stop_when=_at_pixel_data)
        return ds, fp.tell(), os.fstat(fp.fileno()).st_size


def as_read(ds) -> list:
    """Every top-level element as pydicom left it after reading (raw: tag, VR, length, value,
    where its value starts, its encoding; read already: tag, VR, value)."""
    return [tuple(elem) if isinstance(elem, RawDataElement) else (elem.tag, elem.VR, elem.value, elem.file_tell)
            for elem in ds._dict.values()]


def assert_same_header(path: str) -> None:
    try:
        expected, offset, size = pydicom_header(path)
    except InvalidDicomError:
        return  # no DICM header: read from the file, with force (`_read_header_without_meta`)
    except Exception:  # noqa: BLE001 - a file pydicom cannot read: read_header refuses it too
        with pytest.raises(DocumentReadError):
            dicomfile.read_header(path)
        return
    try:
        header = dicomfile.read_header(path)
    except DocumentReadError:
        return  # refused by the checks that follow pydicom's read (a file cut short, no elements)
    ds = header.dataset
    if expected.file_meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return  # read whole (read_file), as before
    dicomfile._record_encoding_found(expected)
    assert as_read(ds) == as_read(expected)
    assert ds.file_meta == expected.file_meta and ds.preamble == expected.preamble
    assert (ds.original_encoding, ds.original_character_set) == (expected.original_encoding,
                                                                  expected.original_character_set)
    assert (ds.filename, ds.fileobj_type, ds.timestamp, ds.buffer) == (path, open, os.stat(path).st_mtime, None)
    assert header.pixel_data_at == (offset if offset < size else None)
    assert header.element_ranges == dicomfile._element_ranges(expected, offset)


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_a_header_reads_as_pydicom_reads_the_file(path):
    assert_same_header(path)


def with_padding(tmp_path, length: int, vr: bytes = b"OB", name: str = "padded.dcm") -> str:
    """A CT whose header ends with a private element of `length` bytes, before its pixel data."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = ds.PixelData
    del ds.PixelData
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    with open(path, "ab") as fh:
        if vr in (b"OB", b"UN", b"UT"):
            fh.write(struct.pack("<HH2sHL", 0x0029, 0x0010, vr, 0, length) + b"\x01" * length)
        else:
            fh.write(struct.pack("<HH2sH", 0x0029, 0x0010, vr, length) + b"A" * length)
        fh.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels)
    return str(path)


@pytest.mark.parametrize("length", [100, 60_000, 65_300, 65_530, 70_000, 200_000])
def test_a_header_read_at_once_or_not_reads_the_same(tmp_path, length):
    """Around the bytes read at once (64 kB): a header inside them, one whose last element or
    whose pixel data element's header straddles their end, one longer than them."""
    path = with_padding(tmp_path, length)
    assert_same_header(path)
    header = dicomfile.read_header(path)
    assert len(header.dataset[0x00290010].value) == length
    assert header.dataset.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.filterwarnings("ignore:Unknown encoding:UserWarning")  # a file cut inside its character set
def test_a_file_cut_at_every_point_of_its_header_reads_as_from_the_file(tmp_path):
    source = with_padding(tmp_path, 40)
    size = os.path.getsize(source)
    offset = dicomfile.read_header(source).pixel_data_at
    for cut in list(range(120, offset + 16)) + [size - 1]:
        path = tmp_path / f"cut{cut}.dcm"
        shutil.copyfile(source, path)
        os.truncate(path, cut)
        assert_same_header(str(path))


@pytest.mark.parametrize("length", [100, 200_000], ids=["header-read-at-once", "header-longer-than-read-at-once"])
def test_the_fingerprint_follows_the_header_and_the_file(tmp_path, length):
    path = with_padding(tmp_path, length)
    first = dicomfile.read_header(path).fingerprint
    assert dicomfile.read_header(path).fingerprint == first  # read again, unchanged
    stat = os.stat(path)
    with open(path, "r+b") as fh:  # a byte of the header changed, size and times put back
        fh.seek(at := 200 if length < 1000 else 190_000)  # past the bytes read at once, for a long header
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dicomfile.read_header(path).fingerprint != first
    with open(path, "r+b") as fh:  # as it was, but written again: a later modification time
        fh.seek(at)
        fh.write(byte)
    assert dicomfile.read_header(path).fingerprint != first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dicomfile.read_header(path).fingerprint == first
    copy = tmp_path / "copy.dcm"  # the same bytes and times in another file
    shutil.copy2(path, copy)
    assert dicomfile.read_header(str(copy)).fingerprint != first
