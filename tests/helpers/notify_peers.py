"""Real peers for notifications: an HTTP server receiving webhooks (the standard library's
http.server) and an SMTP server receiving mail (aiosmtpd), on 127.0.0.1, free ports, started
and stopped by the test; and a test certificate authority (openssl) for STARTTLS."""

from __future__ import annotations

import json
import ssl
import subprocess
import textwrap
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from helpers.peers import free_port, require


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class WebhookServer:
    """Answers each POST with the next status of `answers` (the last one again once they run
    out); with `hang=True` it never answers (until closed). Records every request."""

    def __init__(self, answers: tuple[int, ...] = (200,), hang: bool = False, tls_context: ssl.SSLContext | None = None):
        self.answers = list(answers)
        self.hang = hang
        self.posted: list[Posted] = []
        self.received = threading.Condition()
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.received:
                    owner.posted.append(Posted(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = owner.answers.pop(0) if len(owner.answers) > 1 else owner.answers[0]
                    owner.received.notify_all()
                if owner.hang:
                    owner.release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls_context is not None:  # https: each connection's handshake in its own thread
            self.server.socket = tls_context.wrap_socket(self.server.socket, server_side=True,
                                                         do_handshake_on_connect=False)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Posted]:
        with self.received:
            assert self.received.wait_for(lambda: len(self.posted) >= count, timeout), \
                f"{len(self.posted)} webhook(s) received, {count} expected"
            return list(self.posted)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _Inbox:
    def __init__(self):
        self.messages: list = []
        self.received = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        with self.received:
            self.messages.append(envelope)
            self.received.notify_all()
        return "250 Message accepted"


class SMTPServer:
    """aiosmtpd on a free port: plain, or with STARTTLS required (`tls_context`), and a login
    (`user`, `password`) when given."""

    def __init__(self, tls_context: ssl.SSLContext | None = None, user: str | None = None,
                 password: str | None = None):
        self.inbox = _Inbox()
        self.port = free_port()
        self.logins: list[str] = []

        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
                and auth_data.password.decode() == password
            if ok:
                self.logins.append(user)
            return AuthResult(success=ok)

        options: dict = {}
        if tls_context is not None:
            options.update(tls_context=tls_context, require_starttls=True)
        if user is not None:
            options.update(authenticator=authenticate, auth_required=True, auth_require_tls=tls_context is not None)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    @property
    def messages(self) -> list:
        return self.inbox.messages

    def wait_for(self, count: int, timeout: float = 30) -> list:
        with self.inbox.received:
            assert self.inbox.received.wait_for(lambda: len(self.inbox.messages) >= count, timeout)
            return list(self.inbox.messages)

    def close(self) -> None:
        self.controller.stop()


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([require("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=notify-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "7",
             "-days", "2", "-out", "server.crt", "-extfile", "server.ext", cwd=folder)
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def write_config(folder: Path, body: str) -> Path:
    """A router configuration whose notifiers and subscriptions are `body` (YAML, indented as
    the test writes it), with a rule file routing to one DICOM destination."""
    (folder / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    path = folder / "router.yaml"
    path.write_text("storage: var\nrules: main.rules\n"
                    "destinations:\n  PACS: {type: dicom, ae_title: PACS, host: 127.0.0.1, port: 1}\n"
                    + textwrap.dedent(body), encoding="utf-8")
    return path
