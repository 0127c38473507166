"""The parameters of a console request, read alike from the query string (GET), a form (page
POST) or a JSON object (API POST), and checked: a wrong value is an ActionError naming it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from starlette.requests import Request

from .actions import ActionError

PAGE_LIMIT = 50
MAX_LIMIT = 500
LARGEST_ID = 2 ** 63 - 1  # the journal's ids are SQLite integers: a larger number is refused, not a 500


def whole(value, name: str, low: int, high: int | None = None) -> int:
    """A whole-number parameter in [low, high], or ActionError naming it."""
    text = str(value).strip()
    bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
    try:
        number = int(text)
    except ValueError:
        raise ActionError(f"{name} must be a whole number {bounds}, not {str(value)[:40]!r}") from None
    if number < low or (high is not None and number > high):
        shown = str(number) if len(str(number)) <= 40 else str(number)[:40] + "..."
        raise ActionError(f"{name} must be a whole number {bounds}, not {shown}")
    return number


def states(values: list[str], allowed: tuple[str, ...], name: str = "state") -> tuple[str, ...]:
    wrong = [v for v in values if v not in allowed]
    if wrong:
        raise ActionError(f"{name} must be one of {', '.join(allowed)}, not {wrong[0][:40]!r}")
    return tuple(dict.fromkeys(values))


def text(value, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise ActionError(f"{name} must be text of at most 200 characters")
    return value


class Params:
    """Parameters of a request: the query string (GET), the form (page POST) or a JSON object
    (API POST), read alike."""

    def __init__(self, values: dict[str, list]):
        self.values = values

    @classmethod
    async def of(cls, request: Request) -> "Params":
        values: dict[str, list] = {}
        for key, value in request.query_params.multi_items():
            values.setdefault(key, []).append(value)
        if request.method == "POST":
            if request.headers.get("content-type", "").startswith("application/json"):
                try:
                    body = await request.json()
                except ValueError:
                    raise ActionError("the body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise ActionError("the body must be a JSON object")
                for key, value in body.items():
                    values[key] = value if isinstance(value, list) else [value]
            else:
                for key, value in (await request.form()).multi_items():
                    values.setdefault(key, []).append(value)
        return cls(values)

    def one(self, name: str):
        found = self.values.get(name) or [None]
        if len(found) > 1:
            raise ActionError(f"{name} is given {len(found)} times; give it once")
        return found[0]

    def all(self, name: str) -> list:
        return [v for v in self.values.get(name, []) if v not in (None, "")]

    def flag(self, name: str) -> bool:
        value = self.one(name)
        return value is True or (isinstance(value, str) and value.lower() in ("yes", "true", "1"))


def optional_whole(params: Params, name: str, low: int, high: int | None = None, default: int | None = None):
    """A whole-number parameter that may be left out (then `default`)."""
    value = params.one(name)
    return whole(value, name, low, high) if value not in (None, "") else default


_SECONDS = re.compile(r"^\d{1,12}(\.\d+)?$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def moment(value, name: str, whole_day: bool = False) -> float | None:
    """A time parameter as seconds since the epoch: an ISO 8601 local date or date-time
    (2026-12-03, 2026-12-03T10:15; with an offset, in that offset), or seconds since the epoch.
    With `whole_day`, a date alone means the end of that day (the next midnight): an upper
    bound that takes in the whole day."""
    if value is None or value == "":
        return None
    given = str(value).strip()
    if _SECONDS.match(given):
        return float(given)
    try:
        if not re.match(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$", given):
            raise ValueError
        parsed = datetime.fromisoformat(given.replace("Z", "+00:00"))
        if whole_day and _DAY.match(given):
            parsed += timedelta(days=1)
        return parsed.timestamp()  # a naive date-time is local time
    except (ValueError, OverflowError, OSError):
        raise ActionError(f"{name} must be an ISO 8601 date or date-time (2026-12-03, 2026-12-03T10:15) or seconds "
                          f"since the epoch, not {given[:40]!r}") from None
