"""Values between Python and DICOM: what a path reads, what a set writes, per VR."""

from __future__ import annotations

import re
from typing import Any

from pydicom import config as pydicom_config
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import format_number_as_ds, validate_value

# Text in the character set the data set declares (PS3.5 6.1.2.3); the other string VRs
# (AE, AS, CS, DA, DS, DT, IS, TM, UI, UR) hold ASCII only, whatever it declares.
CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
NUMBER_VRS = INT_VRS | FLOAT_VRS
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
DATE_TIME_VRS = frozenset({"DA", "TM", "DT"})

_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")


MAX_UNREAD_VALUE_BYTES = 16 << 20  # a value left in its file is read into memory up to this length


def unread_bound() -> str:
    """MAX_UNREAD_VALUE_BYTES as messages say it."""
    bound = MAX_UNREAD_VALUE_BYTES
    return f"{bound >> 20} MiB" if bound % (1 << 20) == 0 else f"{bound} bytes"


class UnreadValueTooLarge(Exception):
    """A value left in its file that is longer than what is read into memory for the rules."""


class UnreadBytes:
    """A binary value left in its file (the pixel data of an instance read without it, and
    what follows it): how long it is, for `exists`, `empty` and `len()`, without reading it.
    Any other use (as text, compared) reads it from the file (`source`: its path and where
    the value starts; `name`: the element, for errors) as a whole read of the file holds it;
    one longer than MAX_UNREAD_VALUE_BYTES is never read into memory: that use raises
    UnreadValueTooLarge. `element`: where the whole element lies in the file, [start, end),
    for writing it as received. Reports show it as bytes are shown, without reading it."""

    __slots__ = ("length", "source", "name", "element", "_read")

    def __init__(self, length: int, source: tuple[str, int] | None = None, name: str = "a binary value",
                 element: tuple[int, int] | None = None):
        self.length = length
        self.source = source
        self.name = name
        self.element = element
        self._read: bytes | None = None

    def __len__(self) -> int:
        return self.length

    def read(self, bounded: bool = True) -> bytes:
        """The value itself (`bounded`: at most MAX_UNREAD_VALUE_BYTES). Raises
        UnreadValueTooLarge, or OSError when the file cannot be read."""
        if self._read is None:
            if self.source is None or bounded and self.length > MAX_UNREAD_VALUE_BYTES:
                raise UnreadValueTooLarge(
                    f"{self.name}: a value of {self.length} bytes after the header is not read into memory "
                    f"(at most {unread_bound()} are); exists, missing, empty and len() "
                    "answer without reading it")
            path, offset = self.source
            with open(path, "rb") as fp:
                fp.seek(offset)
                value = fp.read(self.length)
            if len(value) != self.length:
                raise OSError(f"{path}: the file ends within a value of {self.length} bytes")
            if self.length > MAX_UNREAD_VALUE_BYTES:
                return value  # kept by the caller alone: copies of a document share this object
            self._read = value
        return self._read

    def __str__(self) -> str:
        return str(self.read())  # as the bytes a whole read holds are made text

    def __bytes__(self) -> bytes:
        return self.read()

    def __eq__(self, other: Any) -> bool:
        if self is other:
            return True
        if isinstance(other, UnreadBytes):
            return self.length == other.length and (self.source == other.source or self.read() == other.read())
        if isinstance(other, (bytes, bytearray)):
            return self.length == len(other) and self.read() == other
        return False  # text, numbers, items: never equal to binary data, as for bytes

    def __hash__(self) -> int:
        return hash(self.read())

    def __repr__(self) -> str:
        return f"<{self.length} bytes>"


class ValueError_(ValueError):
    """A value that cannot be stored in an element of the given VR."""


def concrete_vr(vr: str | None) -> str | None:
    """The dictionary can say 'OB or OW' or 'US or SS'; use the first."""
    if vr is None:
        return None
    return vr.split(" or ")[0]


def is_multi_vm(vm: str | None) -> bool:
    return vm is not None and vm != "1"


# ---- reading -----------------------------------------------------------------


def _scalar(vr: str, value: Any) -> Any:
    if vr in INT_VRS:
        return int(value)
    if vr in FLOAT_VRS:
        return float(value)
    if vr == "AT":
        tag = BaseTag(value)
        return f"({tag.group:04X},{tag.element:04X})"
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value)


def read_value(elem, multi: bool = False) -> Any:
    """The value a path reads: "" when empty, a tuple for several values (always,
    when the dictionary allows several), a tuple of items for a sequence."""
    return value_of(elem.VR, elem.value, multi)


def value_of(vr: str, value: Any, multi: bool = False) -> Any:
    """read_value for a VR and a pydicom value (or a value about to be stored)."""
    if value.__class__ is UnreadBytes:  # left in its file: read only if the rules use it
        return value
    if isinstance(value, str):  # most values: text, including UIDs (a str subclass)
        if not value:
            return ""
        if value.__class__ is not str:
            value = str(value)
        return (value,) if multi else value
    if vr == "SQ":
        return tuple(value) if value is not None else ()
    if value is None or value == "" or value == b"":
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        if len(value) == 0:
            return ""
        return tuple(_scalar(vr, v) for v in value)
    scalar = _scalar(vr, value)
    return (scalar,) if multi else scalar


# ---- writing -----------------------------------------------------------------


def _check_pattern(vr: str, text: str) -> None:
    pattern = {"DA": _DA, "TM": _TM, "DT": _DT}.get(vr)
    if pattern is not None and not pattern.fullmatch(text):
        example = {"DA": "YYYYMMDD, e.g. 20240131", "TM": "HHMMSS, e.g. 134500",
                   "DT": "YYYYMMDDHHMMSS, e.g. 20240131134500"}[vr]
        raise ValueError_(f"{text!r} is not a valid {vr} value ({example})")


def _convert_scalar(vr: str, value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError_(f"a true/false value cannot be stored as {vr}")
    if isinstance(value, UnreadBytes):
        value = value.read()
    if vr in BINARY_VRS:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise ValueError_(f"{vr} holds binary data; it cannot be set from {type(value).__name__}")
    if vr in INT_VRS and vr != "IS":
        return _to_number(vr, value, int)
    if vr in ("FL", "FD"):
        return _to_number(vr, value, float)
    if vr == "IS":
        number = _to_number(vr, value, int)
        return str(number)
    if vr == "DS":
        number = _to_number(vr, value, float)
        if isinstance(value, str):
            return _ascii(vr, value.strip())
        return str(int(number)) if number.is_integer() else format_number_as_ds(number)
    if vr == "UI" and isinstance(value, (int, float)):
        raise ValueError_(f"a number ({value}) is not a UID; UIDs are written as strings such as \"1.2.840.10008\"")
    if isinstance(value, (int, float)):
        if vr in DATE_TIME_VRS:
            raise ValueError_(f"a number ({value}) is not a {vr} value; write it as a string")
        value = str(value)
    if isinstance(value, (bytes, bytearray)):
        raise ValueError_(f"binary data cannot be stored as {vr}")
    text = str(value) if vr in CHARSET_VRS else _ascii(vr, str(value))
    _check_pattern(vr, text)
    return text


def _ascii(vr: str, text: str) -> str:
    if not text.isascii():
        raise ValueError_(f"{text!r}: {vr} values hold ASCII characters only")
    return text


def _to_number(vr: str, value: Any, kind: type) -> int | float:
    if isinstance(value, (int, float)):
        number = value
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError_(f"{value!r} is not a number, as {vr} requires") from None
    if kind is int:
        if float(number) != int(number):
            raise ValueError_(f"{value!r} is not a whole number, as {vr} requires")
        return int(number)
    return float(number)


def to_dicom(vr: str | None, value: Any) -> Any:
    """Convert and validate a value for an element of `vr`. Raises ValueError_."""
    vr = concrete_vr(vr)
    if vr is None:
        raise ValueError_("the VR of this element is unknown, so no value can be written to it")
    if vr == "SQ":
        raise ValueError_("a sequence cannot be set to a value; set elements inside its items instead")
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        converted = [_convert_scalar(vr, v) for v in value if v is not None]
        for item in converted:
            _validate(vr, item)
        return converted if len(converted) != 1 else converted[0]
    converted = _convert_scalar(vr, value)
    _validate(vr, converted)
    return converted


def _validate(vr: str, value: Any) -> None:
    try:
        validate_value(vr, value, pydicom_config.RAISE)
    except (ValueError, TypeError) as exc:
        message = str(exc).split(" Please see")[0]
        raise ValueError_(message) from None


def display(value: Any) -> str:
    """A value as reports show it: strings quoted, several values in brackets."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (bytes, bytearray, UnreadBytes)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (tuple, list)):
        if value and not isinstance(value[0], (str, int, float, bytes)):
            return f"<{len(value)} item{'s' if len(value) != 1 else ''}>"
        return "[" + ", ".join(display(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if hasattr(value, "__iter__") and hasattr(value, "get_item"):  # a pydicom Dataset (an item)
        return "<item>"
    return str(value)


def to_json(value: Any) -> Any:
    """A value for JSON reports."""
    if isinstance(value, (bytes, bytearray, UnreadBytes)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (set, frozenset)):  # a literal list compiled to a set
        return sorted(to_json(v) for v in value)
    if isinstance(value, dict):  # a table
        return f"<table of {len(value)} rows>"
    if isinstance(value, (tuple, list)):
        if value and not isinstance(value[0], (str, int, float, bytes)):
            return f"<{len(value)} items>"
        return [to_json(v) for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    return display(value)
