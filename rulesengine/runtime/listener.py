"""A DICOM listener (SCP): C-ECHO and C-STORE, in async or sync mode.

async: a C-STORE is answered Success once the instance is in the spool (written
and fsynced) and the journal has committed it; delivery happens afterwards.
sync: it is answered once every destination has acknowledged it.
Either way, a rule's `reject` answers with a failure status and the reason in
Error Comment, and a document that cannot be read is answered with 0xC000; a
C-STORE whose SOP class no service of the association serves, 0x0122.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import socket
import ssl
from typing import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, uid_to_service_class

from ..config import Listener, TLS
from ..document import Arrival, DocumentReadError
from ..intake import RefusedAtIntake
from .destinations import set_nodelay
from .logs import Repeats
from .negotiation import Negotiation
from .pipeline import Pipeline

log = logging.getLogger("rulesengine.listener")
_refusals = Repeats()  # a sender that retries a refused association in a loop is told of once a minute

STATUS_NOT_AUTHORIZED = 0x0124  # "Refused: Not Authorized": a rule rejected the instance
STATUS_OUT_OF_RESOURCES = 0xA700  # sync mode: a destination did not take it
STATUS_CANNOT_UNDERSTAND = 0xC000  # not a DICOM data set we can read
STATUS_REFUSED_AT_INTAKE = 0xA900  # "Data Set does not match SOP Class": a DICOMDIR, an instance without SOP UIDs
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122  # a C-STORE naming a SOP class no service of the association serves


def server_tls_context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca_certificates)
    context.load_cert_chain(tls.certificate, tls.private_key)
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    return context


class DicomListener:
    def __init__(self, config: Listener, pipeline: Pipeline, deliver_now: Callable | None = None):
        self.config = config
        self.pipeline = pipeline
        self.deliver_now = deliver_now  # sync mode: (document, decision, ruleset, path) -> (ok, detail)
        self.server = None
        self.negotiation = Negotiation(config)
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.ae_title)
        ae.maximum_associations = config.max_associations
        ae.maximum_pdu_size = config.max_pdu
        ae.acse_timeout = config.timeouts.acse
        ae.dimse_timeout = config.timeouts.dimse
        ae.network_timeout = config.timeouts.network
        ae.require_called_aet = config.require_called_aet
        # Each association's contexts are chosen when its request arrives (negotiation.py).
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> None:
        config = self.config
        handlers = [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REQUESTED, self._check_calling_aet),
            (evt.EVT_REQUESTED, self.negotiation.on_requested),
            (evt.EVT_SOP_COMMON, self.negotiation.on_sop_common),
            (evt.EVT_ACCEPTED, self.negotiation.on_accepted),
            (evt.EVT_ACCEPTED, self._answer_stores_no_service_takes),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, self._handle_store),
        ]
        context = server_tls_context(config.tls) if config.tls else None
        self.server = self.ae.start_server((config.bind, config.port), block=False, evt_handlers=handlers,
                                           ssl_context=context)
        # Accepted sockets inherit TCP_NODELAY from the listening socket on Linux.
        try:
            self.server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        log.info("listener %s: %s on %s:%d (%s%s)", config.name, config.ae_title, config.bind, config.port,
                 config.mode, ", TLS" if context else "")

    def stop(self) -> None:
        """Stop accepting; associations in progress finish their current message."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # ---- handlers ----

    def _allowed(self, calling: str) -> bool:
        patterns = self.config.allowed_calling_aets
        return not patterns or any(fnmatch.fnmatchcase(calling, pattern) for pattern in patterns)

    def _check_calling_aet(self, event) -> None:
        """EVT_REQUESTED: reject an association from a calling AE title outside the allow-list,
        and log the one pynetdicom rejects for a wrong called AE title (it logs that below our level)."""
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        calling = (assoc.requestor.primitive.calling_ae_title or "").strip()
        if not self._allowed(calling):
            _refusals.log(log, logging.WARNING, (self.config.name, calling, assoc.requestor.address, "calling"),
                          "listener %s: association from %s (%s) rejected: calling AE title not allowed",
                          self.config.name, calling, assoc.requestor.address)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # rejected permanent; calling AE title not recognised
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        called = (assoc.requestor.primitive.called_ae_title or "").strip()
        if self.config.require_called_aet and called != self.config.ae_title.strip():
            _refusals.log(log, logging.WARNING, (self.config.name, calling, assoc.requestor.address, called),
                          "listener %s: association from %s (%s) rejected: called AE title %r is not %s",
                          self.config.name, calling, assoc.requestor.address, called, self.config.ae_title)

    def _answer_stores_no_service_takes(self, event) -> None:
        """EVT_ACCEPTED: a C-STORE whose SOP Class UID no service of this association serves (not
        its presentation context's, and none pynetdicom knows as storage: a garbled '31') is
        answered 0x0122 with the reason. pynetdicom would abort the association instead, and leave
        the data set it received in a temporary file."""
        assoc = event.assoc
        serve = assoc._serve_request  # pynetdicom's dispatch of each request to its service class

        def serve_request(msg, context_id: int) -> None:
            if isinstance(msg, C_STORE) and context_id in assoc._accepted_cx and not _served_as_storage(assoc, msg):
                _refuse_store(self.config.name, assoc, msg, context_id)
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
        arrival = self._arrival(event)
        received = os.fspath(event.dataset_path)
        path = self.pipeline.storage.temp_path()
        os.link(received, path)  # our own name for the file; pynetdicom removes its name afterwards
        try:
            if self.config.mode == "sync" and self.deliver_now is not None:
                document, decision, ruleset = self.pipeline.decide(path, arrival)
                if decision.outcome == "route":
                    ok, detail = self.deliver_now(path, document, decision, ruleset)
                    return 0x0000 if ok else _status(STATUS_OUT_OF_RESOURCES, detail)
                result = self.pipeline.settle(path, document, decision, ruleset)
            else:
                # async: answered once spooled and journaled; the rules run first only if they can reject
                result = self.pipeline.receive(path, arrival)
        except RefusedAtIntake as exc:
            self.pipeline.storage.remove(path)
            log.warning("listener %s: instance from %s refused: %s", self.config.name, arrival.calling_aet,
                        exc.reason)
            return _status(STATUS_REFUSED_AT_INTAKE, exc.reason)
        except DocumentReadError as exc:
            self.pipeline.storage.remove(path)
            log.warning("listener %s: unreadable instance from %s: %s", self.config.name, arrival.calling_aet, exc)
            return _status(STATUS_CANNOT_UNDERSTAND, str(exc).rsplit(": ", 1)[-1])
        if result.outcome == "reject":
            return _status(STATUS_NOT_AUTHORIZED, result.reason or "rejected by the routing rules")
        return 0x0000


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
    status = _status(STATUS_SOP_CLASS_NOT_SUPPORTED, f"no service for SOP Class UID {uid} on this association")
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


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    # An LO of the command set: default repertoire only (the command set has no Specific
    # Character Set), no backslash (it would split the value), at most 64 characters.
    status.ErrorComment = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in comment)[:64]
    return status
