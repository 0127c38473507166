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

from ..config import Config, ConfigError, load_config
from ..diagnostics import RulesError
from ..lang.loader import load_program
from .delivery import DeliveryManager
from .journal.errors import in_words, unreachable
from .logs import Repeats, origin, setup_logging
from .pipeline import Pipeline
from .pynetdicom_setup import configure_pynetdicom
from .rules import RuleSetVersions, RulesHolder, compile_rules
from .storage import Storage

log = logging.getLogger("rulesengine.worker")

POLL_SECONDS = 0.5  # the journal is looked at this often even without a wake-up
JOURNAL_WAIT = 2.0  # seconds between two tries to open the journal while its database is away
RESTART_DELAY = 1.0  # seconds between a worker's unexpected end and the start of the next
_STOP = b"s"
_WAKE = b"w"
_RELOAD = b"r"


def _die_with_parent(parent: int | None) -> None:
    """Linux: the kernel ends this process when the main one dies (even by SIGKILL),
    so a restarted router never finds a second worker still sending. The kernel's
    "parent" is the *thread* that started this process: WorkerProcess starts it from
    a thread that lives until this process has ended (see WorkerProcess._watch).
    A main process that died before this ran (the interpreter takes a second to start)
    sent nothing: then its process id is no longer this one's parent, and this ends here."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(0)  # orphaned while starting: the next router runs its own worker


def run_worker(config: Config | str, wake, verbose: int, program=None, parent: int | None = None) -> None:
    """The worker's main function; `wake` is the reading end of a pipe from the main process.
    `config` is the configuration the main process runs (or the path of one to read), and
    `program` the parsed rules it runs (None: compiled from the journal when first needed).
    Each instance is processed with the rule set version recorded at its answer, compiled
    from the files the journal kept of it: never from the files on disk, which may have been
    edited since into something the main process refused. `parent`: the main process's id."""
    _die_with_parent(parent)
    wake_fd = wake.fileno()
    # The main process decides when to stop: a signal to the whole process group (Ctrl-C, a
    # service manager's SIGTERM) reaches it, which finishes the work in flight and stops this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload reaches it through the main process
    if isinstance(config, str):
        config = _load_or_wait(config, wake_fd, verbose)
        if config is None:
            return  # asked to stop before a configuration could be read
    setup_logging(config.log_level, verbose, config.log_file)
    configure_pynetdicom()
    storage = Storage.of(config)
    storage.use_for_temporary_files()  # converted copies go to the spool, which a restart empties
    journal = _open_journal(storage, wake_fd)
    if journal is None:
        return  # asked to stop while the journal's database could not be reached
    # What a worker before this one had claimed and not finished (it crashed, or was killed)
    # is sent again; the main process's sync deliveries are not touched.
    requeued = journal.requeue_claimed()
    if requeued:
        log.info("%d delivery(ies) the previous worker process was sending are queued again", requeued)
    delivery = DeliveryManager(journal, storage)
    delivery.apply(config.destinations)
    versions = RuleSetVersions(journal, config)
    if program is not None:
        _seed(versions, config, program)
    pipeline = Pipeline(storage, journal, None, delivery.notify, on_accepted=lambda _id: None, versions=versions)
    try:
        _process_pending(pipeline)
        while True:
            ready, _, _ = select.select([wake_fd], [], [], POLL_SECONDS)
            if ready:
                data = os.read(wake_fd, 4096)
                if not data or _STOP in data:  # the main process closed the pipe or asked us to stop
                    break
                if _RELOAD in data:
                    _reload(config.path, versions, delivery)
            _process_pending(pipeline)
    finally:
        _process_pending(pipeline)
        delivery.stop()
        journal.close()


_unreachable = Repeats()  # the journal's database away: said once a minute
_journal_away = False  # the last round found the journal's database out of reach


def _open_journal(storage: Storage, wake_fd: int):
    """The journal; while its database cannot be reached, say so and try again every few
    seconds (None: asked to stop meanwhile)."""
    while True:
        try:
            return storage.journal()
        except Exception as exc:
            if not unreachable(exc):
                raise
            _unreachable.log(log, logging.WARNING, "open", "worker process %d: the journal's database cannot be "
                             "reached (%s); trying again every %.0f s", os.getpid(), in_words(exc), JOURNAL_WAIT)
        ready, _, _ = select.select([wake_fd], [], [], JOURNAL_WAIT)
        if ready:
            data = os.read(wake_fd, 4096)
            if not data or _STOP in data:
                return None


def _process_pending(pipeline: Pipeline) -> None:
    """Process what was received; the journal's database away, the next round tries again."""
    global _journal_away
    try:
        pipeline.process_pending()
    except Exception as exc:
        if not unreachable(exc):
            raise
        _journal_away = True
        _unreachable.log(log, logging.WARNING, "process", "worker process %d: the journal's database cannot be "
                         "reached (%s); what was received is processed once it answers", os.getpid(), in_words(exc))
        return
    if _journal_away:
        _journal_away = False
        log.info("worker process %d: the journal's database answers again", os.getpid())


def _seed(versions: RuleSetVersions, config: Config, program) -> None:
    """The rules the main process runs, handed over parsed: compiled here once, not read again."""
    try:
        versions.add(compile_rules(config, program))
    except (RulesError, ConfigError) as exc:  # the main process runs them: only this process's secrets differ
        log.error("worker process %d: the rules the router runs do not compile here (%s)", os.getpid(), exc)


def _load_or_wait(config_path: str, wake_fd: int, verbose: int) -> Config | None:
    """Read the configuration; if it cannot be used, say so once and wait for a reload (None:
    asked to stop first)."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        setup_logging("INFO", verbose)
        log.error("worker process %d: the configuration cannot be used; waiting for a reload:\n%s", os.getpid(),
                  exc)
    while True:
        data = os.read(wake_fd, 4096)
        if not data or _STOP in data:
            return None
        if _RELOAD in data:
            try:
                return load_config(config_path)
            except ConfigError:
                continue  # the main process reports it, and tells us when it is good


def _reload(config_path: str, versions: RuleSetVersions, delivery: DeliveryManager) -> None:
    """The main process put a change in place (it logged it). The rules need nothing here:
    each instance names its version. A changed configuration is taken when the latest
    rules compile with it, as the main process checked (it logs what is wrong)."""
    try:
        config = load_config(config_path)
    except ConfigError:
        return  # broken again since: the main process tells us when it is good
    if config == versions.config:
        return
    try:
        latest = versions.journal.latest_ruleset()
        sources = versions.journal.ruleset_sources(latest) if latest else {}
        program = load_program(next(iter(sources)), folders=config.rules_folders, sources=sources) if sources else None
        ruleset = compile_rules(config, program) if program is not None else None
    except (RulesError, ConfigError, OSError):
        return
    versions.configure(config)
    if ruleset is not None:
        versions.add(ruleset)
    delivery.apply(config.destinations)


class WorkerProcess:
    """Started and watched by the main process: restarted if it dies unexpectedly.

    One thread, "worker-monitor", starts every worker process, waits for each to end and,
    once stop() was called, for the last one to finish its work: the kernel ends a worker
    when the thread that started it ends (_die_with_parent), so that thread must outlive it."""

    def __init__(self, config_path: str, verbose: int = 0):
        self.config_path = os.path.abspath(config_path)
        self.verbose = verbose
        self._context = multiprocessing.get_context("spawn")
        self._process = None
        self._write_fd: int | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._rules: RulesHolder | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stop_timeout = 120.0
        self._spawn_errors = Repeats()

    def start(self, rules: RulesHolder | None = None) -> None:
        """`rules`: the main process's rules; each worker starts with its configuration and
        rules as they run there (without it, a worker reads the configuration file)."""
        self._rules = rules
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
        self._monitor.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def _handover(self) -> tuple:
        """What a new worker starts with: the configuration and the parsed rules running here."""
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
        config, program = self._handover()
        # A multiprocessing pipe only to hand the reading end to the spawned process; both ends
        # are then used as plain file descriptors, the writing one never blocking.
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=run_worker, name="rulesengine-worker",
                                        args=(config, reader, self.verbose, program, os.getpid()))
        process.start()
        reader.close()
        write_fd = os.dup(writer.fileno())
        writer.close()
        os.set_blocking(write_fd, False)
        with self._lock:
            old = self._write_fd
            self._process = process
            if self._stopping.is_set():
                # stop() came in meanwhile and did not see this process: closing its pipe
                # stops it as _STOP would (it finishes its work first); _watch waits for it.
                self._write_fd = None
                os.close(write_fd)
            else:
                self._write_fd = write_fd
        if old is not None:
            os.close(old)
        log.info("worker process %d started", process.pid)
        holder = self._rules
        if holder is not None and (holder.config is not config or holder.current.program is not program):
            self.reload()  # swapped in here while it started: the reload message may have missed it

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
                return  # a dead worker is restarted, and a new one starts with what runs here

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
            log.error("worker process %d ended with %s; starting another", process.pid, process.exitcode)
            if self._stopping.wait(RESTART_DELAY):
                break
            try:
                self._spawn()
            except Exception as exc:  # the monitor must go on
                self._spawn_errors.log(log, logging.ERROR, origin(exc), "cannot start a worker process; trying again",
                                       exc_info=exc)
        self._finish()

    def _finish(self) -> None:
        """After stop(): wait here, in the thread that started it, for the worker to end."""
        process = self._process
        if process is None:
            return
        process.join(self._stop_timeout)
        if process.exitcode is None:
            # It ignores SIGTERM (see run_worker): only SIGKILL ends it now.
            log.warning("worker process %d did not stop in %d s; killing it", process.pid, self._stop_timeout)
            process.kill()
            process.join(10)
        log.info("worker process %d stopped (exit code %s)", process.pid, process.exitcode)

    def stop(self, timeout: float = 120) -> None:
        self._stop_timeout = timeout
        with self._lock:
            self._stopping.set()
            fd = self._write_fd
            self._write_fd = None
        if fd is not None:
            try:
                os.set_blocking(fd, True)
                os.write(fd, _STOP)
            except OSError:
                pass
            os.close(fd)
        if self._monitor is not None:
            self._monitor.join(timeout + 30)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None
