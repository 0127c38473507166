"""How the router uses pynetdicom: its settings, its patches and its log, in one place.

Every process that opens associations (the main one, the worker, `dicom-rules send`) calls
`configure_pynetdicom` once before the first; every association, listened to or requested,
runs `tune_connection` when its connection opens. Which of pynetdicom's log lines are
written is logs.py's `show_pynetdicom_log`.
"""

from __future__ import annotations

import logging
import socket
import time

from pynetdicom import _config as pynetdicom_config

from .logs import show_pynetdicom_log
from .negotiation import install_per_context_negotiation

MAX_QUEUED_PDUS = 16  # PDUs waiting to be written to one association's socket


def configure_pynetdicom() -> None:
    """Everything the router changes in pynetdicom for this process. Idempotent."""
    stream_data_sets_through_files()
    install_per_context_negotiation()  # listeners accept each presentation context in its own transfer syntax
    if logging.getLogger("pynetdicom").level == logging.NOTSET:  # else setup_logging chose it (-vv)
        show_pynetdicom_log(debug=False)
    format_only_lines_shown()


def format_only_lines_shown() -> None:
    """pynetdicom formats a line for every PDU and DIMSE message, and every query's identifier
    and each of its matches, whether its log shows them or not: CPU spent on every C-FIND
    response. They are formatted only when its INFO lines are shown (`run -vv`)."""
    shown = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if shown else "none"
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = shown
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = shown


def stream_data_sets_through_files() -> None:
    """Receive data sets to a file and send them from one: a large instance never sits in memory."""
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


def tune_connection(event) -> None:
    """Handler of EVT_CONN_OPEN, the two hooks the router puts around pynetdicom's transport:

    - Nagle's algorithm is turned off: pynetdicom leaves it on, and each small PDU would
      then wait for the peer's delayed ACK (tens of milliseconds per instance);
    - the queue of PDUs to send is bounded: sending a data set from a file, pynetdicom
      queues PDUs faster than the socket takes them, so a 1 GB instance would pile up in memory.
    """
    dul = event.assoc.dul
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    _bound_send_queue(dul)


def _bound_send_queue(dul) -> None:
    send_pdu = dul.send_pdu

    def bounded_send_pdu(primitive) -> None:
        queued = dul.to_provider_queue
        while queued.qsize() >= MAX_QUEUED_PDUS and dul.is_alive() and not dul._kill_thread:
            time.sleep(0.0005)
        send_pdu(primitive)

    dul.send_pdu = bounded_send_pdu
