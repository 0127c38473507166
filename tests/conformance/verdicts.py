"""What each file's result through one intake means: a row per destination of the results
table, and the list of what went wrong (empty when the file met its expectation)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .compare import differences
from .corpus import PEER_REFUSES, SENDER_MANGLES, SENDER_SKIPS, matches
from .harness import DESTINATIONS, FileResult, IntakeRun


@dataclass(frozen=True)
class Row:
    file: str
    intake: str
    destination: str
    result: str
    ok: bool


def sender_of(run: IntakeRun) -> str | None:
    match = re.match(r"listener \((\w+)\)", run.intake)
    return match.group(1) if match and run.kind == "listener" else None


def judge(run: IntakeRun, result: FileResult) -> tuple[list[Row], list[str]]:
    """Rows for the table and failures (precise: which file, which element, expected vs got)."""
    source, expect = result.source, result.source.expect
    intake = run.intake
    failures: list[str] = []
    rows: list[Row] = []

    def row(destination: str, text: str, ok: bool) -> None:
        rows.append(Row(source.name, intake, destination, text, ok))

    sender = sender_of(run)
    mangled = SENDER_MANGLES.get(sender, {}).get(source.name) if sender else None
    if mangled is not None:
        if not result.sent:
            failures.append(f"{sender} was expected to send it mangled, and the router to answer a failure "
                            f"(/{mangled}/), but {sender} did not send it: {result.reason}")
        elif result.accepted is not False or not matches(mangled, result.reason):
            failures.append(f"{sender} sends it mangled: the router was expected to answer a failure (/{mangled}/), "
                            f"but answered {result.answer}")
        _nothing_arrived(result, failures)
        for destination in DESTINATIONS:
            row(destination, f"sent mangled by {sender}, refused: {result.reason}", not failures)
        return rows, failures

    skip = SENDER_SKIPS.get(sender, {}).get(source.name) if sender else None
    if skip is not None:
        if result.sent:
            failures.append(f"{sender} was expected not to send it (/{skip}/), but sent it: {result.answer}")
        elif not matches(skip, result.reason):
            failures.append(f"{sender} did not send it, for another reason than /{skip}/: {result.reason}")
        for destination in DESTINATIONS:
            row(destination, f"not sent by {sender}: {result.reason}", not failures)
        if not failures:
            _nothing_arrived(result, failures)
        return rows, failures

    if not result.sent:
        failures.append(f"{sender} did not send it: {result.reason}")
    elif not expect.delivered:
        if result.accepted:
            failures.append(f"expected refused at intake (/{expect.refused}/), but {intake} accepted it "
                            f"({result.answer}); then: {result.outcome or 'nothing journaled'}"
                            + (f"; deliveries: {_deliveries(result)}" if result.deliveries else ""))
        elif result.accepted is None:
            failures.append(f"expected refused at intake (/{expect.refused}/), but it was neither accepted nor "
                            f"refused: {result.answer}")
        elif not matches(expect.refused, result.reason):
            failures.append(f"refused at intake as expected, but the reason does not match /{expect.refused}/: "
                            f"{result.reason!r}")
        _nothing_arrived(result, failures)
        text = f"refused: {result.reason}" if result.accepted is False else f"accepted: {result.outcome}"
        for destination in DESTINATIONS:
            row(destination, text, not failures)
        return rows, failures
    elif result.accepted is False:
        failures.append(f"expected delivered, but {intake} refused it at intake: {result.reason}")
    elif result.accepted is None:
        failures.append(f"expected delivered, but {intake} neither accepted nor refused it: {result.answer}")

    if failures:
        for destination in DESTINATIONS:
            row(destination, failures[0], False)
        return rows, failures

    for destination in DESTINATIONS:
        problems = _destination(run, result, destination)
        failures += [f"{destination}: {problem}" for problem in problems]
        if problems:
            row(destination, problems[0], False)
        elif (source.name, destination) in PEER_REFUSES:
            row(destination, f"refused by the peer, as expected: {result.deliveries.get(destination)}", True)
        else:
            row(destination, "delivered, identical", True)
    return rows, failures


def _deliveries(result: FileResult) -> str:
    return ", ".join(f"{name} {state}" for name, state in sorted(result.deliveries.items()))


def _nothing_arrived(result: FileResult, failures: list[str]) -> None:
    if result.copies:
        failures.append(f"yet copies of it arrived at {', '.join(sorted(result.copies))}")


def _destination(run: IntakeRun, result: FileResult, destination: str) -> list[str]:
    state = result.deliveries.get(destination)
    copy = result.copies.get(destination)
    peer_refuses = PEER_REFUSES.get((result.source.name, destination))
    if peer_refuses is not None and run.kind != "dry-run":
        if copy is not None:
            return [f"the peer was expected to refuse it (/{peer_refuses}/), yet it holds a copy"]
        if not state or not state.startswith("dead") or not matches(peer_refuses, state):
            return [f"the peer was expected to refuse it (/{peer_refuses}/); the delivery is {state or 'missing'}"]
        return []
    if state is None:
        return [f"no delivery to {destination} (outcome: {result.outcome or 'nothing journaled'})"]
    if run.kind != "dry-run" and state != "delivered":
        return [f"not delivered: {state}"]
    if copy is None:
        return [f"journaled as {state}, but {destination} holds no copy of it"]
    return differences(result.source.path, copy, run.edits)
