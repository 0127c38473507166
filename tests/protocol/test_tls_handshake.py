"""A TLS listener does each handshake in the connection's own thread, within ARTIM: one
connection that never starts (or never finishes) its handshake must not stop the others."""

from __future__ import annotations

import re
import ssl

from .pdus import associate_rq, connect, read_pdu, release, wait_closed
from helpers.peers import wait_until


def test_an_idle_tcp_connection_does_not_stop_tls_clients(router):
    """It used to hang the listener for every client: the handshake ran in the accept thread,
    without a timeout. Now a real TLS storescu gets through beside it, and the idle
    connection is closed after ARTIM (2 s on `secure`)."""
    idle = connect(router.ports["secure"])
    try:
        router.assert_stores("secure")
        assert wait_closed(idle, timeout=30) == b""
    finally:
        idle.close()
    wait_until(lambda: re.search(r"listener secure: connection from 127\.0\.0\.1:\d+ closed: no TLS handshake "
                                 r"within 2 s", router.log()), timeout=30, what="the refusal in the log")
    router.assert_recovered()


def test_a_tls_client_that_stops_halfway_through_the_handshake_is_closed(router):
    """A ClientHello and then nothing: the server's answer goes out, the connection is closed
    at ARTIM, and a normal TLS client gets through meanwhile."""
    context = ssl.create_default_context(cafile=str(router.pki / "ca.crt"))
    context.load_cert_chain(router.pki / "client.crt", router.pki / "client.key")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    half = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        half.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock = connect(router.ports["secure"])
    try:
        sock.sendall(outgoing.read())  # the ClientHello alone
        router.assert_stores("secure")
        wait_closed(sock, timeout=30)
    finally:
        sock.close()
    router.assert_recovered()


def test_a_plain_association_request_to_the_tls_port_is_refused_at_once(router):
    """TLS without a handshake: the A-ASSOCIATE-RQ is not a ClientHello, the handshake fails,
    the connection is closed (well before ARTIM would), the failure is logged with the peer."""
    sock = connect(router.ports["secure"])
    sock.sendall(associate_rq())
    wait_closed(sock, timeout=30)
    sock.close()
    wait_until(lambda: re.search(r"listener secure: connection from 127\.0\.0\.1:\d+ closed: TLS handshake failed",
                                 router.log()), timeout=30, what="the failed handshake in the log")
    router.assert_recovered()


def test_an_association_over_tls_is_served(router):
    """The handshake moved out of the accept thread: an association over TLS made by hand
    (Python's ssl, the client certificate) is accepted and released."""
    context = ssl.create_default_context(cafile=str(router.pki / "ca.crt"))
    context.load_cert_chain(router.pki / "client.crt", router.pki / "client.key")
    with context.wrap_socket(connect(router.ports["secure"]), server_hostname="127.0.0.1") as sock:
        sock.sendall(associate_rq())
        pdu_type, _ = read_pdu(sock)
        assert pdu_type == 2
        release(sock)
    router.assert_recovered()
