"""The console's HTTP as a hostile client speaks it, over a real socket to uvicorn: what is not
HTTP, what lies about its length, what is too big, what climbs out of /static, what names a
method or a type the route does not take. Each gets a 4xx (or the connection closed), never a
500 or a traceback, and the console answers the next honest request."""

from __future__ import annotations

import socket

import httpx
import pytest

from helpers.console import PASSWORD, ConsoleUnderTest, ServerThread
from helpers.peers import free_port


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    console = ConsoleUnderTest(tmp_path_factory.mktemp("console-abuse"))
    console.delivery("PACS", "dead")
    port = free_port()
    with ServerThread(console.app, port):
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", follow_redirects=False, timeout=20)
        token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
        answer = client.post("/login", json={"name": "ada", "password": PASSWORD}, headers={"x-csrf-token": token})
        assert answer.status_code == 200
        client.headers["x-csrf-token"] = answer.json()["csrf_token"]
        yield port, client
        client.close()


def _raw(port: int, data: bytes, read: bool = True) -> bytes:
    """Send bytes as they are; answer the first response (headers and the body its length
    says), or what came before the server closed or went quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # refused before the last byte was read
            pass
        if not read:
            return b""
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                head, found, body = answer.partition(b"\r\n\r\n")
                if found:
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(body) >= length:
                        break
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def _status(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else None


def _still_serves(client: httpx.Client) -> None:
    assert client.get("/api/queues").status_code == 200


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 200,  # a TLS hello to a plain port
    b"\x01\x00\x00\x00\x00\xcd\x00\x01",  # a DICOM A-ASSOCIATE-RQ's first bytes
    b"GET /queues HTTP/9.9\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /queues HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /queues HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    b"GET /queues HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_what_is_not_http_or_is_too_big_is_refused_or_closed(site, data):
    port, client = site
    answer = _raw(port, data)
    status = _status(answer)
    # Refused, or (what h11 still reads as a request) sent to the login: never a 5xx.
    assert status is None or status == 303 or 400 <= status < 500, answer[:200]
    assert b"Traceback" not in answer
    _still_serves(client)


def test_a_body_shorter_than_its_length_and_a_client_gone_cost_nothing(site):
    port, client = site
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    _raw(port, b"POST /api/queues/retry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1000\r\nCookie: " + cookie.encode() + b"\r\n\r\n{\"dest", read=False)
    _still_serves(client)
    retried = [e for e in client.get("/api/audit").json()["entries"] if e["action"] == "queue retry"]
    assert retried == []  # nothing was done on half a body


def test_many_idle_half_requests_do_not_stop_an_honest_one(site):
    port, client = site
    idle = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"GET /queues HTTP/1.1\r\nHost: x\r\n")  # never finished
            idle.append(sock)
        _still_serves(client)
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("path", [
    "/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2fauth.py",
    "/static//etc/passwd", "/static/console.css%00.py", "/static/.", "/static/",
])
def test_nothing_outside_the_static_folder_is_served(site, path):
    port, _client = site
    answer = _raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert _status(answer) in (400, 404, 405), answer[:200]
    assert b"def " not in answer and b"root:" not in answer


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"])
def test_a_method_a_route_does_not_take_is_405(site, method):
    _port, client = site
    answer = client.request(method, "/api/queues")
    assert answer.status_code == 405


@pytest.mark.parametrize("body, message", [
    ({"destination": {"a": 1}}, "destination must be text of at most 200 characters"),
    ({"destination": ["PACS", "ARCHIVE"]}, "destination is given 2 times; give it once"),
    ({"id": [True]}, "id must be a whole number from 1 to 9223372036854775807"),
    ({"id": ["1e400"]}, "id must be a whole number from 1 to 9223372036854775807"),
    ({"id": ["9" * 5000]}, "id must be a whole number from 1 to 9223372036854775807"),
    ({"destination": "PACS\x00"}, "no destination 'PACS\\x00'"),
])
def test_json_of_the_wrong_shape_gets_400_naming_the_parameter(site, body, message):
    _port, client = site
    answer = client.post("/api/queues/retry", json=body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b"{" * 100_000),
    ("application/json", b"\xff\xfe not utf-8"),
    ("application/json", b"[1, 2]"),
    ("application/x-www-form-urlencoded", b"destination=%ff%fe&csrf_token=x"),
    ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--zz--"),
    ("multipart/form-data", b"no boundary at all"),
])
def test_a_body_that_cannot_be_read_gets_4xx(site, content_type, body):
    _port, client = site
    answer = client.post("/api/queues/retry", content=body, headers={"content-type": content_type})
    assert 400 <= answer.status_code < 500, answer.text
    assert "Traceback" not in answer.text
    _still_serves(client)


def test_a_query_string_of_repeated_and_odd_parameters_gets_400(site):
    _port, client = site
    for query in ("limit=1&limit=2", "limit=%00", "limit=" + "9" * 4000, "state=" + "x" * 100, "before=-1"):
        answer = client.get("/api/queues?" + query)
        assert answer.status_code == 400, (query, answer.text)
        assert len(answer.json()["error"]) < 400  # the message quotes a bounded part of the value


def test_a_huge_garbage_cookie_is_no_session(site):
    port, _client = site
    answer = _raw(port, b"GET /api/queues HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: rulesengine_console="
                  + b"A" * 8000 + b"\r\n\r\n")
    assert _status(answer) == 401
