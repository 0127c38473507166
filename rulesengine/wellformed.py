"""Is a data set well formed: every element, item and delimiter where its encoding puts them,
every length within what contains it, and an even length in all?

pydicom reads leniently, and rightly so for a reader: a value cut short is read as far as it
goes, the few bytes of an element header cut short are dropped, a stray delimiter in a
sequence is read later as an element of unknown VR. A router that took such a data set in
would answer Success for an instance no destination can take: DCMTK's parser refuses it, so
storescp aborts the association and Orthanc fails the C-STORE without ever answering (the
router then waits `timeouts.dimse` for each attempt). So the intake walks the whole data set
once, as a strict parser would, reading element headers only: values, pixel data among them,
are skipped, never read (a deflated data set is inflated first).

A sequence is walked into when its VR says so (explicit VR), when the dictionary says so
(implicit VR) or when its length is undefined; a value of undefined length is otherwise
encapsulated pixel data (fragments) or an error. A VR that DICOM does not define is
refused too: readers guess the length that follows it, and guess differently. What DCMTK only
warns about (elements out of order, an odd-length value within an even-length data set) is not.
"""

from __future__ import annotations

import os
import struct
import zlib

from pydicom.datadict import dictionary_VR
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble

ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
# VRs whose explicit header has a 4-byte length (PS3.5 7.1.2)
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
SHORT_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS",
                       "ST", "TM", "UI", "UL", "US"})
_DELIMITERS = {ITEM: "an item (FFFE,E000)", ITEM_END: "an item delimiter (FFFE,E00D)",
               SEQUENCE_END: "a sequence delimiter (FFFE,E0DD)"}


class NotWellFormed(Exception):
    """What is wrong with the data set's bytes, in words, with the byte offset in the file; no
    ": " inside, so that a listener's Error Comment (the text after the last one) holds it all."""


def check_file(path: str | os.PathLike, encoding: tuple[bool, bool] | None, deflated: bool = False) -> None:
    """Walk the data set of the file at `path`: after its file meta information when it has
    a DICM header, else from its first byte. `encoding` is (implicit VR, little endian), as
    the file meta declares it or as the data set was read. Raises NotWellFormed."""
    with open(path, "rb", buffering=0) as fp:  # _Window reads what it needs, no more
        start = data_set_offset(fp)
        size = os.fstat(fp.fileno()).st_size
        implicit, little = encoding if encoding is not None and None not in encoding else (False, True)
        if deflated:
            fp.seek(start)
            try:
                inflated = zlib.decompress(fp.read(), -zlib.MAX_WBITS)
            except zlib.error as exc:
                raise NotWellFormed(f"the deflated data set cannot be inflated ({exc})") from None
            walk(inflated, 0, len(inflated), implicit, little, where="of the inflated data set")
        else:
            walk(fp, start, size, implicit, little)


def data_set_offset(fp) -> int:
    """Where the data set starts, as a sender finds it (pynetdicom's split_dataset): after the
    preamble, DICM and every group 0002 element; 0 without a DICM header."""
    fp.seek(0)
    try:
        read_preamble(fp, False)
    except InvalidDicomError:
        return 0
    try:
        read_dataset(fp, is_implicit_VR=False, is_little_endian=True,
                     stop_when=lambda tag, vr, length: tag.group != 2)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom reading a damaged file meta can raise anything
        raise NotWellFormed(f"the file meta information cannot be read ({exc})") from None
    return fp.tell()


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _tag(tag: int) -> str:
    return _DELIMITERS.get(tag) or f"element {_tag_text(tag)}"


class _Frame:
    """A container being walked: the data set or an item (elements), a sequence (items) or
    encapsulated pixel data (fragments). `end` is None for an undefined length (a delimiter
    ends it); `bound` is where it must end at the latest: its end, or its container's bound."""

    __slots__ = ("kind", "end", "bound", "implicit", "little", "name")

    def __init__(self, kind: str, end: int | None, bound: int, implicit: bool, little: bool, name: str):
        self.kind, self.end, self.bound, self.implicit, self.little, self.name = \
            kind, end, bound, implicit, little, name

    def inner(self, kind: str, end: int | None, name: str, encoding: tuple[bool, bool] | None = None) -> "_Frame":
        implicit, little = encoding or (self.implicit, self.little)
        return _Frame(kind, end, self.bound if end is None else end, implicit, little, name)


class _Window:
    """The bytes of a file (or a buffer) read a chunk at a time: element headers are unpacked
    from memory, and the values skipped are never read. After a long skip (pixel data, a
    fragment) only a few bytes are read: the next header may be as far again."""

    CHUNK, AFTER_SKIP = 1 << 16, 256

    def __init__(self, fp=None, data: bytes = b""):
        self.fp, self.data, self.start = fp, data, 0

    def unpack(self, layout: struct.Struct, position: int) -> tuple:
        offset = position - self.start
        if offset < 0 or offset + layout.size > len(self.data):
            if self.fp is None:
                raise NotWellFormed(f"cut short at byte {position}")
            skipped = position - (self.start + len(self.data)) > self.CHUNK
            self.fp.seek(position)
            self.data, self.start, offset = self.fp.read(self.AFTER_SKIP if skipped else self.CHUNK), position, 0
            if len(self.data) < layout.size:
                raise NotWellFormed(f"the file changed while it was read (at byte {position})")
        return layout.unpack_from(self.data, offset)


# (little endian?) -> the layout: an explicit VR element header (tag, VR, 2-byte length), the
# 4-byte length after the tag (implicit VR, items, delimiters), the 4-byte length after an
# explicit VR and its 2 reserved bytes
_EXPLICIT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_LENGTH = {True: struct.Struct("<L"), False: struct.Struct(">L")}


def walk(fp, start: int, size: int, implicit: bool, little: bool, where: str = "") -> None:
    """Walk the data set from byte `start` to `size` of `fp` (a file or a bytes object); raise
    NotWellFormed at the first fault. Iterative: a data set nested a thousand deep costs a
    list, not the stack."""
    at = "at byte {}" + (f" {where}" if where else "")
    window = _Window(data=fp) if isinstance(fp, (bytes, bytearray)) else _Window(fp)
    position = start
    stack = [_Frame("elements", size, size, implicit, little, "the data set")]
    while stack:
        frame = stack[-1]
        if position == frame.bound:
            if frame.end is None:
                raise NotWellFormed(f"{frame.name}, of undefined length, ends {at.format(position)} without its "
                                    f"delimiter")
            stack.pop()
            continue
        left = frame.bound - position
        if left < 8:
            raise NotWellFormed(f"{frame.name} ends {at.format(position)} with {left} byte(s), too few for an "
                                f"element (cut short)")
        group, number, vr_bytes, length = window.unpack(_EXPLICIT[frame.little], position)
        tag = group << 16 | number
        begin = position
        if frame.kind != "elements" and group != 0xFFFE:
            raise NotWellFormed(f"{_tag(tag)} {at.format(position)} where an item of {frame.name} belongs")
        if group == 0xFFFE or frame.implicit:  # items and delimiters have no VR, in every encoding
            length = window.unpack(_LENGTH[frame.little], position + 4)[0]
            position += 8
            if group == 0xFFFE:
                position = _item_or_delimiter(stack, frame, tag, length, position, at)
                continue
            vr = _dictionary_vr(tag)
        else:
            vr = vr_bytes.decode("latin-1")
            if vr not in SHORT_VRS and vr not in LONG_VRS:
                # Readers guess: DCMTK reads a 4-byte length after two capitals and a 2-byte one after
                # other bytes, pydicom the reverse (taking other bytes for an implicit VR element):
                # what follows is not the same data set to both
                raise NotWellFormed(f"{_tag(tag)} {at.format(begin)} has the VR {_vr_text(vr_bytes)}, which DICOM "
                                    f"does not define (readers disagree on the length after it)")
            if vr in LONG_VRS:
                if left < 12:
                    raise NotWellFormed(f"the header of {_tag(tag)} {at.format(begin)} is cut short")
                length = window.unpack(_LENGTH[frame.little], position + 8)[0]
                position += 12
            else:
                position += 8
        if length == UNDEFINED:
            if vr in ("SQ", "UN") or (frame.implicit and tag != PIXEL_DATA):
                # PS3.5 6.2.2: an undefined-length UN holds a sequence in Implicit VR Little Endian
                encoding = (True, True) if vr == "UN" and not frame.implicit else None
                stack.append(frame.inner("items", None, f"the sequence {_tag_text(tag)}", encoding))
            elif tag == PIXEL_DATA or vr in ("OB", "OW"):
                stack.append(frame.inner("fragments", None, f"the encapsulated pixel data {_tag_text(tag)}"))
            else:
                raise NotWellFormed(f"{_tag(tag)} ({vr}) {at.format(begin)} has an undefined length, which only a "
                                    f"sequence or encapsulated pixel data can have")
            continue
        if length > frame.bound - position:
            raise NotWellFormed(f"{_tag(tag)} {at.format(begin)} declares {length} bytes, {frame.bound - position} "
                                f"remain in {frame.name}")
        if vr == "SQ":
            stack.append(frame.inner("items", position + length, f"the sequence {_tag_text(tag)}"))
            continue
        position += length
    if (size - start) % 2:
        raise NotWellFormed(f"the data set is {size - start} bytes long, an odd length (a value of odd length, "
                            f"which DICOM does not allow and network peers refuse)")


def _item_or_delimiter(stack: list[_Frame], frame: _Frame, tag: int, length: int, position: int, at: str) -> int:
    """An item or a delimiter, whose 8 bytes end at `position`: where the walk goes on."""
    begin = position - 8
    if tag == ITEM and frame.kind in ("items", "fragments"):
        if length == UNDEFINED:
            if frame.kind == "fragments":
                raise NotWellFormed(f"a fragment of {frame.name} {at.format(begin)} has an undefined length")
            stack.append(frame.inner("elements", None, f"an item of {frame.name}"))
            return position
        if length > frame.bound - position:
            raise NotWellFormed(f"an item of {frame.name} {at.format(begin)} declares {length} bytes, "
                                f"{frame.bound - position} remain")
        if frame.kind == "fragments":  # a fragment's bytes are pixel data: skipped
            return position + length
        stack.append(frame.inner("elements", position + length, f"an item of {frame.name}"))
        return position
    closes = SEQUENCE_END if frame.kind in ("items", "fragments") else ITEM_END
    if tag == closes and frame.end is None and len(stack) > 1:
        stack.pop()
        return position
    expected = "an item" if frame.kind in ("items", "fragments") else "a data element"
    raise NotWellFormed(f"{_tag(tag)} {at.format(begin)} where {expected} of {frame.name} belongs")


def _vr_text(vr: bytes) -> str:
    text = vr.decode("latin-1")
    return repr(text) if text.isascii() and text.isprintable() else "0x" + vr.hex().upper()


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


__all__ = ["NotWellFormed", "check_file", "data_set_offset", "walk"]
