"""C-FIND as a client of a configured DICOM destination (a PACS, a worklist provider).

`find()` yields each match (a pydicom Dataset) as it arrives, then one FindResult, always
last. Whatever the destination does (unreachable, rejecting, aborting, silent, a failure
status) ends in that FindResult, with the reason in full and in a few words; nothing is
raised for it. The caller is never held beyond `timeout` seconds, counted from the call, by
`clock`: pynetdicom talks to the peer on a thread of its own, and the caller waits for
what it hands over in short slices (woken at once by each answer), so that a silent peer, a
full network buffer or a connection that never completes cannot hold it. What the peer said
in time is taken even by a caller that comes back late. Setting `cancel` sends a C-CANCEL and
ends the query once the peer answers it, or after CANCEL_GRACE_SECONDS when it does not.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (ModalityWorklistInformationFind, PatientRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelFind)
from pynetdicom.status import STATUS_CANCEL, STATUS_PENDING, STATUS_SUCCESS, STATUS_WARNING, code_to_category

from ..config import DicomDestination, Timeouts
from .associations import (NO_CONTEXT, REJECT_REASONS, AssociationFailed, abort_in_background, client_ae,
                           close_connection, request, unanswered)
from .pynetdicom_setup import tune_connection

log = logging.getLogger("rulesengine.queries")

# The information models a query names, by the words of the command line and the configuration.
MODELS = {
    "patient": PatientRootQueryRetrieveInformationModelFind,
    "study": StudyRootQueryRetrieveInformationModelFind,
    "worklist": ModalityWorklistInformationFind,
}
POLL_SECONDS = 0.05  # how often a waiting caller looks at its clock and its cancel event
CANCEL_GRACE_SECONDS = 1.0  # how long a cancelled query waits for the peer's 0xFE00 before aborting
MESSAGE_ID = 1


@dataclass(frozen=True)
class FindResult:
    """How a query of one destination ended."""

    destination: str
    matches: int  # pending identifiers yielded
    status: int | None = None  # the final DIMSE status; None when none came
    failure: str | None = None  # why the query failed, in full, for the log; None when it did not
    brief: str | None = None  # the same in a few words, for a status's Error Comment
    cancelled: bool = False  # ended by `cancel` (with the peer's 0xFE00, or aborted after the grace)
    comment: str | None = None  # the Error Comment of the peer's final status, if any

    @property
    def ok(self) -> bool:
        return self.failure is None


def sop_class_of(model: str) -> str:
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"no query model {model!r} (models: {', '.join(MODELS)})") from None


def bounded(destination: DicomDestination, timeout: float) -> DicomDestination:
    """The destination with no timeout longer than the query's: pynetdicom's own thread ends
    soon after the caller has stopped waiting, and its reasons name the times it waited."""
    t = destination.timeouts
    return dataclasses.replace(destination, timeouts=Timeouts(
        connect=min(t.connect, timeout), artim=t.artim, acse=min(t.acse, timeout),
        dimse=min(t.dimse, timeout), network=min(t.network, timeout)))


class _Conversation(threading.Thread):
    """The association and its C-FIND, on a thread of its own: what the peer answers is put
    on `events` as ("match", Dataset), ("final", status Dataset) or ("failed", full, brief)."""

    def __init__(self, destination: DicomDestination, identifier: Dataset, sop_class: str):
        super().__init__(name=f"find-{destination.name}", daemon=True)
        self.destination = destination
        self.identifier = identifier
        self.sop_class = sop_class
        self.events: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.assoc = None  # known from the connection's opening on, so that it can be aborted
        self.connected = False
        self.sent = False  # the C-FIND went out: a cancel is a C-CANCEL
        self.stopped = False  # the caller stopped waiting: abort whatever is left
        self.rejection: A_ASSOCIATE_RJ | None = None

    # ---- the caller's side ----

    def cancel(self) -> bool:
        """Send a C-CANCEL if the C-FIND went out (True); else stop here (False)."""
        with self.lock:
            if not self.sent:
                self.stopped = True
                sent = False
            else:
                sent = True
                try:
                    self.assoc.send_c_cancel(MESSAGE_ID, query_model=self.sop_class)
                except Exception as exc:  # noqa: BLE001 - the association ended meanwhile: the abort follows
                    log.debug("C-CANCEL to %s not sent: %s", self.destination.name, exc)
        if not sent:
            self.stop()
        return sent

    def stop(self) -> None:
        """The caller stopped waiting: the association is aborted on a thread of its own (an
        abort waits for pynetdicom's state machine, which a silent peer can hold)."""
        with self.lock:
            self.stopped = True
            assoc = self.assoc
        if assoc is not None and self.is_alive():
            abort_in_background(assoc, f"abort-{self.destination.name}")

    # ---- pynetdicom's side ----

    def _opened(self, event) -> None:
        tune_connection(event)
        with self.lock:
            self.assoc, self.connected = event.assoc, True
            stopped = self.stopped
        if stopped:
            event.assoc.abort(block=False)

    def _pdu(self, event) -> None:
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejection = event.pdu

    def run(self) -> None:
        destination = self.destination
        ae = client_ae(destination)
        contexts = [build_context(self.sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        try:
            assoc, watch = request(ae, destination, contexts,
                                   [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_PDU_RECV, self._pdu)])
        except AssociationFailed as failure:
            if failure.kind == NO_CONTEXT:
                name = getattr(self.sop_class, "name", self.sop_class)
                self._failed(f"{failure}: it does not offer {name}", "C-FIND model not offered")
            else:
                self._failed(str(failure), self._brief(str(failure)))
            return
        except (OSError, ssl.SSLError) as exc:  # the TLS settings' files
            self._failed(f"cannot set up TLS for {destination.name}: {exc}", "TLS settings")
            return
        try:
            self._query(assoc, watch)
        finally:
            if assoc.is_established:
                assoc.release()
            close_connection(assoc)

    def _query(self, assoc, watch) -> None:
        with self.lock:
            if self.stopped:
                return
            try:
                responses = assoc.send_c_find(self.identifier, self.sop_class, msg_id=MESSAGE_ID)
            except (ValueError, TypeError) as exc:  # an identifier that cannot be encoded
                self._failed(f"the query cannot be sent to {self.destination.name}: {exc}", "bad query")
                return
            self.sent = True
        for status, identifier in responses:
            if not status or "Status" not in status:
                if not self.stopped:
                    why = unanswered(assoc, watch, self.destination.timeouts.dimse, "waiting for the C-FIND's answers",
                                     "the C-FIND")
                    self._failed(why, why.split(" while ")[0])
                return
            if code_to_category(int(status.Status)) == STATUS_PENDING:
                if identifier is not None:
                    self.events.put(("match", identifier))
                continue
            self.events.put(("final", status))
            return

    def _failed(self, full: str, brief: str) -> None:
        self.events.put(("failed", full, brief))

    def _brief(self, text: str) -> str:
        """A failed association's reason in a few words."""
        if self.rejection is not None:
            reason = REJECT_REASONS.get((self.rejection.source, self.rejection.reason_diagnostic), "no reason given")
            return f"rejected: {reason}"
        why = text.split(" not established: ", 1)[-1]
        return why.split(" (")[0]


def find(destination: DicomDestination, identifier: Dataset, model: str, timeout: float,
         cancel: threading.Event | None = None,
         clock: Callable[[], float] = time.monotonic) -> Iterator[Dataset | FindResult]:
    """C-FIND `identifier` at `destination` in `model` (patient, study, worklist): each
    match as it comes, then a FindResult (see the module). A caller that stops iterating
    early aborts the association."""
    sop_class = sop_class_of(model)
    conversation = _Conversation(bounded(destination, timeout), identifier, sop_class)
    deadline = clock() + timeout
    cancel_by: float | None = None  # once cancelled: when to stop waiting for the peer's 0xFE00
    late: int | None = None  # past the deadline (or the grace): how many answers received in time are left
    matches = 0
    answered = False

    def result(**fields) -> FindResult:
        return FindResult(destination.name, matches, **fields)

    conversation.start()
    try:
        while True:
            now = clock()
            if cancel is not None and cancel.is_set() and cancel_by is None:
                if not conversation.cancel():
                    yield result(cancelled=True)
                    return
                cancel_by = min(now + CANCEL_GRACE_SECONDS, deadline)
            until = cancel_by if cancel_by is not None else deadline
            if now >= until and late is None:
                # What the peer had said by then is still taken: a caller slow to come back (its
                # own requester reading slowly) does not make a timely peer late. What it says
                # after is not: a peer that never stops cannot hold the caller.
                late = conversation.events.qsize()
            if late is not None:
                if not late:
                    conversation.stop()
                    yield result(cancelled=True) if cancel_by is not None else \
                        _timed_out(conversation, timeout, matches)
                    return
                late -= 1
                event = conversation.events.get_nowait()  # there: only this loop takes from the queue
            else:
                try:  # woken at once by the next event; the slice is how often cancel and clock are read
                    event = conversation.events.get(timeout=min(POLL_SECONDS, until - now))
                except queue.Empty:
                    continue
            if event[0] == "match":
                if cancel_by is None:  # what comes after a cancel is not wanted
                    matches += 1
                    yield event[1]
            else:  # the peer's last word: pynetdicom's thread releases the association itself
                answered = True
                yield result(failure=event[1], brief=event[2]) if event[0] == "failed" else \
                    _final(destination, event[1], matches)
                return
    finally:
        if not answered:  # stopped early by the caller, a timeout or a cancel
            conversation.stop()


def _final(destination: DicomDestination, status: Dataset, matches: int) -> FindResult:
    code = int(status.Status)
    comment = str(status.get("ErrorComment") or "").strip() or None
    category = code_to_category(code)
    if category == STATUS_CANCEL:
        return FindResult(destination.name, matches, code, cancelled=True, comment=comment)
    if category not in (STATUS_SUCCESS, STATUS_WARNING):  # a failure, or a code no table knows
        said = f"0x{code:04X}" + (f" ({comment})" if comment else "")
        return FindResult(destination.name, matches, code,
                          failure=f"{destination.name} answered the C-FIND with {said}", brief=f"status 0x{code:04X}" + (f" {comment}" if comment else ""), comment=comment)
    return FindResult(destination.name, matches, code, comment=comment)


def _timed_out(conversation: _Conversation, timeout: float, matches: int) -> FindResult:
    destination = conversation.destination
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if not conversation.connected:
        full = f"association with {where} not established: no connection within {timeout:g} s"
    elif not conversation.sent:
        full = f"association with {where} not established: no answer within {timeout:g} s"
    else:
        full = f"{destination.name} gave no final status within {timeout:g} s ({matches} matches received)"
    return FindResult(destination.name, matches, failure=full, brief=f"no answer within {timeout:g} s")
