"""Group rules (`rule "..." per series|study { ... }`) as the runtime sees them.

A group rule is evaluated once over the instances of a series or a study, when the group is
complete: after a quiet time since its last arrival (`complete after`, or the configuration's
default), or as soon as its `complete when` condition holds. `GroupRule` is the whole interface:
which group an instance joins (`key`), the group order (`order`), whether the group is complete
(`is_complete`) and what becomes of each instance (`evaluate`, one Decision per instance).

Inside a group rule, a path outside an aggregate reads the first instance in group order in
`when` and `complete when`, and the instance the actions apply to in the actions; an
aggregate (count(), count(COND), any(COND), all(COND), distinct(PATH)) reads every instance.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any, Callable, Sequence

from ..diagnostics import Span
from .nodes import DURATION_UNITS
from .paths import resolve
from .ruleset import Decision, Evaluation, RuleInfo, RuleNotification
from .syntax import parse_path

# The longest quiet time: a group's instances stay in the spool until it fires.
LONGEST_QUIET_SECONDS = 30 * 86400
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")
NOT_ROUTED = "none"  # the outcome of an instance the group rule neither routed nor decided for


def quiet_seconds(text: str) -> float:
    """The seconds of a duration as written (`90s`, `10m`, `1.5h`, `2d`). ValueError says what is wrong."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration")
    number, unit = match.groups()
    if not unit:
        raise ValueError(f"{text}: a duration needs its unit (s, m, h or d)")
    if unit not in DURATION_UNITS:
        raise ValueError(f"unknown unit {unit!r} in {text}: write s, m, h or d")
    seconds = float(number) * DURATION_UNITS[unit]
    if not seconds > 0:
        raise ValueError(f"complete after {text} would fire each group at its first instance; "
                         "write at least 1s (or complete when CONDITION)")
    if not math.isfinite(seconds) or seconds > LONGEST_QUIET_SECONDS:
        raise ValueError(f"complete after {text} is longer than 30d: a group's instances wait in the "
                         "spool until it fires")
    return seconds


# ---- what generated code calls for aggregates -------------------------------------------------


def count_all(group: Sequence) -> int:
    return len(group)


def count_where(group: Sequence, condition: Callable[[Any], Any]) -> int:
    return sum(1 for doc in group if condition(doc))


def any_of(group: Sequence, condition: Callable[[Any], Any]) -> bool:
    return any(condition(doc) for doc in group)


def all_of(group: Sequence, condition: Callable[[Any], Any]) -> bool:
    return all(condition(doc) for doc in group)


def distinct_values(group: Sequence, value: Callable[[Any], Any]) -> tuple:
    """The distinct values the path has across the group, in group order; absent values left out,
    and the values of a multi-valued element each counted."""
    seen: dict = {}
    for doc in group:
        found = value(doc)
        values = found if isinstance(found, (tuple, list)) else (found,)
        for one in values:
            if one is None or one == "":
                continue
            try:
                seen.setdefault(one, None)
            except TypeError:  # an unhashable value: compared by its text
                seen.setdefault(str(one), None)
    return tuple(seen)


AGGREGATE_RUNTIME = {"count_all": count_all, "count_where": count_where, "any_of": any_of, "all_of": all_of,
                     "distinct_values": distinct_values}


# ---- the interface ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _path(text: str):
    resolved, _ = resolve(parse_path(text))
    return resolved


def _read(document, keyword: str):
    value = document.read_path(_path("DataSet." + keyword))
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    return value


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf  # absent (or not a number): last


_ORDER_KEY = ("group order",)  # where a document's cache keeps what group order reads of it


def _order_key(document) -> tuple:
    """(SeriesInstanceUID, SeriesNumber, InstanceNumber) of an instance, kept in its cache (which
    an edit empties): the runtime orders a group at each arrival, and reads each instance once."""
    cache = getattr(document, "cache", None)
    key = cache.get(_ORDER_KEY) if cache is not None else None
    if key is None:
        key = (_read(document, "SeriesInstanceUID"), _number(_read(document, "SeriesNumber")),
               _number(_read(document, "InstanceNumber")))
        if cache is not None:
            cache[_ORDER_KEY] = key
    return key


def group_notifications(decisions: Sequence[Decision]) -> list[RuleNotification]:
    """The notifications of one group firing: a group rule's `notify` runs for each instance,
    but the group is notified once, per notifier, with the message of the first instance in
    group order that asked for it."""
    found: dict[tuple[str, str | None], RuleNotification] = {}
    for decision in decisions:
        for note in decision.notifications:
            found.setdefault((note.notifier, note.rule), note)
    return list(found.values())


class GroupRule:
    """One compiled group rule; the RuleSet that holds it runs its code."""

    def __init__(self, ruleset, info: RuleInfo, level: str, quiet_seconds: float | None, late: str,
                 has_completion: bool, functions: dict[bool, tuple[Callable, Callable | None, Callable]]):
        self.ruleset = ruleset
        self.info = info
        self.name = info.name
        self.span: Span = info.span
        self.level = level
        self.quiet_seconds = quiet_seconds
        self.late = late
        self.has_completion = has_completion
        self._functions = functions  # traced -> (when, complete when or None, actions)

    def __repr__(self) -> str:
        return f"<GroupRule {self.name!r} per {self.level}>"

    def key(self, document) -> tuple[str, str | None] | None:
        """(study UID, series UID or None for a study rule); None when the instance lacks them."""
        study = _read(document, "StudyInstanceUID")
        if not study:
            return None
        if self.level == "study":
            return (str(study), None)
        series = _read(document, "SeriesInstanceUID")
        return (str(study), str(series)) if series else None

    def order(self, documents: Sequence) -> list:
        """Group order: series by SeriesNumber (absent last), then first arrival; in a series,
        instances by InstanceNumber (absent last), then arrival. `documents` come in arrival order."""
        keys = [_order_key(doc) for doc in documents]
        series_rank: dict = {}
        for position, (uid, series_number, _) in enumerate(keys):
            if uid not in series_rank:
                series_rank[uid] = (series_number, position)
        ranked = sorted(range(len(documents)),
                        key=lambda position: (series_rank[keys[position][0]], keys[position][2], position))
        return [documents[position] for position in ranked]

    def is_complete(self, documents: Sequence) -> bool:
        """Whether `complete when` holds over these instances; False without one, or when it fails."""
        complete = self._functions[False][1]
        if complete is None or not documents:
            return False
        ordered = self.order(documents)
        evaluation = Evaluation(self.ruleset, ordered[0])
        evaluation.rule = evaluation.current = self.info.index
        try:
            return bool(complete(ordered[0], evaluation, ordered))
        except Exception:  # noqa: BLE001 - a failing condition leaves completion to the quiet time
            return False

    def evaluate_late(self, documents: Sequence, late, trace: bool = False) -> Decision:
        """`late refire`: the decision for `late` alone (one of `documents`, which hold the whole
        group, it included), `when` and the aggregates evaluated over the whole group."""
        return self.evaluate(documents, trace, only=late)[0]

    def evaluate(self, documents: Sequence, trace: bool = False, only=None) -> list[Decision]:
        """One Decision per instance, in group order. The actions run on a copy of each instance,
        so that every aggregate reads the instances as received. `when` false: every decision has
        outcome "none" (no destination, nothing decided). `only`: that document's decision alone."""
        if not documents:
            return []
        when, _, actions = self._functions[trace]
        ordered = self.order(documents)
        first = ordered[0]
        probe = Evaluation(self.ruleset, first, trace)
        probe.rule = probe.current = self.info.index
        try:
            fires = bool(when(first, probe, ordered))
        except Exception as exc:  # noqa: BLE001 - every instance of the group is quarantined, said why
            description = self.ruleset.describe_failure(exc, probe)
            return [self._failed(doc, description, exc, trace) for doc in ordered if only is None or doc is only]
        decisions = []
        for doc in ordered:
            if only is not None and doc is not only:
                continue
            evaluation = Evaluation(self.ruleset, doc.copy() if fires else doc, trace)
            evaluation.current = self.info.index
            if trace:
                evaluation.trace.extend(probe.trace)
            try:
                if fires:
                    actions(evaluation.document, evaluation, ordered)
                decisions.append(self._finish(evaluation))
            except Exception as exc:  # noqa: BLE001 - this instance is quarantined, never lost
                decisions.append(evaluation.failed(self.ruleset.describe_failure(exc, evaluation),
                                                   self.ruleset.rewrite(exc)))
        return decisions

    def _finish(self, evaluation: Evaluation) -> Decision:
        decision = evaluation.finish(NOT_ROUTED)
        if decision.unrouted:
            decision.reason = f"group rule {self.name!r} did not route this instance"
        return decision

    def _failed(self, doc, description: str, exc: BaseException, trace: bool) -> Decision:
        evaluation = Evaluation(self.ruleset, doc, trace)
        evaluation.rule = self.info.index
        return evaluation.failed(description, self.ruleset.rewrite(exc))
