"""The router's child processes (its worker processes, its extra receiving processes): each
started, watched and restarted by a thread of the process that owns it, and ended by the
kernel when that process dies, even by SIGKILL.

A child starts with the configuration and the parsed rules its owner runs (`handover`), so
that it never compiles from files on disk that may have been edited since into something the
owner refused.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import threading

from .logs import Repeats, origin
from .rules import RulesHolder

RESTART_DELAY = 1.0  # seconds between a child's unexpected end and the start of the next


def die_with_parent(parent: int | None) -> None:
    """In the child, first: the kernel ends this process when its owner dies (even by SIGKILL),
    so a restarted router never finds a child of the last one still receiving or sending. The
    kernel's "parent" is the *thread* that started this process: SupervisedProcess starts it
    from a thread that lives until this process has ended (see SupervisedProcess._watch).
    An owner that died before this ran (the interpreter takes a second to start) sent nothing:
    then its process id is no longer this one's parent, and this ends here."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(0)  # orphaned while starting: the next router runs its own


def leave_signals_to_the_owner() -> None:
    """The owner decides when to stop: a signal to the whole process group (Ctrl-C, a service
    manager's SIGTERM) reaches it, which finishes the work in flight and stops its children;
    a reload reaches them through it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


class SupervisedProcess:
    """A child process, restarted if it dies unexpectedly. A subclass says what runs there
    (`_launch`) and how it is spoken to (its channel: `_attach`, `_ask_to_stop`, `_detach`).

    One thread starts every process of the child, waits for each to end and, once stop() was
    called, for the last one to finish its work: the kernel ends a child when the thread that
    started it ends (die_with_parent), so that thread must outlive it."""

    kind = "child"  # in the log: "<kind> process PID started"
    log = logging.getLogger("rulesengine.router")

    def __init__(self, config_path: str, verbose: int = 0):
        self.config_path = os.path.abspath(config_path)
        self.verbose = verbose
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._channel = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rules: RulesHolder | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_timeout = 120.0
        self._spawn_errors = Repeats()

    # ---- what a subclass gives ----

    def _launch(self, config, program):
        """Start the process (self._context.Process(...).start()); return (process, channel)."""
        raise NotImplementedError

    def _ask_to_stop(self, channel) -> None:
        """Tell the process to finish its work and end (it is not waited for here)."""
        raise NotImplementedError

    def _detach(self, channel) -> None:
        """Close this side of a channel no longer used."""
        raise NotImplementedError

    def _ended(self, pid: int) -> None:
        """After a process ended (died, or stopped): what the owner does for it (see WorkerProcess)."""

    def _started_with(self, config, program) -> None:
        """After a start: `config` and `program` are what it was given; the owner may have
        swapped others in meanwhile (see WorkerProcess)."""

    # ---- the life of the child ----

    def start(self, rules: RulesHolder | None = None) -> None:
        """`rules`: the owner's rules; each process starts with its configuration and rules as
        they run there (without it, a child reads the configuration file)."""
        self._rules = rules
        self._monitor = threading.Thread(target=self._watch, name=f"{self.kind}-monitor", daemon=True)
        self._monitor.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def handover(self) -> tuple:
        """What a new process starts with: the configuration and the parsed rules running here."""
        holder = self._rules
        if holder is None:
            return self.config_path, None
        with holder._lock:  # a consistent pair, not one half of a reload
            config, ruleset = holder.config, holder.current
        return config, ruleset.program

    def _spawn(self) -> None:
        """Only from the monitor thread (see the class)."""
        with self._lock:
            if self._stopping.is_set():
                return
        config, program = self.handover()
        process, channel = self._launch(config, program)
        with self._lock:
            old = self._channel
            self._process = process
            if self._stopping.is_set():
                # stop() came in meanwhile and did not see this process: it is asked to stop
                # here (it finishes its work first); _watch waits for it.
                self._channel = None
                self._ask_to_stop(channel)
                self._detach(channel)
            else:
                self._channel = channel
        if old is not None:
            self._detach(old)
        self.log.info("%s process %d started", self.kind, process.pid)
        self._started_with(config, program)

    def channel(self):
        with self._lock:
            return self._channel

    def _watch(self) -> None:
        try:
            self._spawn()
        except BaseException as exc:  # noqa: BLE001 - start() raises it
            self._start_error = exc
            return
        finally:
            self._started.set()
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                break
            process.join(0.5)
            if self._stopping.is_set():
                break
            if process.exitcode is None:
                continue
            self.log.error("%s process %d ended with %s; starting another", self.kind, process.pid, process.exitcode)
            self._ended(process.pid)
            if self._stopping.wait(RESTART_DELAY):
                break
            try:
                self._spawn()
            except Exception as exc:  # the monitor must go on
                self._spawn_errors.log(self.log, logging.ERROR, origin(exc),
                                       f"cannot start a {self.kind} process; trying again", exc_info=exc)
        self._finish()

    def _finish(self) -> None:
        """After stop(): wait here, in the thread that started it, for the process to end."""
        process = self._process
        if process is None:
            return
        process.join(self._stop_timeout)
        if process.exitcode is None:
            # It ignores SIGTERM (leave_signals_to_the_owner): only SIGKILL ends it now.
            self.log.warning("%s process %d did not stop in %d s; killing it", self.kind, process.pid,
                             self._stop_timeout)
            process.kill()
            process.join(10)
        self.log.info("%s process %d stopped (exit code %s)", self.kind, process.pid, process.exitcode)
        if process.exitcode is not None:
            self._ended(process.pid)

    def ask_to_stop(self, timeout: float = 120) -> None:
        """Tell the process to finish and end, without waiting (wait_stopped waits)."""
        self._stop_timeout = timeout
        with self._lock:
            self._stopping.set()
            channel = self._channel
            self._channel = None
        if channel is not None:
            self._ask_to_stop(channel)
            self._detach(channel)

    def wait_stopped(self) -> None:
        if self._monitor is not None:
            self._monitor.join(self._stop_timeout + 30)

    def stop(self, timeout: float = 120) -> None:
        self.ask_to_stop(timeout)
        self.wait_stopped()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None
