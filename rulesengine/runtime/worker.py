"""A worker process: processing and delivery, on a core of their own.

Receiving (pynetdicom decoding PDUs) and delivering (encoding them) are both
Python-heavy; in one interpreter they would take turns on one core. Each
receiving process (the main one, and the others of `processes:`) receives; its
worker process, started and supervised by it (supervisor.py), processes what the
journal says was received and delivers it. They share only the journal and the
spool, so either can stop at any moment without losing anything.

A reload is acknowledged: the worker answers each one on a pipe of its own once it follows
it, and WorkerProcess.reload() returns only then, so that what the owner logs as applied is
what the worker runs for everything received after. A pass over what was received stops
between two claimed batches when a reload (or the stop) comes, rather than at its end, which
under a steady stream may be long in coming.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time

from ..config import Config, ConfigError, load_config
from ..diagnostics import RulesError
from ..lang.loader import load_program
from .delivery import DeliveryManager
from .events import Events
from .journal import Journal
from .journal.errors import in_words, unreachable
from .logs import Repeats, setup_logging
from .pipeline import Pipeline
from .notifications import Notifications
from .pynetdicom_setup import configure_pynetdicom
from .rules import RuleSetVersions, compile_rules
from .storage import Storage
from .supervisor import SupervisedProcess, die_with_parent, leave_signals_to_the_owner

log = logging.getLogger("rulesengine.worker")

POLL_SECONDS = 0.5  # the journal is looked at this often even without a wake-up
JOURNAL_WAIT = 2.0  # seconds between two tries to open the journal while its database is away
_STOP = b"s"
_WAKE = b"w"
_RELOAD = b"r"
_ACK = b"a"
ACK_TIMEOUT = 60.0  # seconds the owner waits for the worker to follow a reload


def run_worker(config: Config | str, wake, verbose: int, program=None, parent: int | None = None,
               acks=None) -> None:
    """The worker's main function; `wake` is the reading end of a pipe from the main process,
    `acks` (when given) the writing end of one back, where each reload is acknowledged once
    followed. `config` is the configuration the main process runs (or the path of one to read),
    and `program` the parsed rules it runs (None: compiled from the journal when first needed).
    Each instance is processed with the rule set version recorded at its answer, compiled
    from the files the journal kept of it: never from the files on disk, which may have been
    edited since into something the main process refused. `parent`: the main process's id."""
    die_with_parent(parent)
    messages = _Messages(wake.fileno(), acks)
    leave_signals_to_the_owner()
    if isinstance(config, str):
        config = _load_or_wait(config, messages, verbose)
        if config is None:
            return  # asked to stop before a configuration could be read
    setup_logging(config.log_level, verbose, config.log_file)
    configure_pynetdicom()
    storage = Storage.of(config)
    storage.use_for_temporary_files()  # converted copies go to the spool, which a restart empties
    journal = _open_journal(storage, messages)
    if journal is None:
        return  # asked to stop while the journal's database could not be reached
    # What a worker before this one held when it died was given back by its supervisor
    # (WorkerProcess._watch); other processes' claims are theirs, and expire if they die.
    events = Events(Notifications(journal, config))  # queued here, sent by the main process
    delivery = DeliveryManager(journal, storage, events=events)
    delivery.apply(config.destinations, config.windows)
    versions = RuleSetVersions(journal, config)
    if program is not None:
        _seed(versions, config, program)
    pipeline = Pipeline(storage, journal, None, delivery.notify, on_accepted=lambda _id: None, versions=versions,
                        events=events)
    try:
        if messages.reload_due:  # acknowledged while the journal could not be opened: followed before anything
            _reload(config.path, versions, delivery)
        _process_pending(pipeline, messages.interrupting)
        while True:
            data = messages.take(POLL_SECONDS)
            if data is None or _STOP in data:  # the main process closed the pipe or asked us to stop
                break
            if _RELOAD in data:
                _reload(config.path, versions, delivery)
                messages.acknowledge()
            _process_pending(pipeline, messages.interrupting)
    finally:
        _process_pending(pipeline)
        pipeline.claims.stop()
        pipeline.group_leases.stop()
        delivery.stop()
        journal.close()
        messages.close()


class _Messages:
    """The worker's end of its pipes: single bytes from the owner (wake-ups, reloads, the
    stop), acknowledgements back. What is read between two batches of a pass is kept for the
    main loop (`interrupting`)."""

    def __init__(self, wake_fd: int, acks=None):
        self.wake_fd = wake_fd
        self.acks = acks
        self.reloads = 0  # reloads read and not yet acknowledged
        self.reload_due = False  # one acknowledged before the journal opened: followed once it does
        self._kept = b""
        self._closed = False  # the owner closed its end

    def take(self, timeout: float | None) -> bytes | None:
        """What the owner sent (waiting up to `timeout` seconds; None: for ever); b"": nothing
        yet; None: the pipe is closed."""
        if not self._kept and not self._closed:
            ready, _, _ = select.select([self.wake_fd], [], [], timeout)
            if ready:
                self._read()
        data, self._kept = self._kept, b""
        if not data and self._closed:
            return None
        return data

    def interrupting(self) -> bool:
        """Between two batches of a pass: has a reload or the stop come (or the pipe closed)?"""
        ready, _, _ = select.select([self.wake_fd], [], [], 0)
        if ready:
            self._read()
        return self._closed or _RELOAD in self._kept or _STOP in self._kept

    def _read(self) -> None:
        data = os.read(self.wake_fd, 4096)
        if not data:
            self._closed = True
        self._kept += data
        self.reloads += data.count(_RELOAD)

    def acknowledge(self) -> None:
        """Every reload read so far is followed: one byte back for each."""
        count, self.reloads = self.reloads, 0
        if self.acks is not None and count:
            try:
                self.acks.send_bytes(_ACK * count)
            except OSError:
                pass  # the owner is gone: this process ends with it

    def close(self) -> None:
        if self.acks is not None:
            self.acks.close()


_unreachable = Repeats()  # the journal's database away: said once a minute
_journal_away = False  # the last round found the journal's database out of reach


def _open_journal(storage: Storage, messages: "_Messages"):
    """The journal; while its database cannot be reached, say so and try again every few
    seconds (None: asked to stop meanwhile). A reload meanwhile is acknowledged at once: nothing
    is processed before it is followed, once the journal opens."""
    while True:
        try:
            return storage.journal()
        except Exception as exc:
            if not unreachable(exc):
                raise
            _unreachable.log(log, logging.WARNING, "open", "worker process %d: the journal's database cannot be "
                             "reached (%s); trying again every %.0f s", os.getpid(), in_words(exc), JOURNAL_WAIT)
        data = messages.take(JOURNAL_WAIT)
        if data is None or _STOP in data:
            return None
        if messages.reloads:
            messages.reload_due = True
            messages.acknowledge()


def _process_pending(pipeline: Pipeline, interrupted=None) -> None:
    """Process what was received (until `interrupted()` says a reload or the stop came), then
    fire the groups whose timer ran out (the group rules' timer: a round every POLL_SECONDS at
    most); the journal's database away, the next round tries again."""
    global _journal_away
    try:
        pipeline.process_pending(interrupted)
        pipeline.groups.fire_due()
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


def _load_or_wait(config_path: str, messages: "_Messages", verbose: int) -> Config | None:
    """Read the configuration; if it cannot be used, say so once and wait for a reload (None:
    asked to stop first). The reload that brings a good one is acknowledged."""
    try:
        return load_config(config_path)
    except ConfigError as exc:
        setup_logging("INFO", verbose)
        log.error("worker process %d: the configuration cannot be used; waiting for a reload:\n%s", os.getpid(),
                  exc)
    while True:
        data = messages.take(None)
        if data is None or _STOP in data:
            return None
        if _RELOAD in data:
            try:
                config = load_config(config_path)
            except ConfigError:
                messages.acknowledge()  # followed: still unusable; the main process reports it
                continue  # and tells us when it is good
            messages.acknowledge()
            return config


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
    delivery.apply(config.destinations, config.windows)
    delivery.events.configure(config)


class _Pipes:
    """The owner's ends of a worker's pipes: its channel (supervisor.py). Bytes go to the
    worker on one, never blocking (wake-ups, reloads, the stop); acknowledgements of reloads
    come back on the other (a multiprocessing connection), read by one reload at a time."""

    def __init__(self, wake_fd: int, acks):
        self.wake_fd = wake_fd
        self.acks = acks
        self.reloading = threading.Lock()  # one reload at a time waits for its acknowledgement
        self._guard = threading.Lock()
        self._waiting = False
        self._detached = False

    def wait_for_ack(self, timeout: float) -> str:
        """Send a reload and wait for the worker to follow it: "followed", "ended" (the worker
        died, or this channel was detached) or "late" (no answer in `timeout` seconds)."""
        with self.reloading:
            with self._guard:
                if self._detached:
                    return "ended"
                self._waiting = True
            try:
                return self._reload(timeout)
            finally:
                with self._guard:
                    self._waiting = False
                    detached = self._detached
                if detached:
                    self._close()  # the detach left it to us: it may not close what we use

    def _reload(self, timeout: float) -> str:
        try:
            while self.acks.poll(0):
                self.acks.recv_bytes()  # late answers to a reload that timed out
            if not _write(self.wake_fd, _RELOAD, wait=True):
                return "ended"
            deadline = time.monotonic() + timeout
            while True:
                # in slices: a detached channel (the worker stopping, or restarted) ends the wait
                if self.acks.poll(min(0.5, max(0.0, deadline - time.monotonic()))):
                    self.acks.recv_bytes()
                    return "followed"
                with self._guard:
                    if self._detached:
                        return "ended"
                if time.monotonic() >= deadline:
                    return "late"
        except (EOFError, OSError):
            return "ended"  # it died: a new one starts with what runs here

    def close(self) -> None:
        """No longer used: closed now, or by the reload waiting, which sees it within half a second."""
        with self._guard:
            self._detached = True
            if self._waiting:
                return
        self._close()

    def _close(self) -> None:
        os.close(self.wake_fd)  # a worker whose pipe is closed stops as _STOP would (it finishes its work first)
        self.acks.close()


def _write(fd: int, message: bytes, wait: bool = False) -> bool:
    """One byte to the worker; False when it cannot be written (the worker is gone, or, for
    a wake-up, the pipe is full of wake-ups already)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            os.write(fd, message)
            return True
        except BlockingIOError:
            # full: wake-ups are pending already; a reload must still get through
            if not wait or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        except OSError:
            return False  # a dead worker is restarted, and a new one starts with what runs here


class WorkerProcess(SupervisedProcess):
    """Started and watched by a receiving process (supervisor.py): restarted if it dies
    unexpectedly. Its channel (_Pipes) is the writing end of a pipe, never blocking: wake-ups,
    reloads and the stop are single bytes; and the reading end of one back, where the worker
    acknowledges each reload once it follows it."""

    kind = "worker"
    log = log

    def __init__(self, config_path: str, verbose: int = 0, journal: Journal | None = None):
        """`journal`: where a worker that died gives back, at once, what it held (its claims)."""
        super().__init__(config_path, verbose)
        self.journal = journal
        self.ack_timeout = ACK_TIMEOUT

    def _launch(self, config, program):
        # Multiprocessing pipes only to hand the worker its ends; the one to the worker is
        # then used as a plain file descriptor, never blocking.
        reader, writer = self._context.Pipe(duplex=False)
        ack_reader, ack_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(target=run_worker, name="rulesengine-worker",
                                        args=(config, reader, self.verbose, program, os.getpid(), ack_writer))
        process.start()
        reader.close()
        ack_writer.close()  # the worker's is the only writing end left: its end is our EOF
        write_fd = os.dup(writer.fileno())
        writer.close()
        os.set_blocking(write_fd, False)
        return process, _Pipes(write_fd, ack_reader)

    def _ask_to_stop(self, pipes: _Pipes) -> None:
        try:
            os.set_blocking(pipes.wake_fd, True)
            os.write(pipes.wake_fd, _STOP)
        except OSError:
            pass

    def _detach(self, pipes: _Pipes) -> None:
        pipes.close()

    def _started_with(self, config, program) -> None:
        holder = self._rules
        if holder is not None and (holder.config is not config or holder.current.program is not program):
            self.reload()  # swapped in here while it started: the reload message may have missed it

    def wake(self, _instance_id: int | None = None) -> None:
        pipes = self.channel()
        if pipes is not None:
            _write(pipes.wake_fd, _WAKE)

    def reload(self) -> bool:
        """Tell the worker to follow what was put in place here, and return once it does:
        True; False when it did not answer within `ack_timeout` (logged) or ended meanwhile
        (a new one starts with what runs here)."""
        pipes = self.channel()
        if pipes is None:
            return False
        outcome = pipes.wait_for_ack(self.ack_timeout)
        if outcome == "late":
            log.warning("worker process %s did not follow the reload within %.0f s; it follows it once its current "
                        "work is done", self.pid, self.ack_timeout)
        return outcome == "followed"

    def _ended(self, pid: int) -> None:
        self._give_back(pid)

    def _give_back(self, pid: int) -> None:
        """A worker that ended (died, or was killed) cannot finish what it claimed: its
        deliveries go back to the queue and its instances are free, at once, rather than when
        their leases expire. Only that process's claims: its node's other processes keep theirs."""
        if self.journal is None:
            return
        try:
            deliveries, instances = self.journal.requeue_process(pid)
        except Exception as exc:  # noqa: BLE001 - the leases expire anyway
            log.warning("cannot give back what worker process %d held (its leases expire instead): %s", pid, exc)
            return
        if deliveries or instances:
            log.info("worker process %d held %d delivery(ies) and %d instance(s): queued again", pid, deliveries,
                     instances)
