"""Conversion between the uncompressed transfer syntaxes, for a destination that does not
accept the one an instance arrived in.

Explicit and Implicit VR Little Endian differ only in the element headers, so the
header is rewritten by pydicom and the pixel data (and whatever follows it) is
streamed with new element headers: a 1 GB instance is never in memory. Big Endian
needs the values byte-swapped and is converted in memory by pydicom.
"""

from __future__ import annotations

import os
import struct
import tempfile

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.filereader import _at_pixel_data, read_partial
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_CHUNK = 1 << 20


class ConversionError(Exception):
    pass


def convert(source: str, syntax: str) -> str:
    """A converted copy of `source` in `syntax`, in the temporary folder (the router's is
    the spool's, which a restart empties). Raises ConversionError."""
    handle, target = tempfile.mkstemp(suffix=".dcm")
    os.close(handle)
    try:
        with open(source, "rb") as fp:
            header = read_partial(fp, stop_when=_at_pixel_data)
            tail = fp.tell()
        current = header.file_meta.get("TransferSyntaxUID")
        if current in LITTLE_ENDIAN and syntax in LITTLE_ENDIAN:
            _convert_little_endian(source, header, tail, syntax, target)
        elif {current, syntax} <= {ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, *LITTLE_ENDIAN}:
            dataset = pydicom.dcmread(source)  # byte swapping or inflating: done by pydicom, in memory
            dataset.file_meta.TransferSyntaxUID = syntax
            dataset.save_as(target, enforce_file_format=True)
        else:
            raise ConversionError(f"{current} cannot be converted to {syntax} without decompressing")
    except ConversionError:
        os.unlink(target)
        raise
    except (OSError, ValueError, struct.error) as exc:
        os.unlink(target)
        raise ConversionError(f"cannot convert {source}: {exc}") from None
    return target


def _convert_little_endian(source: str, header, tail: int, syntax: str, target: str) -> None:
    header.file_meta.TransferSyntaxUID = syntax
    to_implicit = syntax == ImplicitVRLittleEndian
    from_implicit = not to_implicit  # both are little endian and they differ
    bits = header.get("BitsAllocated", 16)
    with open(source, "rb") as src, open(target, "wb") as out:
        header.save_as(out, enforce_file_format=True)
        src.seek(tail)
        size = os.fstat(src.fileno()).st_size
        while src.tell() < size:
            tag_bytes = src.read(4)
            group, element = struct.unpack("<HH", tag_bytes)
            tag = (group << 16) | element
            if from_implicit:
                length = struct.unpack("<L", src.read(4))[0]
                vr = _vr_of(tag, bits)
            else:
                vr = src.read(2)
                if vr in _LONG_VRS:
                    src.read(2)
                    length = struct.unpack("<L", src.read(4))[0]
                else:
                    length = struct.unpack("<H", src.read(2))[0]
            if length == 0xFFFFFFFF:
                raise ConversionError("an element of undefined length follows the header (encapsulated data)")
            if to_implicit:
                out.write(tag_bytes + struct.pack("<L", length))
            elif vr in _LONG_VRS or length > 0xFFFF:
                out.write(tag_bytes + (vr if vr in _LONG_VRS else b"UN") + b"\0\0" + struct.pack("<L", length))
            else:
                out.write(tag_bytes + vr + struct.pack("<H", length))
            left = length
            while left:
                piece = src.read(min(left, _CHUNK))
                if not piece:
                    raise ConversionError("the file ends inside an element")
                out.write(piece)
                left -= len(piece)


def _vr_of(tag: int, bits_allocated: int) -> bytes:
    if tag == 0x7FE00010:
        return b"OB" if bits_allocated <= 8 else b"OW"
    try:
        return dictionary_VR(tag).split(" or ")[0].encode()
    except KeyError:
        return b"UN"
