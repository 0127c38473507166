"""DICOM files as the router reads and writes them, apart from what a document is.

Reading checks what pydicom lets through (a file cut short, a data set without the
Part 10 header) and raises DocumentReadError with the reason. `read_header` stops
before the pixel data, so that a 1 GB instance never enters memory, and notes where
each top-level element lies in the file; `write_file` then writes an edited header
with the bytes of every element no edit touched copied from that file, and copies
the pixel data (and what follows it) as received. `open_tail` reads what follows the
header, for the rules that walk the whole data set, but for the binary values (the pixel
data): `write_file` copies each from the file where it stands among the elements that
are left. `write_with_file_meta` gives a file
other file meta information, its data set's bytes as they are.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import zlib
from typing import Any, NamedTuple

import pydicom
from pydicom import charset as dicom_charset
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filebase import DicomFileLike
from pydicom.filereader import ENCODED_VR as _ENCODED_VRS
from pydicom.filereader import _at_pixel_data, _read_file_meta_info, read_dataset, read_partial, read_preamble
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import BaseTag

from .lang.paths import tag_text
from . import values
from .values import BINARY_VRS, UnreadBytes


class DocumentReadError(Exception):
    """A file that is not a DICOM instance pydicom can read."""


# What pydicom raises on a malformed file (beyond InvalidDicomError): a bad length or VR,
# a cut-off file, a broken deflate stream, a value of the wrong size.
_MALFORMED = (OSError, ValueError, EOFError, TypeError, KeyError, IndexError, OverflowError, NotImplementedError,
              struct.error, zlib.error, BytesLengthException)
TOO_DEEP = "sequences nested too deeply"
_FIRST_PIXEL_DATA_TAG = 0x7FE00008  # Float Pixel Data: read_header stops at the first of the three


class Header(NamedTuple):
    """What `read_header` read: the data set up to its pixel data, where that starts in the
    file (None: nothing follows the header, or it was read whole), where each top-level
    element lies in the file (None: unknown, then `write_file` encodes the whole header),
    and the file as it was read (`fingerprint`; None when unknown)."""

    dataset: Dataset
    pixel_data_at: int | None
    element_ranges: dict[int, tuple[int, int]] | None
    fingerprint: str | None = None


def read_file(path: str, **dcmread_options) -> Dataset:
    """Read a whole DICOM file. Raises DocumentReadError with the reason when it cannot."""
    try:
        ds = pydicom.dcmread(path, **dcmread_options)
    except InvalidDicomError:
        ds = _read_without_preamble(path, dcmread_options)
    except RecursionError:
        raise DocumentReadError(f"{path}: cannot read: {TOO_DEEP}") from None
    except _MALFORMED as exc:
        raise DocumentReadError(f"{path}: cannot read: {exc}") from None
    _record_encoding_found(ds)
    _check_complete(ds, path)
    return ds


_HEADER_READ = 1 << 16  # bytes read at once for a header: all of most headers
_PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where read_header stops, as pydicom's
_UNDEFINED_LENGTH = 0xFFFFFFFF


def read_header(path: str) -> Header:
    """Read everything before the pixel data; the pixel data stays in the file. Raises
    DocumentReadError with the reason when the file cannot be read or is cut short."""
    head = read_as = None  # the first bytes of the pixel data element; the file's fingerprint
    try:
        with open(path, "rb") as fp:
            stat = os.fstat(fp.fileno())
            size = stat.st_size
            data = fp.read(_HEADER_READ)
            ds, offset, ranges = _read_header_in_memory(path, data, size, stat)
            if ds is None:
                fp.seek(0)
                ds = read_partial(fp, stop_when=_at_pixel_data)
                offset = fp.tell()
            if offset < size:
                head = data[offset:offset + 12] if offset + 12 <= len(data) else _read_at(fp, offset, 12)
            read_as = fingerprint_of(stat, fp, data, min(offset, size))
    except InvalidDicomError:
        ds, offset, size = _read_header_without_meta(path)
        ranges = None
    except RecursionError:
        raise DocumentReadError(f"{path}: cannot read: {TOO_DEEP}") from None
    except _MALFORMED as exc:
        raise DocumentReadError(f"{path}: cannot read: {exc}") from None
    if not ds._dict:
        raise DocumentReadError(f"{path}: no data elements")
    _record_encoding_found(ds)
    if getattr(ds, "file_meta", None) is not None and \
            ds.file_meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # pydicom inflates a deflated data set into memory: there is no pixel data to copy
        # from the file, so read the whole instance.
        return Header(read_file(path), None, None, read_as)
    if offset >= size:
        _check_complete(ds, path)
    else:
        _check_tail(path, ds, offset, size, head)
    if ranges is None:
        ranges = _element_ranges(ds, offset)
    return Header(ds, offset if offset < size else None, ranges, read_as)


def _read_header_in_memory(path: str, data: bytes, size: int, stat: os.stat_result) \
        -> tuple[Dataset | None, int, dict[int, tuple[int, int]] | None]:
    """pydicom's read of a header from the file's first bytes, `data`, in memory: a fifth
    less CPU than from the file, and where its elements lie when that was found on the way
    (else None). (None, 0, None) when the header may go on past them, or when
    pydicom raises: then the file is read (and the same error raised from there). An element
    of undefined length other than a sequence is left to the file too: pydicom warns when
    such a value is cut short, which here would only mean it goes on past `data`."""
    whole = len(data) >= size
    buffer = io.BytesIO(data)
    unsure = []

    def stop(tag, vr, length) -> bool:
        if tag in _PIXEL_DATA_TAGS:
            return True
        if length == _UNDEFINED_LENGTH and vr != "SQ" and not whole:
            unsure.append(tag)
            return True
        return False

    try:
        ds, offset, ranges = _read_plain_header(buffer, data, whole)
        if ds is None:  # not the plain case: pydicom reads it all
            buffer.seek(0)
            ds = read_partial(buffer, stop_when=stop)
            offset = buffer.tell()
    except Exception:  # noqa: BLE001 - read from the file again, which raises what it raises
        return None, 0, None
    if unsure or (offset >= len(data) and not whole):
        return None, 0, None
    # As read from the file: pydicom keeps where it was read from.
    if ds.buffer is buffer:
        ds.buffer, ds.fileobj_type, ds.filename, ds.timestamp = None, open, path, stat.st_mtime
    return ds, offset, ranges


_EXPLICIT_LITTLE = struct.Struct("<HH2sH")
_LENGTH_32 = struct.Struct("<L")
_VR_TEXT = {vr: vr.decode("ascii") for vr in _ENCODED_VRS}


def _read_plain_header(buffer: io.BytesIO, data: bytes, whole: bool) \
        -> tuple[Dataset | None, int, dict[int, tuple[int, int]] | None]:
    """What pydicom's read_partial(buffer, stop_when=_at_pixel_data) gives, element for
    element, for the plain case: a Part 10 file in Explicit VR Little Endian whose top-level
    elements before the pixel data all have a defined length and a VR DICOM defines. Its
    elements are found here with one unpack each (pydicom's element generator costs three
    times as much); pydicom reads the preamble and file meta, and every value later, as it
    would have; and where each element lies (as `_element_ranges` finds them). (None, 0, None)
    for anything else (a command set, an implicit VR element, a value of undefined length, a
    tag twice, a header cut short), which pydicom then reads. `whole`: `data` is the whole file."""
    preamble = read_preamble(buffer, False)
    file_meta = _read_file_meta_info(buffer)
    if file_meta.get("TransferSyntaxUID") != pydicom.uid.ExplicitVRLittleEndian:
        return None, 0, None
    position, end = buffer.tell(), len(data)
    if position + 8 > end or data[position:position + 2] == b"\0\0" or \
            not all(0x40 < byte < 0x5B for byte in data[position + 4:position + 6]):
        return None, 0, None  # no data set, a command set, or implicit VR elements: pydicom's own ways
    elements: dict = {}
    ranges: dict[int, tuple[int, int]] = {}
    unpack, unpack_length, vr_text, long_vrs = _EXPLICIT_LITTLE.unpack_from, _LENGTH_32.unpack_from, _VR_TEXT, _LONG_VRS
    while True:
        if position + 8 > end:
            if not whole or position < end:
                return None, 0, None  # the header goes on past `data`, or a file that ends mid-element
            break
        group, number, vr_bytes, length = unpack(data, position)
        tag = group << 16 | number
        vr = vr_text.get(vr_bytes)
        if vr is None or tag == 0xFFFEE00D:
            return None, 0, None
        if vr in long_vrs:
            if position + 12 > end:
                return None, 0, None
            length = unpack_length(data, position + 8)[0]
            value_at = position + 12
        else:
            value_at = position + 8
        if tag in _PIXEL_DATA_TAGS:  # as pydicom, once it has read the element's header
            break
        if length == _UNDEFINED_LENGTH or value_at + length > end or tag in ranges:
            return None, 0, None
        key = BaseTag(tag)
        value = data[value_at:value_at + length] if length else empty_value_for_VR(vr, raw=True)
        elements[key] = RawDataElement(key, vr, length, value, value_at, False, True)
        ranges[tag] = (position, value_at + length)
        position = value_at + length
    dataset = Dataset(elements, parent_encoding=default_encoding)
    encoding = default_encoding
    if 0x00080005 in elements:
        encoding = convert_encodings(convert_raw_data_element(elements[BaseTag(0x00080005)]).value)
    dataset.set_original_encoding(False, True, encoding)
    ds = FileDataset(buffer, dataset, preamble, file_meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds, position, ranges


def _read_at(fp, offset: int, length: int) -> bytes:
    fp.seek(offset)
    return fp.read(length)


def fingerprint_of(stat: os.stat_result, fp, data: bytes, header_length: int) -> str:
    """A file as read (`stat` of the open file `fp`, whose first bytes are `data`): its size,
    modification time (ns) and inode, and the length and CRC-32 of its first `header_length`
    bytes (the header, before the pixel data)."""
    if header_length <= len(data):
        crc = zlib.crc32(memoryview(data)[:header_length])
    else:
        crc, at = zlib.crc32(data), len(data)
        fp.seek(at)
        while at < header_length:
            piece = fp.read(min(header_length - at, 1 << 20))
            if not piece:
                break
            crc, at = zlib.crc32(piece, crc), at + len(piece)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{header_length}:{crc:08x}"


def read_tail(path: str, offset: int, header: Dataset) -> Dataset:
    """The elements `read_header` left in the file from `offset` on (the pixel data and what
    follows it), read in the encoding `header` was found in. Raises DocumentReadError."""
    implicit, little = header.original_encoding
    try:
        with open(path, "rb") as fp:
            fp.seek(offset)
            tail = read_dataset(fp, bool(implicit), bool(little) if little is not None else True)
            for elem in tail:  # a value pydicom cannot convert shows here, not when written
                pass
    except RecursionError:
        raise DocumentReadError(f"{path}: the pixel data cannot be read: {TOO_DEEP}") from None
    except _MALFORMED as exc:
        raise DocumentReadError(f"{path}: the pixel data cannot be read: {exc}") from None
    return tail


class TailElement(NamedTuple):
    """An element `read_header` left in the file: its VR, its value's length in bytes (as a
    whole read would hold it: an encapsulated value's items, delimiters excepted), where it
    starts and where its value starts (None: where its value ends cannot be known without
    reading it)."""

    vr: str
    length: int
    offset: int | None
    value_at: int | None = None


_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD


def tail_elements(path: str, offset: int, header: Dataset) -> dict[int, TailElement]:
    """The elements from `offset` on (the pixel data and what follows it) by their headers
    only, the values skipped: which there are, and how long, without reading the pixel data.
    An element of undefined length other than encapsulated data (a sequence) ends the scan
    with an entry of unknown offset, as does a damaged header. Raises OSError."""
    implicit, little = header.original_encoding
    order = "<" if little or little is None else ">"
    found: dict[int, TailElement] = {}
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        at = offset
        while at + 8 <= size:
            fp.seek(at)
            head = fp.read(12)
            group, element = struct.unpack(order + "HH", head[:4])
            tag = group << 16 | element
            if implicit:
                vr, length, start = _dictionary_vr(tag), struct.unpack(order + "L", head[4:8])[0], at + 8
            elif head[4:6].decode("latin-1") in _LONG_VRS and len(head) == 12:
                vr, length, start = head[4:6].decode(), struct.unpack(order + "L", head[8:12])[0], at + 12
            elif head[4:6].isalpha() and head[4:6].isupper():
                vr, length, start = head[4:6].decode(), struct.unpack(order + "H", head[6:8])[0], at + 8
            else:
                break  # not an element header: the well-formedness check tells what is wrong
            if length != _UNDEFINED:
                found[tag] = TailElement(vr, length, at, start)
                at = start + length
                continue
            items = _encapsulated_items(fp, start, size, order) if vr != "SQ" else None
            if items is None:
                found[tag] = TailElement(vr, 1, None)
                break
            found[tag] = TailElement(vr, items[0], at, start)
            at = items[1]
    return found


def _encapsulated_items(fp, start: int, size: int, order: str) -> tuple[int, int] | None:
    """An encapsulated value's length as a whole read holds it (each item with its 8-byte
    header) and where the element ends; None when its items cannot be walked."""
    at, length = start, 0
    while at + 8 <= size:
        fp.seek(at)
        group, element, item_length = struct.unpack(order + "HHL", fp.read(8))
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return length, at + 8
        if tag != _ITEM or item_length == _UNDEFINED:
            return None
        length += 8 + item_length
        at += 8 + item_length
    return None


def _dictionary_vr(tag: int) -> str:
    try:
        vr = pydicom.datadict.dictionary_VR(tag)
    except KeyError:
        return "UN"
    return "OW" if vr == "OB or OW" else vr.split(" or ")[0]


class TailPiece(NamedTuple):
    """An element `read_header` left in the file, as `open_tail` found it: the element (a
    RawDataElement, or a sequence of undefined length read whole); for a binary value left
    in the file, its VR, its length as a whole read holds it and where it starts (None: the
    value was read); and where the element's bytes lie in the file, [start, end)."""

    element: Any
    vr: str | None
    length: int
    value_at: int | None
    start: int
    end: int


_READ_WITH_THE_TAIL = 1024  # bytes: a longer value is skipped by open_tail, a binary one left in the file


def open_tail(path: str, offset: int, header: Dataset) -> list[TailPiece]:
    """The elements from `offset` on (the pixel data and what follows it), read in the
    encoding `header` was found in, each with where it lies in the file: other values are
    read, binary ones longer than a few bytes (the pixel data) are left in the file. Raises
    DocumentReadError."""
    implicit, little = bool(header.original_encoding[0]), header.original_encoding[1] is not False
    try:
        with open(path, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            fp.seek(offset)
            tail = read_dataset(fp, implicit, little, defer_size=_READ_WITH_THE_TAIL)
            starts = []
            for tag, elem in tail._dict.items():
                value_at = elem.value_tell if isinstance(elem, RawDataElement) else elem.file_tell
                vr = _dictionary_vr(tag) if implicit else elem.VR
                starts.append((int(tag), elem, vr, value_at, value_at - (8 if implicit or vr not in _LONG_VRS else 12)))
            pieces = []
            for position, (tag, elem, vr, value_at, start) in enumerate(starts):
                end = starts[position + 1][4] if position + 1 < len(starts) else size
                if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED and value_at + elem.length > end:
                    raise DocumentReadError(f"{path}: the file is truncated: {tag_text(tag)} declares "
                                            f"{elem.length} bytes, {end - value_at} remain")
                if not isinstance(elem, RawDataElement) or elem.value is not None or not elem.length:
                    pieces.append(TailPiece(elem, None, 0, None, start, end))
                    continue
                undefined = elem.length == _UNDEFINED
                length = end - value_at - 8 if undefined else elem.length  # items, without the delimiter
                if vr in BINARY_VRS:
                    pieces.append(TailPiece(elem, vr, length, value_at, start, end))
                    continue
                # A long value that is not binary (text after the pixel data): read it alone.
                if undefined or length > values.MAX_UNREAD_VALUE_BYTES:
                    raise DocumentReadError(f"{path}: {tag_text(tag)} after the pixel data holds {length} bytes of "
                                            f"{vr}: more than the {values.unread_bound()} read into memory")
                fp.seek(start)
                alone = read_dataset(fp, implicit, little, bytelength=end - start)
                pieces.append(TailPiece(alone._dict[tag], None, 0, None, start, end))
    except RecursionError:
        raise DocumentReadError(f"{path}: what follows the header cannot be read: {TOO_DEEP}") from None
    except _MALFORMED as exc:
        raise DocumentReadError(f"{path}: what follows the header cannot be read: {exc}") from None
    return pieces


def write_file(target, dataset: Dataset, file_meta: FileMetaDataset, source: str | None = None,
               pixel_data_at: int | None = None, element_ranges: dict[int, tuple[int, int]] | None = None,
               touched: set[int] | None = None) -> None:
    """Write a DICOM Part 10 file (`target`: a path or a file object); the file meta is made
    consistent with the data set first. A header read by `read_header` from `source` is
    followed by the pixel data copied from there (from `pixel_data_at`); the elements outside
    `touched` are copied from there too, when `element_ranges` says where they lie (`touched`
    None: any may have changed)."""
    ds = dataset
    meta = file_meta
    ds.file_meta = meta
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    # Plain int keys: pydicom's tags compare in Python, hundreds of times per instance here.
    unread = {int(tag): elem.value for tag, elem in ds._dict.items()
              if isinstance(getattr(elem, "_value", None), UnreadBytes) and int(tag) >= _FIRST_PIXEL_DATA_TAG}
    if pixel_data_at is None and not unread:
        ds.save_as(target, enforce_file_format=True)
        return
    # The header as edited, then the pixel data (and what follows it) as received.
    with open(target, "wb") if isinstance(target, (str, os.PathLike)) else contextlib.nullcontext(target) as out:
        if not _write_elements(out, ds, meta, source, element_ranges, touched, unread):
            ds.save_as(out, enforce_file_format=True)
        if pixel_data_at is not None:
            with open(source, "rb") as original:
                original.seek(pixel_data_at)
                shutil.copyfileobj(original, out, 1 << 20)


def _write_elements(out, ds: Dataset, meta: FileMetaDataset, source: str, ranges: dict[int, tuple[int, int]] | None,
                    touched: set[int] | None, unread: dict[int, UnreadBytes]) -> bool:
    """The data set element by element: the bytes of every element no edit touched copied
    from the file it was read from, when `ranges` says where they lie (encoding 300 elements
    again costs milliseconds per instance), those of the values left there (`unread`: the
    pixel data, what follows it) too, and only the others encoded. False when that cannot be
    done (then pydicom writes it all)."""
    syntax = meta.get("TransferSyntaxUID")
    splice = ranges is not None and touched is not None and bool(ranges) and syntax in (
        pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
    if not splice and not unread:
        return False
    try:
        implicit, little = pydicom.uid.UID(syntax).is_implicit_VR, pydicom.uid.UID(syntax).is_little_endian
    except (ValueError, TypeError):  # no transfer syntax pydicom knows: the encoding the data set was found in
        implicit, little = bool(ds.original_encoding[0]), ds.original_encoding[1] is not False
    header, start = b"", 0
    if splice:
        start = min(begin for begin, _ in ranges.values())
        with open(source, "rb") as original:
            original.seek(start)
            header = original.read(max(end for _, end in ranges.values()) - start)
    else:
        ranges, touched = {}, set()
    preamble = getattr(ds, "preamble", None) if not splice else None  # as save_as writes it
    out.write(preamble or b"\0" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    fp = DicomFileLike(out)
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    encodings = dicom_charset.convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    # Plain int keys (ranges and touched have them too): pydicom's tags compare in Python, and
    # every look-up below would call them for each element.
    elements = {int(tag): elem for tag, elem in ds._dict.items()}
    run = None  # (begin, end): untouched elements lying one after the other, copied in one write
    for tag in sorted(elements):
        if tag in unread and unread[tag].element is not None:
            pass
        elif tag in ranges and tag not in touched:
            begin, end = ranges[tag]
            if run is not None and run[1] == begin:
                run = (run[0], end)
            else:
                if run is not None:
                    out.write(header[run[0] - start:run[1] - start])
                run = (begin, end)
            continue
        if run is not None:
            out.write(header[run[0] - start:run[1] - start])
            run = None
        if tag in unread and unread[tag].element is not None:
            _copy_bytes(source, *unread[tag].element, out)
        elif not splice and tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # a retired group length, which pydicom does not write either
        else:
            write_data_element(fp, elements[tag], encodings)
    if run is not None:
        out.write(header[run[0] - start:run[1] - start])
    return True


def _copy_bytes(source: str, begin: int, end: int, out) -> None:
    """Bytes [begin, end) of `source` written to `out` a piece at a time."""
    with open(source, "rb") as original:
        original.seek(begin)
        left = end - begin
        while left > 0:
            piece = original.read(min(left, 1 << 20))
            if not piece:
                raise OSError(f"{source}: the file ends {left} bytes early")
            out.write(piece)
            left -= len(piece)


def encode_file_meta(file_meta: FileMetaDataset) -> bytes:
    """File meta information as it is written after the preamble and "DICM". Raises what
    pydicom raises for a value it cannot encode."""
    buffer = io.BytesIO()
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


def write_with_file_meta(source: str, encoded_file_meta: bytes, target: str | os.PathLike) -> None:
    """`source` written to `target` with other file meta information: its preamble, the file
    meta `encode_file_meta` made, then the data set's bytes exactly as in `source`, copied in
    chunks (the pixel data never in memory)."""
    with open(source, "rb") as original:
        # Where pydicom found the data set: after the preamble and file meta, if there are any.
        preamble = read_preamble(original, force=True)
        _read_file_meta_info(original)
        with open(target, "wb") as out:
            out.write(preamble or b"\0" * 128)
            out.write(b"DICM")
            out.write(encoded_file_meta)
            shutil.copyfileobj(original, out, 1 << 20)


_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _element_ranges(ds: Dataset, tail: int) -> dict[int, tuple[int, int]] | None:
    """Where each top-level element lies in the file, from the offsets pydicom kept of its
    values; each ends where the next begins (the last at the pixel data). None if unknown."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax not in (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian):
        return None
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    starts = []
    for tag, elem in ds._dict.items():
        value_at = getattr(elem, "value_tell", None) if isinstance(elem, RawDataElement) else \
            getattr(elem, "file_tell", None)
        if value_at is None:
            return None
        header = 8 if implicit or (elem.VR not in _LONG_VRS) else 12
        starts.append((int(tag), value_at - header))
    ranges = {}
    for position, (tag, begin) in enumerate(starts):
        end = starts[position + 1][1] if position + 1 < len(starts) else tail
        if end < begin:
            return None
        ranges[tag] = (begin, end)
    return ranges


def _record_encoding_found(ds: Dataset) -> None:
    """pydicom reads a data set in the VR encoding it finds there (with a warning when its transfer
    syntax declares the other one), yet records the declared one as the data set's original
    encoding: record the one its elements were read in, which its bytes are in. (Command set
    elements, group 0000, are implicit VR whatever the data set is.)"""
    # In the order read, not pydicom's sorted elements(): one data set's raw elements were all
    # read in the same encoding, and sorting its tags costs more than the rest of this check.
    element = next((element for element in ds._dict.values() if isinstance(element, RawDataElement)
                    and element.tag >> 16 not in (0x0000, 0x0002)), None)
    if element is not None and (element.is_implicit_VR, element.is_little_endian) != tuple(ds.original_encoding):
        ds.set_original_encoding(element.is_implicit_VR, element.is_little_endian)


def _check_tail(path: str, ds: Dataset, offset: int, size: int, head: bytes | None = None) -> None:
    """The pixel data element must fit in the file: a cut-off transfer shows here. `head`:
    the file's 12 bytes from `offset`, when they were read already."""
    if head is None:
        with open(path, "rb") as fp:
            fp.seek(offset)
            head = fp.read(12)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    little = syntax != pydicom.uid.ExplicitVRBigEndian
    implicit = bool(ds.original_encoding[0])  # as found: a transfer syntax can declare the other VR encoding
    order = "<" if little else ">"
    if len(head) < 8:
        raise DocumentReadError(f"{path}: the file is truncated in the pixel data element")
    if implicit:
        length, header = struct.unpack(order + "L", head[4:8])[0], 8
    elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"):
        if len(head) < 12:
            raise DocumentReadError(f"{path}: the file is truncated in the pixel data element")
        length, header = struct.unpack(order + "L", head[8:12])[0], 12
    else:
        length, header = struct.unpack(order + "H", head[6:8])[0], 8
    if length != 0xFFFFFFFF and offset + header + length > size:
        raise DocumentReadError(f"{path}: the file is truncated: the pixel data declares {length} bytes, "
                                f"{size - offset - header} remain")


def _check_complete(ds: Dataset, path: str) -> None:
    """pydicom reads a file cut short without complaint; a last element shorter than
    its declared length gives the truncation away."""
    elements = list(ds._dict.values())
    if not elements:
        raise DocumentReadError(f"{path}: no data elements")
    last = elements[-1]
    length, value = getattr(last, "length", None), getattr(last, "value", None)
    if isinstance(value, (bytes, bytearray)) and length not in (None, 0xFFFFFFFF) and len(value) < length:
        raise DocumentReadError(f"{path}: the file is truncated: element {tag_text(last.tag)} declares "
                                f"{length} bytes, {len(value)} remain")


def _read_without_preamble(path: str, options: dict) -> Dataset:
    """Some senders write data sets without the Part 10 header; accept those only
    when they look like an instance (a SOP class and instance UID)."""
    try:
        ds = pydicom.dcmread(path, force=True, **options)
        if "SOPClassUID" in ds and "SOPInstanceUID" in ds:
            return ds
        reason = _not_an_instance(ds)
    except Exception:  # noqa: BLE001 - anything pydicom raises means "not DICOM"
        reason = NOT_DICOM
    raise DocumentReadError(f"{path}: {reason}")


_SYNTAX_FOUND = {(True, True): pydicom.uid.ImplicitVRLittleEndian, (False, True): pydicom.uid.ExplicitVRLittleEndian,
                 (False, False): pydicom.uid.ExplicitVRBigEndian}  # (implicit VR, little endian) -> syntax


def _read_header_without_meta(path: str) -> tuple[Dataset, int, int]:
    """A data set without the Part 10 header, as some senders write them, is an instance when
    it names its SOP class and instance (as for `read`). Its transfer syntax, found by pydicom
    from the first elements, goes into a file meta of its own, so that a copy written from it
    declares the encoding its copied pixel data is in."""
    try:
        with open(path, "rb") as fp:
            ds = read_partial(fp, stop_when=_at_pixel_data, force=True)
            offset = fp.tell()
            size = os.fstat(fp.fileno()).st_size
        syntax = _SYNTAX_FOUND.get(tuple(ds.original_encoding))
        if syntax is not None and ds.get("SOPClassUID") and ds.get("SOPInstanceUID"):
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = syntax
            return ds, offset, size
        reason = _not_an_instance(ds) if syntax is not None else NOT_DICOM
    except Exception:  # noqa: BLE001 - anything pydicom raises here means "not DICOM"
        reason = NOT_DICOM
    raise DocumentReadError(f"{path}: {reason}")


NOT_DICOM = "not a DICOM file (no DICM header and no SOP instance found)"
MIN_KNOWN_ELEMENTS = 2  # fewer elements of the dictionary read from any bytes, by chance: not a data set


def _not_an_instance(ds: Dataset) -> str:
    """Why a file without the Part 10 header is not taken: a data set that does not name its
    SOP class and instance (a query identifier, a data set written by a tool) is told apart
    from bytes that are not DICOM at all, so that the reason says what to fix."""
    known = [tag for tag in ds._dict if tag.group not in (0x0000, 0x0002) and not tag.is_private
             and pydicom.datadict.dictionary_has_tag(tag)]
    if len(known) < MIN_KNOWN_ELEMENTS:
        return NOT_DICOM
    missing = [name for keyword, name in (("SOPClassUID", "SOP Class UID"), ("SOPInstanceUID", "SOP Instance UID"))
               if not ds.get(keyword)]
    return (f"a data set without file meta information (no DICM header) and without "
            f"{' and '.join(missing)}: not an instance to route")
