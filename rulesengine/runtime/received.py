"""The files pynetdicom writes received data sets into, so that a failure there is an answer.

With STORE_RECV_CHUNKED_DATASET, pynetdicom writes each received data set, fragment by
fragment, into a NamedTemporaryFile of tempfile's folder (the spool's `tmp/`). By itself,
a write that fails there (a full disk) raises in its upper layer thread: the association
ends without an answer and the file stays behind, empty or partial, as does the file of a
transfer the peer breaks off. ReceivedFile takes NamedTemporaryFile's place in pynetdicom's
message decoder: a failed write is remembered, the file removed and the rest of the data
set discarded, so that the C-STORE handler answers Out of Resources (claim() tells it);
the files of an association that ends before its data set is complete are removed when
its connection closes (discard_unclaimed).
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid

from pynetdicom import dimse_messages

_lock = threading.Lock()
_open: dict[str, "ReceivedFile"] = {}  # by name, until claimed by the handler or discarded


class ReceivedFile:
    """A NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm") that does not raise
    OSError: `error` keeps the first one, and the data that follows is dropped."""

    def __init__(self, *args, **kwargs):
        current = threading.current_thread()
        self.owner = getattr(current, "assoc", current)  # the association whose upper layer writes
        self.error: OSError | None = None
        self._file = None
        try:
            self._file = tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
            self.name = self._file.name
        except OSError as exc:
            self.name = os.path.join(tempfile.gettempdir(), f"unwritten-{uuid.uuid4().hex}.dcm")
            self.error = exc
        with _lock:
            _open[self.name] = self

    @property
    def file(self) -> "ReceivedFile":
        return self  # pynetdicom calls .file.flush()

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, error: OSError) -> None:
        """Keep the reason, give the space back: the data set is answered as not stored."""
        self.error = error
        self._remove()

    def _remove(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass  # what the buffer still held cannot be written: it is dropped with the file
        try:
            os.unlink(self.name)
        except OSError:
            pass


def install() -> None:
    """Make pynetdicom's message decoder write received data sets into ReceivedFiles."""
    dimse_messages.NamedTemporaryFile = ReceivedFile


def claim(path: str) -> ReceivedFile | None:
    """The C-STORE handler takes the file pynetdicom wrote: None when it is not one of ours."""
    with _lock:
        return _open.pop(os.fspath(path), None)


def discard_unclaimed(event) -> None:
    """EVT_CONN_CLOSE: remove the files of data sets that will never be complete (the
    association's, and any left by an association that ended without closing cleanly)."""
    with _lock:
        gone = [f for f in _open.values() if f.owner is event.assoc or
                (isinstance(f.owner, threading.Thread) and not f.owner.is_alive())]
        for received in gone:
            del _open[received.name]
    for received in gone:
        received._remove()


class NotReceived(Exception):
    """A data set that did not arrive whole: its file could not be written, or the connection
    closed before the handler took it (`connection_closed`: nobody waits for the answer).
    The text says why, for the sender's answer."""

    def __init__(self, text: str, connection_closed: bool = False):
        super().__init__(text)
        self.connection_closed = connection_closed


def take(received: str, target: str) -> None:
    """Take the data set pynetdicom wrote into `received` (a C-STORE handler's
    event.dataset_path) under our own name `target`; pynetdicom removes its name afterwards.
    Raises NotReceived, or OSError when the link fails."""
    written = claim(received)
    if written is not None and written.error is not None:
        raise NotReceived(f"not stored: {written.error.strerror or written.error}")
    if not os.path.exists(received):  # removed when the connection closed: nobody waits for an answer
        raise NotReceived("not stored: the connection closed", connection_closed=True)
    os.link(received, target)
