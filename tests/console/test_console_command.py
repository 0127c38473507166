"""`dicom-rules console` and `dicom-rules user add` as a user runs them: the console on a real
socket (a process of its own, stopped by its PID), its first-run admin password printed
once and working, clear errors for what cannot start; users written into the configuration
with its comments kept, their hashes verifying."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import dicom_rules
from helpers.console import PASSWORD, USERS, ConsoleUnderTest, ServerThread, csrf_of, write_config
from helpers.files import ROOT
from helpers.peers import free_port, require, wait_for_port
from rulesengine.config import load_config
from rulesengine.console.auth import password_matches


class Browser:
    """urllib with a cookie jar, not following redirects: a client over a real socket."""

    def __init__(self, port: int, trusted_certificate: Path | None = None):
        scheme = "https" if trusted_certificate else "http"
        self.base = f"{scheme}://127.0.0.1:{port}"
        self.cookies = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        handlers = [urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect]
        if trusted_certificate:
            handlers.append(urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=str(trusted_certificate))))
        self.opener = urllib.request.build_opener(*handlers)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, dict, str]:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers={
            **({"content-type": "application/json"} if body else {}), "accept": "application/json",
            **(headers or {})})
        try:
            with self.opener.open(request, timeout=20) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def login(self, name: str, password: str) -> tuple[int, dict]:
        token = json.loads(self.request("/login")[2])["csrf_token"]
        status, _, text = self.request("/login", {"name": name, "password": password}, {"x-csrf-token": token})
        return status, json.loads(text)


class ConsoleProcess:
    """`dicom-rules console CONFIG` in a process of its own, its output read line by line."""

    def __init__(self, config: Path, port: int):
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen([sys.executable, "-m", "rulesengine", "console", str(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                        cwd=config.parent)
        self.lines: list[str] = []
        while True:
            line = self.process.stdout.readline()
            assert line, f"the console ended: {''.join(self.lines)}"
            self.lines.append(line)
            if line.startswith("console at "):
                break
        wait_for_port(port, self.process)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        rest, _ = self.process.communicate(timeout=20)
        assert self.process.returncode == 0, rest
        return "".join(self.lines) + rest


@pytest.fixture
def started():
    processes = []
    yield processes.append
    for console in processes:
        if console.process.poll() is None:
            console.process.kill()
            console.process.wait()


def test_the_first_start_prints_an_admin_password_once_and_it_works(tmp_path, started):
    port = free_port()
    config = write_config(tmp_path, port)
    console = ConsoleProcess(config, port)
    started(console)
    [line] = [line for line in console.lines if "password" in line and "log in as admin" in line]
    password = re.search(r"with the password (\S+)$", line.strip()).group(1)
    assert console.lines[-1].strip() == f"console at http://127.0.0.1:{port}/ (storage {tmp_path / 'var'}); " \
                                         "stop with Ctrl-C or SIGTERM"
    users_file = tmp_path / "var" / "console-users.json"
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert password not in users_file.read_text()
    assert stat.S_IMODE((tmp_path / "var" / "console-session.key").stat().st_mode) == 0o600
    browser = Browser(port)
    assert browser.request("/api/queues")[0] == 401
    assert browser.login("admin", "not it")[0] == 401
    status, session = browser.login("admin", password)
    assert status == 200 and session["role"] == "admin"
    status, _, text = browser.request("/api/queues")
    assert status == 200 and {d["name"] for d in json.loads(text)["destinations"]} == {"PACS", "ARCHIVE"}
    status, _, text = browser.request("/api/users")
    assert json.loads(text)["users"] == [{"name": "admin", "role": "admin", "from": "first run"}]
    output = console.stop()
    # A second start: the same admin, no password printed again; the session survives the restart.
    console = ConsoleProcess(config, port)
    started(console)
    assert not any("password" in line for line in console.lines)
    assert browser.request("/api/queues")[0] == 200
    assert password not in console.stop()
    assert output.count(password) == 1


def test_without_a_console_section_or_with_its_port_taken_it_says_so(tmp_path):
    config = tmp_path / "router.yaml"
    write_config(tmp_path)
    text = config.read_text()
    config.write_text(text[:text.index("console:")])
    result = dicom_rules("console", config)
    assert result.returncode == 2
    assert result.stderr == (f"dicom-rules: {config} has no console: section; add one (`console: {{}}` for the "
                             "defaults, see docs/configuration.md)\n")
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config(tmp_path, port)
        result = dicom_rules("console", config)
    assert result.returncode == 1
    port_line = next(number for number, line in enumerate(config.read_text().splitlines(), 1)
                     if line.strip().startswith("port:") and str(port) in line)
    assert f"dicom-rules: console: cannot listen on 127.0.0.1:{port}: Address already in use " \
           f"({config}:{port_line}: console.port)" in result.stderr


def test_a_bad_console_section_names_file_line_and_key(tmp_path):
    config = write_config(tmp_path, extra="  users:\n    - {name: ada, role: root, password_hash: secret}\n"
                                          "    - {name: ada, role: admin, password_hash: \"$argon2id$x\"}\n")
    result = dicom_rules("console", config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"dicom-rules: {config}:14: console.users[0].role: must be one of viewer, operator, admin, not 'root'",
        f"{config}:14: console.users[0].password_hash: 'secret' is not valid: An argon2id hash, as "
        "`dicom-rules user add` writes it.",
        f"{config}:15: console.users[1].name: the user 'ada' is already console.users[0]"]


def test_user_add_writes_the_hash_and_keeps_the_comments(tmp_path):
    config = write_config(tmp_path)
    before = config.read_text()
    result = dicom_rules("user", "add", config, "ada", "--role", "operator", "--password-stdin",
                         input_text="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added console user ada (operator) in {config}; a running console reads it at its " \
                            "next start\n"
    after = config.read_text()
    assert after.startswith(before)  # comments, layout and all: only the users were added
    assert "# spool, journal, quarantine" in after
    [user] = load_config(config, secrets=False).console.users
    assert (user.name, user.role) == ("ada", "operator")
    assert user.password_hash.startswith("$argon2id$") and password_matches(user.password_hash, "correct horse battery")
    assert "correct horse battery" not in after
    # The same name again: a new password and role, still one user.
    dicom_rules("user", "add", config, "ada", "--role", "admin", "--password-stdin", input_text="another password\n")
    [user] = load_config(config, secrets=False).console.users
    assert user.role == "admin" and password_matches(user.password_hash, "another password")


def test_user_add_refuses_a_short_password_and_a_bad_role_and_leaves_the_file(tmp_path):
    config = write_config(tmp_path)
    before = config.read_text()
    result = dicom_rules("user", "add", config, "ada", "--role", "admin", "--password-stdin", input_text="short\n")
    assert result.returncode == 2
    assert result.stderr == "dicom-rules: the password needs at least 10 characters; nothing written\n"
    result = dicom_rules("user", "add", config, "ada", "--role", "root", "--password-stdin",
                         input_text="long enough password\n")
    assert result.returncode == 2 and "invalid choice: 'root'" in result.stderr
    result = dicom_rules("user", "add", config, "a/b", "--role", "admin", "--password-stdin",
                         input_text="long enough password\n")
    assert result.returncode == 2 and "console.users[0].name: 'a/b' is not valid" in result.stderr
    assert config.read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".console-users-")] == []


def test_user_remove_takes_one_user_out_and_names_one_that_is_not_there(tmp_path):
    config = write_config(tmp_path)
    for name in ("ada", "otto"):
        dicom_rules("user", "add", config, name, "--role", "admin", "--password-stdin",
                    input_text="long enough password\n")
    result = dicom_rules("user", "remove", config, "ada")
    assert result.returncode == 0, result.stderr
    assert [u.name for u in load_config(config, secrets=False).console.users] == ["otto"]
    before = config.read_text()
    result = dicom_rules("user", "remove", config, "ada")
    assert result.returncode == 2 and result.stderr == f"dicom-rules: {config}: no console user 'ada'\n"
    assert config.read_text() == before


def test_user_add_to_a_configuration_without_a_console_turns_it_on(tmp_path):
    config = write_config(tmp_path)
    text = config.read_text()
    config.write_text(text[:text.index("console:")])
    assert dicom_rules("user", "add", config, "ada", "--role", "admin", "--password-stdin",
                       input_text="long enough password\n").returncode == 0
    assert [u.name for u in load_config(config, secrets=False).console.users] == ["ada"]


def test_the_app_over_a_real_socket(tmp_path):
    console = ConsoleUnderTest(tmp_path, users=USERS)
    dead = console.delivery("PACS", "dead")
    port = free_port()
    with ServerThread(console.app, port):
        browser = Browser(port)
        status, headers, _ = browser.request("/queues", headers={"accept": "text/html"})
        assert status == 303 and headers["location"] == "/login?next=%2Fqueues"
        status, session = browser.login("otto", PASSWORD)
        assert status == 200
        status, _, text = browser.request("/api/queues/retry", {"id": [dead]}, {"x-csrf-token": session["csrf_token"]})
        assert status == 200 and json.loads(text)["queued"] == 1
        status, _, page = browser.request("/queues", headers={"accept": "text/html"})
        assert status == 200 and csrf_of(page) == session["csrf_token"]
    assert console.journal.delivery(dead).state == "queued"


def test_with_tls_the_console_answers_https_only_and_its_cookie_is_secure(tmp_path, started):
    result = subprocess.run([require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                             "console.key", "-out", "console.pem", "-days", "2", "-subj", "/CN=console",
                             "-addext", "subjectAltName=IP:127.0.0.1"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    port = free_port()
    config = write_config(tmp_path, port, extra="  tls: {certificate: console.pem, private_key: console.key}\n")
    console = ConsoleProcess(config, port)
    started(console)
    assert console.lines[-1].startswith(f"console at https://127.0.0.1:{port}/")
    password = re.search(r"with the password (\S+)$", console.lines[0].strip()).group(1)
    browser = Browser(port, trusted_certificate=tmp_path / "console.pem")
    status, session = browser.login("admin", password)
    assert status == 200
    [cookie] = list(browser.cookies)
    assert cookie.secure and cookie.name == "rulesengine_console"
    assert browser.request("/api/queues")[0] == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on that port gets no answer
        urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=10).read()
    console.stop()


def test_an_unreadable_certificate_names_its_key(tmp_path):
    config = write_config(tmp_path, extra="  tls: {certificate: missing.pem, private_key: missing.key}\n")
    result = dicom_rules("console", config)
    assert result.returncode == 2
    assert result.stderr == f"dicom-rules: {config}:13: console.tls.certificate: cannot read {tmp_path / 'missing.pem'}\n"


def test_a_damaged_users_file_or_session_key_is_a_clear_error(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "var").mkdir()
    users = tmp_path / "var" / "console-users.json"
    users.write_text("{not json")
    result = dicom_rules("console", config)
    assert result.returncode == 2
    assert result.stderr == (f"dicom-rules: console: {users} is not a users file of the console; remove it, and "
                             "the next start makes a new admin with a new password\n")
    users.unlink()
    key = tmp_path / "var" / "console-session.key"
    key.write_text("")
    result = dicom_rules("console", config)
    assert result.returncode == 2
    assert result.stderr == (f"dicom-rules: console: {key} holds no session key; remove it, and the next start "
                             "makes a new one (everyone logs in again)\n")


def test_the_console_socket_sends_without_waiting_for_acks():
    """Connections accepted on the console's socket have Nagle's algorithm off, as asyncio sets it
    for a TCP socket: else each keep-alive answer's body waits for the client's delayed ACK."""
    import asyncio
    import socket

    from rulesengine.cli.console import _listening_socket

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        seen = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listening = _listening_socket("127.0.0.1", 0)
        server = await loop.create_server(Probe, sock=listening)
        try:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
            return value
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(accepted_nodelay()) != 0
