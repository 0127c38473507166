"""How the router sets pynetdicom up: data sets through files, and pynetdicom's log lines as
the command line asks (`run -vv` shows its debug lines, otherwise its warnings only, and the
lines not shown are not formatted)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from pynetdicom import _config as pynetdicom_config

from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom


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
