"""The C-FIND service of the listeners: Patient Root and Study Root Query/Retrieve and
Modality Worklist queries, answered through the rules.

A query becomes a document (its identifier, with its command set and the facts of its
association) and the C-FIND rules decide: `reject` answers a failure (0xC124) with the
reason in Error Comment, `drop` answers Success with no matches, `route` asks the routed
destinations. A `dicom` destination is asked over the network (forwarded_find.py, every one
at once, their matches merged and told apart by their unique key); a `worklist` destination
answers from its folder (worklist.py), read once for the router's life and looked at again
before each query. Each match goes through the rules' `on response` edits on its way back.

The final status: Success; 0xB000 (a warning: partial results) when some destinations
failed and the others answered, with the failed ones in Error Comment (with the listener's
`partial_results: false`, the matches are held until every destination has answered, and
such a query fails, 0xC000, with no matches); 0xC000 with the
reason when every destination failed; 0xFE00 after the requester's C-CANCEL. An identifier
that cannot be decoded, or that names no level its SOP class knows, is answered 0xA900.
Every request is recorded in the journal (`dicom-rules requests`) as it arrives, and how it
ended is journaled and logged in one line once its final status is on its way.
The handler never raises: a bug is answered 0xC000 "internal error" and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterator, Mapping

from pydicom.dataset import Dataset

from ..arrival import Arrival
from ..config import DicomDestination, Listener, WorklistDestination
from ..document import Document
from ..lang.ruleset import Decision, ResponseEditError
from .forwarded_find import ForwardedFindSummary, forward_find, unique_key_paths, value_at
from .journal import DestinationAnswer, Journal, NewRequest, RequestOutcome, RequestResult
from .queries import MODELS
from .rules import RulesHolder
from .statuses import QueryStatus, with_comment
from .worklist import WorklistFolder

log = logging.getLogger("rulesengine.find")

C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
MESSAGE = "C-FIND"
MODEL_OF_SOP_CLASS = {str(uid): model for model, uid in MODELS.items()}
LEVELS = {"patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"), "study": ("STUDY", "SERIES", "IMAGE")}

Response = tuple[int, Dataset | None]


class IdentifierError(Exception):
    """An identifier the router cannot query with, and why (answered 0xA900)."""


error_status = with_comment  # the name the query and retrieve services use


def decoded_identifier(event) -> Dataset:
    """The request's identifier, every value converted now: pydicom decodes lazily, and an
    element that cannot be decoded would otherwise fail in the middle of the rules."""
    try:
        identifier = event.identifier
        for element in identifier.iterall():
            element.value  # noqa: B018 - converts it
    except Exception as exc:  # pydicom raises many kinds for bytes it cannot decode
        raise IdentifierError(f"the identifier cannot be decoded: {type(exc).__name__}: {exc}") from None
    return identifier


def query_level(identifier: Dataset, model: str) -> str | None:
    """The identifier's QueryRetrieveLevel, checked against its model (None for a worklist)."""
    if model == "worklist":
        return None
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS[model]:
        raise IdentifierError(f"QueryRetrieveLevel {level or 'missing'!s} is not one of "
                              f"{', '.join(LEVELS[model])} ({model} root)")
    return level


def matching_keys(identifier: Dataset) -> dict[str, str]:
    """The identifier's non-empty keys, as text (a sequence's items: their own keys)."""
    keys: dict[str, str] = {}
    for element in identifier:
        if element.VR == "SQ":
            for item in element.value or ():
                for name, value in matching_keys(item).items():
                    keys[f"{element.keyword}.{name}"] = value
        elif element.value not in (None, "", b"") and element.keyword != "QueryRetrieveLevel":
            keys[element.keyword or str(element.tag)] = str(element.value)
    return keys


class FindService:
    """Answers C-FINDs for the listeners of one router. `handle(listener, event)` is the
    EVT_C_FIND handler (a generator of (status, identifier)); the worklist folders are kept
    here, one per destination, for the router's life."""

    def __init__(self, journal: Journal, rules: RulesHolder, clock: Callable[[], float] = time.monotonic):
        self.journal = journal
        self.rules = rules
        self.clock = clock
        self._folders: dict[tuple[str, str], WorklistFolder] = {}
        self._lock = threading.Lock()

    def folder(self, destination: WorklistDestination) -> WorklistFolder:
        with self._lock:
            key = (destination.name, destination.path)
            if key not in self._folders:
                self._folders[key] = WorklistFolder(destination.path)
            return self._folders[key]

    # ---- the handler ----

    def handle(self, listener: Listener, event) -> Iterator[Response]:
        """Never raises: whatever fails is a failure status, logged."""
        query = _Query(self, listener, event)
        try:
            yield from query.answer()
        except GeneratorExit:  # the association ended: pynetdicom stops asking for responses
            query.finish(RequestOutcome.CANCELLED, QueryStatus.CANCEL, "the association ended")
            raise
        except Exception:
            log.exception("listener %s: C-FIND from %s: internal error", listener.name, query.calling)
            query.finish(RequestOutcome.FAILED, QueryStatus.UNABLE_TO_PROCESS, "internal error of the router")
            yield error_status(QueryStatus.UNABLE_TO_PROCESS, "internal error of the router, see its log"), None
        finally:
            # pynetdicom sends the final status, then closes this generator: the requester has
            # its answer without waiting for the journal and the log.
            query.write_ending()


class _Query:
    """One C-FIND request, from its arrival to its final status."""

    def __init__(self, service: FindService, listener: Listener, event):
        self.service = service
        self.listener = listener
        self.event = event
        self.request_id: int | None = None
        self.finished = False
        self.ending: tuple | None = None  # (outcome, status, reason, note, seconds) until written
        self.started = service.clock()
        self.matches = 0
        self.answers: tuple[DestinationAnswer, ...] = ()
        self.calling = "?"
        self.arrival = Arrival(source_name=listener.name, source_kind="listener")
        self.sop_class = ""

    # ---- facts ----

    def _facts(self) -> None:
        event = self.event
        request = event.request
        self.sop_class = str(request.AffectedSOPClassUID or "")
        requestor = event.assoc.requestor
        called = getattr(requestor.primitive, "called_ae_title", None) or self.listener.ae_title
        self.calling = (requestor.ae_title or "").strip()
        self.arrival = Arrival(calling_aet=self.calling, called_aet=str(called).strip(),
                               peer_address=requestor.address, peer_port=requestor.port,
                               source_name=self.listener.name, source_kind="listener", sop_class_uid=self.sop_class,
                               received_at=time.time())

    def _command_set(self) -> Dataset:
        request = self.event.request
        command_set = Dataset()
        command_set.CommandField = C_FIND_RQ
        command_set.AffectedSOPClassUID = self.sop_class
        command_set.MessageID = int(request.MessageID or 0)
        command_set.Priority = int(request.Priority or 0)
        return command_set

    def _response_command_set(self) -> Dataset:
        command_set = Dataset()
        command_set.CommandField = C_FIND_RSP
        command_set.AffectedSOPClassUID = self.sop_class
        command_set.MessageIDBeingRespondedTo = int(self.event.request.MessageID or 0)
        command_set.Status = QueryStatus.PENDING
        return command_set

    # ---- the answer ----

    def answer(self) -> Iterator[Response]:
        self._facts()
        model = MODEL_OF_SOP_CLASS.get(self.sop_class)
        try:
            if model is None:  # negotiation accepts only the find SOP classes: a request on another one
                raise IdentifierError(f"SOP class {self.sop_class} is not a query model the router answers")
            identifier = decoded_identifier(self.event)
            level = query_level(identifier, model)
        except IdentifierError as exc:
            self._record(None, {})
            yield self._fail(RequestOutcome.FAILED, QueryStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        self._record(level, matching_keys(identifier))
        ruleset = self.service.rules.current
        document = Document(identifier, command_set=self._command_set(), arrival=self.arrival)
        decision = ruleset.evaluate(document, message=MESSAGE)
        if decision.error is not None or decision.outcome == "quarantine":
            reason = decision.reason or decision.error or "a rule failed"
            yield self._fail(RequestOutcome.FAILED, QueryStatus.UNABLE_TO_PROCESS, f"rule error: {reason}")
            return
        if decision.outcome == "reject":
            yield self._fail(RequestOutcome.REJECTED, QueryStatus.REJECTED_BY_RULES,
                             decision.reason or "rejected by the routing rules")
            return
        if decision.outcome == "drop" or not decision.destinations:
            self.finish(RequestOutcome.ANSWERED, QueryStatus.SUCCESS, None, note="dropped by the rules")
            yield QueryStatus.SUCCESS, None
            return
        yield from self._route(ruleset, decision, document.dataset, model)

    def _route(self, ruleset, decision: Decision, identifier: Dataset, model: str) -> Iterator[Response]:
        configured = self.service.rules.config.destinations
        cancel = threading.Event()
        dicom: list[DicomDestination] = []
        failures: dict[str, str] = {}
        local: list[tuple[str, list[Dataset]]] = []
        for name in decision.destinations:
            destination = configured.get(name)
            if isinstance(destination, DicomDestination):
                dicom.append(destination)
            elif isinstance(destination, WorklistDestination):
                if model != "worklist":
                    failures[name] = f"a worklist folder answers worklist queries, not {model} root ones"
                    continue
                try:
                    local.append((name, self.service.folder(destination).find(identifier)))
                except Exception as exc:  # noqa: BLE001 - one destination's failure, the others still answer
                    log.exception("worklist %s: query failed", name)
                    failures[name] = f"internal error: {type(exc).__name__}"
            else:
                failures[name] = "not a destination that answers C-FIND" if destination else "not configured"
        seen: set[tuple] = set()
        # Without partial results, nothing is answered until every destination has: a failure
        # fails the whole query, with no matches.
        partial = self.listener.partial_results
        held: list[Dataset] = []
        keys = unique_key_paths(identifier, model)
        answers: list[DestinationAnswer] = []
        summary: ForwardedFindSummary | None = None

        def kept(match: Dataset) -> Dataset | None:
            """The match as the requester gets it, None when it is a duplicate or a rule dropped it."""
            key = tuple(value_at(match, path) for path in keys)
            if keys and any(key):
                if key in seen:
                    return None
                seen.add(key)
            response = Document(match, command_set=self._response_command_set(), arrival=self.arrival)
            return response.dataset if ruleset.edit_response(decision, response) else None

        try:
            for name, found in local:
                answers.append(DestinationAnswer(name, QueryStatus.SUCCESS, len(found), None, 0.0))
                for match in found:
                    if self.event.is_cancelled:
                        break
                    response = kept(match)
                    if response is not None and partial:
                        self.matches += 1
                        yield QueryStatus.PENDING, response
                    elif response is not None:
                        held.append(response)
            if dicom and not self.event.is_cancelled:
                for item in forward_find(dicom, identifier, model, self.listener.timeouts.dimse, partial_results=partial,
                                         cancel=_CancelOf(self.event, cancel), clock=self.service.clock):
                    if isinstance(item, ForwardedFindSummary):
                        summary = item
                        break
                    if self.event.is_cancelled:  # matches already on their way: the requester wants no more
                        continue
                    response = kept(item)
                    if response is not None:
                        self.matches += 1
                        yield QueryStatus.PENDING, response
        except ResponseEditError as exc:
            cancel.set()
            self.answers = tuple(answers)
            yield self._fail(RequestOutcome.FAILED, QueryStatus.UNABLE_TO_PROCESS, f"rule error on a response: {exc}")
            return
        seconds = self.service.clock() - self.started
        if summary is not None:
            answers.extend(DestinationAnswer(r.destination, r.status, r.matches, r.failure, seconds)
                           for r in summary.results)
        answers.extend(DestinationAnswer(name, None, 0, why, 0.0) for name, why in failures.items())
        self.answers = tuple(answers)
        failed = [a for a in answers if a.error is not None]
        answered = [a for a in answers if a.error is None]
        if self.event.is_cancelled or (summary is not None and summary.cancelled):
            self.finish(RequestOutcome.CANCELLED, QueryStatus.CANCEL, None)
            yield QueryStatus.CANCEL, None
            return
        if failed:
            comment = "; ".join(f"{a.destination}: {_brief(a, summary)}" for a in failed)
            if not answered or not partial:
                yield self._fail(RequestOutcome.FAILED, QueryStatus.UNABLE_TO_PROCESS, comment)
                return
            self.finish(RequestOutcome.PARTIAL, QueryStatus.PARTIAL, comment)
            yield error_status(QueryStatus.PARTIAL, comment), None
            return
        for response in held:
            self.matches += 1
            yield QueryStatus.PENDING, response
        self.finish(RequestOutcome.ANSWERED, QueryStatus.SUCCESS, None)
        yield QueryStatus.SUCCESS, None

    # ---- journal and log ----

    def _record(self, level: str | None, keys: Mapping[str, str]) -> None:
        self.request_id = self.service.journal.record_request(NewRequest(MESSAGE, self.arrival, level, keys))

    def _fail(self, outcome: RequestOutcome, status: int, reason: str) -> Response:
        self.finish(outcome, status, reason)
        return error_status(status, reason), None

    def finish(self, outcome: RequestOutcome, status: int, reason: str | None, note: str | None = None) -> None:
        """How the request ended, once; written by write_ending, once the final status is on its way."""
        if self.finished:
            return
        self.finished = True
        self.ending = (outcome, status, reason, note, self.service.clock() - self.started)

    def write_ending(self) -> None:
        """Log and journal how the request ended."""
        if self.ending is None:
            return
        (outcome, status, reason, note, seconds), self.ending = self.ending, None
        destinations = ", ".join(f"{a.destination} {a.matches if a.error is None else 'failed'}"
                                 for a in self.answers)
        line = (f"listener {self.listener.name}: C-FIND from {self.calling} "
                f"({MODEL_OF_SOP_CLASS.get(self.sop_class, self.sop_class)}): {outcome}, status 0x{int(status):04X}, "
                f"{self.matches} match{'es' * (self.matches != 1)}"
                + (f" ({destinations})" if destinations else "") + (f", {note}" if note else "")
                + f" in {seconds:.3f} s" + (f": {reason}" if reason else ""))
        failure = outcome in (RequestOutcome.FAILED, RequestOutcome.PARTIAL, RequestOutcome.REJECTED)
        (log.warning if failure else log.info)("%s", line)
        if self.request_id is None:
            return
        try:
            self.service.journal.finish_request(self.request_id, RequestResult(
                outcome, int(status), self.answers, matches=self.matches, error=reason))
        except Exception:  # noqa: BLE001 - the requester still gets its answer
            log.exception("C-FIND request %s could not be finished in the journal", self.request_id)


def _brief(answer: DestinationAnswer, summary: ForwardedFindSummary | None) -> str:
    if summary is not None:
        for result in summary.results:
            if result.destination == answer.destination and result.brief:
                return result.brief
    return answer.error or "failed"


class _CancelOf:
    """The requester's C-CANCEL (read live from pynetdicom) or our own stop, as forward_find's
    `cancel` event reads it."""

    def __init__(self, event, stop: threading.Event):
        self.event = event
        self.stop = stop

    def is_set(self) -> bool:
        return self.stop.is_set() or bool(self.event.is_cancelled)

