"""C-FIND matching: does a candidate data set match a query identifier, and what is the
response a match gets (PS3.4 C.2.2.2, and Annex K for worklists). Any query source uses
it: a worklist folder, later others. Pure pydicom.

What each key of an identifier does, by the value it holds:

- zero length, or (where wildcards apply) only `*`: universal matching; a return key only.
- UI: list of UID matching: the candidate's UID is one of the values (backslash
  separated). `*` and `?` are plain characters in a UID: they never match a real one.
- DA, TM, DT: range matching: `A-B`, `A-`, `-B` (inclusive) or a single value, compared
  as dates, times and date-times (pydicom's valuerep parses them). A value that does not
  parse (`2020-01-01`, `abc`, two ranges) matches nothing. A date and a time key of the
  same pair (Scheduled Procedure Step Start Date and Time, Study Date and Time) given
  in the same form are matched as one date-time when combined matching is asked for, as
  DCMTK's wlmscpfs always does for worklists; otherwise each on its own.
- AE, CS, LO, LT, PN, SH, ST, UC, UR, UT with `*` or `?`: wildcard matching (`*` any
  characters, `?` one), matched by RE2, never by a backtracking engine.
- anything else: single value matching, case-sensitive, PN included (as DCMTK's
  wlmscpfs and dcmqrscp do; the standard lets PN be matched either way). Leading and
  trailing spaces do not count (trailing only for ST, LT, UT, UR); numbers compare as
  numbers.
- SQ: sequence matching: an empty sequence or one empty item is universal; otherwise
  some item of the candidate's sequence must match every key of the query's item.

A multi-valued key matches when any of its values matches any value of the candidate
(a station scheduled as `AA32\\AA33` is found by `AA33`). A candidate without the key, or
with it empty, matches no value (K.2.2.1.1.1). Specific Character Set, Query/Retrieve
Level, Timezone Offset From UTC and group lengths are never matched. Text is compared
as decoded by pydicom, each data set under its own Specific Character Set, so a query in
ISO_IR 192 finds a file written in ISO_IR 100.
"""

from __future__ import annotations

import copy
import datetime
from functools import lru_cache

import re2
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.valuerep import DA, DT, TM

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
NUMBER_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_TRAILING_ONLY = frozenset({"ST", "LT", "UT", "UR", "UC"})  # leading spaces count in these

SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
TIMEZONE_OFFSET = Tag(0x0008, 0x0201)
_NEVER_MATCHED = frozenset({SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL, TIMEZONE_OFFSET})

# (date, time) keys matched as one date-time when combined matching is asked for.
DATE_TIME_PAIRS = (
    (Tag(0x0040, 0x0002), Tag(0x0040, 0x0003)),  # Scheduled Procedure Step Start Date, Time
    (Tag(0x0008, 0x0020), Tag(0x0008, 0x0030)),  # Study Date, Time
    (Tag(0x0008, 0x0021), Tag(0x0008, 0x0031)),  # Series Date, Time
    (Tag(0x0008, 0x0022), Tag(0x0008, 0x0032)),  # Acquisition Date, Time
    (Tag(0x0008, 0x0023), Tag(0x0008, 0x0033)),  # Content Date, Time
)

_OPTIONS = re2.Options()
_OPTIONS.dot_nl = True  # `*` and `?` match line breaks in LT and UT too
_OPTIONS.log_errors = False


class _Malformed(Exception):
    """A key whose value cannot be read as its VR asks: it matches nothing."""


# ---- the public face ----------------------------------------------------------------------


def matches(identifier: Dataset, candidate: Dataset, *, combined_datetime: bool = False) -> bool:
    """Does `candidate` match every matching key of `identifier`?"""
    return _dataset_matches(identifier, candidate, combined_datetime)


def response_for(identifier: Dataset, candidate: Dataset, *, combined_datetime: bool = False) -> Dataset:
    """The response to `identifier` from a matching `candidate`: every key of the identifier
    with the candidate's value, zero length where the candidate has none; a sequence key
    with the candidate's items that match the query's item, each answered key by key (all
    of each item when the query's item is empty). Specific Character Set is the
    candidate's, so that its text is encoded as it was written."""
    response = _response(identifier, candidate, combined_datetime)
    charset = _element(candidate, SPECIFIC_CHARACTER_SET)
    if charset is not None and charset.value:
        response.add(copy.deepcopy(charset))
    return response


def invalid_keys(identifier: Dataset) -> list[str]:
    """Keys whose values no candidate can match because they are malformed (a date range
    that does not parse), each `Keyword: 'value'`; a query source may refuse the query."""
    found = []
    for element in _elements(identifier):
        if element is None or element.tag in _NEVER_MATCHED:
            continue
        if element.VR == "SQ":
            for item in element.value or ():
                found += invalid_keys(item)
        elif element.VR in RANGE_VRS and not _is_universal(element):
            for value in _values(element):
                try:
                    _range(element.VR, value)
                except _Malformed:
                    found.append(f"{element.keyword or element.tag}: {value!r}")
    return found


# ---- matching ---------------------------------------------------------------------------


def _elements(dataset: Dataset):
    """The data set's elements, each None when it cannot be read (a value pydicom refuses)."""
    for tag in list(dataset.keys()):
        yield _element(dataset, tag)


def _element(dataset: Dataset, tag) -> DataElement | None:
    if tag not in dataset:
        return None
    try:
        return dataset[tag]
    except Exception:  # pydicom raises many kinds for a value it cannot convert
        return None


def _dataset_matches(query: Dataset, candidate: Dataset, combined: bool) -> bool:
    paired: set = set()
    if combined:
        for date_tag, time_tag in DATE_TIME_PAIRS:
            outcome = _pair_matches(query, candidate, date_tag, time_tag)
            if outcome is not None:
                if not outcome:
                    return False
                paired |= {date_tag, time_tag}
    for tag in list(query.keys()):
        if tag in paired or tag in _NEVER_MATCHED or Tag(tag).element == 0:
            continue
        element = _element(query, tag)
        if element is None:
            return False  # a key that cannot be read matches nothing
        if _is_universal(element):
            continue
        if not _element_matches(element, _element(candidate, tag), combined):
            return False
    return True


def _is_universal(element: DataElement) -> bool:
    if element.VR == "SQ":
        return all(_item_is_universal(item) for item in element.value or ())
    values = _values(element)
    if not values:
        return True
    return element.VR in WILDCARD_VRS and all(isinstance(v, str) and v and set(v) == {"*"} for v in values)


def _item_is_universal(item: Dataset) -> bool:
    for element in _elements(item):
        if element is None:
            return False
        if element.tag not in _NEVER_MATCHED and not _is_universal(element):
            return False
    return True


def _values(element: DataElement) -> list:
    """The element's values, texts without the spaces that do not count; [] when empty."""
    value = element.value
    if value is None or value == "" or value == b"":
        return []
    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    if isinstance(value, (bytes, bytearray)):
        items = [bytes(value)]
    out = []
    for item in items:
        if isinstance(item, (bytes, int, float)):
            out.append(item)
            continue
        text = str(item)
        text = text.rstrip(" \0") if element.VR in _TRAILING_ONLY else text.strip(" \0")
        if text:
            out.append(text)
    return out


def _element_matches(query: DataElement, candidate: DataElement | None, combined: bool) -> bool:
    if candidate is None:
        return False
    if query.VR == "SQ":
        if candidate.VR != "SQ" or not candidate.value:
            return False
        return any(_dataset_matches(q, c, combined) for q in query.value for c in candidate.value)
    if candidate.VR == "SQ":
        return False
    wanted, present = _values(query), _values(candidate)
    if not present:
        return False  # an unknown value matches no matching key
    vr = query.VR if query.VR not in ("UN", "OB or OW", "US or SS") else candidate.VR
    return any(_value_matches(vr, q, c) for q in wanted for c in present)


def _value_matches(vr: str, query, candidate) -> bool:
    if vr in RANGE_VRS:
        try:
            low, high = _range(vr, str(query))
            value = _parse(vr, str(candidate))
        except _Malformed:
            return False
        return _within(value, low, high)
    if vr in NUMBER_VRS:
        try:
            return float(query) == float(candidate)
        except (TypeError, ValueError):
            return False
    if vr in WILDCARD_VRS and isinstance(query, str) and ("*" in query or "?" in query):
        return _wildcard(query).fullmatch(str(candidate)) is not None
    if isinstance(query, bytes) or isinstance(candidate, bytes):
        return query == candidate
    return str(query) == str(candidate)


@lru_cache(maxsize=1024)
def _wildcard(pattern: str):
    translated = "".join(".*" if c == "*" else "." if c == "?" else re2.escape(c) for c in pattern)
    return re2.compile(translated, _OPTIONS)


# ---- dates and times ----------------------------------------------------------------------


def _parse(vr: str, text: str):
    text = text.strip()
    if not text:
        raise _Malformed(text)
    try:
        # IGNORE: a malformed value is an answer here (no match), not a warning per candidate
        value = {"DA": DA, "TM": TM, "DT": DT}[vr](text, validation_mode=config.IGNORE)
    except (ValueError, TypeError, OverflowError):
        raise _Malformed(text) from None
    if value is None:
        raise _Malformed(text)
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        # with an offset: compared in UTC; values without one are taken as they are
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if isinstance(value, datetime.time) and value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return value


def _range(vr: str, text: str) -> tuple:
    """(low, high) of a range or single value, None for an open end; _Malformed when it
    does not parse. A DT offset has a `-` of its own: every split is tried."""
    text = text.strip()
    if "-" not in text:
        value = _parse(vr, text)
        return value, value
    splits = [i for i, c in enumerate(text) if c == "-"]
    if vr != "DT" and len(splits) > 1:
        raise _Malformed(text)
    found = []
    for i in splits:
        left, right = text[:i].strip(), text[i + 1:].strip()
        try:
            low = _parse(vr, left) if left else None
            high = _parse(vr, right) if right else None
        except _Malformed:
            continue
        found.append((low, high))
    ordered = [(low, high) for low, high in found if low is None or high is None or low <= high]
    if ordered:
        return ordered[0]
    if vr == "DT":
        value = _parse(vr, text)  # a single date-time with a negative offset
        return value, value
    if found:
        return found[0]  # a range from later to earlier: matches nothing, as the standard's "<=" says
    raise _Malformed(text)


def _within(value, low, high) -> bool:
    return (low is None or low <= value) and (high is None or value <= high)


def _pair_matches(query: Dataset, candidate: Dataset, date_tag, time_tag) -> bool | None:
    """A date and a time key given in the same form, matched as one date-time; None when
    the pair is not for combined matching (one of them universal, or forms differ)."""
    date_q, time_q = _element(query, date_tag), _element(query, time_tag)
    if date_q is None or time_q is None or _is_universal(date_q) or _is_universal(time_q):
        return None
    date_values, time_values = _values(date_q), _values(time_q)
    if len(date_values) != 1 or len(time_values) != 1:
        return None
    date_text, time_text = str(date_values[0]), str(time_values[0])
    if _form(date_text) != _form(time_text):
        return None
    try:
        date_low, date_high = _range("DA", date_text)
        time_low, time_high = _range("TM", time_text)
    except _Malformed:
        return False
    date_c, time_c = _element(candidate, date_tag), _element(candidate, time_tag)
    if date_c is None or not _values(date_c):
        return False
    try:
        day = _parse("DA", str(_values(date_c)[0]))
        at = _parse("TM", str(_values(time_c)[0])) if time_c is not None and _values(time_c) else datetime.time()
    except _Malformed:
        return False
    moment = datetime.datetime.combine(day, at)
    low = datetime.datetime.combine(date_low, time_low) if date_low is not None else None
    high = datetime.datetime.combine(date_high, time_high) if date_high is not None else None
    return _within(moment, low, high)


def _form(text: str) -> tuple[bool, bool, bool]:
    """(a range, open at the start, open at the end)."""
    text = text.strip()
    if "-" not in text:
        return False, False, False
    return True, text.startswith("-"), text.endswith("-")


# ---- responses --------------------------------------------------------------------------


def _response(query: Dataset, candidate: Dataset, combined: bool) -> Dataset:
    response = Dataset()
    for tag in list(query.keys()):
        tag = Tag(tag)
        if tag.element == 0 or tag == SPECIFIC_CHARACTER_SET:
            continue
        asked = _element(query, tag)
        if asked is None:
            continue  # a key that cannot be read gets no answer
        if tag == QUERY_RETRIEVE_LEVEL:
            response.add(copy.deepcopy(asked))
            continue
        held = _element(candidate, tag)
        if asked.VR == "SQ":
            response.add(DataElement(tag, "SQ", _response_items(asked, held, combined)))
        elif held is None or held.VR == "SQ":
            response.add(DataElement(tag, asked.VR, None))
        else:
            response.add(copy.deepcopy(held))
    return response


def _response_items(asked: DataElement, held: DataElement | None, combined: bool) -> Sequence:
    if held is None or held.VR != "SQ" or not held.value:
        return Sequence([])
    items = list(asked.value or ())
    if not items or all(len(item) == 0 for item in items):
        return Sequence([copy.deepcopy(item) for item in held.value])  # an empty item asks for all
    answered = []
    for item in held.value:
        query = next((q for q in items if _item_is_universal(q) or _dataset_matches(q, item, combined)), None)
        if query is not None:
            answered.append(_response(query, item, combined))
    return Sequence(answered)
