"""Associations with a DICOM destination, and why one failed, in plain words.

pynetdicom only logs why an association could not be made (a refused connection,
the peer's A-ASSOCIATE-RJ reasons, an A-ABORT) or why a request got no answer.
The router needs it as text, for its log and `dicom-rules queue`, and needs to
know what the failure can concern:

- UNREACHABLE: the destination itself (no connection, no answer, TLS, an unknown
  host, a rejection naming AE titles or its load);
- REFUSED: the peer took the request, then rejected it without a reason, aborted
  it or closed the connection: the destination, or what was proposed (a C-ECHO
  decides);
- NO_CONTEXT: the peer accepted the association, but none of the presentation
  contexts proposed: what was proposed.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import A_P_ABORT

from ..config import TLS, DicomDestination

UNREACHABLE = "unreachable"
REFUSED = "refused"
NO_CONTEXT = "no-context"

# PS3.8 9.3.4: (result source, diagnostic) of an A-ASSOCIATE-RJ
REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
REJECT_SOURCES = {1: "the peer's DICOM application", 2: "the peer's association layer",
                  3: "the peer's presentation layer"}
# PS3.8 9.3.8: the reason of an A-ABORT sent by the peer's DICOM layer (source 2)
ABORT_REASONS = {0: "reason not specified", 1: "unrecognised PDU", 2: "unexpected PDU", 4: "unrecognised PDU parameter",
                 5: "unexpected PDU parameter", 6: "invalid PDU parameter value"}


class AssociationFailed(Exception):
    """An association that could not be made: `kind` says what the failure can concern."""

    def __init__(self, text: str, kind: str):
        super().__init__(text)
        self.kind = kind


class PeerWatch:
    """What the peer did on one association, seen through pynetdicom's events as they
    happen (pynetdicom's own account can miss a rejection that comes with the connection's
    close): whether the connection was made, the A-ASSOCIATE-RJ or A-ABORT the peer sent,
    whether the connection was closed under us."""

    def __init__(self) -> None:
        self.connected = False
        self.rejection: A_ASSOCIATE_RJ | None = None
        self.abort: A_ABORT_RQ | None = None
        self.closed = False

    def handlers(self) -> list:
        return [(evt.EVT_CONN_OPEN, self._opened), (evt.EVT_PDU_RECV, self._pdu), (evt.EVT_ACSE_RECV, self._acse)]

    def _opened(self, _event) -> None:
        self.connected = True

    def _pdu(self, event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ):
            self.abort = event.pdu
        elif isinstance(event.pdu, A_ASSOCIATE_RJ):
            self.rejection = event.pdu

    def _acse(self, event) -> None:
        # an A-P-ABORT with no A-ABORT PDU before it: the connection was closed under us
        if isinstance(event.primitive, A_P_ABORT) and self.abort is None:
            self.closed = True

    def peer_ended(self) -> str | None:
        """How the peer ended the association, if it did: an A-ABORT or a closed connection."""
        if self.abort is not None:
            if self.abort.source == 2:
                reason = self.abort.reason_diagnostic
                return f"aborted by the peer's DICOM layer ({ABORT_REASONS.get(reason, f'reason {reason}')})"
            return "aborted by the peer"
        if self.closed:
            return "the peer closed the connection"
        return None


def client_tls_args(tls: TLS, host: str) -> tuple[ssl.SSLContext, str | None]:
    """pynetdicom's tls_args for a destination: the context, and the name its certificate must carry."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_certificates)
    context.check_hostname = tls.check_hostname
    context.load_cert_chain(tls.certificate, tls.private_key)
    return context, host if tls.check_hostname else None


def client_ae(destination: DicomDestination) -> AE:
    """The AE that calls `destination`: its calling AE title, PDU size and timeouts."""
    ae = AE(ae_title=destination.calling_ae_title)
    ae.maximum_pdu_size = destination.max_pdu
    ae.acse_timeout = destination.timeouts.acse
    ae.dimse_timeout = destination.timeouts.dimse
    ae.network_timeout = destination.timeouts.network
    ae.connection_timeout = destination.timeouts.connect
    return ae


def request(ae, destination: DicomDestination, contexts, handlers=(), ext_neg=()) -> tuple[object, PeerWatch]:
    """An established association and its watch, or AssociationFailed saying why not.
    `ext_neg`: extended negotiation items (the SCP/SCU roles of a C-GET)."""
    watch = PeerWatch()
    kwargs = {"ae_title": destination.ae_title, "evt_handlers": [*handlers, *watch.handlers()],
              "max_pdu": destination.max_pdu}
    if ext_neg:
        kwargs["ext_neg"] = list(ext_neg)
    if destination.tls is not None:
        kwargs["tls_args"] = client_tls_args(destination.tls, destination.host)
    started = time.monotonic()
    try:
        assoc = ae.associate(destination.host, destination.port, contexts, **kwargs)
    except socket.gaierror as exc:  # pynetdicom resolves the host name before connecting
        raise AssociationFailed(_failed(destination, f"the host name {destination.host} cannot be resolved "
                                                     f"({exc.strerror or exc})"), UNREACHABLE) from None
    if assoc.is_established:
        return assoc, watch
    text, kind = _why_not(assoc, watch, destination, time.monotonic() - started)
    close_connection(assoc)
    raise AssociationFailed(_failed(destination, text), kind)


def close_connection(assoc) -> None:
    """A request that failed may leave its connection open (pynetdicom's association thread died,
    or gave up waiting): a peer that serves one connection at a time would wait on it."""
    transport = getattr(getattr(assoc, "dul", None), "socket", None)
    if transport is not None:
        try:
            transport.close()
        except OSError:
            pass


def abort_in_background(assoc, name: str) -> None:
    """Abort an association and close its connection on a thread of its own: an abort waits
    for pynetdicom's state machine, which a silent peer can hold."""
    threading.Thread(target=_abort, args=(assoc,), name=name, daemon=True).start()


def _abort(assoc) -> None:
    try:
        assoc.abort()
    except Exception:  # noqa: BLE001 - an association already gone
        pass
    close_connection(assoc)


def _failed(destination: DicomDestination, why: str) -> str:
    return f"association with {destination.ae_title}@{destination.host}:{destination.port} not established: {why}"


def _why_not(assoc, watch: PeerWatch, destination: DicomDestination, elapsed: float) -> tuple[str, str]:
    if watch.rejection is not None:
        return rejection(watch.rejection, destination)
    answer = assoc.acceptor.primitive  # the A-ASSOCIATE-AC, if one came
    if answer is not None and answer.result == 0x00:
        return "the peer accepted none of the presentation contexts proposed", NO_CONTEXT
    if not watch.connected:
        return connection_failure(destination, elapsed), UNREACHABLE
    if watch.abort is not None:
        return f"{watch.peer_ended()} before answering the association request", REFUSED
    timeout = destination.timeouts.acse
    if timeout is not None and elapsed >= timeout * 0.95:
        return f"no answer within {timeout:g} s", UNREACHABLE
    # Ended early, with nothing from the peer: it closed the connection (pynetdicom's
    # account of that races with its own check of the connection).
    return "the peer closed the connection before answering the association request", REFUSED


def rejection(answer: A_ASSOCIATE_RJ, destination: DicomDestination) -> tuple[str, str]:
    """An A-ASSOCIATE-RJ in plain words: result, source, reason; and what it can concern."""
    source, diagnostic = answer.source, answer.reason_diagnostic
    reason = REJECT_REASONS.get((source, diagnostic), f"reason {diagnostic}")
    about_proposal = reason == "no reason given"
    if (source, diagnostic) == (1, 7):
        reason += f"; it does not answer to {destination.ae_title!r} (ae_title)"
    elif (source, diagnostic) == (1, 3):
        reason += f"; it does not accept calls from {destination.calling_ae_title!r} (calling_ae_title)"
    transient = answer.result == 0x02
    text = (f"rejected by {REJECT_SOURCES.get(source, 'the peer')} "
            f"({'transient: it may accept later' if transient else 'permanent'}): {reason}")
    # A permanent rejection without a reason may be about what was proposed; one that names
    # AE titles, versions or the peer's load is about the destination.
    about_proposal = about_proposal and not transient
    return text, REFUSED if about_proposal else UNREACHABLE


def connection_failure(destination: DicomDestination, elapsed: float) -> str:
    """Why the connection failed. pynetdicom only logs it: a connection that took the
    whole timeout timed out; otherwise the connection is tried again, alone, to ask the
    network why (a refused connection fails at once)."""
    timeout = destination.timeouts.connect
    if timeout is not None and elapsed >= timeout * 0.95:
        return f"connection timed out after {timeout:g} s" + (" (TCP or TLS handshake)" if destination.tls else "")
    try:
        with socket.create_connection((destination.host, destination.port), timeout) as raw:
            if destination.tls is not None:
                context, server_hostname = client_tls_args(destination.tls, destination.host)
                with context.wrap_socket(raw, server_hostname=server_hostname):
                    pass
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: the destination's certificate is not accepted: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"connection timed out after {timeout:g} s"
    except socket.gaierror as exc:
        return f"the host name {destination.host} cannot be resolved ({exc.strerror or exc})"
    except OSError as exc:
        return f"connection failed: {exc.strerror or exc}"
    return "the connection failed, and worked when tried again"


def unanswered(assoc, watch: PeerWatch, timeout: float, sending: str, request: str) -> str:
    """Why a request on an established association got no answer: the peer aborted the
    association or closed the connection while we were `sending`, or nothing came within the
    timeout (pynetdicom then aborts)."""
    if assoc.is_alive():
        assoc.join(5)  # the association's own thread records how it ended, then stops
    ended = watch.peer_ended()
    if ended is not None:
        return f"{ended} while {sending}"
    return f"no answer within {timeout:g} s to {request}"
