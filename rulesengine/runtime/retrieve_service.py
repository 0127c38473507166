"""The C-MOVE and C-GET services of the listeners: the router retrieves for the requester.

A request becomes a document (its identifier, with its command set and the facts of its
association) and the C-MOVE or C-GET rules decide: `reject` answers a failure (0xC124)
with the reason in Error Comment; `route` names the sources, tried in order until one
answers (a source that cannot be reached before it sends anything hands over to the next).
The router retrieves from the source as that destination's `retrieve` setting says
(retrieval.py), and each instance, as it arrives, goes through the store rules with the
facts of its retrieval (`Source.Kind` "retrieve", `Retrieve.Requester`,
`Retrieve.MoveDestination`, `Retrieve.Message`) and is delivered, as those rules edited it,
to the move destination (a configured destination, by AE title or name), or back to a C-GET
requester on its own association. The other destinations the store rules name are not sent
to: a retrieval delivers to whom asked. An instance the rules reject, drop or quarantine is
a failed sub-operation, and the source keeps it.

The requester gets a pending response after each instance once the source has said how
many there are, then a final status: Success; 0xB000 with the failed SOP Instance UIDs when
some sub-operations failed (the source's own failures among them); 0xC000 with the reason
when the source failed before any instance; 0xFE00 after the requester's C-CANCEL (sent
on to the source); 0xA801 for a move destination the configuration does not know; 0xA900
for an identifier that cannot be decoded or names no level of its model. Every request is
recorded in the journal (`dicom-rules requests`), and every delivered instance too, as a
delivery of purpose "retrieve".

pynetdicom's own C-MOVE service needs the number of sub-operations and the move
destination's address before the first instance, and sends them itself over an association
of its own; a proxy learns the number from the source, and delivers through the router's
destinations (their TLS, transfer syntaxes, journal). So the listener hands C-MOVE and C-GET
requests here (listener.py), and the responses are sent here, on the requester's association,
as pynetdicom's service would send them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import replace
from io import BytesIO
from typing import Callable

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode

from ..arrival import Arrival
from ..config import DicomDestination, Listener
from ..document import Document, DocumentReadError
from ..lang.ruleset import ResponseEditError
from .destinations import ReturningSender
from .find_service import IdentifierError, error_status, matching_keys, query_level
from .journal import DestinationAnswer, Journal, NewRequest, RequestOutcome, RequestResult
from .pipeline import Pipeline
from .retrieval import (GET_MODELS, MOVE_MODELS, Progress, Retrieved, SourceFailed, SourceFinal, SourceRetrieval)
from .retrieval_exchange import RetrievalExchange, message_ids, process_of
from .rules import RulesHolder
from .statuses import RetrieveStatus, StoreStatus
from .sync_delivery import SyncDelivery

log = logging.getLogger("rulesengine.retrieve")

C_GET_RQ, C_GET_RSP, C_MOVE_RQ, C_MOVE_RSP = 0x0010, 0x8010, 0x0021, 0x8021
MODEL_OF_SOP_CLASS = {str(uid): model for table in (MOVE_MODELS, GET_MODELS) for model, uid in table.items()}
POLL_SECONDS = 0.05  # how often the requester's C-CANCEL is looked for while waiting on the source
CANCEL_GRACE_SECONDS = 1.0  # how long a cancelled retrieval waits for the source's 0xFE00
MAX_FAILED_UIDS = 1000  # listed in a final response; the counts say how many failed in all


class RetrieveService:
    """Answers C-MOVE and C-GET for the listeners of one router; see the module."""

    def __init__(self, journal: Journal, rules: RulesHolder, pipeline: Pipeline, delivery: SyncDelivery,
                 clock: Callable[[], float] = time.monotonic):
        self.journal = journal
        self.rules = rules
        self.pipeline = pipeline
        self.delivery = delivery
        self.clock = clock
        self.number = 0  # this receiving process's (0: the main one; see share)
        self.exchange: RetrievalExchange | None = None  # how it reaches the others (None: it is alone)
        self._lock = threading.Lock()
        self._message_ids = message_ids(0)
        self._moves: dict[tuple[str, int], SourceRetrieval] = {}  # C-MOVEs waiting for their instances

    def serve(self, listener: Listener, assoc, request, context_id: int) -> None:
        """Answer one C-MOVE or C-GET on the requester's association. Never raises."""
        retrieve = _Retrieve(self, listener, assoc, request, context_id)
        try:
            retrieve.answer()
        except Exception:  # noqa: BLE001 - a bug is a failure status, logged
            log.exception("listener %s: %s from %s: internal error", listener.name, retrieve.message,
                          retrieve.requester)
            retrieve.fail(RequestOutcome.FAILED, RetrieveStatus.UNABLE_TO_PROCESS,
                          "internal error of the router, see its log")

    def next_message_id(self) -> int:
        """This process's next one: which process made a C-MOVE is in its Message ID."""
        with self._lock:
            return next(self._message_ids)

    def share(self, exchange: RetrievalExchange) -> None:
        """Before the listeners start: this is receiving process `exchange.number` of several; it
        answers the others about instances for its C-MOVEs, and asks them about theirs."""
        with self._lock:
            self.number = exchange.number
            self.exchange = exchange
            self._message_ids = message_ids(exchange.number)
        exchange.start(self.claim_here, self.waiting_on)

    def stop_exchange(self) -> None:
        if self.exchange is not None:
            self.exchange.stop()

    # ---- instances a source stores to a listener for one of our C-MOVEs ----

    def expect(self, retrieval: SourceRetrieval) -> None:
        with self._lock:
            self._moves[(retrieval.move_destination, retrieval.message_id)] = retrieval

    def forget(self, retrieval: SourceRetrieval) -> None:
        with self._lock:
            self._moves.pop((retrieval.move_destination, retrieval.message_id), None)

    def claim(self, request, arrival: Arrival, path: str) -> Dataset | int | None:
        """A C-STORE a listener received: when a source sends it for one of our C-MOVEs (by its
        Move Originator AE title and Message ID; else, from that source's AE title, by the
        Message ID alone, as some sources name themselves the originator; for a source that
        names no originator, when one C-MOVE alone waits on that source), it is handed to that
        retrieval and its status returned. None: it is an ordinary instance. The C-MOVE may be
        another receiving process's (retrieval_exchange.py): its Message ID says whose."""
        calling = arrival.calling_aet
        originator = str(getattr(request, "MoveOriginatorApplicationEntityTitle", None) or "").strip()
        message_id = getattr(request, "MoveOriginatorMessageID", None)
        message_id = int(message_id) if message_id not in (None, "") else None
        if self.exchange is None:
            answer = self.claim_here(calling, originator, message_id, path)
        elif originator:
            answer = self.claim_here(calling, originator, message_id, path)
            owner = process_of(message_id)
            if answer is None and owner is not None and owner != self.number:
                answer = self.exchange.claim(owner, calling, originator, message_id, path)
        else:
            answer = self._claim_unnamed(calling, path)
        if answer is None and message_id is not None and self._for_our_move(calling, originator):
            # Sent for a C-MOVE of ours that no process waits on any more (cancelled, timed out, or its
            # receiving process killed): refused, not routed by the C-STORE rules as if a modality sent it.
            log.warning("C-STORE from %s for the C-MOVE %s %s made, which has ended: refused", calling, message_id,
                        originator)
            answer = StoreStatus.OUT_OF_RESOURCES, "the retrieval this instance is for has ended"
        if answer is None:
            return None
        status, comment = answer
        return error_status(status, comment) if comment else status

    def _for_our_move(self, calling: str, originator: str) -> bool:
        """Does a C-STORE name one of the router's C-MOVEs: from a source it retrieves from by
        C-MOVE, with the router's AE title for that source as its Move Originator?"""
        return bool(originator) and any(
            getattr(d, "retrieve", None) == "c-move" and getattr(d, "ae_title", None) == calling
            and getattr(d, "calling_ae_title", None) == originator for d in self.rules.config.destinations.values())

    def _claim_unnamed(self, calling: str, path: str) -> tuple[int, str | None] | None:
        """A C-STORE that names no Move Originator: for the one C-MOVE waiting on a source of
        its AE title in the whole node, if there is one. The other processes are asked only
        for a source's AE title: a modality's instances cost nothing more."""
        sources = {getattr(d, "ae_title", None) for d in self.rules.config.destinations.values()
                   if getattr(d, "retrieve", None) == "c-move"}
        if calling not in sources:
            return self.claim_here(calling, "", None, path)
        here = self.waiting_on(calling)
        elsewhere = self.exchange.count(calling)
        if here + sum(elsewhere.values()) != 1:
            return None
        if here:
            return self.claim_here(calling, "", None, path)
        [owner] = elsewhere
        return self.exchange.claim(owner, calling, "", None, path)

    def waiting_on(self, calling: str) -> int:
        """How many of this process's C-MOVEs wait on a source of AE title `calling`."""
        with self._lock:
            return sum(1 for r in self._moves.values() if r.destination.ae_title == calling)

    def claim_here(self, calling: str, originator: str, message_id: int | None,
                   path: str) -> tuple[int, str | None] | None:
        """claim() among this process's own C-MOVEs: (status, comment) when the instance is for
        one of them (it has a link of its own to the file then), None when it is not."""
        with self._lock:
            retrieval = self._moves.get((originator, message_id))
            if retrieval is None:
                waiting = [r for r in self._moves.values() if r.destination.ae_title == calling]
                if originator:
                    waiting = [r for r in waiting if r.message_id == message_id]
                retrieval = waiting[0] if len(waiting) == 1 else None
        if retrieval is None:
            return None
        target = self.pipeline.storage.temp_path()
        os.link(path, target)
        if not retrieval.hand_over(target):
            return StoreStatus.OUT_OF_RESOURCES, "the retrieval this instance is for has ended"
        return StoreStatus.SUCCESS, None


class _Retrieve:
    """One C-MOVE or C-GET request, from its arrival to its final response."""

    def __init__(self, service: RetrieveService, listener: Listener, assoc, request, context_id: int):
        self.service = service
        self.listener = listener
        self.assoc = assoc
        self.request = request
        self.context_id = context_id
        self.syntax = assoc._accepted_cx[context_id].transfer_syntax[0]
        self.message = "C-MOVE" if isinstance(request, C_MOVE) else "C-GET"
        self.sop_class = str(request.AffectedSOPClassUID or "")
        requestor = assoc.requestor
        self.requester = (requestor.ae_title or "").strip()
        called = getattr(requestor.primitive, "called_ae_title", None) or listener.ae_title
        self.arrival = Arrival(calling_aet=self.requester, called_aet=str(called).strip(),
                               peer_address=requestor.address, peer_port=requestor.port, source_name=listener.name,
                               source_kind="listener", sop_class_uid=self.sop_class, received_at=time.time())
        self.move_destination = str(getattr(request, "MoveDestination", None) or "").strip() \
            if self.message == "C-MOVE" else self.requester
        self.started = service.clock()
        self.request_id: int | None = None
        self.finished = False
        self.decision = None
        self.ruleset = None
        self.target: str | None = None  # the configured destination delivered to (C-MOVE)
        self.returning: ReturningSender | None = None  # the requester's association (C-GET)
        self.total: int | None = None  # sub-operations, once the source has said
        self.completed = self.failed = self.warning = 0
        self.source_failed = 0  # sub-operations the source itself failed
        self.failed_uids: list[str] = []
        self.answers: list[DestinationAnswer] = []
        self.cancelled = False
        self.broken_off: str | None = None  # the source that failed after sending some, and why
        self.last_pending: tuple[int, int, int, int] | None = None  # the counts of the last pending response

    # ---- the answer ----

    def answer(self) -> None:
        model = MODEL_OF_SOP_CLASS.get(self.sop_class)
        try:
            if model is None:
                raise IdentifierError(f"SOP class {self.sop_class} is not a retrieve model the router answers")
            identifier = self._identifier()
            level = query_level(identifier, model)
        except IdentifierError as exc:
            self._record(None, {})
            self.fail(RequestOutcome.FAILED, RetrieveStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc))
            return
        self._record(level, matching_keys(identifier))
        if self.message == "C-MOVE":
            self.target = self._move_target()
            if self.target is None:
                self.fail(RequestOutcome.FAILED, RetrieveStatus.MOVE_DESTINATION_UNKNOWN,
                          f"move destination {self.move_destination or '(none)'} is not a configured destination")
                return
        else:
            self.target = f"{self.requester or 'requester'} (C-GET)"
            self.returning = ReturningSender(self.assoc, self.target, self.requester,
                                             int(self.request.MessageID or 0))
        ruleset = self.service.rules.current
        document = Document(identifier, command_set=self._command_set(), arrival=self.arrival)
        decision = ruleset.evaluate(document, message=self.message)
        if decision.error is not None or decision.outcome == "quarantine":
            self.fail(RequestOutcome.FAILED, RetrieveStatus.UNABLE_TO_PROCESS,
                      f"rule error: {decision.reason or decision.error or 'a rule failed'}")
            return
        if decision.outcome != "route":
            self.fail(RequestOutcome.REJECTED, RetrieveStatus.REJECTED_BY_RULES,
                      decision.reason or "rejected by the routing rules")
            return
        self.decision, self.ruleset = decision, ruleset
        configured = self.service.rules.config.destinations
        sources, unusable = [], []
        for name in decision.destinations:
            destination = configured.get(name)
            if isinstance(destination, DicomDestination):
                sources.append(destination)
            else:
                kind = f"a {destination.type} destination" if destination is not None else "not configured"
                unusable.append(f"{name}: cannot be retrieved from ({kind})")
                self.answers.append(DestinationAnswer(name, None, 0, f"cannot be retrieved from ({kind})"))
        reasons = list(unusable)
        for source in sources:
            why = self._retrieve_from(source, document.dataset, model)
            if why is None or self.cancelled:
                break
            if self.total is not None or self.completed or self.failed:
                self.broken_off = f"{source.name}: {why}"  # it failed part-way: no other source takes over
                break
            reasons.append(f"{source.name}: {why}")
        else:
            if not self.finished:
                self.fail(RequestOutcome.FAILED, RetrieveStatus.UNABLE_TO_PROCESS,
                          "; ".join(reasons) or "no source to retrieve from")
            return
        self._final()

    def _identifier(self) -> Dataset:
        """The request's identifier, every value converted now (pydicom decodes lazily)."""
        syntax = self.syntax
        try:
            identifier = decode(self.request.Identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                                syntax.is_deflated)
            for element in identifier.iterall():
                element.value  # noqa: B018 - converts it
        except Exception as exc:  # pydicom raises many kinds for bytes it cannot decode
            raise IdentifierError(f"the identifier cannot be decoded: {type(exc).__name__}: {exc}") from None
        return identifier

    def _move_target(self) -> str | None:
        """The configured destination a C-MOVE's instances go to: the dicom destination with
        that AE title (the first in the configuration), else the destination of that name."""
        destinations = self.service.rules.config.destinations
        wanted = self.move_destination
        for name, destination in destinations.items():
            if isinstance(destination, DicomDestination) and destination.ae_title == wanted:
                return name
        destination = destinations.get(wanted)
        if destination is not None and destination.type in ("dicom", "folder"):
            return wanted
        return None

    def _command_set(self) -> Dataset:
        command_set = Dataset()
        command_set.CommandField = C_MOVE_RQ if self.message == "C-MOVE" else C_GET_RQ
        command_set.AffectedSOPClassUID = self.sop_class
        command_set.MessageID = int(self.request.MessageID or 0)
        command_set.Priority = int(self.request.Priority or 0)
        if self.message == "C-MOVE":
            command_set.MoveDestination = self.move_destination
        return command_set

    # ---- the retrieval from one source ----

    def _retrieve_from(self, source: DicomDestination, identifier: Dataset, model: str) -> str | None:
        """Retrieve from `source`, delivering as instances come; None when the source gave a
        final status, else why it did not."""
        service = self.service
        retrieval = SourceRetrieval(source, identifier, model, service.next_message_id(),
                                    service.pipeline.storage.temp_path)
        if retrieval.how == "c-move":
            service.expect(retrieval)
        started = service.clock()
        timeout = source.timeouts.dimse
        last = started
        cancel_by: float | None = None
        final: SourceFinal | None = None
        failure: SourceFailed | None = None
        retrieval.start()
        try:
            while True:
                now = service.clock()
                if cancel_by is None and self._cancel_requested():
                    self.cancelled = True
                    if not retrieval.cancel():
                        break
                    cancel_by = now + CANCEL_GRACE_SECONDS
                if cancel_by is not None and now >= cancel_by:
                    break
                if cancel_by is None and now - last >= timeout:
                    failure = SourceFailed(f"{source.name} sent nothing for {timeout:g} s", f"no answer within "
                                           f"{timeout:g} s")
                    break
                try:
                    event = retrieval.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                last = service.clock()
                if isinstance(event, Retrieved):
                    if self.cancelled:
                        service.pipeline.storage.remove(event.path)
                        continue
                    self._deliver(event.path, source)
                    self._pending()
                elif isinstance(event, Progress):
                    if event.remaining is not None:
                        self.total = max(self.total or 0, event.remaining + event.completed + event.failed
                                         + event.warning)
                    self.source_failed = event.failed
                    self._pending()
                elif isinstance(event, SourceFinal):
                    final = event
                    break
                elif isinstance(event, SourceFailed):
                    failure = event
                    break
        finally:
            service.forget(retrieval)
            if final is None:
                retrieval.stop()
            self._discard(retrieval)
        seconds = service.clock() - started
        if final is not None:
            self.source_failed = final.failed
            self.failed_uids.extend(uid for uid in final.failed_uids if uid not in self.failed_uids)
            error = None if final.status in (0, 0xFE00, 0xB000) or final.status >> 12 == 0xB else \
                f"status 0x{final.status:04X}" + (f" {final.comment}" if final.comment else "")
            if final.status == RetrieveStatus.MOVE_DESTINATION_UNKNOWN and retrieval.how == "c-move":
                error += f" (it does not know {retrieval.move_destination}: declare the router there)"
            self.answers.append(DestinationAnswer(source.name, final.status, self.completed, error, seconds))
            if error is not None and not (self.completed or self.failed):
                return error
            return None
        if failure is not None:
            log.warning("listener %s: %s from %s: source %s: %s", self.listener.name, self.message, self.requester,
                        source.name, failure.full)
            self.answers.append(DestinationAnswer(source.name, None, self.completed, failure.brief, seconds))
            return failure.brief
        self.answers.append(DestinationAnswer(source.name, None, self.completed, "cancelled", seconds))
        return "cancelled"

    def _cancel_requested(self) -> bool:
        return self.assoc.dimse.cancel_req.pop(int(self.request.MessageID or 0), None) is not None \
            or not self.assoc.is_established

    def _discard(self, retrieval: SourceRetrieval) -> None:
        """Instances still queued when the retrieval ended: removed (the source keeps them)."""
        while True:
            try:
                event = retrieval.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, Retrieved):
                self.service.pipeline.storage.remove(event.path)

    def _deliver(self, path: str, source: DicomDestination) -> None:
        """One retrieved instance: the store rules, then the move destination (or the requester)."""
        service = self.service
        arrival = replace(self.arrival, source_name=source.name, source_kind="retrieve",
                          retrieve_requester=self.requester, move_destination=self.move_destination,
                          retrieve_message=self.message, sop_class_uid=None,
                          received_at=None)  # the instance's own arrival time, from the pipeline's clock
        try:
            document, decision, ruleset = service.pipeline.decide(path, arrival)
        except DocumentReadError as exc:
            service.pipeline.storage.remove(path)
            self._sub_operation_failed(None, f"unreadable instance from {source.name}: {exc}")
            return
        uid = str(document.get("DataSet.SOPInstanceUID") or "")
        if decision.error is not None or (decision.outcome != "route" and not decision.unrouted):
            service.pipeline.storage.remove(path)
            why = decision.reason or decision.error or decision.outcome
            self._sub_operation_failed(uid, f"{uid}: not delivered, {decision.outcome} by the rules: {why}")
            return
        copy = decision.destinations.get(self.target, document)
        routed = replace(decision, outcome="route", reason=None, destinations={self.target: copy})
        senders = {self.target: self.returning} if self.returning is not None else None
        originator = (self.requester, int(self.request.MessageID or 0)) if self.message == "C-MOVE" else None
        delivered, detail = service.delivery.deliver(path, document, routed, ruleset, purpose="retrieve",
                                                     senders=senders, originator=originator)
        if delivered:
            self.completed += 1
        else:
            self._sub_operation_failed(uid, detail)

    def _sub_operation_failed(self, uid: str | None, why: str) -> None:
        self.failed += 1
        if uid and len(self.failed_uids) < MAX_FAILED_UIDS:
            self.failed_uids.append(uid)
        log.warning("listener %s: %s from %s for %s: sub-operation failed: %s", self.listener.name, self.message,
                    self.requester, self.move_destination, why)

    # ---- responses ----

    def _pending(self) -> None:
        if self.total is None or self.cancelled:
            return
        remaining = max(self.total - self.completed - self.failed - self.source_failed - self.warning, 0)
        # The source's pending response for an instance follows the instance: the counts are
        # those already sent, and the requester is not told them twice.
        counts = (remaining, self.completed, self.failed + self.source_failed, self.warning)
        if counts == self.last_pending:
            return
        self.last_pending = counts
        self._respond(RetrieveStatus.PENDING, remaining=remaining)

    def _final(self) -> None:
        if self.cancelled:
            remaining = max((self.total or 0) - self.completed - self.failed - self.source_failed - self.warning, 0)
            self._finish(RequestOutcome.CANCELLED, RetrieveStatus.CANCEL, None)
            self._respond(RetrieveStatus.CANCEL, remaining=remaining, failed_uids=True)
            return
        # Sub-operations the source announced and never finished (it went silent, broke off or
        # ended early) failed: the requester must not read a success for instances it never got.
        self.source_failed += max((self.total or 0) - self.completed - self.failed - self.source_failed
                                  - self.warning, 0)
        failed = self.failed + self.source_failed
        if failed or self.warning or self.broken_off:
            comment = f"{failed} of {self.completed + failed + self.warning} sub-operations failed"
            if self.broken_off:
                comment += f"; {self.broken_off}"
            self._finish(RequestOutcome.PARTIAL, RetrieveStatus.SUBOPERATIONS_FAILED, comment)
            self._respond(RetrieveStatus.SUBOPERATIONS_FAILED, failed_uids=True, comment=comment)
            return
        self._finish(RequestOutcome.ANSWERED, RetrieveStatus.SUCCESS, None)
        self._respond(RetrieveStatus.SUCCESS)

    def fail(self, outcome: RequestOutcome, status: int, reason: str) -> None:
        """A final failure, before or instead of the sub-operations."""
        if self.finished:
            return
        self._finish(outcome, status, reason)
        self._respond(status, comment=reason, counts=bool(self.total is not None or self.completed or self.failed))

    def _respond(self, status: int, remaining: int | None = None, failed_uids: bool = False,
                 comment: str | None = None, counts: bool = True) -> None:
        if not self.assoc.is_established:
            return
        response = C_MOVE() if self.message == "C-MOVE" else C_GET()
        response.MessageIDBeingRespondedTo = self.request.MessageID
        response.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        response.Status = int(status)
        if comment:
            response.ErrorComment = error_status(status, comment).ErrorComment
        if (counts and status != RetrieveStatus.PENDING) or remaining is not None:
            response.NumberOfRemainingSuboperations = remaining
            response.NumberOfCompletedSuboperations = self.completed
            response.NumberOfFailedSuboperations = self.failed + self.source_failed
            response.NumberOfWarningSuboperations = self.warning
        identifier = Dataset()
        if failed_uids and self.failed_uids:
            identifier.FailedSOPInstanceUIDList = list(self.failed_uids)
        identifier = self._edited(status, response, identifier)
        if identifier is False:
            return
        if identifier is not None and len(identifier):
            syntax = self.syntax
            response.Identifier = BytesIO(encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian,
                                                 syntax.is_deflated))
        self.assoc.dimse.send_msg(response, self.context_id)

    def _edited(self, status: int, response, identifier: Dataset):
        """The response's identifier after the rules' `on response` edits; False when a rule
        dropped a pending response (a final one is sent all the same)."""
        if self.decision is None or not self.decision.response_edits:
            return identifier
        command_set = Dataset()
        command_set.CommandField = C_MOVE_RSP if self.message == "C-MOVE" else C_GET_RSP
        command_set.AffectedSOPClassUID = self.sop_class
        command_set.MessageIDBeingRespondedTo = int(self.request.MessageID or 0)
        command_set.Status = int(status)
        for keyword in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                        "NumberOfFailedSuboperations", "NumberOfWarningSuboperations"):
            value = getattr(response, keyword, None)
            if value is not None:
                setattr(command_set, keyword, int(value))
        document = Document(identifier, command_set=command_set, arrival=self.arrival)
        try:
            kept = self.ruleset.edit_response(self.decision, document)
        except ResponseEditError as exc:
            log.warning("listener %s: %s from %s: rule error on a response: %s", self.listener.name, self.message,
                        self.requester, exc)
            return identifier
        if not kept and status == RetrieveStatus.PENDING:
            return False
        return document.dataset

    # ---- journal and log ----

    def _record(self, level: str | None, keys) -> None:
        self.request_id = self.service.journal.record_request(
            NewRequest(self.message, self.arrival, level, keys, move_destination=self.move_destination or None))

    def _finish(self, outcome: RequestOutcome, status: int, reason: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        failed = self.failed + self.source_failed
        sources = ", ".join(f"{a.destination} {'failed' if a.error else a.status}" for a in self.answers)
        line = (f"listener {self.listener.name}: {self.message} from {self.requester}"
                + (f" to {self.move_destination}" if self.message == "C-MOVE" else "")
                + f": {outcome}, status 0x{int(status):04X}, {self.completed} completed, {failed} failed"
                + (f" ({sources})" if sources else "")
                + f" in {self.service.clock() - self.started:.3f} s" + (f": {reason}" if reason else ""))
        failure = outcome in (RequestOutcome.FAILED, RequestOutcome.PARTIAL, RequestOutcome.REJECTED)
        (log.warning if failure else log.info)("%s", line)
        if self.request_id is None:
            return
        try:
            self.service.journal.finish_request(self.request_id, RequestResult(
                outcome, int(status), tuple(self.answers), completed=self.completed, failed=failed,
                warning=self.warning, error=reason))
        except Exception:  # noqa: BLE001 - the requester still gets its answer
            log.exception("%s request %s could not be finished in the journal", self.message, self.request_id)
