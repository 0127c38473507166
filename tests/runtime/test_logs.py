"""The router's log under bad input: repeated messages held back (an injected clock, no
sleeping), pynetdicom's duplicate lines and tracebacks left out (real associations, real
malformed PDUs), pydicom's warnings about bad files kept out of the log."""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import subprocess
import sys

import pytest
from helpers.bad_instances import bundled
from helpers.files import ROOT
from helpers.peers import free_port, wait_until
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from rulesengine.runtime.logs import FORMAT, PeerLibraryNoise, Repeats


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def captured():
    """A handler as the router sets it up: its format and its filter, on a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(PeerLibraryNoise())
    loggers = [logging.getLogger(name) for name in ("pynetdicom", "test.router")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    yield stream
    for logger, (level, propagate) in zip(loggers, saved):
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def test_repeats_lets_a_message_through_once_per_interval_and_counts_the_rest(captured):
    clock = Clock()
    repeats = Repeats(interval=60, clock=clock)
    log = logging.getLogger("test.router")
    results = []
    for step in range(10):  # a loop meeting the same problem every 5 s
        results.append(repeats.log(log, logging.WARNING, "key", "the spool has no room"))
        clock.now += 5
    assert results == [True] + [False] * 9
    clock.now += 20
    assert repeats.log(log, logging.WARNING, "key", "the spool has no room")
    assert repeats.log(log, logging.WARNING, "other key", "another problem")
    lines = captured.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "the spool has no room",
        "the spool has no room (and 9 more times in the last 60 s)",
        "another problem",
    ]


def raise_at_one_place(value):
    raise ValueError(f"bad {value}")


def test_an_internal_error_is_one_line_each_time_and_its_traceback_once_per_interval(captured):
    clock = Clock()
    repeats = Repeats(interval=60, clock=clock)
    log = logging.getLogger("test.router")
    for value in range(3):
        try:
            raise_at_one_place(value)
        except ValueError as exc:
            repeats.internal_error(log, "file %d failed: %s", value, exc, exc=exc)
        clock.now += 1
    clock.now += 60
    try:
        raise_at_one_place(3)
    except ValueError as exc:
        repeats.internal_error(log, "file %d failed: %s", 3, exc, exc=exc)
    output = captured.getvalue()
    assert output.count("Traceback") == 2
    assert "file 1 failed: bad 1 (traceback logged earlier)" in output
    assert "file 3 failed: bad 3 (the same error 2 more times since its last traceback)" in output


def test_pynetdicom_lines_the_router_says_itself_are_left_out(captured):
    """A refused connection and a rejected association: pynetdicom logs two and three ERROR
    lines; the router's own WARNING line is all that should show."""
    ae = AE(ae_title="ROUTER")
    ae.add_requested_context(Verification)
    ae.connection_timeout = 5
    closed = ae.associate("127.0.0.1", free_port(), ae_title="NOBODY")
    assert not closed.is_established

    scp = AE(ae_title="PACS")
    scp.add_supported_context(Verification)
    scp.require_called_aet = True
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        rejected = ae.associate("127.0.0.1", server.server_address[1], ae_title="WRONG")
        assert rejected.is_rejected
    finally:
        server.shutdown()
    assert captured.getvalue() == ""


def malformed_associate_request() -> bytes:
    """An A-ASSOCIATE-RQ whose variable items claim more bytes than they hold."""
    body = b"\x00\x01\x00\x00" + b"PACS".ljust(16) + b"EVIL".ljust(16) + b"\x00" * 32 + b"\x10\x00\xff\xff" + b"zz"
    return b"\x01\x00" + struct.pack(">L", len(body)) + body


def test_a_peer_s_malformed_pdu_is_logged_without_pynetdicom_s_traceback_and_a_flood_once(captured):
    scp = AE(ae_title="PACS")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        for _ in range(20):  # a hostile peer in a loop
            with socket.create_connection(("127.0.0.1", server.server_address[1])) as sock:
                sock.sendall(malformed_associate_request())
                sock.recv(1024)  # pynetdicom aborts the association
        wait_until(lambda: "AssertionError" in captured.getvalue(), timeout=20, what="the decoding failure logged")
    finally:
        server.shutdown()
    output = captured.getvalue()
    assert "Traceback" not in output
    lines = output.splitlines()
    assert sum("Unable to decode the received PDU data" in line for line in lines) == 1, output
    assert sum("AssertionError" in line for line in lines) == 1, output


LOG_A_BAD_FILE = """
import sys
import pydicom
from rulesengine.runtime.logs import setup_logging
setup_logging("INFO", int(sys.argv[2]), sys.argv[3])
pydicom.dcmread(sys.argv[1]).StudyInstanceUID  # pydicom warns, through logging and through warnings
import logging
logging.getLogger("rulesengine.watch").warning("one line about the file")
"""


def letters_for_a_uid() -> bytes:
    """pydicom's CT_small.dcm with letters for its Study Instance UID, as a broken modality writes it."""
    import pydicom
    data = bundled("CT_small.dcm").read_bytes()
    uid = str(pydicom.dcmread(bundled("CT_small.dcm")).StudyInstanceUID).encode()
    assert data.count(uid) == 1
    return data.replace(uid, b"X" * len(uid))


@pytest.mark.parametrize("verbose, pydicom_lines", [(0, False), (1, True)])
def test_pydicom_warnings_about_a_bad_file_stay_out_of_the_log_unless_asked(tmp_path, verbose, pydicom_lines):
    bad = tmp_path / "letters.dcm"
    bad.write_bytes(letters_for_a_uid())
    log_file = tmp_path / "router.log"
    result = subprocess.run([sys.executable, "-c", LOG_A_BAD_FILE, str(bad), str(verbose), str(log_file)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    logged = log_file.read_text()
    assert "one line about the file" in logged
    assert ("Invalid value for VR UI" in logged) == pydicom_lines, logged
    assert result.stderr == logged  # standard error gets the log, and nothing else
