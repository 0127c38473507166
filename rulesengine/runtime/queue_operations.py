"""What `dicom-rules queue` and the console's Queues page share: which purges are allowed, and
the purge itself (deliveries forgotten, their spool files removed when no other delivery needs
them, finished instances forgotten); the delivery windows each destination and delivery waits
for, open or closed at a given time, and until when."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import NamedTuple

from .journal import DEAD, DELIVERED, QUEUED, RETRYING, SENDING, Journal
from .storage import Storage
from ..windows import DeliveryWindow

# What a purge may name: finished deliveries, and unfinished ones of a removed destination.
PURGE_STATES = (DELIVERED, DEAD, QUEUED, RETRYING)


class PurgeRefused(ValueError):
    """A purge that would forget what is still being sent, or still waits for a configured destination."""


def check_purge(states: Collection[str], destination: str | None, configured: Collection[str],
                named_as: str) -> None:
    """Finished deliveries (delivered, dead) of any destination; queued or retrying ones only of
    a destination no longer configured, named on purpose (`named_as` says how: the option or
    the parameter), since those would otherwise wait for ever; never what is being sent."""
    unfinished = sorted(set(states) - {DELIVERED, DEAD})
    if not unfinished:
        return
    if SENDING in unfinished:
        raise PurgeRefused("deliveries being sent cannot be purged")
    if destination is None or destination in configured:
        raise PurgeRefused(f"{' and '.join(unfinished)} deliveries are purged only for a destination no longer "
                           f"in the configuration, named {named_as}")


def purge(storage: Storage, journal: Journal, states: Collection[str], destination: str | None,
          older_than: float | None) -> dict:
    """Forget deliveries in these states (of one destination, or all; with `older_than`, only
    those not updated since), their spool files, and the finished instances."""
    paths = journal.purge(tuple(states), older_than, destination)
    removed = 0
    for path in paths:
        if not journal.path_in_use(path) and os.path.exists(path):
            storage.remove(path)
            removed += 1
    instances = journal.purge_instances(older_than)
    return {"states": list(states), "destination": destination, "instances_forgotten": instances,
            "spool_files_removed": removed}


# ---- delivery windows ---------------------------------------------------------------------------


class WindowNow(NamedTuple):
    """A delivery window at a given time: open or closed, and until when (None: it never changes)."""

    name: str
    hours: str  # as DeliveryWindow.describe says it: 22:00-06:00 every day (UTC)
    open: bool
    until: float | None


def window_now(window: DeliveryWindow, now: float) -> WindowNow:
    is_open = window.is_open(now)
    return WindowNow(window.name, window.describe(), is_open,
                     window.closes_after(now) if is_open else window.opens_after(now))


def waiting_for_window(windows: Mapping[str, DeliveryWindow], state: str, delivery_window: str | None,
                       destination_window: str | None, now: float) -> WindowNow | None:
    """The closed window a delivery waits for besides its turn: its route's (`during`), else its
    destination's (`window:`); None when it does not wait for one (open, none, or not queued)."""
    if state not in (QUEUED, RETRYING):
        return None
    for name in (delivery_window, destination_window):
        window = windows.get(name) if name else None
        if window is not None and not window.is_open(now):
            return window_now(window, now)
    return None
