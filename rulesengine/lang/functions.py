"""The fixed library of functions a rule can call. Nothing else is callable.

Every function returns null when an argument it needs is null (a missing
element), except coalesce, which exists to replace nulls, and lookup, whose
default covers a missing key.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Callable

from . import types as t
from .operators import EvaluationError, as_number, text
from .regex import Regex, RegexError
from ..values import UnreadBytes

DEFAULT_HASH_KEY = b"rulesengine-development-key"
DEFAULT_UID_ROOT = "2.25"


@dataclass(frozen=True)
class Secrets:
    """What hash() and uid() are keyed with; the router takes these from its configuration."""

    hash_key: bytes = DEFAULT_HASH_KEY
    uid_root: str = DEFAULT_UID_ROOT

    @property
    def is_default(self) -> bool:
        return self.hash_key == DEFAULT_HASH_KEY


def _each(fn: Callable[[str], str]) -> Callable[[Any], Any]:
    """Apply a text function to a value, or to each of several values."""
    def apply(value):
        if value.__class__ is str:  # the common case, first
            return fn(value)
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return tuple(fn(text(v)) for v in value)
        return fn(text(value))
    return apply


def fn_replace(value, pattern: Regex, replacement):
    if value is None or replacement is None:
        return None
    try:
        return _each(lambda s: pattern.sub(text(replacement), s))(value)
    except RegexError as exc:
        raise EvaluationError(f"replace(): bad replacement {text(replacement)!r}: {exc.message}") from None


def fn_substr(value, start, length=None):
    """Characters from `start` (1-based), `length` of them (all when omitted)."""
    if value is None or start is None:
        return None
    begin = max(int(start) - 1, 0)
    def cut(s):
        return s[begin:] if length is None else s[begin:begin + max(int(length), 0)]
    return _each(cut)(value)


def fn_len(value):
    if value is None:
        return None
    if isinstance(value, (tuple, list, str, bytes, UnreadBytes)):
        return len(value)
    return len(text(value))


def fn_coalesce(*values):
    for value in values:
        if value is not None:
            return value
    return None


def fn_split(value, separator):
    if value is None or separator is None:
        return None
    if separator == "":
        raise EvaluationError("split(): the separator is empty")
    return tuple(text(value).split(text(separator)))


def fn_join(values, separator):
    if values is None or separator is None:
        return None
    if not isinstance(values, (tuple, list)):
        values = (values,)
    return text(separator).join(text(v) for v in values if v is not None)


# hash(s, length, alphabet): the alphabets, and the most characters each gives of 256 bits.
HASH_ALPHABETS = {"hex": 64, "decimal": 77, "base32": 52}
DEFAULT_HASH_LENGTH = 16


def make_hash(secrets: Secrets) -> Callable[..., Any]:
    def fn_hash(value, length=DEFAULT_HASH_LENGTH, alphabet="hex"):
        """`length` characters of HMAC-SHA256(key, value) in `alphabet`: upper-case hex digits
        (16 by default: fits SH, LO and PN), decimal digits, or base32 (A-Z, 2-7).
        Empty stays empty: a constant digest would link unrelated documents."""
        if value is None or value == "" or length is None or alphabet is None:
            return None if value is None else value
        length = _whole(length, "hash(): the length")
        most = HASH_ALPHABETS.get(alphabet)
        if most is None:
            raise EvaluationError(f"hash(): unknown alphabet {alphabet!r}; use " + ", ".join(HASH_ALPHABETS))
        if not 1 <= length <= most:
            raise EvaluationError(f"hash(): {alphabet} gives 1 to {most} characters, not {length}")
        digest = hmac.new(secrets.hash_key, text(value).encode("utf-8"), hashlib.sha256).digest()
        if alphabet == "hex":
            return digest.hex()[:length].upper()
        if alphabet == "decimal":
            return str(int.from_bytes(digest, "big") % 10 ** length).zfill(length)
        return base64.b32encode(digest).decode("ascii")[:length]
    return fn_hash


def make_hash_int(secrets: Secrets) -> Callable[..., Any]:
    def fn_hash_int(value, low, high):
        """A whole number from low to high (both included), the same for the same value and key:
        a per-patient date shift that every study of the patient shares. Null for null or empty."""
        if value is None or value == "" or low is None or high is None:
            return None
        low, high = _whole(low, "hash_int(): the lowest"), _whole(high, "hash_int(): the highest")
        if low > high:
            raise EvaluationError(f"hash_int(): the range {low} to {high} is empty")
        digest = hmac.new(secrets.hash_key, b"int\0" + text(value).encode("utf-8"), hashlib.sha256).digest()
        return low + int.from_bytes(digest, "big") % (high - low + 1)
    return fn_hash_int


def _whole(value, what: str) -> int:
    number = as_number(value, what)
    if number is None or number != int(number):
        raise EvaluationError(f"{what} must be a whole number, not {text(value)!r}")
    return int(number)


def _number_or(value, default, has_default: bool):
    try:
        number = as_number(value, "number()")
    except EvaluationError:
        if has_default:
            return default
        raise EvaluationError(f"number(): {text(value)!r} is not a number") from None
    return default if number is None and has_default else number


_NO_DEFAULT = object()


def fn_number(value, default=_NO_DEFAULT):
    """Text (a table cell, an IS or DS value) as a number; `default` for null, empty or text that is
    no number (without a default: null stays null, and text that is no number is an error)."""
    has_default = default is not _NO_DEFAULT
    fallback = default if has_default else None
    if isinstance(value, (tuple, list)) and len(value) != 1:
        return tuple(_number_or(v, fallback, has_default) for v in value)
    return _number_or(value, fallback, has_default)


def _date_of(value) -> _dt.date | None:
    """The date of a DA, or of a DT's first 8 digits; None when it is not a valid date."""
    value = value[0] if isinstance(value, tuple) and len(value) == 1 else value
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) < 8 or not value[:8].isdigit():
        return None
    try:
        return _dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None


def fn_days_between(start, end):
    """Days from `start` to `end` (negative when `end` is earlier); null unless both are dates."""
    first, last = _date_of(start), _date_of(end)
    if first is None or last is None:
        return None
    return (last - first).days


def fn_age(birth, at):
    """The age on `at` of someone born on `birth`, as a DICOM AS value (PS3.5): years (nnnY) from
    one year on, else months (nnnM) from one month, else weeks (nnnW) from one week, else days
    (nnnD). Null unless both are dates and `at` is not before `birth`."""
    born, on = _date_of(birth), _date_of(at)
    if born is None or on is None or on < born:
        return None
    months = (on.year - born.year) * 12 + on.month - born.month - (1 if on.day < born.day else 0)
    if months >= 12:
        return f"{min(months // 12, 999):03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    days = (on - born).days
    return f"{days // 7:03d}W" if days >= 7 else f"{days:03d}D"


def fn_pad(value, width, fill="0"):
    """Text padded on the left with `fill` (one character, "0" by default) to `width` characters;
    longer text stays as it is."""
    if value is None or width is None or fill is None:
        return None
    width = _whole(width, "pad(): the width")
    if len(text(fill)) != 1:
        raise EvaluationError(f"pad(): the fill is one character, not {text(fill)!r}")
    return _each(lambda s: s.rjust(width, text(fill)))(value)


def fn_subscript(values, index):
    """Value `index` of several (from 1; -1 is the last); a single value is value 1. Null when there
    is no such value."""
    if values is None or index is None:
        return None
    index = _whole(index, "[n]: the index")
    if index == 0:
        raise EvaluationError("[n]: values are numbered from 1 (and -1 is the last)")
    if not isinstance(values, (tuple, list)):
        values = () if values == "" else (values,)
    if index > len(values) or -index > len(values):
        return None
    return values[index - 1] if index > 0 else values[index]


def make_uid(secrets: Secrets) -> Callable[[Any], Any]:
    root = secrets.uid_root.rstrip(".")
    room = 64 - len(root) - 1

    def fn_uid(value):
        """A UID under the configured root, the same for the same input and key.
        Empty stays empty: a constant UID would link unrelated documents."""
        if value is None or value == "":
            return value
        if isinstance(value, (tuple, list)):
            return tuple(fn_uid(v) for v in value)
        digest = hmac.new(secrets.hash_key, b"uid\0" + text(value).encode("utf-8"), hashlib.sha256).digest()
        number = str(int.from_bytes(digest[:16], "big"))[:room].lstrip("0") or "0"
        return f"{root}.{number}"
    return fn_uid


def _shift_one(value: str, days: int) -> str | None:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return None
    try:
        day = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        shifted = day + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}" + text[8:]


def fn_shift_date(value, days):
    """A DA (or the date part of a DT) moved by `days`; null when it is not a valid date."""
    if value is None or days is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_shift_one(text(v), int(days)) for v in value)
    return _shift_one(text(value), int(days))


def _clock(arrival) -> _dt.datetime:
    """The arrival's time where it is known (a test fixes it with Arrival.DateTime), else now."""
    received = getattr(arrival, "received", None)
    return received if received is not None else _dt.datetime.now()


def fn_today(arrival=None):
    return _clock(arrival).strftime("%Y%m%d")


def fn_now(arrival=None):
    return _clock(arrival).strftime("%Y%m%d%H%M%S")


def fn_lookup(table: dict, column: str, key, default=None):
    if key is None:
        return default
    row = table.get(text(key))
    if row is None:
        return default
    return row[column]


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int
    returns: Callable[[list[t.Type]], t.Type]
    doc: str


def _same_as_first(args: list[t.Type]) -> t.Type:
    first = args[0] if args else t.T_STRING
    kind = first.kind if first.kind in t.TEXTUAL else t.STRING
    return t.Type(kind, multi=first.multi or first.many)


def _fixed(kind: t.Type) -> Callable[[list[t.Type]], t.Type]:
    return lambda args: kind


def _text_of_first(kind: str) -> Callable[[list[t.Type]], t.Type]:
    """`kind`, one value per value of the first argument: several when it has several."""
    return lambda args: t.Type(kind, multi=bool(args) and (args[0].multi or args[0].many))


def agreeing(args: list[t.Type]) -> t.Type:
    """One of several options (coalesce, lookup with a default): their type when they agree, else any."""
    if not args:
        return t.T_ANY
    multi = any(a.multi or a.many for a in args)
    kind = args[0].kind if all(a.kind == args[0].kind for a in args) else t.ANY
    vr = args[0].vr if all(a.vr == args[0].vr for a in args) else None
    return t.Type(kind, multi=multi, vr=vr if kind != t.ANY else None)


FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("lower", 1, 1, _same_as_first, "lower(s): lower case"),
    Function("upper", 1, 1, _same_as_first, "upper(s): upper case"),
    Function("trim", 1, 1, _same_as_first, "trim(s): without leading and trailing spaces"),
    Function("replace", 3, 3, _text_of_first(t.STRING), "replace(s, /re/, repl): every match replaced"),
    Function("substr", 2, 3, _text_of_first(t.STRING), "substr(s, start, len): part of s, from 1"),
    Function("len", 1, 1, _fixed(t.T_NUMBER), "len(x): characters of a string, values or items"),
    Function("coalesce", 1, 16, agreeing, "coalesce(a, b, ...): the first that is not null"),
    Function("split", 2, 2, _fixed(t.Type(t.STRING, multi=True)), "split(s, sep): a list of values"),
    Function("join", 2, 2, _fixed(t.T_STRING), "join(values, sep): one string"),
    Function("hash", 1, 3, _fixed(t.T_STRING),
             'hash(s), hash(s, length), hash(s, length, "hex" | "decimal" | "base32"): keyed, 16 hex digits by '
             "default"),
    Function("uid", 1, 1, _text_of_first(t.UID), "uid(s): a UID under the configured root, keyed"),
    Function("shift_date", 2, 2, _same_as_first, "shift_date(d, days): a date moved by days"),
    Function("today", 0, 0, _fixed(t.Type(t.DATE, vr="DA")), "today(): the date, YYYYMMDD"),
    Function("now", 0, 0, _fixed(t.Type(t.DATETIME, vr="DT")), "now(): the date and time, YYYYMMDDHHMMSS"),
    Function("lookup", 2, 3, lambda args: agreeing([t.T_STRING, *args[2:]]),
             "lookup(table.column, key, default): a value from a table"),
    Function("number", 1, 2, _text_of_first(t.NUMBER),
             "number(s), number(s, default): text as a number; default when it is not one"),
    Function("hash_int", 3, 3, _fixed(t.T_NUMBER),
             "hash_int(s, low, high): a whole number from low to high, keyed, the same for the same s"),
    Function("days_between", 2, 2, _fixed(t.T_NUMBER), "days_between(start, end): the days from start to end"),
    Function("age", 2, 2, _fixed(t.Type(t.STRING, vr="AS")), "age(birth, date): the age on date, as AS (045Y)"),
    Function("pad", 2, 3, _text_of_first(t.STRING), 'pad(s, width), pad(s, width, fill): padded on the left '
             'with fill ("0" by default)'),
)}


def implementations(secrets: Secrets) -> dict[str, Callable]:
    """Python callables for the compiled code, keyed as the generated code names them."""
    return {
        "lower": _each(str.lower),
        "upper": _each(str.upper),
        "trim": _each(str.strip),
        "replace": fn_replace,
        "substr": fn_substr,
        "len": fn_len,
        "coalesce": fn_coalesce,
        "split": fn_split,
        "join": fn_join,
        "hash": make_hash(secrets),
        "uid": make_uid(secrets),
        "shift_date": fn_shift_date,
        "today": fn_today,
        "now": fn_now,
        "lookup": fn_lookup,
        "number": fn_number,
        "hash_int": make_hash_int(secrets),
        "days_between": fn_days_between,
        "age": fn_age,
        "pad": fn_pad,
    }
