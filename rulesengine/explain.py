"""Why rules did or did not fire: predicates with the values they compared."""

from __future__ import annotations

from .lang.ruleset import Decision, Predicate, RuleSet, TraceEvent
from .values import display


def _short(value, limit: int = 80) -> str:
    text = display(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def operand_values(predicate: Predicate, event: TraceEvent) -> str:
    """`DataSet.Modality is "CT"`: the actual values behind a predicate, literals left out."""
    if predicate.kind in ("any", "all"):
        return ""
    parts = []
    if predicate.left_text:
        parts.append(f"{predicate.left_text} is {_short(event.left)}")
    if predicate.right_text and not predicate.right_is_literal and predicate.kind not in ("exists", "missing", "empty") \
            and not isinstance(event.right, dict):  # a table speaks for itself by name
        parts.append(f"{predicate.right_text} is {_short(event.right)}")
    return ", ".join(parts)


def describe_event(predicate: Predicate, event: TraceEvent) -> str:
    values = operand_values(predicate, event)
    verdict = "true" if event.result else "false"
    return f"{predicate.text}  -> {verdict}" + (f"  ({values})" if values else "")


def explain_lines(ruleset: RuleSet, decision: Decision) -> list[str]:
    """For each rule in order: fired or not, and each predicate evaluated with its values."""
    fired = {info.index for info in decision.rules_fired}
    by_rule: dict[int, list[TraceEvent]] = {}
    for event in decision.trace or ():
        by_rule.setdefault(event.rule, []).append(event)
    ended_at = decision.ended_by.index if decision.ended_by is not None else None
    lines: list[str] = []
    for info in ruleset.rules:
        if decision.message not in info.messages:
            continue  # a rule for another message: never evaluated for this one
        if ended_at is not None and info.index > ended_at:
            lines.append(f"rule {info.name!r} (line {info.line}): not reached, "
                         f"evaluation ended at rule {decision.ended_by.name!r}")
            continue
        status = "fired" if info.index in fired else "did not fire"
        lines.append(f"rule {info.name!r} (line {info.line}): {status}")
        events = by_rule.get(info.index, [])
        if not events and info.index not in fired:
            lines.append("    (not evaluated)")
        for event in events:
            lines.append("    " + describe_event(ruleset.predicates[event.predicate], event))
    return lines
