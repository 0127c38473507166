"""Hostile peers of the notifications: a webhook server that never answers, answers 500, moves
the hook elsewhere (301), answers a body without end, drips it a byte at a time, or closes in
the middle of its answer; an SMTP server that refuses, hangs up, or never greets. Real servers
on 127.0.0.1 (plain sockets), the outbox in a real journal, the clock injected. Each
notification is retried, then dead with a reason; a sender blocked on a peer stops within its
timeout; a notification to a good peer in the same round is sent all the same."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers.clock import StoppedClock
from helpers.notify_peers import WebhookServer
from helpers.peers import wait_until

from rulesengine.config import load_config
from rulesengine.runtime.journal import NotificationState, SQLiteJournal
from rulesengine.runtime.notifications import NotificationSender, Notifications

SENT, DEAD, RETRYING = NotificationState.SENT, NotificationState.DEAD, NotificationState.RETRYING
TIMEOUT = 0.5  # each notifier's timeout: what a peer that never answers costs a round


class HostilePeer:
    """A TCP server on 127.0.0.1 running `behave(connection)` for each connection; it keeps
    every connection until it is closed, and counts them."""

    def __init__(self, behave):
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.closing = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._run, args=(connection,), daemon=True).start()

    def _run(self, connection: socket.socket) -> None:
        try:
            self.behave(connection, self.closing)
        except OSError:
            pass  # the client gave up: what a hostile peer expects

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


def _read_request(connection: socket.socket) -> bytes:
    """The request's head and body (as much as a small request sends at once)."""
    connection.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def never_answers(connection, closing):
    _read_request(connection)
    closing.wait(30)


def answers_500(connection, closing):
    _read_request(connection)
    connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 11\r\n\r\nbroken here")


def moves_elsewhere(target_port):
    def behave(connection, closing):
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:%d/stolen\r\n"
                           b"Content-Length: 0\r\n\r\n" % target_port)
    return behave


def endless_body(status: bytes):
    def behave(connection, closing):
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 100000000000\r\n\r\n")
        block = b"x" * 65536
        while not closing.is_set():
            connection.sendall(block)
    return behave


def drips(connection, closing):
    """A 503 whose body comes a byte every tenth of a second, for ever: each read is in time."""
    _read_request(connection)
    connection.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100000\r\n\r\n")
    while not closing.wait(0.1):
        connection.sendall(b"y")


def closes_mid_answer(connection, closing):
    _read_request(connection)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
    connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def smtp_refuses(connection, closing):
    connection.sendall(b"554 5.3.2 no service here\r\n")
    connection.recv(1024)


def smtp_hangs_up(connection, closing):
    connection.sendall(b"220 smtp ready\r\n")
    connection.recv(1024)  # EHLO
    connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def smtp_never_greets(connection, closing):
    closing.wait(30)


@pytest.fixture
def peers():
    started: list = []

    def start(behave) -> HostilePeer:
        started.append(HostilePeer(behave))
        return started[-1]

    yield start
    for peer in started:
        peer.close()


@pytest.fixture
def journal(tmp_path):
    opened = SQLiteJournal(str(tmp_path / "journal.sqlite"), node="router-a")
    yield opened
    opened.close()


def config(folder: Path, notifiers: str):
    (folder / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    path = folder / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\n"
                    "destinations:\n  PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 1}\n"
                    "notifiers:\n" + textwrap.indent(textwrap.dedent(notifiers).strip("\n"), "  ") + "\n",
                    encoding="utf-8")
    return load_config(path)


def hook(name: str, port: int, attempts: int = 2) -> str:
    return (f"{name}:\n  type: webhook\n  url: http://127.0.0.1:{port}/hook\n  timeout: {TIMEOUT}\n"
            f"  retry: {{delay: 10, multiplier: 1, cap: 10, max_attempts: {attempts}}}\n")


def mail(name: str, port: int) -> str:
    return (f"{name}:\n  type: email\n  host: 127.0.0.1\n  port: {port}\n  tls: none\n  from: router@example.org\n"
            f"  to: [ops@example.org]\n  timeout: {TIMEOUT}\n"
            "  retry: {delay: 10, multiplier: 1, cap: 10, max_attempts: 2}\n")


def until_settled(journal, config, number: int, rounds: int = 3):
    """Rounds of the sender 11 s apart on the injected clock (past each retry's delay); the
    notification's states, round by round."""
    clock = StoppedClock()
    sender = NotificationSender(journal, config, clock)
    states = []
    try:
        for _ in range(rounds):
            sender.tick()
            states.append(journal.notification(number).state)
            clock.advance(11)
    finally:
        sender.stop()
    return states, journal.notification(number)


@pytest.mark.parametrize("behave, reason", [
    (never_answers, f"no answer within {TIMEOUT:g} s"),
    (answers_500, "HTTP 500 Internal Server Error: broken here"),
    (endless_body(b"502 Bad Gateway"), "HTTP 502 Bad Gateway: xxxx"),
    (drips, "HTTP 503 Service Unavailable: yyy"),
    (closes_mid_answer, "cannot post to"),
], ids=["never answers", "500", "endless body", "drips", "closes mid-answer"])
def test_a_hostile_webhook_is_retried_then_dead_with_its_reason(tmp_path, peers, journal, behave, reason):
    peer = peers(behave)
    loaded = config(tmp_path, hook("ops-hook", peer.port))
    number = Notifications(journal, loaded, StoppedClock()).send("ops-hook", "delivery-dead", {"reason": "x"})
    started = time.monotonic()
    states, dead = until_settled(journal, loaded, number)
    assert states == [RETRYING, DEAD, DEAD] and dead.attempts == 2
    assert reason in dead.last_error and len(dead.last_error) < 400, dead.last_error
    assert len(peer.connections) == 2
    # Each attempt costs at most about the timeout, whatever the peer sends or withholds.
    assert time.monotonic() - started < 2 * (TIMEOUT + 1.5)


def test_a_webhook_answering_success_with_an_endless_body_is_sent_without_reading_it(tmp_path, peers, journal):
    peer = peers(endless_body(b"200 OK"))
    loaded = config(tmp_path, hook("ops-hook", peer.port))
    number = Notifications(journal, loaded).send("ops-hook", "delivery-dead", {"reason": "x"})
    states, sent = until_settled(journal, loaded, number, rounds=1)
    assert states == [SENT] and sent.last_error is None


def test_a_redirect_is_not_followed_and_the_notification_is_dead_at_once_saying_where(tmp_path, peers, journal):
    elsewhere = WebhookServer((200,))
    try:
        peer = peers(moves_elsewhere(elsewhere.server.server_address[1]))
        loaded = config(tmp_path, hook("ops-hook", peer.port))
        number = Notifications(journal, loaded).send("ops-hook", "delivery-dead", {"reason": "x"})
        states, dead = until_settled(journal, loaded, number, rounds=2)
        assert states == [DEAD, DEAD] and len(peer.connections) == 1
        assert "HTTP 301 Moved Permanently" in dead.last_error and "/stolen, not followed" in dead.last_error
        assert elsewhere.posted == []  # the body never reached the address the peer named
    finally:
        elsewhere.close()


@pytest.mark.parametrize("behave, reason", [
    (smtp_refuses, "SMTP 554: 5.3.2 no service here"),
    (smtp_hangs_up, "cannot send through 127.0.0.1"),
    (smtp_never_greets, "cannot send through 127.0.0.1"),
], ids=["refuses", "hangs up", "never greets"])
def test_a_hostile_smtp_server_is_retried_then_dead_with_its_reason(tmp_path, peers, journal, behave, reason):
    peer = peers(behave)
    loaded = config(tmp_path, mail("ops-mail", peer.port))
    number = Notifications(journal, loaded).send("ops-mail", "delivery-dead", {"reason": "x"})
    states, dead = until_settled(journal, loaded, number)
    assert states == [RETRYING, DEAD, DEAD] and reason in dead.last_error, dead.last_error
    assert len(peer.connections) == 2


def test_a_peer_that_never_answers_delays_the_others_of_its_round_by_its_timeout_only(tmp_path, peers, journal):
    hung, good = peers(never_answers), WebhookServer((200,))
    try:
        loaded = config(tmp_path, hook("hung", hung.port) + hook("good", good.server.server_address[1]))
        notifications = Notifications(journal, loaded)
        first = notifications.send("hung", "delivery-dead", {"reason": "x"})
        second = notifications.send("good", "delivery-dead", {"reason": "y"})
        started = time.monotonic()
        NotificationSender(journal, loaded).tick()
        assert time.monotonic() - started < TIMEOUT + 1.5
        assert journal.notification(first).state == RETRYING and journal.notification(second).state == SENT
    finally:
        good.close()


def test_the_sender_blocked_on_a_peer_that_never_answers_stops_within_its_timeout(tmp_path, peers, journal):
    hung = peers(never_answers)
    loaded = config(tmp_path, hook("hung", hung.port))
    Notifications(journal, loaded).send("hung", "delivery-dead", {"reason": "x"})
    sender = NotificationSender(journal, loaded)
    sender.start()
    wait_until(lambda: len(hung.connections) == 1, timeout=10, what="the post")  # it is blocked in it now
    started = time.monotonic()
    sender.stop(timeout=TIMEOUT + 2)
    assert not sender.is_alive() and time.monotonic() - started < TIMEOUT + 2

