"""Who may use the console, and how a login is checked.

Users come from the configuration (`console.users`, argon2id hashes); without any, the first
start makes an `admin` with a random password whose hash is kept in STORAGE/console-users.json.
Sessions are signed cookies (starlette's SessionMiddleware) with a secret kept in the storage
folder, so that they outlive a restart of the console. Every POST carries the session's CSRF
token. Failed logins are counted per client address and per user name over a sliding window.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..config import CONSOLE_ROLES, ConsoleUser

USERS_FILE = "console-users.json"
SECRET_FILE = "console-session.key"
FIRST_ADMIN = "admin"
MIN_PASSWORD = 10  # characters, for `dicom-rules user add` and the Users page alike

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user is unknown, so that an unknown name takes as long as a wrong password.
_UNKNOWN_USER_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """The argon2id hash of a password, as the configuration keeps it."""
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def role_allows(role: str, needed: str) -> bool:
    """viewer < operator < admin: a role may do what the roles before it may."""
    return role in CONSOLE_ROLES and CONSOLE_ROLES.index(role) >= CONSOLE_ROLES.index(needed)


def _write_private(path: str, text: str) -> None:
    """A file only its owner may read, written whole (O_EXCL: never over another one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


class StorageFileError(Exception):
    """A file the console keeps in the storage folder cannot be used; the message says what to do."""


def first_run_admin(storage: str) -> tuple[tuple[ConsoleUser, ...], str | None]:
    """The users of STORAGE/console-users.json, made on the first call with one `admin` and a
    random password: (the users, the password when it was made just now, else None)."""
    path = os.path.join(storage, USERS_FILE)
    password = None
    if not os.path.exists(path):
        password = secrets.token_urlsafe(15)
        users = [{"name": FIRST_ADMIN, "role": "admin", "password_hash": hash_password(password)}]
        try:
            _write_private(path, json.dumps({"users": users}, indent=2) + "\n")
        except FileExistsError:  # another console started at the same moment: its admin counts
            password = None
    try:
        with open(path, encoding="utf-8") as fh:
            users = tuple(ConsoleUser(str(u["name"]), str(u["role"]), str(u["password_hash"]))
                          for u in json.load(fh)["users"])
    except OSError as exc:
        raise StorageFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError):
        raise StorageFileError(f"{path} is not a users file of the console; remove it, and the next start makes "
                               "a new admin with a new password") from None
    return users, password


def session_secret(storage: str) -> str:
    """The key that signs session cookies, made once (0600) in the storage folder."""
    path = os.path.join(storage, SECRET_FILE)
    try:
        _write_private(path, secrets.token_hex(32) + "\n")
    except FileExistsError:
        pass
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StorageFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(secret) < 32:
        raise StorageFileError(f"{path} holds no session key; remove it, and the next start makes a new one "
                               "(everyone logs in again)")
    return secret


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(session_token: str | None, given: str | None) -> bool:
    return bool(session_token) and bool(given) and secrets.compare_digest(str(session_token), str(given))


@dataclass
class Users:
    """The console's users by name."""

    by_name: dict[str, ConsoleUser]

    def check(self, name: str, password: str) -> ConsoleUser | None:
        user = self.by_name.get(name)
        if user is None:
            password_matches(_UNKNOWN_USER_HASH, password)
            return None
        return user if password_matches(user.password_hash, password) else None


class LoginLimiter:
    """At most `failures` failed logins per client address and per user name within `window`
    seconds; beyond that, logins are refused until the oldest failure leaves the window."""

    def __init__(self, clock, failures: int = 5, window: float = 300.0):
        self.clock, self.failures, self.window = clock, failures, window
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failed.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def wait(self, address: str, name: str) -> float:
        """Seconds before a login of `name` from `address` is taken again; 0: now."""
        now = self.clock()
        with self._lock:
            waits = [times[0] + self.window - now for key in (f"address:{address}", f"user:{name}")
                     if len(times := self._recent(key, now)) >= self.failures]
        return max(waits, default=0.0)

    def failed(self, address: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (f"address:{address}", f"user:{name}"):
                self._recent(key, now).append(now)
            # A flood of made-up names must not grow the table for ever: forget the empty ones.
            if len(self._failed) > 10000:
                for key in [key for key, times in self._failed.items() if not self._recent(key, now)]:
                    del self._failed[key]

    def succeeded(self, name: str) -> None:
        """A right password: the name's failures are forgotten (the address's are not)."""
        with self._lock:
            self._failed.pop(f"user:{name}", None)
