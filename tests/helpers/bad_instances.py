"""Files a broken modality or a hostile sender could deliver, built from real instances
(pydicom's bundled files) or byte by byte where pydicom refuses to write them."""

from __future__ import annotations

import random
import shutil
import struct
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One Explicit VR Little Endian data element."""
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHL", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode()
    return data + b"\0" * (len(data) % 2)


def part10(data_set: bytes, sop_instance_uid: str | None = None) -> bytes:
    """A Part 10 file (preamble, DICM, file meta) around an encoded data set that starts
    with its SOP Class and Instance UIDs."""
    uid = sop_instance_uid or generate_uid()
    meta = (_element(2, 0x01, "OB", b"\0\1") + _element(2, 0x02, "UI", _uid(CT_IMAGE_STORAGE))
            + _element(2, 0x03, "UI", _uid(uid)) + _element(2, 0x10, "UI", _uid(ExplicitVRLittleEndian))
            + _element(2, 0x12, "UI", _uid("1.2.826.0.1.3680043.8.498.1")))
    group_length = _element(2, 0x00, "UL", struct.pack("<L", len(meta)))
    head = _element(8, 0x16, "UI", _uid(CT_IMAGE_STORAGE)) + _element(8, 0x18, "UI", _uid(uid))
    return b"\0" * 128 + b"DICM" + group_length + meta + head + data_set


def deeply_nested(depth: int = 1000) -> bytes:
    """An instance whose Referenced Series Sequence holds an item holding the sequence
    again, `depth` times (undefined lengths, as a modality writes them)."""
    opening = (struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
               + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF))
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    innermost = _element(0x0010, 0x0020, "LO", b"DEEP")
    return part10(_element(0x0010, 0x0010, "PN", b"DEEP^NEST") + opening * depth + innermost + closing * depth)


def bad_meta_group_length(source: Path | None = None) -> bytes:
    """A real file whose (0002,0000) File Meta Information Group Length says its UL value
    is 2 bytes long (it is always 4)."""
    data = (source or bundled("CT_small.dcm")).read_bytes()
    assert data[132:140] == b"\x02\x00\x00\x00UL\x04\x00", "expected an explicit (0002,0000) first"
    return data[:138] + b"\x02\x00" + data[140:142] + data[144:]


def truncated(source: Path | None = None, keep: float = 0.6) -> bytes:
    data = (source or bundled("CT_small.dcm")).read_bytes()
    return data[:int(len(data) * keep)]


def garbage(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def bit_flipped(source: Path, seed: int, flips: int = 16) -> bytes:
    """A real file with bits flipped in its header (after the preamble): lengths, VRs and tags go wrong."""
    data = bytearray(source.read_bytes())
    rng = random.Random(seed)
    for _ in range(flips):
        position = rng.randrange(128, min(len(data), 1024))
        data[position] ^= 1 << rng.randrange(8)
    return bytes(data)


def cd_tree(target: Path) -> list[str]:
    """A CD as a modality burns it: pydicom's bundled TINY_ALPHA medium, a DICOMDIR and the 50
    instances it indexes in PT000000/ST000000/SE000000/. Returns the instances' paths
    relative to `target`."""
    source = bundled("DICOMDIR").parent / "TINY_ALPHA"
    target.mkdir(parents=True)
    shutil.copyfile(source / "DICOMDIR", target / "DICOMDIR")
    shutil.copytree(source / "PT000000", target / "PT000000")
    return sorted(str(path.relative_to(target)) for path in (target / "PT000000").rglob("*") if path.is_file())
