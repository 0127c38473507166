"""Exclusive locks: one holder at a time in the whole cluster, released when the holder dies.

What must run in one place only (a destination whose order is promised, a watched folder)
is guarded by a named lock taken through the journal, since the journal is what every
process of every node shares:

- SQLite: one node only (the storage folder's lock sees to that), so an flock on a file
  beside the journal covers every process of it; the kernel drops it when the process ends,
  also after SIGKILL.
- PostgreSQL: a session advisory lock on a connection of its own; the server drops it when
  that connection ends: the process died, or the database or the network went away. `held()`
  then says False, and the holder stops what the lock protected and asks again.

A lock is not shared between the threads of a process either: a second `try_exclusive` of the
same name, in the same process, gets None while the first is held.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from typing import Any, Protocol

# The advisory lock keys of this project: (namespace, hash of the name). The journal's migration
# lock uses the one-key form, which PostgreSQL keeps apart from the two-key form.
_ADVISORY_NAMESPACE = 0x52554C45  # "RULE"


class ExclusiveLock(Protocol):
    name: str

    def held(self) -> bool:
        """Still held: False once the holder lost it (its database connection ended)."""

    def release(self) -> None:
        """Give it up (idempotent)."""


_taken: set[tuple[str, str]] = set()  # (where, name) held by this process, for every backend
_taken_lock = threading.Lock()


def lock_file_name(name: str) -> str:
    """A file name for the lock called `name`: readable, and distinct for distinct names."""
    readable = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:80]
    return f"{readable}-{hashlib.blake2b(name.encode(), digest_size=6).hexdigest()}.lock"


def _reserve(where: str, name: str) -> bool:
    with _taken_lock:
        if (where, name) in _taken:
            return False
        _taken.add((where, name))
        return True


def _unreserve(where: str, name: str) -> None:
    with _taken_lock:
        _taken.discard((where, name))


class FileLock:
    """An flock on a file of FOLDER named after the lock (lock_file_name)."""

    def __init__(self, name: str, handle) -> None:
        self.name = name
        self._handle = handle
        self._where = os.path.dirname(handle.name)

    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the file drops the flock
            _unreserve(self._where, self.name)

    @classmethod
    def take(cls, folder: str, name: str) -> FileLock | None:
        folder = os.path.abspath(folder)
        if not _reserve(folder, name):
            return None
        try:
            os.makedirs(folder, exist_ok=True)
            handle = open(os.path.join(folder, lock_file_name(name)), "a+")
        except OSError:
            _unreserve(folder, name)
            raise
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            _unreserve(folder, name)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return None
            raise
        return cls(name, handle)


def advisory_key(name: str) -> int:
    """A stable signed 32-bit key for `name` (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


class AdvisoryLock:
    """A PostgreSQL session advisory lock, on a connection used for nothing else."""

    def __init__(self, name: str, db: Any, where: str) -> None:
        self.name = name
        self._db = db
        self._where = where
        self._guard = threading.Lock()

    def held(self) -> bool:
        with self._guard:
            db = self._db
            if db is None:
                return False
            try:
                # The lock lives as long as this session: the session answering is the lock held.
                db.execute("SELECT 1").fetchone()
                return True
            except Exception:  # noqa: BLE001 - any failure means the session, and the lock, may be gone
                self._drop()
                return False

    def release(self) -> None:
        with self._guard:
            if self._db is not None:
                try:
                    self._db.execute("SELECT pg_advisory_unlock(%s, %s)", (_ADVISORY_NAMESPACE, advisory_key(self.name)))
                except Exception:  # noqa: BLE001 - closing the session releases it anyway
                    pass
                self._drop()

    def _drop(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:  # noqa: BLE001
                pass
            _unreserve(self._where, self.name)

    @classmethod
    def take(cls, connect, where: str, name: str) -> AdvisoryLock | None:
        """`connect()`: a new psycopg connection in autocommit mode, for this lock alone."""
        if not _reserve(where, name):
            return None
        try:
            db = connect()
            got = db.execute("SELECT pg_try_advisory_lock(%s, %s)",
                             (_ADVISORY_NAMESPACE, advisory_key(name))).fetchone()[0]
        except BaseException:
            _unreserve(where, name)
            raise
        if not got:
            db.close()
            _unreserve(where, name)
            return None
        return cls(name, db, where)
