"""A 60 MB instance written piece by piece, and the digest of what follows its header: the
memory tests of the pipeline and the senders compare what arrives without reading it whole."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pydicom

from helpers.files import SAMPLES
from rulesengine.document import Document

MB = 1 << 20
LARGE_ROWS, LARGE_COLUMNS = 3000, 10000  # 16-bit: 60,000,000 bytes of pixel data


def write_large_instance(path: Path) -> str:
    """A CT of 60 MB written piece by piece (never whole in memory); returns the SHA-256
    of its pixel data element (tag, VR, length and value)."""
    ds = pydicom.dcmread(SAMPLES / "ct_head.dcm", stop_before_pixels=True)
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".60"
    ds.Rows, ds.Columns = LARGE_ROWS, LARGE_COLUMNS
    ds.save_as(path, enforce_file_format=True)
    length = LARGE_ROWS * LARGE_COLUMNS * 2
    digest = hashlib.sha256()
    header = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length)
    chunk = bytes(range(256)) * (MB // 256)
    with open(path, "ab") as fh:
        fh.write(header)
        digest.update(header)
        left = length
        while left:
            piece = chunk[:min(left, len(chunk))]
            fh.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def tail_digest(path) -> str:
    document = Document.read_header(str(path))
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(document.tail)
        while piece := fh.read(MB):
            digest.update(piece)
    return digest.hexdigest()
