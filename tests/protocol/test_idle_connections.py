"""Connections that never complete an association request must not lock senders out:
they are closed after the listener's ARTIM timeout (`timeouts.artim`), they do not count
against `max_associations` (only associations do), a burst of them fits the listen
backlog, and the router says so in its log, summed up rather than line by line."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time

from .pdus import associate, associate_rq, connect, is_open, read_pdu, release, wait_closed
from helpers.peers import DCMTK_ENV, require, wait_until

IDLE = 200


def open_connections(port: int, count: int) -> list[socket.socket]:
    return [connect(port) for _ in range(count)]


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def echoscu(port: int) -> subprocess.CompletedProcess:
    return subprocess.run([require("echoscu"), "-v", "-aet", "CT1", "-aec", "ROUTER", "127.0.0.1", str(port)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


def test_idle_connections_do_not_count_against_max_associations(router):
    """`patient` allows 4 associations and waits 60 s for a request: 200 connections that send
    nothing used to refuse every sender ("Local Limit Exceeded") until they were closed."""
    port = router.ports["patient"]
    idle = open_connections(port, IDLE)
    try:
        router.assert_stores("patient")
        echo = echoscu(port)
        assert echo.returncode == 0, echo.stdout + echo.stderr
        # They were still there: the sender got through beside them, not after them.
        assert all(is_open(sock) for sock in idle)
    finally:
        close_all(idle)
    router.assert_recovered()


def test_max_associations_still_counts_associations(router):
    """Four open associations on `patient` (its max_associations) leave no room for a fifth;
    the refusal is logged with the peer. Once they are released there is room again."""
    held = [associate(router.ports["patient"], calling=f"HOLDER{n}")[0] for n in range(4)]
    try:
        refused = router.storescu("patient")
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "Local Limit Exceeded" in output, output
        wait_until(lambda: re.search(r"listener patient: association from CT1 \(127\.0\.0\.1(:\d+)?\) rejected: "
                                     r"4 associations already \(max_associations\)", router.log()),
                   timeout=30, what="the refusal in the router's log")
    finally:
        for sock in held:
            release(sock)
    router.assert_stores("patient")
    router.assert_recovered()


def test_a_connection_that_requests_nothing_is_closed_after_artim(router):
    """`main` waits 2 s (ARTIM) for an association request, then closes the connection; the
    log has the first such refusal with the peer and a summary of the others, not 50 lines."""
    earlier = len(router.log())
    sockets = open_connections(router.ports["main"], 50)
    for sock in sockets:
        assert wait_closed(sock, timeout=30) == b""
    close_all(sockets)
    summary = re.compile(r"listener main: \d+ more connections? closed in the last \d+ s: no association request "
                         r"within 2 s \(from 127\.0\.0\.1\)")

    def summed_up() -> str | None:
        text = router.log()[earlier:]
        return text if summary.search(text) else None

    log = wait_until(summed_up, timeout=30, what="the summary of the refusals")
    first = re.findall(r"listener main: connection from 127\.0\.0\.1:\d+ closed: no association request within "
                       r"2 s", log)
    assert len(first) <= 3, log  # summed up, not one line each
    router.assert_recovered()


def test_random_bytes_do_not_block_c_echo(router):
    """300 connections each sending 64 random bytes (and then nothing) used to block C-ECHO
    for about 27 s; echoscu now gets through while they are open."""
    rng = random.Random(6012)
    sockets = open_connections(router.ports["main"], 300)
    try:
        for sock in sockets:
            try:
                sock.sendall(rng.randbytes(64))
            except ConnectionResetError:
                pass  # refused at once: as good
        echo = echoscu(router.ports["main"])
        assert echo.returncode == 0, echo.stdout + echo.stderr
    finally:
        close_all(sockets)
    router.assert_recovered()


def test_a_burst_of_connections_fits_the_listen_backlog(router):
    """While the router cannot accept (stopped), the kernel completes as many connections as
    the listen backlog holds: 100 with a backlog of 128 or more, 6 with Python's default 5."""
    port = router.ports["main"]
    pending = []
    os.kill(router.pid, signal.SIGSTOP)
    try:
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            pending.append(sock)
        deadline = time.monotonic() + 5
        connected = set()
        while time.monotonic() < deadline and len(connected) < len(pending):
            for sock in pending:
                if sock not in connected and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    try:
                        sock.getpeername()
                        connected.add(sock)
                    except OSError:
                        pass
            time.sleep(0.05)
    finally:
        os.kill(router.pid, signal.SIGCONT)
        close_all(pending)
    assert len(connected) == 100, f"only {len(connected)} of 100 connections completed while the router was busy"
    router.assert_recovered()


def test_an_association_request_completed_in_time_is_served(router):
    """ARTIM counts until the request is complete, not beyond: an association made with a
    request sent in two parts, well within ARTIM, is accepted and released normally."""
    sock = connect(router.ports["main"])
    request = associate_rq()
    sock.sendall(request[:10])
    sock.sendall(request[10:])
    pdu_type, _ = read_pdu(sock)
    assert pdu_type == 2
    release(sock)
    router.assert_recovered()
