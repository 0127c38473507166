"""What `dicom-rules queue purge` and the console's purge share: which purges are allowed, and
the purge itself (deliveries forgotten, their spool files removed when no other delivery needs
them, finished instances forgotten)."""

from __future__ import annotations

import os
from collections.abc import Collection

from .journal import DEAD, DELIVERED, QUEUED, RETRYING, SENDING, Journal
from .storage import Storage

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
