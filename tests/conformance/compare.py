"""A delivered copy against the file it came from, element by element, value by value.

Allowed, because the router documents them (docs/operations.md):

- the file meta information is the destination's own (only the data set is compared), but
  it must name the data set's own SOP class and instance: a copy sent in a C-STORE whose
  UIDs are not the data set's is stored under another instance's name (storescp keeps the
  request's UIDs), and Orthanc refuses it (0xA900); the router sends every instance under
  its data set's UIDs, whatever the file meta it arrived with said (docs/operations.md);
- group lengths (gggg,0000) may be dropped or recomputed;
- the transfer syntax may change from Explicit VR Big Endian or Deflated Explicit VR
  Little Endian to an uncompressed little-endian one, and between Explicit and Implicit
  VR Little Endian; values are then compared as numbers, byte-swapped where the VR says
  so (OW, OF, OL, OD, OV; native pixel data per value of Bits Allocated or per 16-bit
  word, the two readings of OW in the wild); a compressed transfer syntax must never
  change (the pixel data must arrive as it was compressed);
- pixel data may be OB or OW (both are valid; an Implicit VR hop loses which it was);
- a private element of a source without explicit VRs (Implicit VR) has no known VR: its
  VR may differ, its bytes may not;
- the rules' own edits: the edited element holds the new value, and Specific Character
  Set may become ISO_IR 192 when the new value needs it (every text value must still
  read the same).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

LITTLE_ENDIAN_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
UNCOMPRESSED = (*LITTLE_ENDIAN_UNCOMPRESSED, ExplicitVRBigEndian)
SWAP_UNIT = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
PIXEL_DATA = 0x7FE00010
SPECIFIC_CHARACTER_SET = 0x00080005
UTF8 = "ISO_IR 192"
MAX_DIFFERENCES = 8


def read(path: Path, force: bool = False) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=force)


def syntax_of(ds: Dataset) -> str:
    """The transfer syntax a data set was read in: its file meta's, else what pydicom found."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def syntax_change(source: str, copy: str) -> str | None:
    """Why a change of transfer syntax is not allowed; None when it is."""
    if source == copy:
        return None
    if source in UNCOMPRESSED or source == DeflatedExplicitVRLittleEndian:
        if copy in LITTLE_ENDIAN_UNCOMPRESSED:
            return None
        return f"transfer syntax changed from {_syntax(source)} to {_syntax(copy)}"
    return (f"transfer syntax changed from {_syntax(source)} to {_syntax(copy)}: the pixel data was "
            "decompressed or recompressed on the way")


def _syntax(uid: str) -> str:
    name = pydicom.uid.UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _tag(tag: int) -> str:
    keyword = pydicom.datadict.keyword_for_tag(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})" + (f" {keyword}" if keyword else "")


def _swap(data: bytes, unit: int) -> bytes:
    if unit <= 1:
        return data
    usable = len(data) - len(data) % unit
    swapped = bytearray(data)
    for offset in range(unit):
        swapped[offset:usable:unit] = data[unit - 1 - offset:usable:unit]
    return bytes(swapped)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    if isinstance(value, (bytes, bytearray)) and len(value) > 24:
        text = f"<{len(value)} bytes {bytes(value[:12]).hex()}...>"
    return text if len(text) <= limit else text[:limit] + "..."


class Comparison:
    """The differences between a source data set and its delivered copy."""

    def __init__(self, source: Dataset, copy: Dataset, edits: dict[str, str] | None = None):
        self.source, self.copy = source, copy
        self.edits = {Tag(pydicom.datadict.tag_for_keyword(k)): v for k, v in (edits or {}).items()}
        self.source_syntax, self.copy_syntax = syntax_of(source), syntax_of(copy)
        self.source_implicit = self.source_syntax == ImplicitVRLittleEndian
        self.endianness_differs = (self.source_syntax == ExplicitVRBigEndian) != \
            (self.copy_syntax == ExplicitVRBigEndian)
        self.bits_allocated = int(source.get("BitsAllocated") or 8) if "BitsAllocated" in source else 8
        self.found: list[str] = []

    def run(self) -> list[str]:
        why = syntax_change(self.source_syntax, self.copy_syntax)
        if why:
            self.found.append(why)
        for tag, value in self.edits.items():
            self._edited(tag, value)
        self._charset()
        self._datasets(self.source, self.copy, "")
        return self.found

    def _edited(self, tag: int, value: str) -> None:
        """The edited element holds the value, in bytes its data set's character set can hold.
        (pydicom reads bytes the character set does not allow as Latin-1: reading the value
        back would not show "Hôpital" written as Latin-1 into an ISO 2022 IR 87 data set.)"""
        raw = self.copy.get_item(tag)
        if raw is None:
            self.found.append(f"{_tag(tag)}: the rules set {value!r}, the copy has none")
            return
        got = self.copy[tag].value
        if str(got) != value:
            self.found.append(f"{_tag(tag)}: the rules set {value!r}, the copy has {_short(got)}")
            return
        charset = self.copy.get("SpecificCharacterSet")
        if not can_hold(charset, value):
            self.found.append(f"{_tag(tag)}: {value!r} cannot be written in the copy's character set {charset!r}: "
                              f"the character set should have become {UTF8!r}")

    def _charset(self) -> None:
        before = self.source.get(SPECIFIC_CHARACTER_SET)
        after = self.copy.get(SPECIFIC_CHARACTER_SET)
        before_value = before.value if before is not None else None
        after_value = after.value if after is not None else None
        if before_value == after_value:
            return
        if self.edits and after_value == UTF8:
            return  # re-encoded for a value the old character set could not hold
        self.found.append(f"{_tag(SPECIFIC_CHARACTER_SET)}: {_short(before_value)} became {_short(after_value)}")

    def _skip(self, tag: int, top: bool) -> bool:
        if tag & 0xFFFF == 0 or tag == 0xFFFCFFFC:  # group lengths, trailing padding
            return True
        return top and (tag in self.edits or tag == SPECIFIC_CHARACTER_SET)

    def _datasets(self, source: Dataset, copy: Dataset, where: str) -> None:
        top = not where
        tags = sorted({t for t in source.keys() if not self._skip(t, top)} |
                      {t for t in copy.keys() if not self._skip(t, top)})
        for tag in tags:
            if len(self.found) >= MAX_DIFFERENCES:
                return
            name = where + _tag(tag)
            if tag not in copy:
                self.found.append(f"{name}: missing from the copy")
                continue
            if tag not in source:
                self.found.append(f"{name}: added in the copy ({_short(self._value(copy, tag)[1])})")
                continue
            self._element(source, copy, tag, name)

    def _value(self, ds: Dataset, tag: int):
        """(VR, value, raw bytes or None) of an element, read without failing."""
        item = ds.get_item(tag)
        raw = item.value if isinstance(item, RawDataElement) else None
        try:
            elem = ds[tag]
            return elem.VR, elem.value, raw
        except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert: compare its bytes
            return (item.VR if isinstance(item, RawDataElement) else None), raw if raw is not None else \
                f"<unreadable: {exc}>", raw

    def _element(self, source: Dataset, copy: Dataset, tag: int, name: str) -> None:
        vr_s, value_s, raw_s = self._value(source, tag)
        vr_d, value_d, raw_d = self._value(copy, tag)
        private = bool((tag >> 16) & 1)
        if tag == PIXEL_DATA and {vr_s, vr_d} <= {"OB", "OW", "OB or OW"}:
            pass  # both are valid for pixel data; an Implicit VR hop or a re-encoding may pick the other
        elif not _same_vr(vr_s, vr_d):
            if private and (self.source_implicit or vr_s == "UN"):
                # no VR in the source: the bytes must be the same whatever VR the copy gives them
                if raw_s is not None and raw_d is not None and bytes(raw_s) != bytes(raw_d) \
                        and not self.endianness_differs:
                    self.found.append(f"{name}: value bytes differ ({_short(raw_s)} vs {_short(raw_d)})")
                return
            self.found.append(f"{name}: VR {vr_s} became {vr_d}")
            return
        if vr_s == "SQ":
            if len(value_s) != len(value_d):
                self.found.append(f"{name}: {len(value_s)} item(s) became {len(value_d)}")
                return
            for index, (item_s, item_d) in enumerate(zip(value_s, value_d)):
                self._datasets(item_s, item_d, f"{name}[{index}].")
            return
        if vr_s in BINARY_VRS or isinstance(value_s, (bytes, bytearray)):
            self._binary(tag, vr_s, value_s, value_d, name)
            return
        if _normal(value_s) != _normal(value_d):
            self.found.append(f"{name}: {_short(value_s)} became {_short(value_d)}")

    def _binary(self, tag: int, vr: str, value_s, value_d, name: str) -> None:
        data_s = bytes(value_s) if value_s is not None else b""
        data_d = bytes(value_d) if value_d is not None else b""
        if self.endianness_differs:
            units = [SWAP_UNIT.get(vr, 1)]
            if tag == PIXEL_DATA and vr in ("OW", "OB or OW") or (tag == PIXEL_DATA and self.bits_allocated > 8):
                # Native pixel data: swapped per value of Bits Allocated (as pydicom reads it), or
                # per 16-bit word of OW (as DCMTK converts it); both readings exist in the wild.
                units = sorted({max(2, self.bits_allocated // 8), 2})
            if any(_swap(data_s, unit) == data_d for unit in units):
                return
            data_s = _swap(data_s, units[0])
        if data_s == data_d:
            return
        if len(data_s) != len(data_d):
            self.found.append(f"{name}: {len(data_s)} bytes became {len(data_d)}")
            return
        first = next(i for i, (a, b) in enumerate(zip(data_s, data_d)) if a != b)
        self.found.append(f"{name}: bytes differ from offset {first} ({data_s[first:first + 8].hex()} vs "
                          f"{data_d[first:first + 8].hex()})")


def can_hold(charset, value: str) -> bool:
    """Whether a Specific Character Set can encode `value`. The default repertoire (no value,
    an empty first value, ISO_IR 6) is ASCII: pydicom reads it as Latin-1, the standard and
    Orthanc do not."""
    terms = [charset] if isinstance(charset, str) else list(charset or [""])
    codecs = []
    for term in terms or [""]:
        term = (term or "").strip()
        if term in ("", "ISO_IR 6", "ISO 2022 IR 6"):
            codecs.append("ascii")
        elif term in pydicom.charset.python_encoding:
            codecs.append(pydicom.charset.python_encoding[term])
    def encodable(char: str) -> bool:
        for codec in codecs:
            try:
                char.encode(codec)
                return True
            except (UnicodeError, LookupError):
                continue
        return False
    return all(encodable(char) for char in value)


def _same_vr(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    # an ambiguous dictionary VR (US or SS, OB or OW) read from an implicit file
    options_a = set((a or "").split(" or "))
    options_b = set((b or "").split(" or "))
    return bool(options_a & options_b) and (" or " in (a or "") or " or " in (b or ""))


def _normal(value):
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_normal(v) for v in value]
    if isinstance(value, pydicom.valuerep.PersonName):
        return str(value)
    return value


def differences(source: Path, copy: Path, edits: dict[str, str] | None = None) -> list[str]:
    """What differs between `source` (any DICOM file pydicom reads) and `copy` (a Part 10
    file written by a destination), apart from the documented conversions; [] when nothing."""
    try:
        copied = read(copy)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return [f"the copy is not a DICOM Part 10 file pydicom can read: {exc}"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # values pydicom finds invalid are compared as they are
            return file_meta_differences(copied) + Comparison(read(source, force=True), copied, edits).run()
    except Exception as exc:  # noqa: BLE001 - reported as a difference, with what failed
        return [f"the comparison failed: {type(exc).__name__}: {exc}"]


def file_meta_differences(copy: Dataset) -> list[str]:
    """Where a copy's file meta information names another SOP class or instance than its data set."""
    found = []
    for keyword, own in (("MediaStorageSOPClassUID", "SOPClassUID"), ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        in_meta, in_data_set = copy.file_meta.get(keyword), copy.get(own)
        if str(in_meta or "") != str(in_data_set or ""):
            found.append(f"the copy's file meta names {keyword} {in_meta}, its data set {own} {in_data_set}")
    return found
