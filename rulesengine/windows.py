"""Delivery windows: named spans of the week when a destination may be sent to.

A window is hours of the day (`22:00-06:00`; they may wrap midnight), on some days of the
week (every day unless named), in the router's local time or a named time zone. A span that
wraps midnight belongs to the day it starts on: `hours: "22:00-06:00", days: [fri]` is open
from Friday 22:00 to Saturday 06:00. Whether a window is open is asked with a time given by
the caller (the delivery manager's clock), never read here, so that tests move the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # as datetime.weekday() numbers them
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_MINUTES_A_DAY = 24 * 60


class WindowError(ValueError):
    """A window that cannot be used; the message says what is wrong in plain words."""


def parse_hours(text: str) -> tuple[int, int]:
    """`HH:MM-HH:MM` as (start, end) minutes of the day. The end may be 24:00, so that
    `00:00-24:00` is the whole of each of the window's days; start and end may not be equal."""
    match = _HOURS.match(text) if isinstance(text, str) else None
    if match is None:
        raise WindowError(f"{text!r} is not hours of the day: write HH:MM-HH:MM, e.g. 22:00-06:00")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    for hour, minute, end in ((start_h, start_m, False), (end_h, end_m, True)):
        if minute > 59 or hour > 24 or (hour == 24 and (minute or not end)):
            raise WindowError(f"{text!r}: {hour:02d}:{minute:02d} is not a time of the day (00:00 to 23:59, "
                              "or 24:00 as an end)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise WindowError(f"{text!r} starts where it ends: a window needs a span of time")
    return start, end


def parse_days(days) -> frozenset[int]:
    """Day names (mon ... sun) as weekday numbers; none given: every day."""
    if days is None:
        return frozenset(range(7))
    if not days:
        raise WindowError("days is empty: name at least one day (mon, tue, wed, thu, fri, sat, sun), or leave "
                          "days out for every day")
    numbers = set()
    for day in days:
        if day not in DAYS:
            raise WindowError(f"{day!r} is not a day: one of {', '.join(DAYS)}")
        numbers.add(DAYS.index(day))
    return frozenset(numbers)


def parse_timezone(name: str | None) -> tzinfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"{name!r} is not a time zone this system knows (e.g. Europe/Paris, UTC)") from None


@dataclass(frozen=True)
class DeliveryWindow:
    """When deliveries restricted to it may be sent."""

    name: str
    hours: str  # as written: HH:MM-HH:MM
    days: frozenset[int] = frozenset(range(7))  # weekday numbers, Monday 0
    timezone: str | None = None  # None: the router's local time

    @classmethod
    def parse(cls, name: str, hours: str, days=None, timezone: str | None = None) -> "DeliveryWindow":
        """A window from the configuration's words; WindowError when one of them is wrong."""
        parse_hours(hours)
        parse_timezone(timezone)
        return cls(name, hours, parse_days(days), timezone)

    @cached_property
    def _span(self) -> tuple[int, int]:
        return parse_hours(self.hours)

    @cached_property
    def _zone(self) -> tzinfo | None:
        return parse_timezone(self.timezone)

    def _local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, self._zone) if self._zone is not None else datetime.fromtimestamp(at)

    def is_open(self, at: float) -> bool:
        """Is the window open at `at` (seconds since the epoch)?"""
        start, end = self._span
        local = self._local(at)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if start < end:
            return day in self.days and start <= minute < end
        # Wraps midnight: the evening part on one of its days, the morning part on the day after one.
        return (minute >= start and day in self.days) or (minute < end and (day - 1) % 7 in self.days)

    def opens_after(self, at: float) -> float | None:
        """When the window next opens after `at` (at itself if open); None if it never does.
        Minute by minute over a week at most: used for display, never on the hot path."""
        if self.is_open(at):
            return at
        local = self._local(at).replace(second=0, microsecond=0)
        for minutes in range(1, 8 * _MINUTES_A_DAY + 1):
            moment = (local + timedelta(minutes=minutes)).timestamp()
            if self.is_open(moment):
                return moment
        return None

    def closes_after(self, at: float) -> float | None:
        """When the window next closes after `at` (at itself if closed); None if it never does
        (open all week). Minute by minute, like opens_after: for display only."""
        if not self.is_open(at):
            return at
        local = self._local(at).replace(second=0, microsecond=0)
        for minutes in range(1, 8 * _MINUTES_A_DAY + 1):
            moment = (local + timedelta(minutes=minutes)).timestamp()
            if not self.is_open(moment):
                return moment
        return None

    def describe(self) -> str:
        days = "every day" if len(self.days) == 7 else ", ".join(DAYS[d] for d in sorted(self.days))
        zone = f" ({self.timezone})" if self.timezone else ""
        return f"{self.hours} {days}{zone}"


def closed_windows(windows: dict[str, DeliveryWindow], at: float) -> frozenset[str]:
    """The names of the windows closed at `at`."""
    return frozenset(name for name, window in windows.items() if not window.is_open(at))
