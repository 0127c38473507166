"""Character sets of text values: whether a value can be written in the character set a
data set declares in Specific Character Set (0008,0005), and the switch to UTF-8 when not.

pydicom is lenient where receivers are strict: it treats the default repertoire (no
Specific Character Set, "ISO_IR 6", "ISO 2022 IR 6") as Latin-1 and writes what Latin-1
can hold without an escape sequence, so "Genève" set into a data set declared ASCII or
ISO 2022 reaches DCMTK or Orthanc as bytes they drop. The check here is what a strict
reader accepts: the bytes pydicom will write must decode to the value, and a byte above
0x7F needs a G1 character set designated by the declaration or an escape sequence.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Iterator

from pydicom.charset import STAND_ALONE_ENCODINGS, convert_encodings, custom_encoders, decode_bytes, encode_string, \
    python_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

from .values import CHARSET_VRS

UTF8 = "ISO_IR 192"
SPECIFIC_CHARACTER_SET = 0x00080005

_DEFAULT_REPERTOIRE = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]+[\x30-\x7e]")  # ESC, intermediate bytes, final byte
_G1_DESIGNATIONS = (b"\x1b-", b"\x1b)", b"\x1b$)")  # 96-character sets, JIS X 0201 katakana, KS X 1001, GB 2312


def terms(declared: Any) -> list[str]:
    """The values of a Specific Character Set as a list; [""] for the default repertoire."""
    if declared is None or declared == "":
        return [""]
    if isinstance(declared, str):
        return [declared.strip()]
    values = [str(value).strip() for value in declared]
    return values or [""]


def declared_in(dataset: Dataset, inherited: Any) -> Any:
    """The character set in effect in `dataset`: its own, or the one it inherits."""
    own = dataset.get(SPECIFIC_CHARACTER_SET)
    return own.value if own is not None and own.value else inherited


def fits(value: Any, vr: str, declared: Any) -> bool:
    """Can `value` (text, or a list of texts) be written in an element of `vr` in a data set
    that declares `declared`, so that a strict reader reads `value` back?"""
    if vr not in CHARSET_VRS or value is None:
        return True
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    declaration = terms(declared)
    texts = [str(v) for v in values if v is not None]
    if all(text.isascii() for text in texts) and "IR 13" not in declaration[0]:
        return True  # every G0 set DICOM allows as value 1 is ASCII, except JIS X 0201's romaji
    if any(term not in python_encoding for term in declaration) or \
            (len(declaration) > 1 and any(term in STAND_ALONE_ENCODINGS for term in declaration)):
        return False  # misspelt, unknown or contradictory: write UTF-8 rather than guess
    encodings = convert_encodings(declaration)
    # pydicom logs a warning, then writes '?', for a character no declared set holds:
    # ask each set first, character by character.
    if not all(any(_encodable(char, encoding) for encoding in encodings) for char in set("".join(texts))):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return all(_fits_part(part, encodings, delimiters, declaration[0] in _DEFAULT_REPERTOIRE)
                       for text in texts for part, delimiters in _parts(text, vr))
        except (UnicodeError, LookupError, ValueError, UserWarning):
            return False


def _encodable(char: str, encoding: str) -> bool:
    try:
        encoder = custom_encoders.get(encoding)
        encoder(char) if encoder is not None else char.encode(encoding)
        return True
    except (UnicodeError, LookupError):
        return False


def _parts(text: str, vr: str) -> Iterator[tuple[str, set[int]]]:
    """The pieces pydicom encodes one by one: each component group of a person name
    (with its delimiters), or the whole text."""
    if vr != "PN":
        yield text, TEXT_VR_DELIMS
        return
    for group in text.split("="):
        for component in group.split("^"):
            yield component, PN_DELIMS


def _fits_part(text: str, encodings: list[str], delimiters: set[int], ascii_first: bool) -> bool:
    encoded = encode_string(text, encodings)
    if ascii_first and not _high_bytes_designated(encoded, delimiters):
        return False
    return decode_bytes(encoded, encodings, delimiters) == text


def _high_bytes_designated(encoded: bytes, delimiters: set[int]) -> bool:
    """In a value whose first character set is ASCII alone, is every byte above 0x7F
    preceded by an escape sequence designating a G1 set (since the last delimiter, which
    returns to the declared sets)?"""
    g1 = False
    position = 0
    while position < len(encoded):
        byte = encoded[position]
        if byte == 0x1B:
            escape = _ESCAPE.match(encoded, position)
            if escape is None:
                return False
            g1 = g1 or escape.group().startswith(_G1_DESIGNATIONS)
            position = escape.end()
            continue
        if byte in delimiters:
            g1 = False
        elif byte > 0x7F and not g1:
            return False
        position += 1
    return True


def declaration_of(root: Dataset, target: Dataset) -> tuple[Any, Any] | None:
    """The character set `target` (`root` or an item nested in it) inherits, and the one in
    effect there (its own, or the inherited one); None when `target` is not in `root`. Only
    items already read can be edited, so sequences not yet read are not searched."""

    def search(dataset: Dataset, inherited: Any) -> tuple[Any, Any] | None:
        declared = declared_in(dataset, inherited)
        if dataset is target:
            return inherited, declared
        for elem in dataset._dict.values():
            if not isinstance(elem, RawDataElement) and elem.VR == "SQ":
                for item in elem.value or ():
                    found = search(item, declared)
                    if found is not None:
                        return found
        return None

    return search(root, None)


def first_unfit(dataset: Dataset, declared: Any) -> str | None:
    """The keyword of the first text element of `dataset`, or of an item inheriting its
    character set, that `declared` cannot hold; None when it holds them all."""
    for elem in dataset:
        if elem.VR == "SQ":
            for item in elem.value or ():
                if SPECIFIC_CHARACTER_SET not in item:
                    found = first_unfit(item, declared)
                    if found is not None:
                        return f"{elem.keyword or elem.tag}.{found}"
        elif elem.VR in CHARSET_VRS and not fits(elem.value, elem.VR, declared):
            return elem.keyword or str(elem.tag)
    return None


def name(declared: Any) -> str:
    """A declaration as messages show it."""
    return "\\".join(terms(declared)) or "the default repertoire (ASCII)"


def _datasets(root: Dataset) -> Iterator[Dataset]:
    """The data set and every item nested in it."""
    yield root
    for elem in root:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _datasets(item)


def decode(root: Dataset) -> set[int]:
    """Decode every text value, items included, with the character set it was written in,
    before a declaration changes: then the writer encodes them in the new one. Returns the
    top-level tags whose bytes the change affects (text elements, sequences, the declaration)."""
    root.decode()
    return {SPECIFIC_CHARACTER_SET} | {int(tag) for tag, elem in root._dict.items()
                                       if elem.VR in CHARSET_VRS or elem.VR == "SQ"}


def switch_to_utf8(root: Dataset) -> set[int]:
    """Declare UTF-8 in `root` and in every item that declares a character set of its own,
    with every text value decoded first (see `decode`, whose tags it returns)."""
    changed = decode(root)
    for dataset in _datasets(root):
        if dataset is root or SPECIFIC_CHARACTER_SET in dataset:
            dataset.SpecificCharacterSet = UTF8
        dataset._parent_encoding = convert_encodings(UTF8)  # what items created later inherit
    return changed
