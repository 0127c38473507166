"""Which errors say that the journal's database is out of reach (stopped, restarting, a
network cut), not that something is wrong with the router: a process that meets one says so
in one line, without a traceback, refuses what it cannot journal (a failure status to the
sender) and tries again; the journal reconnects by itself once the database answers."""

from __future__ import annotations

import sys

# SQLSTATE classes: 08 connection exception; 57P01-57P05 the server shutting down or restarting
_UNREACHABLE_STATES = ("08", "57P")


def unreachable(exc: BaseException) -> bool:
    """Is `exc` the journal's database out of reach? (psycopg is looked at only once loaded:
    a router on SQLite never imports it.)"""
    postgres = sys.modules.get(f"{__package__}.postgres")
    if postgres is not None and isinstance(exc, postgres.JournalUnavailable):
        return True
    storage = sys.modules.get(f"{__package__.rsplit('.', 1)[0]}.storage")
    if storage is not None and isinstance(exc, storage.JournalUnavailable):
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.Error):
        return False
    state = getattr(exc, "sqlstate", None)
    if state is None:  # raised by the client: the connection failed, or was found closed
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return state.startswith(_UNREACHABLE_STATES)


def never_connected(exc: BaseException) -> bool:
    """Did the call fail before anything reached the database (no connection could be made)?
    Then nothing of it was journaled; after any other failure a commit may have been made."""
    postgres = sys.modules.get(f"{__package__}.postgres")
    return postgres is not None and isinstance(exc, postgres.JournalUnavailable)


def in_words(exc: BaseException) -> str:
    """The error's first line (psycopg's messages run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
