"""A DICOM listener (SCP): C-ECHO, C-STORE (async or sync mode), C-FIND (find_service.py) and
MPPS (mpps_service.py).

async: a C-STORE is answered Success once the instance is in the spool (written
and fsynced) and the journal has committed it; delivery happens afterwards.
sync: it is answered once every destination has acknowledged it.
Either way, every failure is a failure status the sender understands, with the reason
in Error Comment: a rule's `reject` 0xC124, a document that cannot be read 0xC000, an
instance the router cannot store (a full disk) or deliver in time (sync) 0xA700, a
C-STORE whose SOP class no service of the association serves 0x0122; and a failed
instance leaves no file behind.

What a connection may cost before it is an association (ARTIM, PDU limits, the TLS
handshake, refusals in the log) is transport.py's.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import socket
import sqlite3
import ssl
from dataclasses import replace
from functools import partial
from typing import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, uid_to_service_class

from ..arrival import Arrival
from ..config import Listener, TLS
from ..document import DocumentReadError
from ..intake import RefusedAtIntake
from . import received as received_files
from .disk_space import DISK_LOW_COMMENT
from .find_service import FindService
from .journal.errors import in_words, unreachable
from .retrieve_service import RetrieveService
from .logs import Repeats
from .mpps_service import N_CREATE, N_SET, MppsService
from .negotiation import Negotiation
from .pipeline import Pipeline
from .pynetdicom_setup import tune_connection
from .statuses import StoreStatus, with_comment
from .transport import AssociationSlots, ConnectionGuard, RefusalLog, start_server

C_STORE_RQ = 0x0001  # the Command Field of a C-STORE request (PS3.7 E.1-1)

log = logging.getLogger("rulesengine.listener")
_unreachable = Repeats()  # the journal's database away: one line a minute, however many instances come
_refusals = Repeats()  # a sender that sends such C-STOREs in a loop is told of once a minute

UNLIMITED = 1 << 30  # pynetdicom's own count of associations (connections included), left unused


def server_tls_context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_certificates)
    context.load_cert_chain(tls.certificate, tls.private_key)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return context


class DicomListener:
    def __init__(self, config: Listener, pipeline: Pipeline, deliver_now: Callable | None = None,
                 find_service: FindService | None = None, retrieve_service: RetrieveService | None = None):
        self.config = config
        self.pipeline = pipeline
        self.deliver_now = deliver_now  # sync mode: (path, document, decision, ruleset) -> (ok, detail)
        # The router shares one among its listeners (its worklist folders are read once).
        if find_service is None and pipeline is not None:
            find_service = FindService(pipeline.journal, pipeline.rules)
        self.find_service = find_service
        self.retrieve_service = retrieve_service  # none: C-MOVE and C-GET are answered 0xC000 (no source)
        self.mpps_service = MppsService(pipeline.journal, pipeline.rules) if pipeline is not None else None
        self.server = None
        self.negotiation = Negotiation(config)
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.ae_title)
        ae.maximum_pdu_size = config.max_pdu
        ae.dimse_timeout = config.timeouts.dimse
        ae.network_timeout = config.timeouts.network
        ae.require_called_aet = config.require_called_aet
        # Each association's contexts are chosen when its request arrives (negotiation.py).
        ae.add_supported_context(Verification)
        return ae

    def start(self, reuse_port: bool = False) -> None:
        """Bind and listen; `reuse_port`: the port is shared with the router's other receiving
        processes (SO_REUSEPORT), each with its own max_associations."""
        config = self.config
        self.refusals = RefusalLog(config.name)
        self.slots = AssociationSlots(config.max_associations)
        # pynetdicom counts connections that have not associated yet: the slots count associations.
        self.ae.maximum_associations = UNLIMITED
        guard = ConnectionGuard(self.refusals, config.timeouts.artim, config.timeouts.network, config.max_pdu)
        received_files.install()
        handlers = [
            (evt.EVT_CONN_OPEN, tune_connection),
            *guard.handlers(),
            (evt.EVT_REQUESTED, self._check_association),
            (evt.EVT_REQUESTED, self.negotiation.on_requested),
            (evt.EVT_SOP_COMMON, self.negotiation.on_sop_common),
            (evt.EVT_ACCEPTED, self.negotiation.on_accepted),
            (evt.EVT_ACCEPTED, self._serve_requests),
            (evt.EVT_C_ECHO, lambda event: StoreStatus.SUCCESS),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_CONN_CLOSE, received_files.discard_unclaimed),
        ]
        if self.find_service is not None:  # none: a listener made for negotiation alone
            handlers.append((evt.EVT_C_FIND, partial(self.find_service.handle, config)))
        if self.mpps_service is not None:
            handlers += [(evt.EVT_N_CREATE, partial(self.mpps_service.handle, config, N_CREATE)),
                         (evt.EVT_N_SET, partial(self.mpps_service.handle, config, N_SET))]
        context = server_tls_context(config.tls) if config.tls else None
        self.server = start_server(self.ae, (config.bind, config.port), handlers, context, guard, reuse_port)
        # Accepted sockets inherit TCP_NODELAY from the listening socket on Linux.
        try:
            self.server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        log.info("listener %s: %s on %s:%d (%s%s) in process %d", config.name, config.ae_title, config.bind,
                 config.port, config.mode, ", TLS" if context else "", os.getpid())

    def stop(self) -> None:
        """Stop accepting; associations in progress finish their current message."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
            self.refusals.flush()
            log.info("listener %s stopped in process %d: %d association(s) accepted", self.config.name,
                     os.getpid(), self.accepted_associations())

    def open_associations(self) -> int:
        slots = getattr(self, "slots", None)  # made when the listener starts
        return slots.open_count() if slots is not None else 0

    def accepted_associations(self) -> int:
        slots = getattr(self, "slots", None)
        return slots.taken if slots is not None else 0

    # ---- handlers ----

    def _allowed(self, calling: str) -> bool:
        patterns = self.config.allowed_calling_aets
        return not patterns or any(fnmatch.fnmatchcase(calling, pattern) for pattern in patterns)

    def _check_association(self, event) -> None:
        """EVT_REQUESTED: reject an association from a calling AE title outside the allow-list,
        or one too many (max_associations); log the one pynetdicom rejects for a wrong called
        AE title (it logs that below our level)."""
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        calling = (assoc.requestor.primitive.calling_ae_title or "").strip()
        host = assoc.requestor.address
        if not self._allowed(calling):
            self.refusals.refused("association", f"{calling} ({host})", host, "rejected", "calling AE title not allowed",
                                  group=calling)
            _reject(assoc, 0x01, 0x01, 0x03)  # rejected permanent; calling AE title not recognised
            return
        called = (assoc.requestor.primitive.called_ae_title or "").strip()
        if self.config.require_called_aet and called != self.config.ae_title.strip():
            self.refusals.refused("association", f"{calling} ({host})", host, "rejected",
                                  f"called AE title {called!r} is not {self.config.ae_title}", group=calling)
            return  # pynetdicom rejects it
        if not self.slots.take(assoc):
            self.refusals.refused("association", f"{calling} ({host})", host, "rejected",
                                  f"{self.slots.limit} associations already (max_associations)")
            _reject(assoc, 0x02, 0x03, 0x02)  # rejected transient; local limit exceeded

    def _serve_requests(self, event) -> None:
        """EVT_ACCEPTED: this association's requests go to pynetdicom's services, except:

        - a C-STORE whose SOP Class UID no service of this association serves (not its
          presentation context's, and none pynetdicom knows as storage: a garbled '31') is
          answered 0x0122 with the reason. pynetdicom would abort the association instead, and
          leave the data set it received in a temporary file;
        - a C-MOVE or C-GET is answered by the retrieve service (retrieve_service.py says why
          not by pynetdicom's), as pynetdicom runs a service: on this association's thread,
          its reading paused, the C-CANCELs received meanwhile kept for it."""
        assoc = event.assoc
        serve = assoc._serve_request  # pynetdicom's dispatch of each request to its service class

        def serve_request(msg, context_id: int) -> None:
            if isinstance(msg, C_STORE) and context_id in assoc._accepted_cx and not _served_as_storage(assoc, msg):
                _refuse_store(self.config.name, assoc, msg, context_id)
                return
            if isinstance(msg, (C_MOVE, C_GET)) and self.retrieve_service is not None and msg.is_valid_request \
                    and context_id in assoc._accepted_cx and not assoc._sent_release:
                assoc.dimse.cancel_req = {}
                assoc._is_paused = True
                try:
                    self.retrieve_service.serve(self.config, assoc, msg, context_id)
                finally:
                    assoc._is_paused = False
                    assoc.dimse.cancel_req = {}
                return
            serve(msg, context_id)

        assoc._serve_request = serve_request

    def _arrival(self, event) -> Arrival:
        assoc = event.assoc
        requestor = assoc.requestor
        called = getattr(requestor.primitive, "called_ae_title", None) or self.config.ae_title
        return Arrival(calling_aet=(requestor.ae_title or "").strip(), called_aet=str(called).strip(),
                       peer_address=requestor.address, peer_port=requestor.port, source_name=self.config.name,
                       source_kind="listener")

    def _handle_store(self, event):
        """Every path answers a status and leaves no file in spool/tmp."""
        arrival = self._arrival(event)
        received = os.fspath(event.dataset_path)
        path = None
        try:
            path = self.pipeline.storage.temp_path()
            try:
                received_files.take(received, path)
            except received_files.NotReceived as exc:
                path = None
                log.log(logging.DEBUG if exc.connection_closed else logging.WARNING,
                        "listener %s: instance from %s %s", self.config.name, arrival.calling_aet, exc)
                return with_comment(StoreStatus.OUT_OF_RESOURCES, str(exc))
            if self.pipeline.storage.disk.low() is not None:  # logged once a minute by the watermark itself
                return with_comment(StoreStatus.OUT_OF_RESOURCES, DISK_LOW_COMMENT)
            if self.retrieve_service is not None:  # a source storing what the router asked it to move
                claimed = self.retrieve_service.claim(event.request, arrival, path)
                if claimed is not None:
                    return claimed
            return self._store(path, replace(arrival, store_command=store_command(event.request)))
        except RefusedAtIntake as exc:
            log.warning("listener %s: instance from %s refused: %s", self.config.name, arrival.calling_aet,
                        exc.reason)
            return with_comment(StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, exc.reason)
        except DocumentReadError as exc:
            log.warning("listener %s: unreadable instance from %s: %s", self.config.name, arrival.calling_aet, exc)
            return with_comment(StoreStatus.CANNOT_UNDERSTAND, str(exc).rsplit(": ", 1)[-1])
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            log.warning("listener %s: instance from %s not stored: %s", self.config.name, arrival.calling_aet, reason)
            return with_comment(StoreStatus.OUT_OF_RESOURCES, f"not stored: {reason}")
        except Exception as exc:
            if unreachable(exc):  # nothing journaled: the sender is refused, and sends it again later
                _unreachable.log(log, logging.WARNING, self.config.name, "listener %s: instance from %s not stored: "
                                 "the journal's database cannot be reached (%s)", self.config.name,
                                 arrival.calling_aet, in_words(exc))
                return with_comment(StoreStatus.OUT_OF_RESOURCES, "not stored: the router's journal cannot be reached")
            log.exception("listener %s: internal error on an instance from %s", self.config.name, arrival.calling_aet)
            return with_comment(StoreStatus.OUT_OF_RESOURCES, "not stored: internal error of the router, see its log")
        finally:
            if path is not None and os.path.lexists(path):
                self.pipeline.storage.remove(path)

    def _store(self, path: str, arrival: Arrival) -> Dataset | int:
        if self.config.mode == "sync" and self.deliver_now is not None:
            document, decision, ruleset = self.pipeline.decide(path, arrival)
            if decision.outcome == "route":
                ok, detail = self.deliver_now(path, document, decision, ruleset)
                return StoreStatus.SUCCESS if ok else with_comment(StoreStatus.OUT_OF_RESOURCES, detail)
            result = self.pipeline.settle(path, document, decision, ruleset)
        else:
            # async: answered once spooled and journaled; the rules run first only if they can reject
            result = self.pipeline.receive(path, arrival)
        if result.outcome == "reject":
            return with_comment(StoreStatus.REJECTED_BY_RULES, result.reason or "rejected by the routing rules")
        return StoreStatus.SUCCESS


def store_command(request: C_STORE) -> tuple[tuple[str, object], ...]:
    """What the arrival keeps of a C-STORE request's command set (CommandSet.* in the rules):
    journaled with it, so that a restart, the worker process and a release read the same."""
    originator = str(request.MoveOriginatorApplicationEntityTitle or "").strip() or None
    values = {"CommandField": C_STORE_RQ, "MessageID": request.MessageID, "Priority": request.Priority,
              "AffectedSOPClassUID": str(request.AffectedSOPClassUID or "") or None,
              "AffectedSOPInstanceUID": str(request.AffectedSOPInstanceUID or "") or None,
              "MoveOriginatorApplicationEntityTitle": originator,
              "MoveOriginatorMessageID": request.MoveOriginatorMessageID if originator else None}
    return tuple((keyword, value if value is None or isinstance(value, str) else int(value))
                 for keyword, value in values.items() if value is not None)


def _reject(assoc, result: int, source: int, reason: int) -> None:
    assoc.acse.send_reject(result, source, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
def _served_as_storage(assoc, request: C_STORE) -> bool:
    """Would pynetdicom give this C-STORE to the Storage service (our EVT_C_STORE handler)?"""
    uid = str(request.AffectedSOPClassUID or "")
    service = assoc.acceptor.accepted_common_extended.get(uid, (uid,))[0]  # as pynetdicom looks it up
    return issubclass(uid_to_service_class(service), StorageServiceClass)


def _refuse_store(listener: str, assoc, request: C_STORE, context_id: int) -> None:
    uid = str(request.AffectedSOPClassUID or "")
    context = assoc._accepted_cx[context_id]
    requestor = assoc.requestor
    calling = (requestor.ae_title or "").strip()
    _refusals.log(log, logging.WARNING, (listener, "sop class", calling, requestor.address, uid),
                  "listener %s: C-STORE from %s (%s) refused: SOP Class UID %r, in presentation context %d of %s: "
                  "no service of the association serves it", listener, calling, requestor.address, uid, context_id,
                  context.abstract_syntax)
    status = with_comment(StoreStatus.SOP_CLASS_NOT_SUPPORTED, f"no service for SOP Class UID {uid} on this association")
    response = C_STORE()
    response.MessageID = response.MessageIDBeingRespondedTo = request.MessageID
    try:
        response.AffectedSOPClassUID = request.AffectedSOPClassUID
        response.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    except (TypeError, ValueError):  # optional in a response: what pynetdicom cannot encode is left out
        pass
    response.Status = status.Status
    response.ErrorComment = status.ErrorComment
    received = getattr(request, "_dataset_file", None)  # the data set, written by pynetdicom as it arrived
    if received is not None:
        received.close()
        with contextlib.suppress(OSError):
            os.unlink(received.name)
    assoc.dimse.send_msg(response, context_id)
