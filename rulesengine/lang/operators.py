"""The operators of compiled conditions and expressions.

Semantics in one place: a comparison with null (a missing element) is false,
never an error; numbers compare as numbers, also when one side is numeric
text; an element with several values equals a single value only when it holds
exactly that one value; `contains` is a substring test on text and a
membership test on several values.
"""

from __future__ import annotations

import re
from typing import Any, Callable

class EvaluationError(Exception):
    """A function or operator that cannot produce a value for these inputs."""


_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "\\".join(text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unwrap(value: Any) -> Any:
    """One value out of a one-value tuple; anything else unchanged."""
    if isinstance(value, tuple) and len(value) == 1:
        return value[0]
    return value


def eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if a.__class__ is b.__class__:
        return a == b
    a, b = _unwrap(a), _unwrap(b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(eq, a, b))
    a_num, b_num = isinstance(a, (int, float)), isinstance(b, (int, float))
    if a_num and isinstance(b, str):
        return _number(b) == a
    if b_num and isinstance(a, str):
        return _number(a) == b
    return a == b


def ne(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    return not eq(a, b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both sides made comparable, or None when they are not."""
    if a is None or b is None:
        return None
    a, b = _unwrap(a), _unwrap(b)
    a_num, b_num = isinstance(a, (int, float)), isinstance(b, (int, float))
    if a_num and b_num:
        return a, b
    if a_num and isinstance(b, str):
        b = _number(b)
        return (a, b) if b is not None else None
    if b_num and isinstance(a, str):
        a = _number(a)
        return (a, b) if a is not None else None
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def lt(a, b) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] < pair[1]


def le(a, b) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] <= pair[1]


def gt(a, b) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] > pair[1]


def ge(a, b) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] >= pair[1]


# Dates and times compare as instants: normalise both sides, then compare text.

def norm_date(value: Any) -> str | None:
    value = _unwrap(value)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if len(value) == 8 and value.isdigit() else None


def norm_time(value: Any) -> str | None:
    """TM: HH, HHMM, HHMMSS or HHMMSS.FFFFFF, padded so that 0930 equals 093000."""
    value = _unwrap(value)
    if not isinstance(value, str):
        return None
    value = value.strip().replace(":", "")
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    return whole.ljust(6, "0") + "." + fraction.ljust(6, "0")


def norm_datetime(value: Any) -> str | None:
    """DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]], padded; a time zone offset is not applied."""
    value = _unwrap(value)
    if not isinstance(value, str):
        return None
    value = re.sub(r"[+-]\d{4}$", "", value.strip())
    whole, _, fraction = value.partition(".")
    if not whole.isdigit() or len(whole) not in (4, 6, 8, 10, 12, 14) or (fraction and not fraction.isdigit()):
        return None
    padded = whole + "0101000000"[len(whole) - 4:] if len(whole) < 8 else whole.ljust(14, "0")
    return padded + "." + fraction.ljust(6, "0")


NORMALISERS = {"date": norm_date, "time": norm_time, "datetime": norm_datetime}


def _temporal(compare: Callable, normalise: Callable) -> Callable:
    def compare_as_instants(a, b) -> bool:
        return compare(normalise(a), normalise(b))
    return compare_as_instants


def contains(a, b) -> bool:
    if a.__class__ is str and b.__class__ is str:  # the common case, first
        return b in a
    if a is None or b is None:
        return False
    if isinstance(a, (tuple, list)):
        return any(eq(x, b) for x in a)
    if isinstance(a, str):
        return text(b) in a
    return False


def not_contains(a, b) -> bool:
    if a is None or b is None:
        return False
    return not contains(a, b)


def startswith(a, b) -> bool:
    """Text starts with; on several values, any of them does (as for contains and matches)."""
    if a is None or b is None:
        return False
    if isinstance(a, (tuple, list)):
        return any(startswith(v, b) for v in a)
    return isinstance(a, str) and a.startswith(text(b))


def endswith(a, b) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, (tuple, list)):
        return any(endswith(v, b) for v in a)
    return isinstance(a, str) and a.endswith(text(b))


def matches(a, pattern) -> bool:
    """The pattern (a regex.Regex, matched by RE2) is found in the text, or in one of several values."""
    if a.__class__ is str:  # the common case, first
        return pattern.found(a)
    if a is None:
        return False
    if isinstance(a, (tuple, list)):
        return any(pattern.found(text(v)) for v in a)
    return pattern.found(text(a))


def not_matches(a, pattern) -> bool:
    return a is not None and not matches(a, pattern)


def in_(a, collection) -> bool:
    if a.__class__ is str and collection.__class__ is frozenset:  # the common case, first
        return a in collection
    if a is None or collection is None:
        return False
    if isinstance(collection, dict):  # a table: is it a key?
        return text(_unwrap(a)) in collection
    if isinstance(collection, frozenset):
        return _unwrap(a) in collection
    if not isinstance(collection, (tuple, list)):
        collection = (collection,)
    return any(eq(a, x) for x in collection)


def not_in(a, collection) -> bool:
    if a is None or collection is None:
        return False
    return not in_(a, collection)


def store(cache: dict, key: str, value):
    """Remember a value computed from the document until the document changes."""
    cache[key] = value
    return value


def plus(a, b):
    """+ adds two numbers and joins anything else as text, where null counts as
    empty text: "ANON^" + a missing element is "ANON^"."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    return ("" if a is None else text(a)) + ("" if b is None else text(b))


def plus_all(*values):
    """a + b + c + ...: + from the left, as written (1 + 2 + "x" is "3x", "x" + 1 + 2 is "x12")."""
    result = values[0]
    for value in values[1:]:
        result = plus(result, value)
    return result


def as_number(value: Any, what: str) -> int | float | None:
    """A number from a number or numeric text (an IS or DS value, a table cell); null stays null.
    Text that is no number is an error naming `what` needs it."""
    if value is None or value == "" or value == ():  # missing or empty: no number
        return None
    value = _unwrap(value)
    if value.__class__ is int or value.__class__ is float:
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if re.fullmatch(r"[+-]?\d+", stripped):
            return int(stripped)
        number = _number(stripped)
        if number is not None:
            return number
        raise EvaluationError(f"{what} needs numbers, and {value!r} is not a number")
    if isinstance(value, tuple):
        raise EvaluationError(f"{what} needs one number, not {len(value)} values")
    raise EvaluationError(f"{what} needs numbers, not {text(value)!r}")


def _exact(value: float | int) -> int | float:
    """Integral results stay integers: 6 / 2 is 3, written to an IS element as 3."""
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53 else value


def minus(a, b):
    """a - b; null when either side is null."""
    a, b = as_number(a, "-"), as_number(b, "-")
    return None if a is None or b is None else a - b


def times(a, b):
    a, b = as_number(a, "*"), as_number(b, "*")
    return None if a is None or b is None else a * b


def divided_by(a, b):
    """a / b, exact: 7 / 2 is 3.5, 6 / 2 is 3. Division by zero is an error."""
    a, b = as_number(a, "/"), as_number(b, "/")
    if a is None or b is None:
        return None
    if b == 0:
        raise EvaluationError(f"division by zero ({text(a)} / 0)")
    if isinstance(a, int) and isinstance(b, int) and a % b == 0:
        return a // b
    return _exact(a / b)


def modulo(a, b):
    """a % b, the remainder with the sign of b (-7 % 3 is 2), as for dates in a cycle."""
    a, b = as_number(a, "%"), as_number(b, "%")
    if a is None or b is None:
        return None
    if b == 0:
        raise EvaluationError(f"division by zero ({text(a)} % 0)")
    return _exact(a % b)


def negative(a):
    a = as_number(a, "-")
    return None if a is None else -a


def exists(value) -> bool:
    return value is not None


def missing(value) -> bool:
    return value is None


def empty(value) -> bool:
    return value == "" or value == ()


def iterate(value):
    """The items or values a quantifier or a for each walks; nothing for null."""
    if value is None or value == "":
        return ()
    if isinstance(value, (tuple, list)):
        return value
    return (value,)


BINARY = {
    "==": eq, "!=": ne, "<": lt, "<=": le, ">": gt, ">=": ge,
    "in": in_, "not in": not_in, "contains": contains, "not contains": not_contains,
    "startswith": startswith, "endswith": endswith,
}
ARITHMETIC = {"-": minus, "*": times, "/": divided_by, "%": modulo}
PRESENCE = {"exists": exists, "missing": missing, "empty": empty}
# Comparisons of dates and times: the operands are normalised inside, so that what a trace
# records (and explain and test failures show) is each value as written, not "120000.000000".
TEMPORAL = {(kind, op): _temporal(BINARY[op], normalise)
            for kind, normalise in NORMALISERS.items() for op in ("==", "!=", "<", "<=", ">", ">=")}
