"""The router's worker process: processing and delivery, on a core of their own.

Receiving (pynetdicom decoding PDUs) and delivering (encoding them) are both
Python-heavy; in one interpreter they would take turns on one core. The main
process receives; this process, started and supervised by it, processes what
the journal says was received and delivers it. They share only the journal
and the spool, so either can stop at any moment without losing anything.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import select
import signal
import threading
import time

from ..config import ConfigError, load_config
from .delivery import DeliveryManager
from .logs import setup_logging
from .pipeline import Pipeline
from .rules import RulesHolder
from .storage import Storage

log = logging.getLogger("rulesengine.worker")

POLL_SECONDS = 0.5  # the journal is looked at this often even without a wake-up
_STOP = b"s"
_WAKE = b"w"
_RELOAD = b"r"


def _die_with_parent() -> None:
    """Linux: the kernel ends this process when the main one dies (even by SIGKILL),
    so a restarted router never finds a second worker still sending."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_worker(config_path: str, wake, verbose: int) -> None:
    """The worker's main function; `wake` is the reading end of a pipe from the main process."""
    _die_with_parent()
    wake_fd = wake.fileno()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload reaches it through the main process
    config = load_config(config_path)
    setup_logging(config.log_level, verbose, config.log_file)
    from .service import configure_pynetdicom
    configure_pynetdicom()
    storage = Storage(config.storage)
    storage.use_for_temporary_files()  # converted copies go to the spool, which a restart empties
    journal = storage.journal()
    rules = RulesHolder(config, announce=False)  # the main process announces reloads
    delivery = DeliveryManager(journal, storage)
    pipeline = Pipeline(storage, journal, rules, delivery.notify, on_accepted=lambda _id: None)
    delivery.apply(config.destinations)
    pipeline.process_pending()
    try:
        while True:
            ready, _, _ = select.select([wake_fd], [], [], POLL_SECONDS)
            if ready:
                data = os.read(wake_fd, 4096)
                if not data or _STOP in data:  # the main process closed the pipe or asked us to stop
                    break
                if _RELOAD in data:
                    _reload(config_path, rules, delivery)
            pipeline.process_pending()
    finally:
        pipeline.process_pending()
        delivery.stop()
        journal.close()


def _reload(config_path: str, rules: RulesHolder, delivery: DeliveryManager) -> None:
    """What the main process swapped in, swapped in here too (it logged the change)."""
    try:
        config = load_config(config_path)
    except ConfigError:
        return  # changed again since: the main process reports it, and tells us when it is good
    if rules.reload(config):
        delivery.apply(config.destinations)


class WorkerProcess:
    """Started and watched by the main process: restarted if it dies unexpectedly."""

    def __init__(self, config_path: str, verbose: int = 0):
        self.config_path = os.path.abspath(config_path)
        self.verbose = verbose
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._write_fd: int | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
        self._monitor.start()

    def _spawn(self) -> None:
        # A multiprocessing pipe only to hand the reading end to the spawned process; both ends
        # are then used as plain file descriptors, the writing one never blocking.
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=run_worker, args=(self.config_path, reader, self.verbose),
                                        name="rulesengine-worker")
        process.start()
        reader.close()
        write_fd = os.dup(writer.fileno())
        writer.close()
        os.set_blocking(write_fd, False)
        with self._lock:
            old = self._write_fd
            self._process, self._write_fd = process, write_fd
        if old is not None:
            os.close(old)
        log.info("worker process %d started", process.pid)

    def wake(self, _instance_id: int | None = None) -> None:
        self._send(_WAKE)

    def reload(self) -> None:
        self._send(_RELOAD, wait=True)

    def _send(self, message: bytes, wait: bool = False) -> None:
        with self._lock:
            fd = self._write_fd
        if fd is None:
            return
        deadline = time.monotonic() + 5
        while True:
            try:
                os.write(fd, message)
                return
            except BlockingIOError:
                # full: wake-ups are pending already; a reload must still get through
                if not wait or time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            except OSError:
                return  # a dead worker is restarted, and a new one reads the current files

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            process = self._process
            if process is not None and not process.is_alive() and not self._stopping.is_set():
                log.error("worker process %d ended with %s; starting another", process.pid, process.exitcode)
                time.sleep(1.0)
                if not self._stopping.is_set():
                    self._spawn()

    def stop(self, timeout: float = 120) -> None:
        self._stopping.set()
        with self._lock:
            process, fd = self._process, self._write_fd
            self._write_fd = None
        if fd is not None:
            try:
                os.set_blocking(fd, True)
                os.write(fd, _STOP)
            except OSError:
                pass
            os.close(fd)
        if process is not None:
            process.join(timeout)
            if process.is_alive():
                log.warning("worker process %d did not stop in %d s; terminating it", process.pid, timeout)
                process.terminate()
                process.join(10)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None
