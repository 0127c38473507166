"""How the router sets pynetdicom up: data sets through files, and pynetdicom's log lines as
the command line asks (`run -vv` shows its debug lines, otherwise its warnings only, and the
lines not shown are not formatted)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

import pytest
from pynetdicom import _config as pynetdicom_config

from helpers.peers import wait_until
from rulesengine.runtime.pynetdicom_setup import ReactorCheckpoint, configure_pynetdicom, tune_connection


@pytest.fixture
def pynetdicom_state():
    logger = logging.getLogger("pynetdicom")
    names = ("STORE_SEND_CHUNKED_DATASET", "STORE_RECV_CHUNKED_DATASET", "LOG_HANDLER_LEVEL",
             "LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")
    saved = logger.level, {name: getattr(pynetdicom_config, name) for name in names}
    yield logger
    logger.setLevel(saved[0])
    for name, value in saved[1].items():
        setattr(pynetdicom_config, name, value)


def test_data_sets_are_received_to_and_sent_from_files(pynetdicom_state):
    configure_pynetdicom()
    assert pynetdicom_config.STORE_RECV_CHUNKED_DATASET and pynetdicom_config.STORE_SEND_CHUNKED_DATASET


def test_pynetdicom_writes_only_its_warnings_unless_asked(pynetdicom_state):
    pynetdicom_state.setLevel(logging.NOTSET)
    configure_pynetdicom()
    assert pynetdicom_state.level == logging.WARNING


def test_pynetdicom_formats_no_line_its_log_does_not_show(pynetdicom_state):
    """Its per-PDU, per-message and per-identifier lines cost CPU on every C-FIND response."""
    pynetdicom_state.setLevel(logging.NOTSET)
    configure_pynetdicom()
    assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"
    assert not pynetdicom_config.LOG_REQUEST_IDENTIFIERS and not pynetdicom_config.LOG_RESPONSE_IDENTIFIERS


def test_pynetdicom_formats_its_lines_when_its_log_shows_them(pynetdicom_state):
    pynetdicom_state.setLevel(logging.DEBUG)  # run -vv
    configure_pynetdicom()
    assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
    assert pynetdicom_config.LOG_REQUEST_IDENTIFIERS and pynetdicom_config.LOG_RESPONSE_IDENTIFIERS


# The router and its worker process set the log up, then pynetdicom; in a process of its own,
# as setup_logging changes the logging of the whole process.
LEVEL_AFTER_SET_UP = """
import logging, sys
from rulesengine.runtime.logs import setup_logging
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
setup_logging("INFO", int(sys.argv[1]))
configure_pynetdicom()
print(logging.getLevelName(logging.getLogger("pynetdicom").level))
"""


@pytest.mark.parametrize("verbose, level", [(0, "WARNING"), (1, "WARNING"), (2, "DEBUG")])
def test_the_level_the_command_line_chose_stays(verbose, level):
    result = subprocess.run([sys.executable, "-c", LEVEL_AFTER_SET_UP, str(verbose)], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == level


# ---- the reactor's checkpoint ---------------------------------------------------------------------


class Reactor(threading.Thread):
    """An association's thread as pynetdicom runs it: says it is paused, waits on the checkpoint,
    says it is not, then serves what came (here: records what it found)."""

    def __init__(self):
        super().__init__(daemon=True)
        self._is_paused = False
        self._reactor_checkpoint = threading.Event()
        self.found: list[int] = []
        self.generation = 0

    def run(self):
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        self.found.append(self.generation)


def test_a_reactor_woken_by_one_request_never_runs_into_the_next_one_sent_meanwhile():
    reactor = Reactor()
    ReactorCheckpoint.install(reactor)
    checkpoint = reactor._reactor_checkpoint
    reactor.start()
    wait_until(lambda: len(checkpoint._cond._waiters) == 1, timeout=10, what="the reactor waiting")
    # One request ends (set) and the next begins (clear) before the reactor's thread runs:
    # pynetdicom's own Event would let it go, and it would take the next request's answer.
    with checkpoint._cond:
        checkpoint._flag = True
        checkpoint._cond.notify_all()
        checkpoint._flag = False
    wait_until(lambda: reactor.found or len(checkpoint._cond._waiters) == 1, timeout=10,
               what="the reactor back in its wait, or gone")
    assert reactor.found == [] and reactor._is_paused  # still paused: the request may send
    reactor.generation = 1  # the request is answered, then sets the checkpoint
    checkpoint.set()
    reactor.join(10)
    assert reactor.found == [1]


def test_every_association_of_the_router_gets_the_checkpoint_and_requests_in_a_row_are_answered(tmp_path):
    from helpers.peers import StoreSCP
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification
    peer = StoreSCP(tmp_path / "received").start()
    try:
        ae = AE(ae_title="ROUTER")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", peer.port, ae_title=peer.ae_title,
                             evt_handlers=[(evt.EVT_CONN_OPEN, tune_connection)])
        assert assoc.is_established
        try:
            assert isinstance(assoc._reactor_checkpoint, ReactorCheckpoint)
            assert [assoc.send_c_echo().Status for _ in range(50)] == [0x0000] * 50
        finally:
            assoc.release()
    finally:
        peer.stop()
