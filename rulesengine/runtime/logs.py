"""Logging of the router's processes: the same format, level and file in both, and the
rules that keep the log readable under bad input:

- an expected failure (an unreadable file, a refused status, an unreachable destination,
  a rejected association) is one WARNING line, without a traceback;
- a traceback is for a true internal error, and one that a loop meets again is shown
  once per REPEAT_SECONDS (`Repeats`), with the count of what was held back;
- pynetdicom's lines that repeat what the router says itself are left out, and
  pynetdicom's tracebacks (a peer's malformed PDU, a failed TLS handshake) are cut to
  their message unless `-v` asks for more.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from typing import Callable, Hashable


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REPEAT_SECONDS = 60.0  # a repeated message is logged at most once this often


def show_pynetdicom_log(debug: bool) -> None:
    """pynetdicom logs every PDU at INFO and DEBUG: only its warnings and errors are shown,
    unless `debug` (`run -vv`)."""
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.WARNING)


def setup_logging(level: str, verbose: int = 0, log_file: str | None = None) -> None:
    """`verbose`: 1 shows the router's own debug lines (each delivery) and pynetdicom's
    failure lines in full, 2 all of pynetdicom's lines."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))  # appends: both processes share it
    if not verbose:
        for handler in handlers:
            handler.addFilter(PeerLibraryNoise())
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=handlers, force=True,
                        format=FORMAT)
    if verbose:
        logging.getLogger("rulesengine").setLevel(logging.DEBUG)
    show_pynetdicom_log(debug=verbose > 1)
    # watchdog's debug lines are about its own threads, and one per file event: never wanted here;
    # nor its complaint, at ERROR, that a watch stopped while its thread was reading
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    inotify = logging.getLogger("watchdog.observers.inotify")
    if not any(isinstance(f, _WatchStopped) for f in inotify.filters):
        inotify.addFilter(_WatchStopped())
    # pydicom warns (through logging and through warnings, so twice) about every odd value of
    # every bad file it reads; the router says in one line what became of the file instead.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbose else logging.ERROR)


class _WatchStopped(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


# pynetdicom's ERROR lines for an outgoing association that fails: the router logs the
# failure itself, in one WARNING line that names the destination and the reason.
_REPEATED_BY_THE_ROUTER = (
    "Association request failed: unable to connect to remote",
    "TCP Initialisation Error: ",
    "Association Rejected",
    "Result: Rejected ",
    "Reason: ",
    "Association Aborted",
    "No accepted presentation contexts",
    "ACSE timeout reached while waiting for response to association request",
)


class PeerLibraryNoise(logging.Filter):
    """On the log's handlers, for pynetdicom's records: a line that repeats the router's own
    is left out; a traceback of a failure in pynetdicom's own code (a peer's malformed PDU)
    is cut to its message (one that runs through the router's code, a handler's bug, is
    kept); and a line met again within REPEAT_SECONDS (a peer in a loop) is held back."""

    def __init__(self, repeats: "Repeats | None" = None):
        super().__init__()
        self.repeats = repeats or Repeats()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("pynetdicom"):
            return True
        message = record.getMessage()
        if message.startswith(_REPEATED_BY_THE_ROUTER):
            return False
        if record.exc_info and not _through_router_code(record.exc_info[2]):
            exc = record.exc_info[1]
            if exc is not None and (not message.strip() or message == str(exc)):  # LOGGER.exception(exc)
                message = f"{type(exc).__name__}: {exc}".rstrip(": ")
            record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
        held = self.repeats.due((record.name, message))
        if held is None:
            return False
        if held:
            record.msg, record.args = f"{message} (and {held} more time{'s' if held > 1 else ''} " \
                                      f"in the last {self.repeats.interval:.0f} s)", ()
        return True


def _through_router_code(tb) -> bool:
    return any("rulesengine" in frame.filename.replace("\\", "/").split("/") for frame in traceback.extract_tb(tb))


def origin(exc: BaseException) -> tuple[str, str, int]:
    """What makes two exceptions 'the same error' for Repeats: their type and the line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return (type(exc).__name__, last.filename, last.lineno or 0) if last else (type(exc).__name__, "", 0)


class Repeats:
    """Says a recurring message once per `interval` seconds per key, not each time a loop
    meets it; the next time it is let through, it says how many were held back."""

    MAX_KEYS = 1000  # forget the oldest keys beyond this: a key per file must not grow memory

    def __init__(self, interval: float = REPEAT_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self._seen: dict[Hashable, list] = {}  # key -> [when last let through, held back since]
        self._lock = threading.Lock()

    def due(self, key: Hashable) -> int | None:
        """None when `key` was let through less than `interval` ago (this one is counted);
        otherwise how many were held back since it last was (0 the first time)."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return None
            held = seen[1] if seen is not None else 0
            self._seen.pop(key, None)
            self._seen[key] = [now, 0]
            while len(self._seen) > self.MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            return held

    def log(self, logger: logging.Logger, level: int, key: Hashable, message: str, *args,
            exc_info: BaseException | None = None) -> bool:
        """Log `message % args` unless `key` is held back; True when it was logged."""
        held = self.due(key)
        if held is None:
            return False
        if held:
            message += f" (and {held} more time{'s' if held > 1 else ''} in the last {self.interval:.0f} s)"
        logger.log(level, message, *args, exc_info=exc_info)
        return True

    def internal_error(self, logger: logging.Logger, message: str, *args, exc: BaseException) -> None:
        """A true internal error: always one ERROR line; its traceback once per interval for
        each place that raises it (the same bug met again and again shows it once)."""
        held = self.due(origin(exc))
        if held is None:
            logger.error(message + " (traceback logged earlier)", *args)
        else:
            if held:
                message += f" (the same error {held} more time{'s' if held > 1 else ''} since its last traceback)"
            logger.error(message, *args, exc_info=exc)
