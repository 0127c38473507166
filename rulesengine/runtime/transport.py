"""A small hook around pynetdicom's transport, for the listener: a peer that connects and
does not associate (idle, slow, lying about lengths, not speaking TLS) holds one thread and
a bounded amount of memory, for at most ARTIM seconds, and never a place among
`max_associations`.

What pynetdicom 3 does by itself, and what changes here:

- It does the TLS handshake in its only accept thread, without a timeout: one idle TCP
  connection stopped a TLS listener for every client. ListenerServer only accepts; each
  connection's own thread does the handshake.
- It listens with socketserver's backlog of 5. ListenerServer: LISTEN_BACKLOG.
- It gives every connection two threads at once (the association and its upper layer,
  each polling every millisecond), waits the ACSE timeout for the association request,
  and counts the connection against maximum_associations from the start. Here the
  connection's own thread (ConnectionGuard.prepare) reads the whole A-ASSOCIATE-RQ first,
  by the ARTIM deadline, and refuses what is not one; only then pynetdicom takes the
  connection, and reads the request from what was read (GuardedSocket). AssociationSlots
  counts associations only.
- It reads a PDU as recv(6) for the header, then recv(the length announced), growing a
  buffer to whatever the peer announces (up to 4 GiB), with no deadline. The association
  request is read here, up to MAX_ASSOCIATION_REQUEST; GuardedSocket takes the place of
  each accepted connection's AssociationSocket: a PDU longer than the maximum the listener
  announced is refused (A-ABORT, connection closed) before a byte of it is read, and a
  PDU must arrive whole within the network timeout.
- It logs each broken connection at ERROR, often with a traceback. The listener reports
  refusals itself through RefusalLog (the first of a kind at once, the others summed
  up); pynetdicom's warnings about a connection that never associated go to DEBUG, and
  the first one about an association is logged with the peer, without a traceback.
"""

from __future__ import annotations

import heapq
import logging
import math
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

log = logging.getLogger("rulesengine.listener")

LISTEN_BACKLOG = 128
# An A-ASSOCIATE-RQ proposing all 128 presentation contexts, each with every transfer
# syntax pydicom knows (45), is about 160 KB: six times that is still read.
MAX_ASSOCIATION_REQUEST = 1 << 20
PDU_HEADER = 6
SUMMARY_SECONDS = 10
# A-ABORT, source: the service provider (2), reason: invalid PDU parameter value (6)
A_ABORT_PDU = bytes([0x07, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x02, 0x06])


class RefusalLog:
    """One WARNING line for the first refusal of a kind, then, SUMMARY_SECONDS later, one
    line with how many more there were: an attack does not flood the log."""

    def __init__(self, listener: str, window: float = SUMMARY_SECONDS,
                 schedule: Callable[[float, Callable[[], None]], None] | None = None):
        self.listener = listener
        self.window = window
        self._schedule = schedule or _later
        self._lock = threading.Lock()
        # (subject, outcome, reason, group) -> (hosts refused since the first line, its time)
        self._counting: dict[tuple[str, str, str, str], tuple[Counter, float]] = {}

    def refused(self, subject: str, peer: str, host: str, outcome: str, reason: str, detail: str = "",
                group: str = "") -> None:
        """`subject` from `peer` `outcome`: `reason` (`detail`), e.g. connection from
        10.0.0.7:40312 closed: no association request within 5 s. Refusals of the same
        subject, outcome, reason and `group` (a calling AE title, say) are summed up;
        `detail` is in the first line only."""
        key = (subject, outcome, reason, group)
        with self._lock:
            counting = self._counting.get(key)
            if counting is not None:
                counting[0][host] += 1
                return
            self._counting[key] = (Counter(), time.monotonic())
        log.warning("listener %s: %s from %s %s: %s%s", self.listener, subject, peer, outcome, reason,
                    f" ({detail})" if detail else "")
        self._schedule(self.window, lambda: self._summarise(key, self.window))

    def flush(self) -> None:
        """The summaries due, now (the listener stops)."""
        with self._lock:
            pending = [(key, since) for key, (_, since) in self._counting.items()]
        for key, since in pending:
            self._summarise(key, max(1, math.ceil(time.monotonic() - since)))

    def _summarise(self, key: tuple[str, str, str, str], seconds: float) -> None:
        with self._lock:
            peers, _ = self._counting.pop(key, (Counter(), 0))
        count = sum(peers.values())
        if count:
            subject, outcome, reason, group = key
            hosts = ", ".join(host for host, _ in peers.most_common(3)) + (", ..." if len(peers) > 3 else "")
            log.warning("listener %s: %d more %s%s %s in the last %g s: %s (%sfrom %s)", self.listener, count, subject,
                        "s" if count > 1 else "", outcome, seconds, reason, f"{group}, " if group else "", hosts)


class _Later:
    """Runs actions after a delay in one daemon thread, started when first needed: the
    summaries of every listener, without a thread per summary."""

    def __init__(self):
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._count = 0

    def __call__(self, delay: float, action: Callable[[], None]) -> None:
        with self._changed:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._count, action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="listener-summaries", daemon=True)
                self._thread.start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, action = heapq.heappop(self._due)
            try:
                action()
            except Exception:
                log.exception("listener: a summary of refusals failed")


_later = _Later()


class AssociationSlots:
    """`max_associations` counts associations: a slot is taken when an association request
    passes the listener's checks and given back when its association's thread ends.
    Connections still negotiating (or idle) take none."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.Lock()
        self._held: weakref.WeakSet[Association] = weakref.WeakSet()
        self.taken = 0  # associations accepted since the listener started

    def take(self, assoc: Association) -> bool:
        with self._lock:
            for held in [a for a in self._held if not a.is_alive()]:
                self._held.discard(held)
            if len(self._held) >= self.limit:
                return False
            self._held.add(assoc)
            self.taken += 1
            return True

    def open_count(self) -> int:
        """Associations open now (their threads still running)."""
        with self._lock:
            return sum(1 for assoc in self._held if assoc.is_alive())


@dataclass
class Connection:
    """What the guard knows of one accepted connection that pynetdicom has taken."""

    guard: "ConnectionGuard"
    host: str
    port: int
    requested: bool = False  # pynetdicom decoded the association request (EVT_REQUESTED)
    established: bool = False
    reported: bool = False  # a refusal was logged already
    noted: bool = False  # a line of pynetdicom's about this association was logged already
    complaints: list[str] = field(default_factory=list)  # pynetdicom's warnings before the association

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"


# Every guarded association (of every listener), for the log filter and the socket class.
_connections: "weakref.WeakKeyDictionary[Association, Connection]" = weakref.WeakKeyDictionary()


class _Refused(Exception):
    """A connection refused before pynetdicom has it: `reason` and `detail` for the log;
    `abort` when the peer gets an A-ABORT first."""

    def __init__(self, reason: str, detail: str = "", abort: bool = False):
        super().__init__(reason)
        self.reason, self.detail, self.abort = reason, detail, abort


class _Expired(Exception):
    pass


class ConnectionGuard:
    """The limits of one listener, applied to each connection it accepts."""

    def __init__(self, refusals: RefusalLog, artim: float, network: float, max_pdu: int):
        self.refusals = refusals
        self.artim = artim
        self.network = network
        self.max_pdu = max_pdu
        # accepted socket -> its A-ASSOCIATE-RQ, until pynetdicom takes the connection
        self._requests: "weakref.WeakKeyDictionary[socket.socket, bytes]" = weakref.WeakKeyDictionary()
        _quiet_pynetdicom()

    def handlers(self) -> list:
        return [(evt.EVT_CONN_OPEN, self._connection_opened), (evt.EVT_REQUESTED, self._requested),
                (evt.EVT_ESTABLISHED, self._established), (evt.EVT_CONN_CLOSE, self._connection_closed)]

    def _refused(self, host: str, port: int, reason: str, detail: str = "") -> None:
        self.refusals.refused("connection", f"{host}:{port}", host, "closed", reason, detail)

    # ---- before pynetdicom: in the connection's own thread ----

    def prepare(self, sock: socket.socket, address, context: ssl.SSLContext | None) -> socket.socket | None:
        """The accepted socket once its whole association request has been read (after the TLS
        handshake), or None when the connection was refused (and closed): nothing by the ARTIM
        deadline, not an association request, one longer than MAX_ASSOCIATION_REQUEST."""
        deadline = time.monotonic() + self.artim
        host, port = address[0], address[1]
        try:
            if not _wait_readable(sock, deadline):
                raise _Refused(f"no {'TLS handshake' if context else 'association request'} within {self.artim:g} s")
            if sock.recv(1, socket.MSG_PEEK) == b"":
                log.debug("connection from %s:%s closed by the peer before a word", host, port)
                return _close(sock)  # a port check
            if context is not None:
                try:
                    sock = _handshake(sock, context, deadline)
                except _Expired:
                    raise _Refused(f"TLS handshake not complete within {self.artim:g} s") from None
                except ssl.SSLError as exc:
                    raise _Refused("TLS handshake failed", str(exc.reason or exc)) from None
            request = self._read_request(sock, deadline)
        except _Refused as refusal:
            self._refused(host, port, refusal.reason, refusal.detail)
            if refusal.abort:
                _send_abort(sock)
            return _close(sock)
        except OSError as exc:
            log.debug("connection from %s:%s closed: %s", host, port, exc)
            return _close(sock)
        self._requests[sock] = request
        return sock

    def _read_request(self, sock: socket.socket, deadline: float) -> bytes:
        """The A-ASSOCIATE-RQ PDU, whole; _Refused otherwise."""
        try:
            header = _read(sock, PDU_HEADER, deadline)
        except _Expired as expired:
            raise _Refused(f"association request not complete within {self.artim:g} s" if expired.args[0] else
                           f"no association request within {self.artim:g} s") from None
        if len(header) < PDU_HEADER:
            raise _Refused("association request incomplete", f"{len(header)} bytes, then closed by the peer")
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type != 0x01:
            raise _Refused("not an association request", f"PDU type 0x{pdu_type:02X}", abort=True)
        if length > MAX_ASSOCIATION_REQUEST:
            raise _Refused("association request longer than allowed",
                           f"{length} bytes announced, at most {MAX_ASSOCIATION_REQUEST}", abort=True)
        try:
            body = _read(sock, length, deadline)
        except _Expired:
            raise _Refused(f"association request not complete within {self.artim:g} s") from None
        if len(body) < length:
            raise _Refused("association request incomplete", f"{len(body)} of {length} bytes, then closed by the peer")
        return header + body

    # ---- pynetdicom's events ----

    def _connection_opened(self, event) -> None:
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        assoc_socket = assoc.dul.socket
        request = self._requests.pop(assoc_socket.socket, b"")
        _connections[assoc] = Connection(self, assoc.requestor.address, assoc.requestor.port)
        # The wait for the association request, and the upper layer's ARTIM timer (PS3.8 9.1.5)
        assoc.acse_timeout = self.artim
        assoc_socket.__class__ = GuardedSocket
        assoc_socket.read_already = bytearray(request)

    def _requested(self, event) -> None:
        connection = _connections.get(event.assoc)
        if connection is not None:
            connection.requested = True

    def _established(self, event) -> None:
        connection = _connections.get(event.assoc)
        if connection is not None:
            connection.established = True

    def _connection_closed(self, event) -> None:
        connection = _connections.get(event.assoc)
        if connection is not None:
            self.report_unassociated(connection)

    def report_unassociated(self, connection: Connection) -> None:
        """A connection whose association request pynetdicom could not take (it said why,
        below): logged once, unless the peer simply closed after its request."""
        if connection.reported or connection.requested or not connection.complaints:
            return
        log.debug("connection from %s: %s", connection.peer, "; ".join(connection.complaints))
        connection.reported = True
        self._refused(connection.host, connection.port, "not a valid association request")


class GuardedSocket(AssociationSocket):
    """An accepted connection's AssociationSocket: it first hands out the association request
    the guard has read, then reads bounded in size and time. (Its class is swapped in when
    the connection opens: pynetdicom creates the socket itself.)"""

    read_already: bytearray

    @property
    def ready(self) -> bool:
        """As pynetdicom's, with poll(): select() fails for descriptors past 1024."""
        if getattr(self, "read_already", None):
            return True
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom reads a PDU as recv(6), then recv(length announced): a length over the
        limit is refused before anything is read. What arrives short (deadline, reset, close)
        is returned short: pynetdicom then closes the connection."""
        connection = _connections.get(self.assoc)
        sock = self.socket
        if connection is None or sock is None:
            return super().recv(nr_bytes)
        if self.read_already:
            data = self.read_already[:nr_bytes]
            del self.read_already[:nr_bytes]
            return data  # the association request, header then body: never split otherwise
        guard = connection.guard
        state = self.assoc.dul.state_machine.current_state
        if state in ("Sta1", "Sta2", "Sta3", "Sta13"):
            # Until pynetdicom answers the request, a peer has nothing more to say; after a
            # refusal, an abort or a release, it only has to close. pynetdicom would read on
            # (until ARTIM): nothing more is read, the connection ends.
            guard.report_unassociated(connection)
            _shutdown(sock)
            return bytearray()
        limit = guard.max_pdu + PDU_HEADER
        if nr_bytes > limit:
            self._refuse(connection, "PDU longer than allowed", f"{nr_bytes} bytes announced, at most {limit}")
            return bytearray()
        try:
            return bytearray(_read(sock, nr_bytes, time.monotonic() + guard.network))
        except _Expired:
            self._refuse(connection, f"PDU not complete within {guard.network:g} s (network timeout)")
            return bytearray()
        except OSError:
            return bytearray()  # reset: pynetdicom sees a short PDU and closes

    def _refuse(self, connection: Connection, reason: str, detail: str = "") -> None:
        """A-ABORT and close: nothing more is read from this peer."""
        connection.reported = connection.noted = True
        requestor = self.assoc.requestor
        connection.guard.refusals.refused("association", f"{(requestor.ae_title or '').strip()} ({connection.peer})",
                                          connection.host, "aborted", reason, detail)
        _send_abort(self.socket)
        _shutdown(self.socket)


# ---- the server ---------------------------------------------------------------------------------


class ListenerServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, with a real backlog, the TLS handshake and the wait for
    the association request in each connection's own thread (ConnectionGuard.prepare)."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True  # a stop does not wait for connections that have not associated

    def __init__(self, *args, guard: ConnectionGuard, reuse_port: bool = False, **kwargs):
        self.guard = guard
        self.reuse_port = reuse_port
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        # SO_REUSEPORT: the receiving processes of one router each bind the port, and the kernel
        # spreads the connections over them (every socket on the port must set it).
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self):
        return self.socket.accept()  # no handshake here: it would stop every other client

    def process_request_thread(self, request, client_address) -> None:
        try:
            ready = self.guard.prepare(request, client_address, self.ssl_context)
        except Exception:
            log.exception("listener: connection from %s not handled", client_address[0])
            _close(request)
            return
        if ready is not None:
            super().process_request_thread(ready, client_address)


ACCEPT_POLL_SECONDS = 0.05  # how often an idle listener looks whether it is to stop


def start_server(ae, address: tuple[str, int], evt_handlers: list, ssl_context: ssl.SSLContext | None,
                 guard: ConnectionGuard, reuse_port: bool = False) -> ListenerServer:
    """ae.start_server(address, block=False, ...) with ListenerServer (start_server takes no
    server class; make_server does). `reuse_port`: the port is shared with the router's other
    receiving processes (SO_REUSEPORT)."""
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=ListenerServer, guard=guard, reuse_port=reuse_port)
    # serve_forever's poll interval bounds how long server.shutdown() waits (0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": ACCEPT_POLL_SECONDS},
                              name=f"AcceptorServer@{address[1]}", daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: server.shutdown() removes it from there
    return server


def port_is_free(address: tuple[str, int]) -> int:
    """Bind `address` alone (SO_REUSEADDR, not SO_REUSEPORT) and let it go: raises OSError when
    anything listens there, another router's receiving processes included (SO_REUSEPORT would
    have shared the port with them). Returns the port bound (the one chosen for port 0)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        return probe.getsockname()[1]


# ---- helpers --------------------------------------------------------------------------------------


def _wait(sock: socket.socket, events: int, deadline: float) -> bool:
    """Wait until `sock` is ready for `events` (poll: no limit on descriptor numbers); False at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(remaining * 1000))


def _wait_readable(sock: socket.socket, deadline: float) -> bool:
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return _wait(sock, select.POLLIN, deadline)


def _read(sock: socket.socket, count: int, deadline: float) -> bytes:
    """`count` bytes, or fewer when the peer closes; _Expired at the deadline."""
    data = bytearray()
    try:
        while len(data) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Expired(len(data))
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(min(count - len(data), 65536))
            except (TimeoutError, socket.timeout):
                continue
            if not chunk:
                break
            data += chunk
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass
    return bytes(data)


def _handshake(sock: socket.socket, context: ssl.SSLContext, deadline: float) -> ssl.SSLSocket:
    """The server side of a TLS handshake, done by the deadline or _Expired."""
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    tls.setblocking(False)
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            if not _wait(tls, events, deadline):
                raise _Expired()
    except BaseException:
        tls.close()
        raise
    tls.setblocking(True)
    return tls


def _send_abort(sock: socket.socket) -> None:
    try:
        sock.settimeout(1)
        sock.sendall(A_ABORT_PDU)
    except OSError:
        pass


def _shutdown(sock: socket.socket) -> None:
    """End the connection both ways; pynetdicom closes the socket when it sees the end."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
    return None


class _PeerNoise(logging.Filter):
    """pynetdicom's warnings and errors about what a peer sent (a bad PDU, a short read, often
    with a traceback, and then one line per chunk of what follows): before the association
    they are kept on the connection (DEBUG when it closes; the listener reports the refusal in
    its own words); after it, the first one is logged, with the peer and without a traceback,
    the others at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        connection = _connection_of(threading.current_thread())
        if connection is None:
            return True
        text = record.getMessage()
        if not connection.established:
            if text:
                connection.complaints.append(text)
            return False
        if connection.noted or not text:
            log.debug("association from %s: %s", connection.peer, text, exc_info=record.exc_info)
            return False
        connection.noted = True
        record.msg, record.args = f"association from {connection.peer}: {text}", ()
        record.exc_info = record.exc_text = None
        return True


def _connection_of(thread: threading.Thread | None) -> Connection | None:
    assoc = thread if isinstance(thread, Association) else getattr(thread, "assoc", None)
    return _connections.get(assoc) if assoc is not None else None


_noise_filter = _PeerNoise()
_previous_excepthook = threading.excepthook


def _thread_died(args) -> None:
    """pynetdicom lets an exception in its state machine end the upper layer thread (the peer
    sent something it could not decode): one line, not a traceback on standard error."""
    connection = _connection_of(args.thread)
    if connection is None:
        _previous_excepthook(args)
        return
    level = logging.DEBUG if connection.noted or not connection.established else logging.WARNING
    connection.noted = True
    log.log(level, "association from %s ended: %s", connection.peer, args.exc_value)


def _quiet_pynetdicom() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pynetdicom."):
            logger = logging.getLogger(name)
            if _noise_filter not in logger.filters:
                logger.addFilter(_noise_filter)
    threading.excepthook = _thread_died
