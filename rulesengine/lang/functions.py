"""The fixed library of functions a rule can call. Nothing else is callable.

Every function returns null when an argument it needs is null (a missing
element), except coalesce, which exists to replace nulls, and lookup, whose
default covers a missing key.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Callable

from . import types as t
from .operators import EvaluationError, text
from .regex import Regex, RegexError

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
    if isinstance(value, (tuple, list, str, bytes)):
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


def make_hash(secrets: Secrets) -> Callable[[Any], Any]:
    def fn_hash(value):
        """16 upper-case hex digits of HMAC-SHA256(key, value): fits SH, LO and PN.
        Empty stays empty: a constant digest would link unrelated documents."""
        if value is None or value == "":
            return value
        digest = hmac.new(secrets.hash_key, text(value).encode("utf-8"), hashlib.sha256).hexdigest()
        return digest[:16].upper()
    return fn_hash


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


def fn_today():
    return _dt.date.today().strftime("%Y%m%d")


def fn_now():
    return _dt.datetime.now().strftime("%Y%m%d%H%M%S")


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
    Function("hash", 1, 1, _fixed(t.T_STRING), "hash(s): 16 hex digits, keyed with the configured secret"),
    Function("uid", 1, 1, _text_of_first(t.UID), "uid(s): a UID under the configured root, keyed"),
    Function("shift_date", 2, 2, _same_as_first, "shift_date(d, days): a date moved by days"),
    Function("today", 0, 0, _fixed(t.Type(t.DATE)), "today(): the date, YYYYMMDD"),
    Function("now", 0, 0, _fixed(t.Type(t.DATETIME)), "now(): the date and time, YYYYMMDDHHMMSS"),
    Function("lookup", 2, 3, lambda args: agreeing([t.T_STRING, *args[2:]]),
             "lookup(table.column, key, default): a value from a table"),
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
    }
