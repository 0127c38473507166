"""Streamed conversion between the uncompressed transfer syntaxes, for a destination that
does not accept the one an instance arrived in.

Explicit VR Big Endian, Deflated Explicit VR Little Endian, Explicit and Implicit VR
Little Endian are converted to Explicit or Implicit VR Little Endian element by element:
element headers are rewritten, big-endian values are byte-swapped according to their VR,
a deflated data set is inflated chunk by chunk, and values are copied in chunks of 1 MB,
so a 1 GB instance is never in memory. Compressed (encapsulated) pixel data is never
decompressed.

What a conversion changes besides the encoding:

- between Explicit and Implicit VR, element headers change size, so sequences and items
  are written with undefined length and group length elements (gggg,0000), retired and
  then wrong, are left out;
- from Implicit VR, an element's VR comes from the data dictionary (a private element's
  from pydicom's private dictionary through its private creator, else UN), ambiguous VRs
  resolved as pydicom does (Bits Allocated, Pixel Representation), and a value too long
  for a 2-byte length is written as UN.

Big endian pixel data: OW values are swapped in 16-bit words, except when Bits Allocated
is 32 or 64, where each sample is swapped whole, as pydicom reads such data (and as
pydicom's own big-endian test files are written); OB is never swapped.
"""

from __future__ import annotations

import array
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
CONVERTIBLE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)

_CHUNK = 1 << 20  # a multiple of every swap unit
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA, _BITS_ALLOCATED, _PIXEL_REPRESENTATION = 0x7FE00010, 0x00280100, 0x00280103
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
# Bytes per value, for the VRs whose values are byte-swapped between big and little endian.
_SWAP = {b"US": 2, b"SS": 2, b"OW": 2, b"AT": 2, b"UL": 4, b"SL": 4, b"FL": 4, b"OF": 4, b"OL": 4,
         b"FD": 8, b"OD": 8, b"SV": 8, b"UV": 8, b"OV": 8}
_ARRAY_TYPE = {2: "H", 4: "I", 8: "Q"}


class ConversionError(Exception):
    pass


def can_convert(current: str | None, syntax: str) -> bool:
    return current in CONVERTIBLE and syntax in LITTLE_ENDIAN and current != syntax


def convert(source: str, syntax: str) -> str:
    """A converted copy of `source` in `syntax` (Explicit or Implicit VR Little Endian), in
    the temporary folder (the router's is the spool's, which a restart empties).
    Raises ConversionError with the reason."""
    handle, target = tempfile.mkstemp(suffix=".dcm")
    try:
        with open(source, "rb") as src, os.fdopen(handle, "wb", buffering=_CHUNK) as out:
            meta, start = _read_meta(src)
            current = meta.get("TransferSyntaxUID")
            if not can_convert(current, syntax):
                raise ConversionError(f"{_name(current)} cannot be converted to {_name(syntax)}"
                                      + (" without decompressing" if current not in CONVERTIBLE else ""))
            meta.TransferSyntaxUID = syntax
            out.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(out, meta, enforce_standard=True)
            src.seek(start)
            if current == DeflatedExplicitVRLittleEndian:
                data: _Input = _InflatingInput(src)
                current = ExplicitVRLittleEndian
            else:
                data = _Input(src)
            if current == syntax:  # inflating is all there is to do
                data.copy_rest(out)
            else:
                _Converter(data, out, _Encoding.of(current), _Encoding.of(syntax)).run()
    except ConversionError as exc:
        _remove(target)
        raise ConversionError(f"cannot convert {source}: {exc}") from None
    except (OSError, ValueError, AttributeError, struct.error) as exc:  # AttributeError: incomplete file meta
        _remove(target)
        raise ConversionError(f"cannot convert {source}: {exc}") from None
    return target


def deflated_for_the_network(source: str) -> str | None:
    """A deflated data set goes on the network padded to an even length (PS3.5 A.5; DCMTK
    aborts on an odd one): a padded copy in the temporary folder when `source`'s is odd,
    else None (the file goes as it is)."""
    with open(source, "rb") as src:
        _, start = _read_meta(src)
        size = os.fstat(src.fileno()).st_size
        if (size - start) % 2 == 0:
            return None
        handle, target = tempfile.mkstemp(suffix=".dcm")
        try:
            with os.fdopen(handle, "wb") as out:
                src.seek(0)
                shutil.copyfileobj(src, out, _CHUNK)
                out.write(b"\0")
        except OSError:
            _remove(target)
            raise
    return target


def _read_meta(src: BinaryIO):
    """The file meta information and where the data set starts."""
    try:
        read_preamble(src, False)
        meta = read_dataset(src, is_implicit_VR=False, is_little_endian=True,
                            stop_when=lambda tag, vr, length: tag.group != 2)
    except InvalidDicomError:
        raise ConversionError("not a DICOM Part 10 file (no DICM header)") from None
    if "TransferSyntaxUID" not in meta:
        raise ConversionError("the file meta information has no Transfer Syntax UID")
    return FileMetaDataset(meta), src.tell()


def _name(syntax) -> str:
    name = getattr(syntax, "name", None)
    return f"{name} ({syntax})" if name and name != str(syntax) else str(syntax or "no transfer syntax")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---- input ------------------------------------------------------------------------------------


class _Input:
    """The encoded data set, read exactly; `position` counts the bytes read."""

    def __init__(self, fp: BinaryIO):
        self.fp = fp
        self.position = 0

    def _raw(self, size: int) -> bytes:
        return self.fp.read(size)

    def read(self, size: int) -> bytes:
        data = self._raw(size)
        if len(data) < size:
            raise ConversionError(f"the data set ends inside an element (byte {self.position + len(data)})")
        self.position += size
        return data

    def at_end(self) -> bool:
        return not self._peek()

    def _peek(self) -> bytes:
        return self.fp.peek(1)[:1]

    def copy_rest(self, out: BinaryIO) -> None:
        while piece := self._raw(_CHUNK):
            out.write(piece)
            self.position += len(piece)


class _InflatingInput(_Input):
    """A deflated data set (raw deflate, RFC 1951), inflated chunk by chunk: at most about a
    chunk of inflated data is held, whatever the ratio. Bytes after the end of the deflate
    stream are its padding."""

    def __init__(self, fp: BinaryIO):
        super().__init__(fp)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._buffer = bytearray()

    def _fill(self, size: int) -> None:
        inflater = self._inflater
        try:
            while len(self._buffer) < size and not inflater.eof:
                pending = inflater.unconsumed_tail or self.fp.read(_CHUNK)
                if not pending:
                    raise ConversionError("the deflated data set is cut short")
                self._buffer += inflater.decompress(pending, _CHUNK)
        except zlib.error as exc:
            raise ConversionError(f"the deflated data set cannot be inflated: {exc}") from None

    def _raw(self, size: int) -> bytes:
        self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _peek(self) -> bytes:
        self._fill(1)
        return bytes(self._buffer[:1])


# ---- conversion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoding:
    implicit: bool
    little: bool

    @classmethod
    def of(cls, syntax: str) -> "_Encoding":
        return cls(syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian)

    @property
    def order(self) -> str:
        return "<" if self.little else ">"


_IMPLICIT_LITTLE = _Encoding(True, True)


@dataclass
class _Container:
    """A data set, an item, a sequence or encapsulated fragments being converted."""

    kind: str  # "dataset", "item", "sequence", "fragments"
    end: int | None  # where it ends in the input; None: at its delimiter (or the input's end)
    source: _Encoding
    target: _Encoding
    delimit: bool  # the output has undefined length: write the delimiter at the end
    bits_allocated: int | None = None
    pixel_representation: int | None = None
    creators: dict[tuple[int, int], str] = field(default_factory=dict)  # (group, block) -> private creator


class _Converter:
    def __init__(self, data: _Input, out: BinaryIO, source: _Encoding, target: _Encoding):
        if not target.little:
            raise ConversionError("conversion to big endian is not supported")
        self.data, self.out = data, out
        self.stack = [_Container("dataset", None, source, target, False)]

    def run(self) -> None:
        stack, data = self.stack, self.data
        while stack:
            here = stack[-1]
            if here.end is not None and data.position >= here.end:
                if data.position > here.end:
                    raise ConversionError(f"an element runs past the end of its {here.kind} (byte {here.end})")
                self._close(stack.pop())
                continue
            if here.end is None and data.at_end():
                if len(stack) > 1:
                    raise ConversionError(f"the data set ends inside a {here.kind}")
                return
            group, element = struct.unpack(here.source.order + "HH", data.read(4))
            tag = group << 16 | element
            if here.kind in ("sequence", "fragments"):
                self._in_sequence(here, tag)
            elif tag == _ITEM_END and here.kind == "item":
                data.read(4)
                self._close(stack.pop())
            elif group == 0xFFFE:
                raise ConversionError(f"unexpected delimiter ({group:04X},{element:04X}) at byte {data.position - 4}")
            else:
                self._element(here, tag)

    def _close(self, container: _Container) -> None:
        if container.delimit:
            delimiter = _ITEM_END if container.kind == "item" else _SEQUENCE_END
            self.out.write(struct.pack("<HHL", delimiter >> 16, delimiter & 0xFFFF, 0))

    def _in_sequence(self, here: _Container, tag: int) -> None:
        data, out = self.data, self.out
        length = struct.unpack(here.source.order + "L", data.read(4))[0]
        if tag == _SEQUENCE_END:
            self._close(self.stack.pop())
            return
        if tag != _ITEM:
            raise ConversionError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) found where a sequence item "
                                  f"belongs (byte {data.position - 8})")
        if here.kind == "fragments":  # compressed frames: bytes as they are
            if length == _UNDEFINED:
                raise ConversionError("an encapsulated fragment has undefined length")
            out.write(struct.pack("<HHL", 0xFFFE, 0xE000, length))
            self._copy(length, 1)
            return
        delimit = length == _UNDEFINED or here.source.implicit != here.target.implicit
        out.write(struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED if delimit else length))
        end = None if length == _UNDEFINED else data.position + length
        self.stack.append(_Container("item", end, here.source, here.target, delimit))

    def _element(self, here: _Container, tag: int) -> None:
        data, source, target = self.data, here.source, here.target
        order = source.order
        if source.implicit:
            length = struct.unpack(order + "L", data.read(4))[0]
            vr = self._implicit_vr(here, tag, length)
        else:
            vr = data.read(2)
            if vr in _LONG_VRS:
                data.read(2)
                length = struct.unpack(order + "L", data.read(4))[0]
            elif vr in _VRS:
                length = struct.unpack(order + "H", data.read(2))[0]
            else:
                raise ConversionError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has no valid VR ({vr!r}) "
                                      f"at byte {data.position - 6}")
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if length == _UNDEFINED:
            if vr == b"SQ" or source.implicit and tag != _PIXEL_DATA:
                self._header(target, tag, b"SQ", _UNDEFINED)
                self.stack.append(_Container("sequence", None, source, target, True))
            elif vr == b"UN":  # a sequence in Implicit VR Little Endian, whatever the transfer syntax
                self._header(target, tag, b"UN", _UNDEFINED)
                self.stack.append(_Container("sequence", None, _IMPLICIT_LITTLE, _IMPLICIT_LITTLE, True))
            elif vr in (b"OB", b"OW") or tag == _PIXEL_DATA:
                self._header(target, tag, vr if vr in (b"OB", b"OW") else b"OB", _UNDEFINED)
                self.stack.append(_Container("fragments", None, source, target, True))
            else:
                raise ConversionError(f"{where} {vr.decode()} has undefined length")
            return
        if vr == b"SQ":
            delimit = source.implicit != target.implicit
            self._header(target, tag, b"SQ", _UNDEFINED if delimit else length)
            self.stack.append(_Container("sequence", data.position + length, source, target, delimit))
            return
        if tag & 0xFFFF == 0 and tag >> 16 != 2 and source.implicit != target.implicit:
            data.read(length)  # a group length: wrong once headers change size
            return
        unit = self._swap_unit(here, tag, vr) if source.little != target.little else 1
        if length % unit:
            raise ConversionError(f"{where} {vr.decode()}: {length} bytes is not a whole number of "
                                  f"{unit}-byte values")
        if not target.implicit and vr not in _LONG_VRS and length > 0xFFFF:
            vr = b"UN"
        self._header(target, tag, vr, length)
        if length <= 256 and (tag in (_BITS_ALLOCATED, _PIXEL_REPRESENTATION) or _is_private_creator(tag)):
            value = data.read(length)
            self.out.write(_swapped(value, unit) if unit > 1 else value)
            self._remember(here, tag, value, order)
        else:
            self._copy(length, unit)

    def _header(self, target: _Encoding, tag: int, vr: bytes, length: int) -> None:
        if target.implicit:
            self.out.write(struct.pack("<HHL", tag >> 16, tag & 0xFFFF, length))
        elif vr in _LONG_VRS:
            self.out.write(struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr, length))
        else:
            self.out.write(struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, length))

    def _copy(self, length: int, unit: int) -> None:
        data, out = self.data, self.out
        while length:
            piece = data.read(min(length, _CHUNK))
            out.write(_swapped(piece, unit) if unit > 1 else piece)
            length -= len(piece)

    @staticmethod
    def _remember(here: _Container, tag: int, value: bytes, order: str) -> None:
        if tag == _BITS_ALLOCATED and len(value) == 2:
            here.bits_allocated = struct.unpack(order + "H", value)[0]
        elif tag == _PIXEL_REPRESENTATION and len(value) == 2:
            here.pixel_representation = struct.unpack(order + "H", value)[0]
        else:
            here.creators[(tag >> 16, tag & 0xFF)] = value.decode("latin-1").strip(" \0")

    @staticmethod
    def _swap_unit(here: _Container, tag: int, vr: bytes) -> int:
        if tag == _PIXEL_DATA and vr == b"OW" and here.bits_allocated in (32, 64):
            return here.bits_allocated // 8
        if vr == b"UN":  # a known element written as UN holds its VR's values
            try:
                return _SWAP.get(dictionary_VR(tag).encode()[:2], 1)
            except KeyError:
                return 1
        return _SWAP.get(vr, 1)

    @staticmethod
    def _implicit_vr(here: _Container, tag: int, length: int) -> bytes:
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0:
            return b"UL"
        if group % 2:
            if _is_private_creator(tag):
                return b"LO"
            creator = here.creators.get((group, element >> 8))
            try:
                vr = private_dictionary_VR(tag, creator) if creator else "UN"
            except KeyError:
                vr = "UN"
        else:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN"
        choices = [choice.strip().encode() for choice in vr.split(" or ")]
        if tag == _PIXEL_DATA:
            return b"OB" if here.bits_allocated is not None and here.bits_allocated <= 8 else b"OW"
        if choices == [b"OB", b"OW"]:
            return b"OW"  # overlay, waveform and the like: as pydicom reads them
        if b"SS" in choices and here.pixel_representation == 1:
            return b"SS"
        if length > 0xFFFF and length != _UNDEFINED:
            longs = [choice for choice in choices if choice in _LONG_VRS]
            if longs:
                return longs[0]
        return choices[0] if choices[0] in _VRS else b"UN"


def _is_private_creator(tag: int) -> bool:
    return bool(tag >> 16 & 1) and 0x10 <= tag & 0xFFFF <= 0xFF


def _swapped(data: bytes, unit: int) -> bytes:
    values = array.array(_ARRAY_TYPE[unit], data)
    values.byteswap()
    return values.tobytes()
