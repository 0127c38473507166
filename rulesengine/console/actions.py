"""What the console's pages show and do, on the journal and the storage folder: the same
operations as `dicom-rules queue` and `dicom-rules quarantine`, which a running router picks
up as it does theirs (its workers read the queue every second; a released instance is
journaled as accepted and spooled, and taken within seconds).

Every function takes checked values and returns plain data (what the JSON API answers and
the templates show); a request that cannot be carried out raises ActionError in plain words.
"""

from __future__ import annotations

import io
import os
import time

from ruamel.yaml import YAML

from ..config import Config
from ..config.notification_context import COMMON_FIELDS, PATIENT_FIELDS, WHOLE
from ..runtime import queue_operations
from ..runtime.journal import DELIVERY_STATES, Journal, NotificationState
from ..runtime.queue_operations import PurgeRefused
from ..runtime.storage import Storage

# A pause the console sets: the queue waits until a person resumes it. Far enough away to be
# told apart from a backoff (which waits minutes), and still a valid time.
PAUSED_BY_OPERATOR = 32503680000.0  # 3000-01-01
PAUSE_SHOWN_AS_OPERATOR = PAUSED_BY_OPERATOR / 2


class ActionError(ValueError):
    """A request that cannot be carried out: bad parameters, or an item that is not there."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ---- queues --------------------------------------------------------------------------------------


def _window(found: queue_operations.WindowNow | None) -> dict | None:
    return found._asdict() if found is not None else None


def queues(config: Config, journal: Journal, now: float) -> list[dict]:
    """Per destination (those configured and those the journal still holds): counts by state,
    whether its queue waits (paused by a person, or a backoff after a failure), and its
    delivery window (`window:`), open or closed now and until when."""
    counts = journal.counts()
    pauses = journal.pauses(now)
    names = sorted(set(counts) | {n for n, d in config.destinations.items() if d.type != "worklist"} | set(pauses))
    out = []
    for name in names:
        until = pauses.get(name)
        window = config.windows.get(getattr(config.destinations.get(name), "window", None) or "")
        out.append({
            "name": name,
            "configured": name in config.destinations,
            "counts": {str(state): counts.get(name, {}).get(state, 0) for state in DELIVERY_STATES},
            "paused": until is not None and until >= PAUSE_SHOWN_AS_OPERATOR,
            "waiting_until": until if until is not None and until < PAUSE_SHOWN_AS_OPERATOR else None,
            "window": _window(queue_operations.window_now(window, now) if window is not None else None),
        })
    return out


def queue_items(config: Config, journal: Journal, states: tuple[str, ...], destination: str | None,
                before_id: int | None, limit: int, now: float) -> tuple[list[dict], int | None]:
    """One page of deliveries, newest first, and the `before` of the next page (None: the last).
    Each says whether it is urgent, the window its route named (`during`), and the closed
    window it waits for now (its route's, else its destination's), as `dicom-rules queue` says."""
    rows = journal.deliveries_page(states, destination, before_id, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        item = {key: row[key] for key in ("id", "instance_id", "destination", "state", "attempts", "updated_at",
                                          "sop_instance_uid", "last_error", "source_name", "calling_aet",
                                          "delivery_window")}
        item["urgent"] = bool(row["priority"])
        configured = config.destinations.get(row["destination"])
        item["waiting_for_window"] = _window(queue_operations.waiting_for_window(
            config.windows, row["state"], row["delivery_window"], getattr(configured, "window", None), now))
        items.append(item)
    return items, (rows[-1]["id"] if more and rows else None)


GROUP_INSTANCES_SHOWN = 20  # of each pending group, its first instances listed


def pending_groups(journal: Journal, now: float, limit: int = 50) -> list[dict]:
    """The groups of group rules still open, the next to fire first: rule, study (and series),
    how many instances, the first of them, first and last arrival, and when its timer fires."""
    out = []
    for group in journal.pending_groups(limit):
        members = journal.group_members(group.id)[:GROUP_INSTANCES_SHOWN]
        out.append({
            "id": group.id, "rule": group.rule, "level": group.level, "study_uid": group.study_uid,
            "series_uid": group.series_uid or None, "ruleset_version": group.ruleset_version,
            "instances": group.members, "first_arrival": group.first_arrival, "last_arrival": group.last_arrival,
            "due_at": group.due_at, "due_in": max(0.0, group.due_at - now),
            "members": [{"id": member.id, "sop_instance_uid": member.arrival.sop_instance_uid,
                         "received_at": member.received_at} for member in members],
        })
    return out


def known_destination(config: Config, journal: Journal, name: str) -> str:
    if name in config.destinations or name in journal.counts():
        return name
    known = ", ".join(sorted(config.destinations)) or "none"
    raise ActionError(f"no destination {name!r} (destinations: {known})")


def retry(config: Config, journal: Journal, destination: str | None, ids: tuple[int, ...]) -> int:
    if destination:
        known_destination(config, journal, destination)
    return journal.retry_dead(destination, ids)


def pause(config: Config, journal: Journal, destination: str) -> None:
    journal.postpone(known_destination(config, journal, destination), PAUSED_BY_OPERATOR)


def resume(config: Config, journal: Journal, destination: str, now: float) -> int:
    return journal.resume(known_destination(config, journal, destination), now)


def check_purge(config: Config, states: tuple[str, ...], destination: str | None) -> None:
    try:
        queue_operations.check_purge(states, destination, config.destinations, "as destination")
    except PurgeRefused as exc:
        raise ActionError(str(exc)) from None


def purge_preview(journal: Journal, states: tuple[str, ...], destination: str | None) -> int:
    """How many deliveries a purge would forget (shown on the confirmation step)."""
    counts = journal.counts()
    return sum(by_state.get(state, 0) for name, by_state in counts.items()
               if destination in (None, name) for state in states)


def purge(config: Config, storage: Storage, journal: Journal, states: tuple[str, ...], destination: str | None,
          older_than: float | None) -> dict:
    check_purge(config, states, destination)
    return queue_operations.purge(storage, journal, states, destination, older_than)


# ---- replays -------------------------------------------------------------------------------------

# A replay's deliveries in these states are still on their way: it has not finished.
_UNFINISHED_DELIVERIES = ("queued", "sending", "retrying")


def replays(journal: Journal, before_id: int | None, limit: int) -> tuple[list[dict], int | None]:
    """One page of the replays `dicom-rules replays` lists, newest first, each with how far the
    router got: instances waiting, processed by outcome, their deliveries by state; and the
    `before` of the next page (None: the last)."""
    found = journal.replays(limit + 1, before_id)
    more = len(found) > limit
    found = found[:limit]
    out = []
    for replay in found:
        processed = sum(replay.outcomes.values())
        out.append({
            "id": replay.id, "created_at": replay.created_at, "requested_by": replay.requested_by,
            "rules_version": replay.rules_version, "rules_file": replay.rules_file,
            "received_from": replay.received_from, "received_to": replay.received_to,
            "instances": replay.instances, "missing": replay.missing, "waiting": replay.waiting,
            "processed": processed, "outcomes": dict(sorted(replay.outcomes.items())),
            "deliveries": dict(sorted(replay.deliveries.items())),
            "finished": replay.waiting == 0 and not any(replay.deliveries.get(state)
                                                        for state in _UNFINISHED_DELIVERIES),
        })
    return out, (found[-1].id if more and found else None)


# ---- notifications ------------------------------------------------------------------------------


def notifications(config: Config, journal: Journal, states: tuple[str, ...], limit: int,
                  sees_patient_data: bool) -> tuple[dict[str, int], list[dict]]:
    """The outbox as `dicom-rules notifications` lists it: counts by state, and the latest
    notifications in `states`, newest first, with why one failed (`last_error`) and the values
    of its event (`details`: the destination, the event's reason, the UIDs). Patient data
    (`patient`) only of a notifier configured with `patient_data: true` (the outbox holds it
    only for those), masked for a viewer; of any other notifier, never, whatever the row holds."""
    counts = journal.notification_counts()
    rows = journal.notifications([NotificationState(state) for state in states], limit)
    out = []
    for row in rows:
        notifier = config.notifiers.get(row.notifier)
        opted_in = bool(notifier is not None and notifier.patient_data)
        details = {}
        for key, value in row.context.items():
            if key in COMMON_FIELDS or key in PATIENT_FIELDS or key == WHOLE:
                continue
            if isinstance(value, dict):  # Association, Source: by the paths a template names them
                details.update({f"{key}.{field}": item for field, item in value.items()
                                if field not in PATIENT_FIELDS and item is not None})
            else:
                details[key] = value
        patient = {key: (row.context[key] if sees_patient_data else MASK)
                   for key in PATIENT_FIELDS if opted_in and row.context.get(key) not in (None, "")}
        waiting = row.state in (NotificationState.QUEUED, NotificationState.RETRYING)
        out.append({
            "id": row.id, "notifier": row.notifier, "configured": notifier is not None, "event": row.event,
            "state": row.state.value, "attempts": row.attempts, "created_at": row.created_at,
            "updated_at": row.updated_at, "next_attempt_at": row.next_attempt_at if waiting else None,
            "sent_at": row.sent_at, "last_error": row.last_error,
            "details": details, "patient": patient if opted_in else None,
        })
    return {state.value: counts.get(state, 0) for state in NotificationState}, out


# ---- quarantine ----------------------------------------------------------------------------------


def quarantined(storage: Storage) -> list[dict]:
    """What the quarantine holds, oldest first; `item` names each as `quarantine list` does (DAY/NAME.dcm)."""
    out = []
    for path, info in storage.quarantined():
        out.append({"item": os.path.relpath(path, storage.quarantine_dir), "reason": info.get("reason", ""),
                    "quarantined_at": info.get("quarantined_at"), "source": info.get("source"),
                    "calling_aet": info.get("calling_aet"), "sop_instance_uid": info.get("sop_instance_uid")})
    return out


def _held(storage: Storage, items: tuple[str, ...]) -> list[tuple[str, dict]]:
    """The quarantined files named (only names the quarantine lists: nothing else of the disk)."""
    if not items:
        raise ActionError("name at least one quarantined item (DAY/NAME.dcm, as the list shows it)")
    held = {os.path.relpath(path, storage.quarantine_dir): (path, info) for path, info in storage.quarantined()}
    missing = [item for item in items if item not in held]
    if missing:
        raise ActionError(f"not in the quarantine: {', '.join(missing)}", status=404)
    return [held[item] for item in dict.fromkeys(items)]


def release(storage: Storage, journal: Journal, items: tuple[str, ...]) -> list[dict]:
    """As `dicom-rules quarantine release`: back to the spool and journaled; the rules run again."""
    return [{"item": os.path.relpath(path, storage.quarantine_dir), "instance_id": storage.release(path, info, journal)}
            for path, info in _held(storage, items)]


def delete(storage: Storage, items: tuple[str, ...]) -> list[str]:
    """Quarantined instances deleted for good, with their .json."""
    done = []
    for path, _info in _held(storage, items):
        storage.remove(path)
        storage.remove(path + ".json")
        done.append(os.path.relpath(path, storage.quarantine_dir))
    return done


# ---- configuration -------------------------------------------------------------------------------

MASK = "********"
# A key naming one of these holds (or names where to find) a secret: its value is not shown.
SECRET_WORDS = ("password", "hash", "key", "token", "secret")


def _mask(node) -> None:
    if isinstance(node, dict):
        for key in list(node):
            if any(word in str(key).lower() for word in SECRET_WORDS) and not isinstance(node[key], (dict, list)):
                node[key] = MASK
            elif key == "headers" and isinstance(node[key], dict):  # a webhook's: tokens, signatures
                for header in list(node[key]):
                    node[key][header] = MASK
            elif key == "url" and isinstance(node[key], str):  # a webhook's: its path often is the token
                node[key] = _masked_url(node[key])
            else:
                _mask(node[key])
    elif isinstance(node, list):
        for item in node:
            _mask(item)


def _masked_url(url: str) -> str:
    """A webhook's address with its host only: what follows may be its secret."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    return f"{parts.scheme}://{host}{port}/{MASK}" if parts.scheme and host else MASK


def masked_configuration(text: str) -> str:
    """The configuration file as YAML, comments kept, with every secret's value masked."""
    yaml = YAML(typ="rt")
    data = yaml.load(text)
    _mask(data)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""
