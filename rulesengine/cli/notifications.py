"""`dicom-rules notifications`: the outbox of notifications, as the journal keeps it.

Lists what waits, what was sent and what is dead (with the last error), never the values
a notification carries (they may hold patient data); purges those sent or dead."""

from __future__ import annotations

import time

from ..config import load_config
from ..runtime.journal import NotificationState
from ..runtime.storage import Storage
from .common import EXIT_OK, require_journal

STATES = tuple(state.value for state in NotificationState)


def cmd_notifications(args) -> int:
    config = load_config(args.config, secrets=False)
    require_journal(config)
    journal = Storage.of(config).journal()
    try:
        if args.action == "purge":
            older = time.time() - args.older_than if args.older_than is not None else None
            count = journal.purge_notifications(older)
            print(f"purged {count} sent or dead notification(s)")
            return EXIT_OK
        counts = journal.notification_counts()
        if not counts:
            print("no notifications")
            return EXIT_OK
        print("  ".join(f"{state.value} {counts.get(state, 0)}" for state in NotificationState))
        states = [NotificationState(state) for state in args.state or ("queued", "retrying", "dead")]
        rows = journal.notifications(states, args.limit)
        if rows:
            print()
        for row in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.updated_at))
            error = f"  {row.last_error}" if row.last_error else ""
            print(f"#{row.id:<6} {row.notifier:<16} {row.event:<24} {row.state.value:<9} attempts {row.attempts:<3} "
                  f"{when}{error}")
        return EXIT_OK
    finally:
        journal.close()
