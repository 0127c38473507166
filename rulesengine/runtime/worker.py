"""A worker process: processing and delivery, on a core of their own.

Receiving (pynetdicom decoding PDUs) and delivering (encoding them) are both
Python-heavy; in one interpreter they would take turns on one core. Each
receiving process (the main one, and the others of `processes:`) receives; its
worker process, started and supervised by it (supervisor.py), processes what the
journal says was received and delivers it. They share only the journal and the
spool, so either can stop at any moment without losing anything.
"""

from __future__ import annotations

import logging
import os
import select
import time

from ..config import Config, ConfigError, load_config
from ..diagnostics import RulesError
from ..lang.loader import load_program
from .delivery import DeliveryManager
from .journal import Journal
from .journal.errors import in_words, unreachable
from .logs import Repeats, setup_logging
from .pipeline import Pipeline
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


def run_worker(config: Config | str, wake, verbose: int, program=None, parent: int | None = None) -> None:
    """The worker's main function; `wake` is the reading end of a pipe from the main process.
    `config` is the configuration the main process runs (or the path of one to read), and
    `program` the parsed rules it runs (None: compiled from the journal when first needed).
    Each instance is processed with the rule set version recorded at its answer, compiled
    from the files the journal kept of it: never from the files on disk, which may have been
    edited since into something the main process refused. `parent`: the main process's id."""
    die_with_parent(parent)
    wake_fd = wake.fileno()
    leave_signals_to_the_owner()
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
    # What a worker before this one held when it died was given back by its supervisor
    # (WorkerProcess._watch); other processes' claims are theirs, and expire if they die.
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
        pipeline.claims.stop()
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
    """Process what was received, then fire the groups whose timer ran out (the group rules'
    timer: a round every POLL_SECONDS at most); the journal's database away, the next round
    tries again."""
    global _journal_away
    try:
        pipeline.process_pending()
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


class WorkerProcess(SupervisedProcess):
    """Started and watched by a receiving process (supervisor.py): restarted if it dies
    unexpectedly. Its channel is the writing end of a pipe, never blocking: wake-ups, reloads
    and the stop are single bytes."""

    kind = "worker"
    log = log

    def __init__(self, config_path: str, verbose: int = 0, journal: Journal | None = None):
        """`journal`: where a worker that died gives back, at once, what it held (its claims)."""
        super().__init__(config_path, verbose)
        self.journal = journal

    def _launch(self, config, program):
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
        return process, write_fd

    def _ask_to_stop(self, write_fd: int) -> None:
        try:
            os.set_blocking(write_fd, True)
            os.write(write_fd, _STOP)
        except OSError:
            pass

    def _detach(self, write_fd: int) -> None:
        os.close(write_fd)  # a worker whose pipe is closed stops as _STOP would (it finishes its work first)

    def _started_with(self, config, program) -> None:
        holder = self._rules
        if holder is not None and (holder.config is not config or holder.current.program is not program):
            self.reload()  # swapped in here while it started: the reload message may have missed it

    def wake(self, _instance_id: int | None = None) -> None:
        self._send(_WAKE)

    def reload(self) -> None:
        self._send(_RELOAD, wait=True)

    def _send(self, message: bytes, wait: bool = False) -> None:
        fd = self.channel()
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
