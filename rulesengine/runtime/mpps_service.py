"""The MPPS relay of the listeners: N-CREATE and N-SET of Modality Performed Procedure Step,
answered through the rules by the system that records them (a RIS).

A request becomes a document: its data set (the N-CREATE's attribute list, the N-SET's
modification list) with its command set (CommandField, the Affected or Requested SOP Class
and Instance UIDs, MessageID) and the facts of its association; the N-CREATE or N-SET rules
decide. `reject`, or no rule routing the request, answers 0x0124 (Refused: Not authorized)
with the reason in Error Comment; a rule that fails answers 0x0110 (Processing failure)
"rule error: ...". `route` sends the edited data set to every routed `dicom` destination at
once, each over an association of its own, as the router's client: an N-CREATE with the
same Affected SOP Instance UID (one the router makes when the modality leaves it to the
SCP, so that every destination and the modality know the step by one UID), an N-SET with
the same Requested SOP Instance UID.

The answer: when every destination succeeded (Success or a warning), the first routed
destination's status and attribute list, through the rules' `on response` edits (a response
they drop is answered with the status alone, with no attribute list). Otherwise a failure
whose Error Comment names each failed destination and why; its status is the first failed
destination's: the failure status it answered, passed back as it is; 0x0213 (Resource
limitation: the modality may try again later) when it could not be reached or did not
answer in time; 0x0110 when it does not offer MPPS, is not a `dicom` destination, or the
request cannot be encoded for it. The destinations
that succeeded keep what they got. A data set that cannot be decoded is answered 0x0106
(Invalid attribute value) before the rules run.

The listener's thread is never held beyond the listener's `timeouts.dimse`, whatever the
destinations do: each is asked on a thread of its own, and what has not answered by then
is aborted and counted as silent. Every request is recorded in the journal (`dicom-rules
requests`) and logged in one line. The handler never raises: a bug is answered 0x0110
"internal error of the router, see its log", and logged with its traceback.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.presentation import build_context
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from ..arrival import Arrival
from ..config import DicomDestination, Listener
from ..document import Document
from ..lang.ruleset import ResponseEditError
from .associations import (NO_CONTEXT, AssociationFailed, abort_in_background, client_ae, close_connection, request,
                           unanswered)
from .find_service import error_status
from .journal import DestinationAnswer, Journal, NewRequest, RequestOutcome, RequestResult
from .negotiation import MPPS_SOP_CLASS
from .pynetdicom_setup import tune_connection
from .queries import bounded
from .rules import RulesHolder
from .statuses import MppsStatus

log = logging.getLogger("rulesengine.mpps")

N_CREATE = "N-CREATE"
N_SET = "N-SET"
COMMAND_FIELDS = {N_CREATE: (0x0140, 0x8140), N_SET: (0x0120, 0x8120)}  # request, response
MESSAGE_ID = 1
POLL_SECONDS = 0.05  # how often the waiting listener thread looks at its clock

Answer = tuple[Dataset, Dataset | None]  # the status (with its Error Comment), the attribute list


class RequestError(Exception):
    """A request the router cannot relay, with the status that says why."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Relayed:
    """How one destination answered the relayed request."""

    destination: str
    status: int | None = None  # its status; None when it gave none
    attributes: Dataset | None = None  # its attribute list (Success or a warning)
    comment: str | None = None  # its Error Comment
    failure: str | None = None  # why it failed, in full (after its name), for the log; None when it succeeded
    brief: str | None = None  # the same in a few words, for the Error Comment
    seconds: float = 0.0
    unreachable: bool = False  # not reached, silent or aborted: it may work later

    @property
    def ok(self) -> bool:
        return self.failure is None


# ---- the client side: one destination ----------------------------------------------------------


class _Exchange(threading.Thread):
    """The association with one destination and its N-CREATE or N-SET, on a thread of its own;
    its outcome is put on `results` as (its index, Relayed)."""

    def __init__(self, index: int, destination: DicomDestination, message: str, instance_uid: str,
                 dataset: Dataset, results: queue.Queue, clock: Callable[[], float]):
        super().__init__(name=f"mpps-{destination.name}", daemon=True)
        self.index = index  # its place among the destinations asked
        self.destination = destination
        self.message = message
        self.instance_uid = instance_uid
        self.dataset = dataset
        self.results = results
        self.clock = clock
        self.started = clock()
        self.lock = threading.Lock()
        self.assoc = None
        self.connected = False
        self.sent = False
        self.stopped = False

    def stop(self) -> None:
        """The listener stopped waiting: abort the association on a thread of its own (an abort
        waits for pynetdicom's state machine, which a silent peer can hold)."""
        with self.lock:
            self.stopped = True
            assoc = self.assoc
        if assoc is not None and self.is_alive():
            abort_in_background(assoc, f"abort-{self.destination.name}")

    def _opened(self, event) -> None:
        tune_connection(event)
        with self.lock:
            self.assoc, self.connected = event.assoc, True
            stopped = self.stopped
        if stopped:
            event.assoc.abort(block=False)

    def _put(self, **fields) -> None:
        self.results.put((self.index, Relayed(self.destination.name, seconds=self.clock() - self.started, **fields)))

    def _failed(self, full: str, brief: str, status: int | None = None, comment: str | None = None,
                unreachable: bool = False) -> None:
        self._put(status=status, comment=comment, failure=full, brief=brief, unreachable=unreachable)

    def run(self) -> None:
        destination = self.destination
        try:
            contexts = [build_context(MPPS_SOP_CLASS, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
            try:
                assoc, watch = request(client_ae(destination), destination, contexts,
                                       [(evt.EVT_CONN_OPEN, self._opened)])
            except AssociationFailed as failure:
                if failure.kind == NO_CONTEXT:
                    self._failed(f"{failure}: it does not offer MPPS", "MPPS not offered")
                else:
                    why = str(failure).split(" not established: ", 1)[-1]
                    self._failed(str(failure), why.split(" (")[0], unreachable=True)
                return
            except (OSError, ssl.SSLError) as exc:  # the TLS settings' files
                self._failed(f"cannot set up TLS for {destination.name}: {exc}", "TLS settings")
                return
            try:
                self._send(assoc, watch)
            finally:
                if assoc.is_established:
                    assoc.release()
                close_connection(assoc)
        except Exception as exc:  # noqa: BLE001 - the listener gets an answer whatever happens here
            log.exception("MPPS %s to %s: internal error", self.message, destination.name)
            self._failed(f"internal error of the router: {type(exc).__name__}: {exc}", "internal error")

    def _send(self, assoc, watch) -> None:
        with self.lock:
            if self.stopped:
                return
            self.sent = True
        try:
            if self.message == N_CREATE:
                status, attributes = assoc.send_n_create(self.dataset, MPPS_SOP_CLASS, self.instance_uid,
                                                         msg_id=MESSAGE_ID)
            else:
                status, attributes = assoc.send_n_set(self.dataset, MPPS_SOP_CLASS, self.instance_uid,
                                                      msg_id=MESSAGE_ID)
        except (ValueError, TypeError) as exc:  # a data set that cannot be encoded
            self._failed(f"the {self.message} cannot be sent: {exc}", "cannot encode")
            return
        if not status or "Status" not in status:
            if not self.stopped:
                why = unanswered(assoc, watch, self.destination.timeouts.dimse, f"waiting for the {self.message}'s "
                                 "answer", f"the {self.message}")
                self._failed(why, why.split(" while ")[0], unreachable=True)
            return
        code = int(status.Status)
        comment = str(status.get("ErrorComment") or "").strip() or None
        if code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING):
            try:
                for element in (attributes or Dataset()).iterall():
                    element.value  # noqa: B018 - converted now, not in the middle of the rules
            except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for bytes it cannot decode
                self._failed(f"its answer cannot be decoded: {type(exc).__name__}: {exc}",
                             "answer cannot be decoded", MppsStatus.PROCESSING_FAILURE)
                return
            self._put(status=code, attributes=attributes, comment=comment)
            return
        said = f"0x{code:04X}" + (f" ({comment})" if comment else "")
        self._failed(f"answered the {self.message} with {said}",
                     f"status 0x{code:04X}" + (f" {comment}" if comment else ""), code, comment)


def relay(destinations: Sequence[DicomDestination], message: str, instance_uid: str, dataset: Dataset,
          timeout: float, clock: Callable[[], float] = time.monotonic) -> list[Relayed]:
    """Send `message` (N-CREATE or N-SET) of MPPS instance `instance_uid` with `dataset` to every
    destination at once; their answers in the order of `destinations`. Returns within `timeout`
    seconds (by `clock`): a destination that has not answered by then is aborted and failed."""
    results: queue.Queue = queue.Queue()
    exchanges = [_Exchange(index, bounded(destination, timeout), message, instance_uid, dataset, results, clock)
                 for index, destination in enumerate(destinations)]
    deadline = clock() + timeout
    answered: dict[int, Relayed] = {}
    for exchange in exchanges:
        exchange.start()
    while len(answered) < len(exchanges) and clock() < deadline:
        try:
            index, result = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        answered[index] = result
    for exchange in exchanges:
        if exchange.index not in answered:
            exchange.stop()
            answered[exchange.index] = _silent(exchange, timeout)
    return [answered[index] for index in range(len(exchanges))]


def _silent(exchange: _Exchange, timeout: float) -> Relayed:
    destination = exchange.destination
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if not exchange.connected:
        full = f"association with {where} not established: no connection within {timeout:g} s"
    elif not exchange.sent:
        full = f"association with {where} not established: no answer within {timeout:g} s"
    else:
        full = f"no answer to the {exchange.message} within {timeout:g} s"
    return Relayed(destination.name, failure=full, brief=f"no answer within {timeout:g} s", seconds=timeout,
                   unreachable=True)


# ---- the listener side ---------------------------------------------------------------------------


class MppsService:
    """Answers N-CREATE and N-SET for the listeners of one router: `handle(listener, message,
    event)` is the EVT_N_CREATE or EVT_N_SET handler, returning (status, attribute list)."""

    def __init__(self, journal: Journal, rules: RulesHolder, clock: Callable[[], float] = time.monotonic):
        self.journal = journal
        self.rules = rules
        self.clock = clock

    def handle(self, listener: Listener, message: str, event) -> Answer:
        """Never raises: whatever fails is a failure status, logged."""
        step = _Step(self, listener, message, event)
        try:
            return step.answer()
        except Exception:
            log.exception("listener %s: %s from %s: internal error", listener.name, message, step.calling)
            return step.fail(RequestOutcome.FAILED, MppsStatus.PROCESSING_FAILURE,
                             "internal error of the router, see its log")


class _Step:
    """One N-CREATE or N-SET, from its arrival to its answer."""

    def __init__(self, service: MppsService, listener: Listener, message: str, event):
        self.service = service
        self.listener = listener
        self.message = message
        self.event = event
        self.started = service.clock()
        self.request_id: int | None = None
        self.finished = False
        self.answers: tuple[DestinationAnswer, ...] = ()
        self.failures: list[str] = []  # each failed destination and its reason in full, for the log
        self.calling = "?"
        self.sop_class = ""
        self.instance_uid = ""
        self.assigned_uid = False  # the modality left the N-CREATE's UID to the SCP: the router made one
        self.arrival = Arrival(source_name=listener.name, source_kind="listener")

    # ---- facts ----

    def _facts(self) -> None:
        request = self.event.request
        if self.message == N_CREATE:
            self.sop_class = str(request.AffectedSOPClassUID or "")
            self.instance_uid = str(request.AffectedSOPInstanceUID or "")
            if not self.instance_uid:
                self.instance_uid, self.assigned_uid = generate_uid(), True
        else:
            self.sop_class = str(request.RequestedSOPClassUID or "")
            self.instance_uid = str(request.RequestedSOPInstanceUID or "")
        requestor = self.event.assoc.requestor
        called = getattr(requestor.primitive, "called_ae_title", None) or self.listener.ae_title
        self.calling = (requestor.ae_title or "").strip()
        self.arrival = Arrival(calling_aet=self.calling, called_aet=str(called).strip(),
                               peer_address=requestor.address, peer_port=requestor.port,
                               source_name=self.listener.name, source_kind="listener",
                               sop_class_uid=self.sop_class, sop_instance_uid=self.instance_uid,
                               received_at=time.time())

    def _command_set(self) -> Dataset:
        command_set = Dataset()
        command_set.CommandField = COMMAND_FIELDS[self.message][0]
        if self.message == N_CREATE:
            command_set.AffectedSOPClassUID = self.sop_class
            command_set.AffectedSOPInstanceUID = self.instance_uid
        else:
            command_set.RequestedSOPClassUID = self.sop_class
            command_set.RequestedSOPInstanceUID = self.instance_uid
        command_set.MessageID = int(self.event.request.MessageID or 0)
        return command_set

    def _response_command_set(self, status: int) -> Dataset:
        command_set = Dataset()
        command_set.CommandField = COMMAND_FIELDS[self.message][1]
        command_set.AffectedSOPClassUID = self.sop_class
        command_set.AffectedSOPInstanceUID = self.instance_uid
        command_set.MessageIDBeingRespondedTo = int(self.event.request.MessageID or 0)
        command_set.Status = int(status)
        return command_set

    def _dataset(self) -> Dataset:
        """The request's data set, every value converted now: pydicom decodes lazily, and an
        element that cannot be decoded would otherwise fail in the middle of the rules."""
        try:
            dataset = self.event.attribute_list if self.message == N_CREATE else self.event.modification_list
            for element in dataset.iterall():
                element.value  # noqa: B018 - converts it
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for bytes it cannot decode
            raise RequestError(MppsStatus.INVALID_ATTRIBUTE_VALUE,
                               f"the data set cannot be decoded: {type(exc).__name__}: {exc}") from None
        return dataset

    # ---- the answer ----

    def answer(self) -> Answer:
        self._facts()
        keys = {"SOPInstanceUID": self.instance_uid} if self.instance_uid else {}
        try:
            if self.sop_class != MPPS_SOP_CLASS:  # negotiation accepts only MPPS: a request naming another class
                raise RequestError(MppsStatus.NO_SUCH_SOP_CLASS,
                                   f"SOP class {self.sop_class} is not MPPS, which the router relays")
            if not self.instance_uid:
                raise RequestError(MppsStatus.PROCESSING_FAILURE, "the N-SET names no SOP instance")
            dataset = self._dataset()
        except RequestError as exc:
            self._record(keys)
            return self.fail(RequestOutcome.FAILED, exc.status, str(exc))
        status = str(dataset.get("PerformedProcedureStepStatus", "") or "").strip()
        self._record({**keys, "PerformedProcedureStepStatus": status} if status else keys)
        ruleset = self.service.rules.current
        document = Document(dataset, command_set=self._command_set(), arrival=self.arrival)
        decision = ruleset.evaluate(document, message=self.message)
        if decision.error is not None or decision.outcome == "quarantine":
            reason = decision.reason or decision.error or "a rule failed"
            return self.fail(RequestOutcome.FAILED, MppsStatus.PROCESSING_FAILURE, f"rule error: {reason}")
        if decision.outcome != "route":  # reject; drop is an error of the rules for MPPS
            return self.fail(RequestOutcome.REJECTED, MppsStatus.REFUSED_BY_RULES,
                             decision.reason or "rejected by the routing rules")
        configured = self.service.rules.config.destinations
        dicom: dict[str, DicomDestination] = {}
        unable: dict[str, Relayed] = {}
        for name in decision.destinations:
            destination = configured.get(name)
            if isinstance(destination, DicomDestination):
                dicom[name] = destination
            else:
                why = f"cannot answer {self.message}: not a dicom destination" if destination else "not configured"
                unable[name] = Relayed(name, failure=why, brief=why)
        relayed = dict(zip(dicom, relay(list(dicom.values()), self.message, self.instance_uid, document.dataset,
                                        self.listener.timeouts.dimse, self.service.clock)))
        results = [relayed.get(name) or unable[name] for name in decision.destinations]
        self.answers = tuple(DestinationAnswer(r.destination, r.status, 0, r.failure, r.seconds) for r in results)
        failed = [r for r in results if not r.ok]
        if failed:
            self.failures = [f"{r.destination}: {r.failure}" for r in failed]
            first = failed[0]
            code = first.status if first.status is not None else \
                MppsStatus.RESOURCE_LIMITATION if first.unreachable else MppsStatus.PROCESSING_FAILURE
            outcome = RequestOutcome.PARTIAL if len(failed) < len(results) else RequestOutcome.FAILED
            return self.fail(outcome, code, "; ".join(f"{r.destination}: {r.brief}" for r in failed))
        first = results[0]
        attributes = first.attributes if first.attributes is not None else Dataset()
        response = Document(attributes, command_set=self._response_command_set(first.status), arrival=self.arrival)
        try:
            kept = ruleset.edit_response(decision, response)
        except ResponseEditError as exc:
            return self.fail(RequestOutcome.FAILED, MppsStatus.PROCESSING_FAILURE, f"rule error on the response: {exc}")
        attributes = response.dataset if kept else None
        if self.assigned_uid:  # pynetdicom answers it in the command set, taken from the attribute list
            attributes = attributes if attributes is not None else Dataset()
            attributes.AffectedSOPInstanceUID = self.instance_uid
        self.finish(RequestOutcome.ANSWERED, first.status, None, note=None if kept else "response dropped by the rules")
        status = Dataset()
        status.Status = first.status
        if first.comment:
            status.ErrorComment = first.comment
        return status, attributes or None

    # ---- journal and log ----

    def _record(self, keys: dict[str, str]) -> None:
        self.request_id = self.service.journal.record_request(NewRequest(self.message, self.arrival, None, keys))

    def fail(self, outcome: RequestOutcome, status: int, reason: str) -> Answer:
        self.finish(outcome, status, reason)
        return error_status(status, reason), None

    def finish(self, outcome: RequestOutcome, status: int, reason: str | None, note: str | None = None) -> None:
        """Journal and log how the request ended, once."""
        if self.finished:
            return
        self.finished = True
        destinations = ", ".join(f"{a.destination} " + (f"0x{a.status:04X}" if a.status is not None else "failed")
                                 for a in self.answers)
        line = (f"listener {self.listener.name}: {self.message} from {self.calling} (MPPS {self.instance_uid or '?'}): "
                f"{outcome}, status 0x{int(status):04X}" + (f" ({destinations})" if destinations else "")
                + (f", {note}" if note else "") + f" in {self.service.clock() - self.started:.3f} s"
                + (f": {'; '.join(self.failures) or reason}" if reason else ""))
        failure = outcome in (RequestOutcome.FAILED, RequestOutcome.PARTIAL, RequestOutcome.REJECTED)
        (log.warning if failure else log.info)("%s", line)
        if self.request_id is None:
            return
        try:
            self.service.journal.finish_request(self.request_id, RequestResult(outcome, int(status), self.answers,
                                                                               error=reason))
        except Exception:  # noqa: BLE001 - the modality still gets its answer
            log.exception("%s request %s could not be finished in the journal", self.message, self.request_id)
