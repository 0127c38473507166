"""Retrieving from a source destination (a PACS) for a C-MOVE or C-GET the router answers.

`SourceRetrieval` talks to the source on a thread of its own and reports on its `events`
queue, in order: `Retrieved(path)` for each instance (a file in the spool, the reader's to
keep or remove), `Progress` for each pending response of the source, and last either
`SourceFinal` (the source's final status) or `SourceFailed` (why there was none).

How it retrieves is the destination's `retrieve` setting:

- `c-get`: a C-GET on an association that also proposes every storage SOP class with the
  router as SCP: the instances come back on it, each one handed over as it arrives;
- `c-move`: a C-MOVE whose move destination is the destination's `calling_ae_title`: the
  source opens an association to one of the router's listeners and stores the instances
  there. The listener gives each to the retrieval it belongs to (retrieve_service.py), by
  the Move Originator AE title and Message ID of its C-STORE, onto the same queue.

The queue is short: a reader that falls behind slows the source down (its C-STOREs are
answered once the instance is queued) rather than filling the spool. Nothing here waits
without a bound: a silent source ends in SourceFailed after its dimse timeout, and
`cancel()` sends a C-CANCEL, or aborts before the request went out.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import threading
from dataclasses import dataclass
from typing import Callable

from pydicom import Dataset
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGExtended12Bit,
                         JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, RLELossless)
from pynetdicom import evt
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import StoragePresentationContexts, build_context
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelGet,
                                  PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)
from pynetdicom.status import STATUS_PENDING, code_to_category

from ..config import DicomDestination
from . import received as received_files
from .associations import (NO_CONTEXT, AssociationFailed, abort_in_background, client_ae, close_connection, request,
                           unanswered)
from .pynetdicom_setup import tune_connection
from .statuses import StoreStatus, with_comment

log = logging.getLogger("rulesengine.retrieve")

MOVE_MODELS = {"patient": PatientRootQueryRetrieveInformationModelMove,
               "study": StudyRootQueryRetrieveInformationModelMove}
GET_MODELS = {"patient": PatientRootQueryRetrieveInformationModelGet,
              "study": StudyRootQueryRetrieveInformationModelGet}
# What a C-GET proposes for the instances that come back: each storage SOP class pynetdicom
# knows, in every syntax the router keeps as it is (the source chooses, and need not decompress).
RETURNED_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                     ExplicitVRBigEndian, JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless,
                     JPEGLSNearLossless, JPEG2000Lossless, JPEG2000, RLELossless]
MAX_CONTEXTS = 128
QUEUE_LENGTH = 4  # instances waiting for the reader; the source waits beyond that
PUT_SLICE_SECONDS = 0.5  # how often a blocked hand-over looks whether the reader stopped


@dataclass(frozen=True)
class Retrieved:
    path: str  # the instance, in the spool: the reader's now


@dataclass(frozen=True)
class Progress:
    """A pending response of the source: its sub-operation counts."""

    remaining: int | None
    completed: int
    failed: int
    warning: int


@dataclass(frozen=True)
class SourceFinal:
    """The source's final response."""

    status: int
    completed: int
    failed: int
    warning: int
    failed_uids: tuple[str, ...] = ()
    comment: str | None = None


@dataclass(frozen=True)
class SourceFailed:
    full: str  # for the log
    brief: str  # for an Error Comment


def sop_class_for(message: str, model: str) -> str:
    return (MOVE_MODELS if message == "C-MOVE" else GET_MODELS)[model]


def _count(dataset: Dataset | None, keyword: str) -> int:
    value = dataset.get(keyword) if dataset is not None else None
    return int(value) if value not in (None, "") else 0


def _failed_uids(identifier: Dataset | None) -> tuple[str, ...]:
    """The Failed SOP Instance UID List of a final response; () when it has none, or one the
    source garbled (the counts still say how many failed)."""
    try:
        value = identifier.get("FailedSOPInstanceUIDList") if identifier is not None else None
    except Exception:  # noqa: BLE001 - pydicom raises many kinds for bytes it cannot decode
        return ()
    if not value:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(uid) for uid in value)


class SourceRetrieval(threading.Thread):
    """One retrieval from one source; see the module."""

    def __init__(self, destination: DicomDestination, identifier: Dataset, model: str, message_id: int,
                 spool: Callable[[], str], events: queue.Queue | None = None):
        super().__init__(name=f"retrieve-{destination.name}", daemon=True)
        self.destination = destination
        self.identifier = identifier
        self.model = model
        self.how = destination.retrieve  # c-move | c-get
        self.sop_class = sop_class_for("C-MOVE" if self.how == "c-move" else "C-GET", model)
        self.message_id = message_id
        self.spool = spool
        self.events: queue.Queue = events if events is not None else queue.Queue(QUEUE_LENGTH)
        self.lock = threading.Lock()
        self.assoc = None
        self.sent = False  # the request went out: a cancel is a C-CANCEL
        self.stopped = False  # the reader stopped: abort whatever is left, take no more instances

    @property
    def move_destination(self) -> str:
        """The AE title the source stores to, for a c-move: the router's, as the source knows it."""
        return self.destination.calling_ae_title

    # ---- the reader's side ----

    def cancel(self) -> bool:
        """Send a C-CANCEL if the request went out (True); else stop here (False)."""
        with self.lock:
            if self.sent and self.assoc is not None:
                try:
                    self.assoc.send_c_cancel(self.message_id, query_model=self.sop_class)
                    return True
                except Exception as exc:  # noqa: BLE001 - the association ended meanwhile
                    log.debug("C-CANCEL to %s not sent: %s", self.destination.name, exc)
        self.stop()
        return False

    def stop(self) -> None:
        """The reader stopped: the association is aborted on a thread of its own (an abort waits
        for pynetdicom's state machine, which a silent peer can hold)."""
        with self.lock:
            self.stopped = True
            assoc = self.assoc
        if assoc is not None and self.is_alive():
            abort_in_background(assoc, f"abort-{self.destination.name}")

    def hand_over(self, path: str) -> bool:
        """Queue an instance for the reader, waiting while the queue is full; False (and the
        file removed) when the reader stopped."""
        while not self.stopped:
            try:
                self.events.put(Retrieved(path), timeout=PUT_SLICE_SECONDS)
                return True
            except queue.Full:
                continue
        _remove(path)
        return False

    # ---- pynetdicom's side ----

    def _opened(self, event) -> None:
        tune_connection(event)
        with self.lock:
            self.assoc = event.assoc
            stopped = self.stopped
        if stopped:
            event.assoc.abort(block=False)

    def _returned(self, event):
        """EVT_C_STORE on a C-GET's association: an instance the source returns."""
        path = self.spool()
        try:
            received_files.take(os.fspath(event.dataset_path), path)
        except received_files.NotReceived as exc:
            return with_comment(StoreStatus.OUT_OF_RESOURCES, str(exc))
        except OSError as exc:
            _remove(path)
            return with_comment(StoreStatus.OUT_OF_RESOURCES, f"not stored: {exc.strerror or exc}")
        if not self.hand_over(path):
            return with_comment(StoreStatus.OUT_OF_RESOURCES, "the retrieval was stopped")
        return StoreStatus.SUCCESS

    def _contexts(self):
        contexts = [build_context(self.sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        roles = []
        if self.how == "c-get":
            for storage in StoragePresentationContexts[:MAX_CONTEXTS - 1]:
                contexts.append(build_context(storage.abstract_syntax, RETURNED_SYNTAXES))
                role = SCP_SCU_RoleSelectionNegotiation()
                role.sop_class_uid = storage.abstract_syntax
                role.scu_role, role.scp_role = False, True
                roles.append(role)
        return contexts, roles

    def run(self) -> None:
        destination = self.destination
        contexts, roles = self._contexts()
        handlers = [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_CONN_CLOSE, received_files.discard_unclaimed)]
        if self.how == "c-get":
            handlers.append((evt.EVT_C_STORE, self._returned))
        try:
            assoc, watch = request(client_ae(destination), destination, contexts, handlers, roles)
        except AssociationFailed as failure:
            if failure.kind == NO_CONTEXT:
                name = getattr(self.sop_class, "name", self.sop_class)
                self._failed(f"{failure}: it does not offer {name}", f"{self.how.upper()} not offered")
            else:
                self._failed(str(failure), str(failure).split(" not established: ", 1)[-1].split(" (")[0])
            return
        except (OSError, ssl.SSLError) as exc:  # the TLS settings' files
            self._failed(f"cannot set up TLS for {destination.name}: {exc}", "TLS settings")
            return
        try:
            self._retrieve(assoc, watch)
        except Exception as exc:  # noqa: BLE001 - reported to the reader, who answers the requester
            log.exception("retrieval from %s failed", destination.name)
            self._failed(f"retrieval from {destination.name} failed: {type(exc).__name__}: {exc}", "internal error")
        finally:
            if assoc.is_established:
                assoc.release()
            close_connection(assoc)

    def _retrieve(self, assoc, watch) -> None:
        with self.lock:
            if self.stopped:
                return
            try:
                if self.how == "c-move":
                    responses = assoc.send_c_move(self.identifier, self.move_destination, self.sop_class,
                                                  msg_id=self.message_id)
                else:
                    responses = assoc.send_c_get(self.identifier, self.sop_class, msg_id=self.message_id)
            except (ValueError, TypeError) as exc:  # an identifier that cannot be encoded
                self._failed(f"the request cannot be sent to {self.destination.name}: {exc}", "bad identifier")
                return
            self.sent = True
        for status, identifier in responses:
            if not status or "Status" not in status:
                if not self.stopped:
                    why = unanswered(assoc, watch, self.destination.timeouts.dimse,
                                     f"waiting for the {self.how.upper()}'s answers", f"the {self.how.upper()}")
                    self._failed(why, why.split(" while ")[0])
                return
            code = int(status.Status)
            counts = (_count(status, "NumberOfCompletedSuboperations"), _count(status, "NumberOfFailedSuboperations"),
                      _count(status, "NumberOfWarningSuboperations"))
            if code_to_category(code) == STATUS_PENDING:
                remaining = status.get("NumberOfRemainingSuboperations")
                self._put(Progress(int(remaining) if remaining not in (None, "") else None, *counts))
                continue
            comment = str(status.get("ErrorComment") or "").strip() or None
            self._put(SourceFinal(code, *counts, failed_uids=_failed_uids(identifier), comment=comment))
            return

    def _put(self, event) -> None:
        while not self.stopped:
            try:
                self.events.put(event, timeout=PUT_SLICE_SECONDS)
                return
            except queue.Full:
                continue

    def _failed(self, full: str, brief: str) -> None:
        self._put(SourceFailed(full, brief))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
