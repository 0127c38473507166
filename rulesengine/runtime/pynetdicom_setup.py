"""How the router uses pynetdicom: its settings, its patches and its log, in one place.

Every process that opens associations (the main one, the worker, `dicom-rules send`) calls
`configure_pynetdicom` once before the first; every association, listened to or requested,
runs `tune_connection` when its connection opens. Which of pynetdicom's log lines are
written is logs.py's `show_pynetdicom_log`.
"""

from __future__ import annotations

import logging
import socket
import threading
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
      queues PDUs faster than the socket takes them, so a 1 GB instance would pile up in memory;
    - the association's reactor pauses for each request of ours without a race (ReactorCheckpoint).
    """
    dul = event.assoc.dul
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    _bound_send_queue(dul)
    ReactorCheckpoint.install(event.assoc)


class ReactorCheckpoint(threading.Event):
    """pynetdicom's `Association._reactor_checkpoint`, without its race.

    The association's thread (its reactor) serves what the peer sends, between waits on this
    event. A request of ours (send_c_store, send_c_echo...) clears it, waits until the reactor
    says `_is_paused`, sends, reads its answer, and sets it again. Two requests in a row: the
    first one's set() wakes the reactor, but until that thread runs, `_is_paused` still says
    True; the second request, cleared and sent meanwhile, then has its answer taken by the
    reactor, which drops it as unexpected ("Received unexpected ... service message"), and waits
    out its whole DIMSE timeout. Seen under load, on one association carrying a batch. Here the
    reactor leaves its wait only while the event is still set, and says it is no longer paused
    before it lets go of the event's lock: a request that clears the event after that waits
    until the reactor pauses again."""

    def wait(self, timeout: float | None = None) -> bool:
        assoc = getattr(self, "_assoc", None)
        if timeout is not None or assoc is None or threading.current_thread() is not assoc:
            return super().wait(timeout)  # only the reactor's own wait changes
        with self._cond:
            while not self._flag:
                self._cond.wait()
            assoc._is_paused = False
            return True

    @classmethod
    def install(cls, assoc) -> None:
        """Make the association's checkpoint this class, in place: a thread already waiting on
        it keeps its condition."""
        checkpoint = getattr(assoc, "_reactor_checkpoint", None)
        if isinstance(checkpoint, threading.Event) and not isinstance(checkpoint, cls):
            checkpoint.__class__ = cls
            checkpoint._assoc = assoc


def _bound_send_queue(dul) -> None:
    send_pdu = dul.send_pdu

    def bounded_send_pdu(primitive) -> None:
        queued = dul.to_provider_queue
        while queued.qsize() >= MAX_QUEUED_PDUS and dul.is_alive() and not dul._kill_thread:
            time.sleep(0.0005)
        send_pdu(primitive)

    dul.send_pdu = bounded_send_pdu
