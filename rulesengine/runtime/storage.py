"""The storage folder: spool, quarantine and journal, and durable file operations.

    STORAGE/
      journal.sqlite        the journal (SQLite, WAL)
      spool/tmp/            files being received or copied in (never read by the router)
      spool/in/             accepted instances, as received
      spool/out/            edited copies waiting for their destination
      nodes/NODE/{tmp,in,out}/  the same, of node NODE, with a PostgreSQL journal
      nodes/NODE.lock       held by node NODE while it runs
      quarantine/DATE/      instances kept aside, each with a .json of why (shared by the nodes)
      router.lock           SQLite: held by the one router (its process id inside);
                            PostgreSQL: shared by the nodes

A file is fsynced, renamed into place, and its folder fsynced before the
journal records it, so nothing the journal names can be half-written.

Several nodes share one folder only with a PostgreSQL journal (SQLite cannot be
shared). Each node writes into a spool of its own, so that the start-up sweep of
one never touches a file another node just wrote and has not journaled yet. A
node that starts alone (no other node holds router.lock) sweeps every spool:
the other nodes' (stopped nodes' leftovers) and `spool/`, where a router of a
single-node layout left its files (the journal names them by absolute path, so
they are read where they are).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from ..arrival import Arrival
from .disk_space import DiskSpace
from .journal import ACCEPTED, Journal, SQLiteJournal

if TYPE_CHECKING:
    from ..config import Config, FreeSpaceFloor, JournalDatabase


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_durably(source: str, target: str) -> str:
    """Rename `source` to `target` (same file system), then make the rename durable."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(source, target)
    fsync_dir(os.path.dirname(target))
    return target


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text)[:64] or "_"


class StorageInUse(OSError):
    """Another router runs on this storage folder (with this node's name, or alone)."""


START_WAIT_SECONDS = 120.0  # how long a node waits for another node's start-up sweep to end
_STARTING = "starting"  # router.lock's text while a node that started alone sweeps every spool
_NODES = "nodes"  # router.lock's text while nodes share the folder


class JournalUnavailable(RuntimeError):
    """The configured journal cannot be opened: the message names the key and the address
    (never a password)."""


class Storage:
    def __init__(self, root: str, database: JournalDatabase | None = None, node: str | None = None,
                 lease_seconds: float | None = None, retain_seconds: float = 0.0,
                 min_free: FreeSpaceFloor | None = None):
        """`database`: the configuration's `journal:` (PostgreSQL); None: SQLite, in this folder.
        `node`: the configuration's `node:`, whose leases the journal's claims take (None: the host name).
        `lease_seconds`: the configuration's `journal_lease_seconds` (None: the journal's default).
        `retain_seconds`: `retention.delivered` (0: a received file goes once the router is done with it).
        `min_free`: `storage_min_free` (None: no floor)."""
        self.root = os.path.abspath(root)
        self.retain_seconds = retain_seconds
        self.database = database
        self.node = node
        self.lease_seconds = lease_seconds
        self.node_name = node or socket.gethostname()  # as the journal names this node
        self.nodes_dir = os.path.join(self.root, "nodes")
        self.single_spool = os.path.join(self.root, "spool")  # the one router's (SQLite); older nodes' too
        # Each node its own spool with PostgreSQL: a node's sweep must never take another node's
        # files for leftovers. SQLite has one router, which keeps the single spool.
        spool = self.single_spool if database is None else os.path.join(self.nodes_dir, safe_name(self.node_name))
        self.tmp = os.path.join(spool, "tmp")
        self.incoming = os.path.join(spool, "in")
        self.outgoing = os.path.join(spool, "out")
        self.quarantine_dir = os.path.join(self.root, "quarantine")
        for folder in (self.tmp, self.incoming, self.outgoing, self.quarantine_dir):
            os.makedirs(folder, exist_ok=True)
        self.journal_path = os.path.join(self.root, "journal.sqlite")
        self.lock_path = os.path.join(self.root, "router.lock")
        self.replay_lock_path = os.path.join(self.root, "replay.lock")  # see replaying()
        self.interrupted_replay_files = 0  # removed by the last sweep (see sweep)
        self.node_lock_path = os.path.join(self.nodes_dir, f"{safe_name(self.node_name)}.lock")
        self.disk = DiskSpace(self.root, min_free)  # the watermark every intake asks (disk_space.py)
        self._lock_file = None
        self._node_lock_file = None
        self.alone = False  # locked with no other node on the folder: the start-up sweep takes every spool

    # ---- who uses the folder ----------------------------------------------------------------

    def lock(self, wait_seconds: float = START_WAIT_SECONDS, clock=time.monotonic, sleep=time.sleep) -> None:
        """Claim the folder for this router (SQLite) or this node (PostgreSQL): two routers on
        one spool would sweep each other's files. The kernel drops the locks when the process
        ends, also after SIGKILL. With PostgreSQL, a node that finds no other one keeps the
        folder to itself (`alone`) until `shared()`, after its start-up sweep; a node starting
        meanwhile waits up to `wait_seconds` for that. Raises StorageInUse."""
        if self.database is None:
            self._lock_file = self._exclusive(self.lock_path, lambda holder: (
                f"storage {self.root} is in use by another router ({_holder(holder)}); several routers on one "
                "storage folder need a PostgreSQL journal (`journal: postgresql://...`), each with its own "
                "`node:` name"))
            self.alone = True
            return
        os.makedirs(self.nodes_dir, exist_ok=True)
        self._node_lock_file = self._exclusive(self.node_lock_path, lambda holder: (
            f"storage {self.root} is in use by another router with the node name {self.node_name!r} "
            f"({_holder(holder)}); give each node its own `node:` name"))
        try:
            self._lock_nodes(wait_seconds, clock, sleep)
        except BaseException:
            self.unlock()
            raise

    def _lock_nodes(self, wait_seconds: float, clock, sleep) -> None:
        handle = open(self.lock_path, "a+")
        deadline = clock() + wait_seconds
        while True:
            if _try_flock(handle, fcntl.LOCK_EX):
                _write_holder(handle, f"{os.getpid()} {_STARTING}")
                self._lock_file, self.alone = handle, True
                return
            if _try_flock(handle, fcntl.LOCK_SH):
                _write_holder(handle, _NODES)  # no router that needs the folder alone holds it now
                self._lock_file, self.alone = handle, False
                return
            holder = _read_holder(handle)
            # A router that needs the folder alone wrote its process id alone; anything else is a
            # node that started alone and sweeps (or one about to write so): it shares the folder soon.
            if holder.isdigit():
                handle.close()
                raise StorageInUse(
                    f"storage {self.root} is in use by a router that needs it alone ({_holder(holder)}): one with a "
                    "SQLite journal, or of an earlier version; nodes share a storage folder only with a PostgreSQL "
                    "journal, all of them")
            if clock() >= deadline:
                handle.close()
                raise StorageInUse(f"storage {self.root}: another node ({_holder(holder)}) has been sweeping the "
                                   f"spool for over {wait_seconds:.0f} s; try again once it has started")
            sleep(0.2)  # a node started alone and sweeps every spool: it shares the folder once done

    def shared(self) -> None:
        """The start-up sweep is over: other nodes may start on the folder (PostgreSQL).
        Raises StorageInUse when a router that needs the folder alone took it meanwhile."""
        if self.database is None or not self.alone or self._lock_file is None:
            return
        handle = self._lock_file
        fcntl.flock(handle, fcntl.LOCK_UN)  # flock cannot turn a lock shared without letting it go
        self.alone = False
        if not _try_flock(handle, fcntl.LOCK_SH):
            holder = _read_holder(handle)
            self.unlock()
            raise StorageInUse(f"storage {self.root} was taken by a router that needs it alone "
                               f"({_holder(holder)}) while this node started")
        _write_holder(handle, _NODES)

    def _exclusive(self, path: str, refusal) -> object:
        handle = open(path, "a+")
        if not _try_flock(handle, fcntl.LOCK_EX):
            holder = _read_holder(handle)
            handle.close()
            raise StorageInUse(refusal(holder))
        _write_holder(handle, str(os.getpid()))
        return handle

    def unlock(self) -> None:
        for name in ("_lock_file", "_node_lock_file"):
            handle = getattr(self, name)
            if handle is not None:
                handle.close()  # closing releases the lock; the file stays, harmless
                setattr(self, name, None)
        self.alone = False

    @classmethod
    def of(cls, config: Config) -> Storage:
        """The storage folder of a configuration, with its journal."""
        return cls(config.storage, config.journal, config.node, config.journal_lease_seconds,
                   config.retention.delivered, config.storage_min_free)

    def has_journal(self) -> bool:
        """Is there a journal to read (a database always; SQLite once the router made its file)?"""
        return self.database is not None or os.path.isfile(self.journal_path)

    def journal(self) -> Journal:
        journal = self._open_journal()
        if self.lease_seconds is not None:
            journal.lease_seconds = self.lease_seconds
        return journal

    def _open_journal(self) -> Journal:
        if self.database is None:
            return SQLiteJournal(self.journal_path, self.node)
        from .journal import postgres  # psycopg is loaded only by a router that uses it
        try:
            password = self.database.password()
        except ValueError as exc:
            raise JournalUnavailable(f"{self.database.where}: {exc}") from None
        try:
            return postgres.PostgresJournal(self.database.url, password, node=self.node)
        except postgres.JournalUnavailable as exc:
            raise JournalUnavailable(f"{self.database.where}: {exc}") from None

    def temp_path(self, suffix: str = ".dcm") -> str:
        """A new file name in the spool's temporary folder (same file system as the spool)."""
        return os.path.join(self.tmp, f"{uuid.uuid4().hex}{suffix}")

    def use_for_temporary_files(self) -> None:
        """pynetdicom writes received data sets to tempfile's folder: make that the spool's,
        so that accepting one is a rename, not a copy."""
        tempfile.tempdir = self.tmp

    def accept(self, received_path: str, arrival: Arrival | None = None) -> str:
        """Make a received file durable and move it into the spool; returns its new path.
        The name carries the arrival facts (time and C-STORE command set included), so the
        file alone is enough to route it."""
        fsync_file(received_path)
        unique = uuid.uuid4().hex
        name = arrival.to_filename(unique) if arrival is not None else f"{unique}.dcm"
        return move_durably(received_path, os.path.join(self.incoming, name))

    @staticmethod
    def facts_from_name(path: str) -> Arrival:
        """The arrival facts a spool file's name carries (see accept)."""
        return Arrival.from_filename(os.path.basename(path))

    @staticmethod
    def recover_facts_from_name(path: str, sop_class_uid: str | None = None,
                                sop_instance_uid: str | None = None) -> tuple[Arrival, tuple[str, ...]]:
        """facts_from_name for an instance whose journal entry was lost, with the instance's UIDs
        (read from the file), and what the name could not keep (Arrival.recover_from_filename)."""
        return Arrival.recover_from_filename(os.path.basename(path), sop_class_uid, sop_instance_uid)

    def copy_in(self, source: str) -> str:
        """Copy a file (from a watched folder) into the spool's temporary folder, durably."""
        target = self.temp_path()
        try:
            shutil.copyfile(source, target)
            fsync_file(target)
        except BaseException:
            self.remove(target)  # a copy cut short (a full disk, an unreadable source) is no use
            raise
        return target

    def output_path(self, instance_id: int, destination: str) -> str:
        return os.path.join(self.outgoing, f"{instance_id}-{safe_name(destination)}.dcm")

    def quarantine(self, source: str, reason: str, facts: dict) -> str:
        """Keep an instance aside with why (`facts`: what the .json beside it says besides the
        reason, see Arrival.to_quarantine); the file is moved durably."""
        day = time.strftime("%Y%m%d")
        folder = os.path.join(self.quarantine_dir, day)
        os.makedirs(folder, exist_ok=True)
        name = safe_name(facts.get("sop_instance_uid") or uuid.uuid4().hex)
        fsync_file(source)
        info = {"reason": reason, "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
        text = json.dumps(info, indent=2, ensure_ascii=False)
        # The .json is written (under a name no other instance holds) before the instance is
        # linked beside it: whoever lists the quarantine never finds an instance without its
        # reason, even between the two steps or after a crash there. A hard link fails if the
        # name exists: two copies of one instance never overwrite each other.
        target = os.path.join(folder, f"{name}.dcm")
        while True:
            try:
                with open(target + ".json", "x", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
            except FileExistsError:
                target = os.path.join(folder, f"{name}-{uuid.uuid4().hex[:8]}.dcm")
                continue
            try:
                os.link(source, target)
                break
            except FileExistsError:  # an instance without its .json (kept from before): leave both
                os.unlink(target + ".json")
                target = os.path.join(folder, f"{name}-{uuid.uuid4().hex[:8]}.dcm")
        os.unlink(source)
        fsync_dir(folder)
        return target

    def quarantined_count(self) -> int:
        """How many instances the quarantine holds: names counted, no .json read."""
        count = 0
        with os.scandir(self.quarantine_dir) as days:
            for day in days:
                if day.is_dir():
                    with os.scandir(day.path) as names:
                        count += sum(1 for entry in names if entry.name.endswith(".dcm"))
        return count

    def quarantined(self) -> list[tuple[str, dict]]:
        """What the quarantine holds, oldest first: (path of the instance, what its .json says)."""
        found = []
        for day in sorted(os.listdir(self.quarantine_dir)):
            folder = os.path.join(self.quarantine_dir, day)
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".dcm"):
                    continue
                path = os.path.join(folder, name)
                try:
                    with open(path + ".json", encoding="utf-8") as fh:
                        info = json.load(fh)
                except (OSError, ValueError):
                    info = {"reason": "(no readable .json beside it)"}
                found.append((path, info))
        return sorted(found, key=lambda item: (item[1].get("quarantined_at") or "", item[0]))

    def release(self, path: str, info: dict, journal: Journal) -> int:
        """Put a quarantined instance back into the spool, as received from where it first came,
        and journal it: the rules run on it again (in a running router within seconds). The
        file is in the spool before the quarantine lets go of it: a crash in between leaves a
        copy in both places, never in neither."""
        arrival = Arrival.from_quarantine(info)
        temp = self.temp_path()
        os.link(path, temp)  # the quarantined file is durable already; only names change
        spooled = self.accept(temp, arrival)
        instance_id = journal.record(arrival, spooled, None, ACCEPTED)
        for name in (path, path + ".json"):
            self.remove(name)
        fsync_dir(os.path.dirname(path))
        return instance_id

    def keep(self, journal: Journal, instance_id: int, now: float | None = None) -> bool:
        """retention.delivered: keep an instance's received file for `retain_seconds` once the
        router is done with it. Recorded before the instance is routed or dropped, so that no
        delivery ending meanwhile removes the file: path_in_use names it until the cleanup
        removes it (DestinationWorker extends the time when its deliveries end). False when
        nothing is retained: the caller removes the file once done."""
        if self.retain_seconds <= 0:
            return False
        journal.retain(instance_id, (time.time() if now is None else now) + self.retain_seconds)
        return True

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def spools(self) -> list[str]:
        """The spool folders the start-up sweep takes: this router's own; every node's and the
        single spool when this node started alone (PostgreSQL)."""
        own = os.path.dirname(self.tmp)
        if self.database is None or not self.alone:
            return [own]
        others = []
        if os.path.isdir(self.nodes_dir):
            others = sorted(entry.path for entry in os.scandir(self.nodes_dir)
                            if entry.is_dir(follow_symlinks=False) and entry.path != own)
        return [own, *others, self.single_spool]

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Held (shared: replays may run together) while a replay links its files into the
        spool and records them: a sweep that finds it free knows that replay files no entry
        names are left by a replay killed before it was recorded."""
        with open(self.replay_lock_path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            yield

    def _replay_running(self) -> bool:
        with open(self.replay_lock_path, "a+") as handle:
            return not _try_flock(handle, fcntl.LOCK_EX)

    def sweep(self, in_use: set[str]) -> tuple[int, list[str]]:
        """On start, what no journal entry names: files being received (never answered) and
        copies of finished deliveries are removed; received files are returned, to be
        journaled again (their entry may have been lost with a power cut after the answer).
        A replay's files (REPLAY_PREFIX) no entry names are of a replay interrupted before it
        was recorded, which did not happen: removed (their retained originals stay), unless a
        replay runs now. Only the spools no other running node writes into (see spools)."""
        removed = 0
        unknown: list[str] = []
        replay_running = self._replay_running()
        self.interrupted_replay_files = 0
        for spool in self.spools():
            for folder in (os.path.join(spool, "tmp"), os.path.join(spool, "out")):
                for name in _names(folder):
                    path = os.path.join(folder, name)
                    if path not in in_use and os.path.isfile(path):
                        self.remove(path)
                        removed += 1
            incoming = os.path.join(spool, "in")
            for name in sorted(_names(incoming)):
                path = os.path.join(incoming, name)
                if path in in_use:
                    continue
                if not name.startswith(REPLAY_PREFIX):
                    unknown.append(path)
                elif not replay_running:
                    self.remove(path)
                    self.interrupted_replay_files += 1
        return removed, unknown


REPLAY_PREFIX = "replay-"  # how the spool names of a replay's files start (replay.py)


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:  # a spool never made (a node's, or the single one)
        return []


def _try_flock(handle, kind: int) -> bool:
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _read_holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


def _write_holder(handle, text: str) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(text + "\n")
    handle.flush()


def _holder(text: str) -> str:
    """A lock file's text, in words: `process 4242`, `nodes on a PostgreSQL journal`."""
    if text == _NODES:
        return "nodes on a PostgreSQL journal"
    pid = text.split()[0] if text else ""
    return f"process {pid}" if pid.isdigit() else "process unknown"
