"""One C-FIND forwarded to several destinations at once, their answers merged.

`forward_find()` asks every destination in parallel (each a `queries.find`: a single one
from the caller's thread, several a thread each), yields each distinct match as soon as any
destination returns it (the first destination's answers never wait for the slowest), and
ends with a ForwardedFindSummary: what each destination answered, which failed and why, the
final status to answer with and its Error Comment.

Matches are told apart by the unique key of the level asked (PS3.4 C.3): PatientID at
PATIENT, StudyInstanceUID at STUDY, SeriesInstanceUID at SERIES, SOPInstanceUID at IMAGE.
A worklist item has no single unique key: it is told apart by its Scheduled Procedure
Step ID (in the first item of ScheduledProcedureStepSequence) together with its
AccessionNumber, the pair that names one step of one order. The first answer with a key
wins; later ones with the same key are counted as duplicates and dropped. A query that
does not ask for its key gets it added as a return key, and the key is taken out of the
answers again; an answer without its key (a peer that ignored the request) cannot be
compared, and is passed on.

With `partial_results` (the default), a destination that fails or times out leaves the
others' matches standing: the final status is PARTIAL, a warning whose Error Comment names
the destinations that failed. Without it, matches are held back until every destination has
answered; the first failure stops the others and the result is FAILED, with no matches.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from pydicom import Dataset

from ..config import DicomDestination
from .queries import POLL_SECONDS, FindResult, find

log = logging.getLogger("rulesengine.queries")

# The final statuses a forwarded C-FIND is answered with (PS3.4 C.4.1.1.4; PS3.7 C.4).
SUCCESS = 0x0000
PARTIAL = 0xB000  # a warning: matches are missing, those of the destinations that failed
FAILED = 0xC000  # "Unable to process"
CANCELLED = 0xFE00
ERROR_COMMENT_LENGTH = 64  # Error Comment (0000,0902) is an LO

Path = tuple[str, ...]  # keywords from the identifier down: a sequence's first item, then an element in it
LEVEL_KEYS: dict[str, tuple[Path, ...]] = {
    "PATIENT": (("PatientID",),),
    "STUDY": (("StudyInstanceUID",),),
    "SERIES": (("SeriesInstanceUID",),),
    "IMAGE": (("SOPInstanceUID",),),
}
WORKLIST_KEYS: tuple[Path, ...] = (("ScheduledProcedureStepSequence", "ScheduledProcedureStepID"),
                                   ("AccessionNumber",))


def unique_key_paths(identifier: Dataset, model: str) -> tuple[Path, ...]:
    """The paths that tell one match from another at the identifier's level (none: not known)."""
    if model == "worklist":
        return WORKLIST_KEYS
    return LEVEL_KEYS.get(str(identifier.get("QueryRetrieveLevel", "")).strip().upper(), ())


def value_at(dataset: Dataset, path: Path) -> str | None:
    """The value at `path` as text (a sequence: its first item); None when it is not there."""
    for keyword in path[:-1]:
        items = dataset.get(keyword)
        if not items:
            return None
        dataset = items[0]
    value = dataset.get(path[-1])
    return None if value is None else str(value).strip()


def with_return_keys(identifier: Dataset, paths: Sequence[Path]) -> tuple[Dataset, list[Path]]:
    """The identifier asking for every path, and the paths of what was added (an element, or a
    whole sequence), to be taken out of the answers again. What is added goes into a copy (the
    caller's is kept); an identifier that asks for them all is used as it is. A sequence asked
    empty already returns everything it holds: nothing is added into it."""
    if not _return_keys(identifier, paths, add=False):
        return identifier, []
    identifier = copy.deepcopy(identifier)
    return identifier, _return_keys(identifier, paths, add=True)


def _return_keys(identifier: Dataset, paths: Sequence[Path], add: bool) -> list[Path]:
    """The paths missing from the identifier (the first missing step of each), added if `add`."""
    missing: list[Path] = []
    for path in paths:
        dataset = identifier
        for depth, keyword in enumerate(path):
            if keyword not in dataset:
                missing.append(path[:depth + 1])
                if not add:
                    break
                setattr(dataset, keyword, [Dataset()] if depth < len(path) - 1 else "")
                if depth < len(path) - 1:
                    dataset = dataset[keyword].value[0]
                    continue
                break
            if depth < len(path) - 1:
                items = dataset[keyword].value
                if not items:
                    break
                dataset = items[0]
    return missing


def without(dataset: Dataset, paths: Sequence[Path]) -> Dataset:
    for path in paths:
        target = dataset
        for keyword in path[:-1]:
            items = target.get(keyword)
            if not items:
                target = None
                break
            target = items[0]
        if target is not None and path[-1] in target:
            del target[path[-1]]
    return dataset


@dataclass(frozen=True)
class ForwardedFindSummary:
    """How a forwarded C-FIND ended, destination by destination."""

    results: tuple[FindResult, ...]  # each destination's, in the order they were given
    returned: int  # distinct matches yielded
    duplicates: int  # matches dropped as another destination's (or the same one's) again
    partial_results: bool
    cancelled: bool = False  # the caller's cancel

    @property
    def failed(self) -> tuple[FindResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def answered(self) -> dict[str, int]:
        """Each destination that answered in full, with how many matches it returned."""
        return {r.destination: r.matches for r in self.results if r.ok and not r.cancelled}

    @property
    def is_failure(self) -> bool:
        return bool(self.failed) and not (self.partial_results and self.answered)

    @property
    def partial(self) -> bool:
        """Some destinations failed; the others' matches were returned."""
        return bool(self.failed) and not self.is_failure

    @property
    def status(self) -> int:
        if self.is_failure:
            return FAILED
        if self.cancelled:
            return CANCELLED
        return PARTIAL if self.partial else SUCCESS

    @property
    def error_comment(self) -> str | None:
        """The destinations that failed, in a few words each, cut to fit an Error Comment."""
        if not self.failed:
            return None
        text = "; ".join(f"{r.destination}: {r.brief or 'failed'}" for r in self.failed)
        text = "".join(c if c.isprintable() and c != "\\" else " " for c in text)
        if len(text) > ERROR_COMMENT_LENGTH:
            text = text[:ERROR_COMMENT_LENGTH - 3].rstrip() + "..."
        return text

    @property
    def log_line(self) -> str:
        details = [f"{r.destination} {r.matches}" for r in self.results if r.ok and not r.cancelled]
        if self.duplicates:
            details.append(f"{self.duplicates} duplicate{'s' * (self.duplicates != 1)} dropped")
        line = (f"C-FIND at {', '.join(r.destination for r in self.results)}: {self.returned} "
                f"match{'es' * (self.returned != 1)}" + (f" ({', '.join(details)})" if details else ""))
        if self.failed:
            line += ("; failed: " if self.is_failure else "; partial, failed: ") + \
                "; ".join(f"{r.destination}: {r.failure}" for r in self.failed)
        stopped = [r.destination for r in self.results if r.ok and r.cancelled]
        if stopped:
            line += f"; cancelled: {', '.join(stopped)}"
        return line


def forward_find(destinations: Sequence[DicomDestination], identifier: Dataset, model: str, timeout: float,
                 partial_results: bool = True, cancel: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Dataset | ForwardedFindSummary]:
    """Each distinct match as it comes, then a ForwardedFindSummary (see the module).
    Every destination has `timeout` seconds by `clock`; setting `cancel` cancels them all."""
    if not destinations:
        raise ValueError("a C-FIND is forwarded to one destination at least")
    keys = unique_key_paths(identifier, model)
    asked, added = with_return_keys(identifier, keys)
    stop = threading.Event()  # the caller's cancel, a failure without partial results, or the caller gone
    results: dict[str, FindResult] = {}
    seen: set[tuple] = set()
    held: list[Dataset] = []
    returned = duplicates = 0
    answers = _answers(destinations, asked, model, timeout, stop, cancel, clock)
    every_answer = False
    try:
        for name, item in answers:
            if isinstance(item, FindResult):
                results[name] = item
                if not item.ok and not partial_results:
                    stop.set()
                continue
            key = tuple(value_at(item, path) for path in keys)
            if keys and any(key):
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
            match = without(item, added)
            if partial_results:
                returned += 1
                yield match
            else:
                held.append(match)
        every_answer = True
        summary = ForwardedFindSummary(tuple(results[d.name] for d in destinations), returned, duplicates,
                                       partial_results, cancelled=cancel is not None and cancel.is_set())
        if not partial_results and not summary.failed:
            for match in held:
                yield match
            summary = ForwardedFindSummary(summary.results, len(held), duplicates, partial_results, summary.cancelled)
        # The listener logs each request in a line of its own: this one adds each destination's
        # full reason when one failed, and is otherwise for `-v`.
        if summary.failed:
            log.warning("%s", summary.log_line)
        elif log.isEnabledFor(logging.DEBUG):
            log.debug("%s", summary.log_line)
        yield summary
    finally:
        stop.set()  # a caller that stopped iterating: the destinations still asked are cancelled
        if not every_answer:  # their C-CANCEL and its answer, on a thread of their own
            threading.Thread(target=collections.deque, args=(answers, 0), name="forward-cancel", daemon=True).start()


def _answers(destinations: Sequence[DicomDestination], identifier: Dataset, model: str, timeout: float,
             stop: threading.Event, cancel, clock: Callable[[], float]) -> Iterator[tuple[str, Dataset | FindResult]]:
    """(destination name, a match or its FindResult) as they come, until every destination has
    its FindResult. One destination is asked from the caller's thread: each match is then one
    thread hand-off (pynetdicom's to the caller) from the requester, not two."""
    if len(destinations) == 1:
        yield from _asked(destinations[0], identifier, model, timeout, _Either(stop, cancel), clock)
        return
    answers: queue.Queue = queue.Queue()
    for destination in destinations:
        threading.Thread(target=_ask, args=(destination, identifier, model, timeout, stop, clock, answers),
                         name=f"forward-{destination.name}", daemon=True).start()
    waiting = len(destinations)
    while waiting:
        if cancel is not None and cancel.is_set():
            stop.set()
        try:
            answer = answers.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if isinstance(answer[1], FindResult):
            waiting -= 1
        yield answer


def _ask(destination: DicomDestination, identifier: Dataset, model: str, timeout: float, stop: threading.Event,
         clock: Callable[[], float], answers: queue.Queue) -> None:
    for answer in _asked(destination, identifier, model, timeout, stop, clock):
        answers.put(answer)


def _asked(destination: DicomDestination, identifier: Dataset, model: str, timeout: float, cancel,
           clock: Callable[[], float]) -> Iterator[tuple[str, Dataset | FindResult]]:
    matches = 0
    try:
        with contextlib.closing(find(destination, identifier, model, timeout, cancel, clock)) as found:
            for item in found:
                if isinstance(item, Dataset):
                    matches += 1
                yield destination.name, item
    except Exception as exc:  # noqa: BLE001 - a bug here is this destination's failure, never a wait without end
        log.exception("C-FIND at %s failed", destination.name)
        yield destination.name, FindResult(destination.name, matches, failure=f"internal error: {exc!r}",
                                           brief="internal error")


class _Either:
    """Set when either event is (the caller's `cancel` may be None, or any object with is_set)."""

    def __init__(self, first: threading.Event, second) -> None:
        self.first = first
        self.second = second

    def is_set(self) -> bool:
        return self.first.is_set() or (self.second is not None and bool(self.second.is_set()))
