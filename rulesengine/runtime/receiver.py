"""Receiving processes: the listeners of one router run in `processes` processes at once, all
bound to the same ports (SO_REUSEPORT: the kernel spreads the connections over them), each
with its own worker process (worker.py), so that receiving and delivering use the machine's
cores.

`Reception` is what every receiving process runs: its listeners and the services they answer
with (find, retrieve, sync delivery), its pipeline and its worker process. The main process
is receiving process 0 (service.py: it also has the watched folders, the reloader, the status
row, the recovery at start); each other one is a `ReceivingProcess` it starts and supervises
(supervisor.py), handing it the configuration and the parsed rules it runs, and, at each
reload it has put in place, the new ones (a reload it refused changes nothing anywhere).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace

from ..config import Config, ConfigError
from ..diagnostics import RulesError
from .events import Events
from .find_service import FindService
from .listener import DicomListener
from .journal.errors import in_words, unreachable
from .logs import Repeats, setup_logging
from .notifications import Notifications
from .pipeline import Pipeline
from .pynetdicom_setup import configure_pynetdicom
from .retrieval_exchange import RetrievalExchange
from .retrieve_service import RetrieveService
from .rules import RulesHolder
from .storage import Storage
from .supervisor import SupervisedProcess, die_with_parent, leave_signals_to_the_owner
from .sync_delivery import SyncDelivery
from .worker import WorkerProcess

log = logging.getLogger("rulesengine.router")

WORKER_GONE_SECONDS = 10.0  # how long a dead receiving process's worker may take to end
RELOAD_TIMEOUT = 90.0  # seconds the main process waits for a receiving process (and its worker) to follow a reload
COUNTS_SECONDS = 1.0  # how often a receiving process tells the main one its associations
JOURNAL_WAIT = 2.0  # seconds between two tries to open the journal while its database is away


def _delivered_by_the_worker(_destinations) -> None:
    """A receiving process queues no delivery: its worker process has the destinations' queues."""


class Reception:
    """One receiving process's listeners, the services they answer with, and its worker process."""

    def __init__(self, config: Config, storage: Storage, journal, rules: RulesHolder, verbose: int = 0):
        self.config = config
        self.rules = rules
        self.worker = WorkerProcess(config.path, verbose, journal)
        # what is decided here (a reject at reception, a sync-mode delivery) raises its events here:
        # queued in the outbox, sent by the main process
        self.pipeline = Pipeline(storage, journal, rules, _delivered_by_the_worker, on_accepted=self.worker.wake,
                                 events=Events(Notifications(journal, config)))
        self.find_service = FindService(journal, rules)
        self.sync_delivery = SyncDelivery(journal, storage, self.pipeline, config.destinations)
        self.retrieve_service = RetrieveService(journal, rules, self.pipeline, self.sync_delivery)
        self.listeners: list[DicomListener] = []

    def start_worker(self) -> None:
        self.worker.start(self.rules)  # it processes what was received before, then what comes

    def start_listeners(self, ports: list[int], shared: bool, exchange: RetrievalExchange | None = None) -> None:
        """Each listener of the configuration on its port of `ports` (the port a listener of
        port 0 was given); `shared`: the ports are shared with other receiving processes, and
        `exchange` hands over what a source stores for another one's C-MOVE."""
        if exchange is not None:
            self.retrieve_service.share(exchange)
        for listener_config, port in zip(self.config.listeners, ports):
            listener = DicomListener(replace(listener_config, port=port), self.pipeline, self.sync_delivery.deliver,
                                     self.find_service, self.retrieve_service)
            try:
                listener.start(reuse_port=shared)
            except OSError as exc:
                raise OSError(f"listener {listener_config.name} on {listener_config.bind}:{port}: "
                              f"{exc.strerror or exc}") from None
            self.listeners.append(listener)

    def follow(self, config: Config) -> None:
        """A changed configuration put in place: sync deliveries use its destinations."""
        self.config = config
        self.sync_delivery.use_destinations(config.destinations)
        self.pipeline.events.configure(config)

    def stop_listeners(self) -> None:
        """Stop taking new work; associations in progress finish their current message."""
        for listener in self.listeners:
            listener.stop()

    def stop(self) -> None:
        """After stop_listeners (and, in the main process, the watched folders): the worker."""
        self.worker.stop()
        self.retrieve_service.stop_exchange()
        self.sync_delivery.close()


# ---- an extra receiving process ---------------------------------------------------------------


def run_receiver(config: Config, program, channel, verbose: int, parent: int, number: int, ports: list[int],
                 counts, exchange: tuple[str, int] | None = None) -> None:
    """The main function of receiving process `number` (1, 2, ...): `channel` is its end of a
    duplex pipe with the main process (("reload", seq, config, program) answered ("reloaded",
    seq, version or None); ("stop",)); `counts` a shared array where it writes, per listener,
    its open and its accepted associations; `exchange` the folder of the receiving processes'
    sockets and their number (retrieval_exchange.py)."""
    die_with_parent(parent)
    leave_signals_to_the_owner()
    setup_logging(config.log_level, verbose, config.log_file)
    configure_pynetdicom()
    storage = Storage.of(config)  # never locked here: the main process holds the storage's lock
    storage.use_for_temporary_files()
    journal, early = _open_journal(storage, channel, number)
    if journal is None:
        return  # asked to stop while the journal's database could not be reached
    rules = RulesHolder(config, program=program)  # recorded in the journal by the main process already
    reception = Reception(config, storage, journal, rules, verbose)
    stopped = threading.Event()
    try:
        reception.start_worker()
        counts[len(counts) - 1] = reception.worker.pid or 0
        try:
            reception.start_listeners(ports, shared=True, exchange=RetrievalExchange(
                exchange[0], number, exchange[1], storage.tmp) if exchange else None)
        except OSError as exc:  # the main process bound these ports: something took one since
            log.error("receiving process %d (%d) cannot start: %s", number, os.getpid(), exc)
            raise SystemExit(1) from None
        threading.Thread(target=_publish_counts, args=(reception, counts, stopped), name="association-counts",
                         daemon=True).start()
        log.info("receiving process %d (%d) runs rules %s", number, os.getpid(), rules.current.version)
        while True:
            try:
                message = early.pop(0) if early else channel.recv()
            except (EOFError, OSError):
                break  # the main process closed the pipe: it is stopping
            if message[0] == "stop":
                break
            if message[0] == "reload":
                _, seq, new_config, new_program = message
                channel.send(("reloaded", seq, _follow(reception, number, new_config, new_program)))
    finally:
        stopped.set()
        reception.stop_listeners()
        reception.stop()
        _write_counts(reception, counts)
        journal.close()


_unreachable = Repeats()  # the journal's database away at start: said once a minute


def _open_journal(storage: Storage, channel, number: int) -> tuple:
    """The journal, and the messages of the main process that came while it was opened (its
    reloads, answered once this process runs). While its database cannot be reached, say so
    and try again every few seconds, answering the stop meanwhile ((None, []): asked to stop)."""
    early: list = []
    while True:
        try:
            return storage.journal(), early
        except Exception as exc:
            if not unreachable(exc):
                raise
            _unreachable.log(log, logging.WARNING, "open", "receiving process %d (%d): the journal's database cannot "
                             "be reached (%s); trying again every %.0f s", number, os.getpid(), in_words(exc),
                             JOURNAL_WAIT)
        deadline = time.monotonic() + JOURNAL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not channel.poll(left):
                    break
                message = channel.recv()
            except (EOFError, OSError):
                return None, []  # the main process closed the pipe: it is stopping
            if message[0] == "stop":
                return None, []
            early.append(message)


def _follow(reception: Reception, number: int, config: Config, program) -> str | None:
    """Put in place what the main process put in place; the version, or None when it does not
    compile here (it did there: only this process's environment can differ)."""
    try:
        ruleset = reception.rules.follow(config, program)
    except (RulesError, ConfigError, OSError) as exc:
        log.error("receiving process %d (%d): the rules the router runs do not compile here (%s)", number,
                  os.getpid(), exc)
        return None
    reception.follow(config)
    reception.worker.reload()
    log.info("receiving process %d (%d) follows rules %s", number, os.getpid(), ruleset.version)
    return ruleset.version


def _write_counts(reception: Reception, counts) -> None:
    for index, listener in enumerate(reception.listeners):
        counts[2 * index] = listener.open_associations()
        counts[2 * index + 1] = listener.accepted_associations()
    counts[len(counts) - 1] = reception.worker.pid or 0  # the main process gives back its claims if we die


def _publish_counts(reception: Reception, counts, stopped: threading.Event) -> None:
    while not stopped.wait(COUNTS_SECONDS):
        _write_counts(reception, counts)


class ReceivingProcess(SupervisedProcess):
    """Receiving process `number`, started and supervised by the main process: listeners on
    `ports` (bound there already, SO_REUSEPORT) and a worker process of its own."""

    kind = "receiving"
    log = log

    def __init__(self, config_path: str, verbose: int, number: int, ports: list[int], journal=None,
                 exchange: tuple[str, int] | None = None):
        """`journal`: where what it and its worker held (their claims) is given back if it dies;
        `exchange`: the folder of the receiving processes' sockets, and their number."""
        super().__init__(config_path, verbose)
        self.number = number
        self.ports = list(ports)
        self.journal = journal
        self.exchange = exchange
        # per listener: associations open now, associations accepted since this process started;
        # then its worker process's id
        self.counts = self._context.Array("l", 2 * len(self.ports) + 1, lock=False)
        self._reload_lock = threading.Lock()
        self._seq = 0

    def _launch(self, config, program):
        for index in range(len(self.counts)):
            self.counts[index] = 0
        here, there = self._context.Pipe(duplex=True)
        process = self._context.Process(target=run_receiver, name=f"rulesengine-receiver-{self.number}",
                                        args=(config, program, there, self.verbose, os.getpid(), self.number,
                                              self.ports, self.counts, self.exchange))
        process.start()
        there.close()
        return process, here

    def _ask_to_stop(self, channel) -> None:
        try:
            channel.send(("stop",))
        except (OSError, ValueError):
            pass  # ended already

    def _detach(self, channel) -> None:
        channel.close()

    def _ended(self, pid: int) -> None:
        """It ended (its worker with it: the kernel ends a worker whose parent died): what both
        held is queued again at once, rather than when their leases expire."""
        worker = self.counts[len(self.counts) - 1]
        if self.journal is None:
            return
        deadline = time.monotonic() + WORKER_GONE_SECONDS
        while worker and _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)  # it is being ended: what it still sends must not be sent twice
        for process, what in ((pid, "receiving"), (worker, "worker")):
            if not process or (what == "worker" and _alive(process)):
                continue  # a worker still alive keeps its claims; their leases expire if it is stuck
            try:
                deliveries, instances = self.journal.requeue_process(process)
            except Exception as exc:  # noqa: BLE001 - the leases expire anyway
                log.warning("cannot give back what %s process %d held (its leases expire instead): %s", what,
                            process, exc)
                continue
            if deliveries or instances:
                log.info("%s process %d held %d delivery(ies) and %d instance(s): queued again", what, process,
                         deliveries, instances)

    def _started_with(self, config, program) -> None:
        holder = self._rules
        if holder is not None and (holder.config is not config or holder.current.program is not program):
            self.reload(holder.config, holder.current.program)  # swapped in while it started

    def reload(self, config: Config, program, timeout: float = RELOAD_TIMEOUT) -> str | None:
        """Hand it the rules put in place here; the version it runs then (None: it did not answer
        in time, or they do not compile there; it logs why). A process restarted meanwhile
        starts with them anyway."""
        with self._reload_lock:
            channel = self.channel()
            if channel is None:
                return None
            self._seq += 1
            try:
                channel.send(("reload", self._seq, config, program))
                while channel.poll(timeout):
                    answer = channel.recv()
                    if answer[0] == "reloaded" and answer[1] == self._seq:
                        return answer[2]
            except (EOFError, OSError, ValueError):
                return None  # it died: the next one starts with what runs here
            log.warning("receiving process %d did not follow the reload within %d s", self.number, timeout)
            return None

    def associations(self) -> list[tuple[int, int]]:
        """Per listener: (open now, accepted since this process started)."""
        values = list(self.counts)
        return [(values[2 * index], values[2 * index + 1]) for index in range(len(self.ports))]


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not os.path.isdir("/proc")  # no /proc: the signal is all there is to go by
