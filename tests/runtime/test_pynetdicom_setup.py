"""How the router sets pynetdicom up: data sets through files, and pynetdicom's log lines as
the command line asks (`run -vv` shows its debug lines, otherwise its warnings only)."""

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
    saved = (logger.level, pynetdicom_config.STORE_SEND_CHUNKED_DATASET, pynetdicom_config.STORE_RECV_CHUNKED_DATASET)
    yield logger
    logger.setLevel(saved[0])
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET, pynetdicom_config.STORE_RECV_CHUNKED_DATASET = saved[1:]


def test_data_sets_are_received_to_and_sent_from_files(pynetdicom_state):
    configure_pynetdicom()
    assert pynetdicom_config.STORE_RECV_CHUNKED_DATASET and pynetdicom_config.STORE_SEND_CHUNKED_DATASET


def test_pynetdicom_writes_only_its_warnings_unless_asked(pynetdicom_state):
    pynetdicom_state.setLevel(logging.NOTSET)
    configure_pynetdicom()
    assert pynetdicom_state.level == logging.WARNING


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
