"""DICOM files as broken modalities and damaged disks write them, generated for the tests:
each reads as far as pydicom gets and then fails in its own way. Every generator writes to
`target` and returns it."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
from helpers.files import SAMPLES, bundled
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _minimal(target: Path) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "DAMAGED"
    ds.Modality = "OT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(target, enforce_file_format=True)
    return ds


def deeply_nested(target: Path, depth: int = 1000) -> Path:
    """Sequences of undefined length nested `depth` deep (ContentSequence in its only item...)."""
    _minimal(target)
    sequence = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with open(target, "ab") as fh:
        fh.write((sequence + item) * depth + (item_end + sequence_end) * depth)
    return target


def bad_value_length(target: Path) -> Path:
    """An instance whose Rows (US, two bytes a value) holds three bytes: pydicom reads the file
    and fails on the value once something converts it. PixelSpacing, after it, holds one byte,
    so that the data set as a whole keeps an even length (a network peer refuses an odd one)."""
    ds = _minimal(target)
    data = Path(target).read_bytes()
    rows = struct.pack("<HH2sH", 0x0028, 0x0010, b"US", 3) + b"\x00\x02\x00"
    spacing = struct.pack("<HH2sH", 0x0028, 0x0030, b"DS", 1) + b"1"
    # The data set's elements are in tag order; (0028,0010) goes after the last one before it.
    assert all(tag < 0x00280010 for tag in ds.keys())
    Path(target).write_bytes(data + rows + spacing)
    return target


def corrupt_deflate(target: Path) -> Path:
    """pydicom's deflated instance with the first bytes of its deflated stream overwritten: zlib
    finds no valid block there."""
    data = bytearray(Path(bundled("image_dfl.dcm")).read_bytes())
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]  # after (0002,0000) and the group it counts
    data[meta_end:meta_end + 8] = b"\xff" * 8
    Path(target).write_bytes(bytes(data))
    return target


def with_command_element(target: Path, source: Path = SAMPLES / "sr_report.dcm") -> Path:
    """`source` with a command element (0000,0902) in its data set: pydicom reads it, and
    refuses to write such a data set again."""
    dataset = pydicom.dcmread(source)
    dataset.add_new(0x00000902, "LO", "left over from a C-STORE")
    with open(target, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, dataset.file_meta, enforce_standard=True)
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, dataset)
    return target


def without(target: Path, *keywords: str, source: Path = SAMPLES / "ct_head.dcm") -> Path:
    """`source` with these elements removed from its data set (the file meta kept)."""
    dataset = pydicom.dcmread(source)
    for keyword in keywords:
        delattr(dataset, keyword)
    dataset.save_as(target)
    return target


def with_other_file_meta(target: Path, source: Path = SAMPLES / "ct_head.dcm", implicit: bool = False,
                         **file_meta: str) -> Path:
    """`source`'s data set (written in Implicit VR Little Endian when `implicit`, else in Explicit)
    behind file meta information that names what `file_meta` gives (MediaStorageSOPInstanceUID=...,
    TransferSyntaxUID=...) and otherwise what the data set is: as a tool writes it that changed
    the data set and not its file meta, or a receiver that wrote a C-STORE request's UIDs."""
    dataset = pydicom.dcmread(source)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    meta.SourceApplicationEntityTitle = "TOOL"
    for keyword, value in file_meta.items():
        setattr(meta, keyword, value)
    with open(target, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, implicit
        write_dataset(out, dataset)
    return target


def without_file_meta(target: Path, *keywords: str, source: Path = SAMPLES / "ct_head.dcm") -> Path:
    """`source`'s data set alone, without preamble and file meta information (as some tools
    write them), in Explicit VR Little Endian, with these elements removed."""
    dataset = pydicom.dcmread(source)
    for keyword in keywords:
        delattr(dataset, keyword)
    with open(target, "wb") as fh:
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, dataset)
    return target
