"""The router's events that the configuration can subscribe to (`notify:`), raised where they
happen and queued as notifications (notifications.py) for the notifiers subscribed:

- delivery-dead: a delivery dead after its retries (delivery.py);
- instance-quarantined: an instance kept aside in the quarantine (pipeline.py);
- reload-refused: a changed rule file or configuration refused (rules.py, reload.py);
- destination-unreachable: a destination that has not been reached for `after` (delivery.py):
  from its first failed attempt of an outage, measured at each attempt (so up to the retry
  backoff's cap later), raised once per subscription and outage; a delivered instance ends
  the outage. The outage is the journal's (its table `outages`), shared by every process and
  node: whichever meets the destination down, it is told once.
- disk-low, disk-recovered: the storage's free space fell below `storage_min_free`, and came
  back (disk_space.py, the main process's watermark, which the housekeeper asks while nothing
  arrives): once per change, whatever the number of instances refused meanwhile.

Besides those, a rule's `notify NOTIFIER "message"` queues the event `rule` for the notifier it
names (pipeline.py once an instance is settled; groups.py once per group firing).

What an event gives is in config/notification_context.py; patient data goes apart (`patient`),
for the notifiers that opted in. Raising an event costs nothing where nobody subscribed to it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping

from ..arrival import HEADER_KEYWORDS, Arrival
from ..config.notification_context import ASSOCIATION, PATIENT_FIELDS, RULE_EVENT, SOURCE
from .journal.errors import in_words
from .logs import Repeats
from .notifications import Notifications, iso_time

log = logging.getLogger("rulesengine.events")
_errors = Repeats()

DELIVERY_DEAD = "delivery-dead"
INSTANCE_QUARANTINED = "instance-quarantined"
RELOAD_REFUSED = "reload-refused"
DESTINATION_UNREACHABLE = "destination-unreachable"
DISK_LOW = "disk-low"
DISK_RECOVERED = "disk-recovered"
# What a group's notification leaves out of its first instance's values: they are an instance's.
_INSTANCE_ONLY = ("instance_id", "SOPInstanceUID", "SOPClassUID")
OUTAGE_CHECK_SECONDS = 10  # how stale this process's view of another's outage may be after a delivery


def instance_values(arrival: Arrival | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the instance's values, its patient data) as an arrival record knows them."""
    if arrival is None:
        return {}, {}
    values: dict[str, Any] = {"SOPInstanceUID": arrival.sop_instance_uid, "SOPClassUID": arrival.sop_class_uid,
                              "source": arrival.calling_aet or arrival.source_name,
                              ASSOCIATION: {"CallingAET": arrival.calling_aet, "CalledAET": arrival.called_aet,
                                            "PeerAddress": arrival.peer_address, "PeerPort": arrival.peer_port},
                              SOURCE: {"Name": arrival.source_name, "Kind": arrival.source_kind}}
    patient: dict[str, Any] = {}
    for column, keyword in HEADER_KEYWORDS.items():
        value = getattr(arrival, column, None)
        (patient if keyword in PATIENT_FIELDS else values)[keyword] = value
    return values, patient


class Events:
    """Raises the router's events for the subscriptions of the configuration `notifications`
    holds (None: nothing is subscribed, every event costs nothing)."""

    def __init__(self, notifications: Notifications | None, clock: Callable[[], float] = time.time):
        self.notifications = notifications
        self.clock = clock  # when an outage began, and how long it has lasted
        self._failing: set[str] = set()  # destinations whose outage this process met
        self._outage_checked: dict[str, float] = {}  # destination -> when the journal was last asked
        self._lock = threading.Lock()

    def configure(self, config) -> None:
        """A changed configuration: its notifiers and subscriptions from now on."""
        if self.notifications is not None:
            self.notifications.configure(config)

    def _subscriptions(self, event: str):
        if self.notifications is None:
            return []
        return [(number, sub) for number, sub in enumerate(self.notifications.config.notify) if sub.event == event]

    def raise_event(self, event: str, context: Mapping[str, Any], patient: Mapping[str, Any] | None = None,
                    subscriptions=None) -> list[int]:
        """Queue the event for every notifier subscribed to it; returns the notifications' numbers."""
        queued = []
        for _number, subscription in subscriptions if subscriptions is not None else self._subscriptions(event):
            for notifier in subscription.to:
                number = self.notifications.send(notifier, event, context, patient)
                if number is not None:
                    queued.append(number)
        return queued

    # ---- the events -----------------------------------------------------------------------------

    def delivery_dead(self, delivery, error: str, journal=None) -> list[int]:
        if not self._subscriptions(DELIVERY_DEAD):
            return []
        instance = None
        if journal is not None:
            try:
                instance = journal.instance(delivery.instance_id)
            except Exception:  # noqa: BLE001 - the notification goes without the header facts
                log.debug("instance %s of a dead delivery could not be read", delivery.instance_id, exc_info=True)
        values, patient = instance_values(instance.arrival if instance is not None else None)
        values.update({"destination": delivery.destination, "reason": error, "attempts": delivery.attempts + 1,
                       "delivery_id": delivery.id, "instance_id": delivery.instance_id,
                       "SOPInstanceUID": delivery.sop_instance_uid, "SOPClassUID": delivery.sop_class_uid})
        return self.raise_event(DELIVERY_DEAD, values, patient)

    def instance_quarantined(self, instance_id: int, arrival: Arrival | None, reason: str) -> list[int]:
        if not self._subscriptions(INSTANCE_QUARANTINED):
            return []
        values, patient = instance_values(arrival)
        values.update({"reason": reason, "instance_id": instance_id})
        return self.raise_event(INSTANCE_QUARANTINED, values, patient)

    def reload_refused(self, findings: list[dict]) -> list[int]:
        if not self._subscriptions(RELOAD_REFUSED):
            return []
        lines = []
        for finding in findings:
            where = ":".join(str(part) for part in (finding.get("file"), finding.get("line"), finding.get("column"))
                             if part is not None)
            lines.append(f"{where}: {finding.get('message')}" if where else str(finding.get("message")))
        return self.raise_event(RELOAD_REFUSED, {"reason": "\n".join(lines), "findings": len(findings)})

    def destination_failed(self, destination: str, error: str, waiting: Callable[[], int] | None = None) -> list[int]:
        """An attempt found the destination unreachable: the subscriptions whose `after` this
        outage has now lasted are told (each once per outage)."""
        subscriptions = self._subscriptions(DESTINATION_UNREACHABLE)
        if not subscriptions:
            return []
        now = self.clock()
        journal = self.notifications.journal
        with self._lock:
            self._failing.add(destination)
        try:
            since, told = journal.outage(destination, now)
            due = [(number, sub) for number, sub in subscriptions if number not in told and now - since >= sub.after
                   and journal.outage_told(destination, since, number)]
        except Exception as exc:  # noqa: BLE001 - the journal away: the delivery's own handling goes on
            _errors.log(log, logging.WARNING, "outage", "destination-unreachable for %s not raised: %s", destination,
                        in_words(exc))
            return []
        if not due:
            return []
        try:
            count = waiting() if waiting is not None else None
        except Exception:  # noqa: BLE001 - the count is a detail: the notification goes without it
            count = None
        values = {"destination": destination, "reason": error, "since": iso_time(since), "seconds": round(now - since),
                  "waiting": count}
        return self.raise_event(DESTINATION_UNREACHABLE, values, subscriptions=due)

    def disk_changed(self, low: bool, reason: str | None, min_free: str | None = None) -> list[int]:
        """The storage's free space crossed `storage_min_free` (DiskSpace.on_change): told once
        per change, not once per instance refused."""
        event = DISK_LOW if low else DISK_RECOVERED
        if not self._subscriptions(event):
            return []
        if not low:
            reason = "the disk of the router's storage has room again: instances are taken again"
        return self.raise_event(event, {"reason": reason, "min_free": min_free})

    def rule_notifications(self, notifications, arrival: Arrival | None, instance_id: int | None = None,
                           group=None) -> list[int]:
        """A rule's `notify` actions (lang.ruleset.RuleNotification), for one instance settled, or
        (`group`: (level, study UID, series UID or None, instance count)) for one group firing,
        with the values of its first instance in group order."""
        if not notifications or self.notifications is None:
            return []
        values, patient = instance_values(arrival)
        if group is None:
            values.update({"level": "instance", "instances": 1, "instance_id": instance_id})
        else:
            level, study, series, count = group
            for key in _INSTANCE_ONLY:
                values.pop(key, None)
            values.update({"level": level, "instances": count, "StudyInstanceUID": study, "SeriesInstanceUID": series})
        queued = []
        for note in notifications:
            number = self.notifications.send(note.notifier, RULE_EVENT,
                                              {**values, "rule": note.rule, "message": note.message}, patient)
            if number is not None:
                queued.append(number)
        return queued

    def destination_reached(self, destination: str) -> None:
        """A delivery went through: the destination's outage, if any, is over. The journal is
        asked at most every OUTAGE_CHECK_SECONDS whether another process met one, so that a
        delivery costs nothing more in the common case."""
        if self.notifications is None or not self._subscriptions(DESTINATION_UNREACHABLE):
            return
        now = self.clock()
        with self._lock:
            failing = destination in self._failing
            self._failing.discard(destination)
            if not failing:
                if now - self._outage_checked.get(destination, float("-inf")) < OUTAGE_CHECK_SECONDS:
                    return
                self._outage_checked[destination] = now
        journal = self.notifications.journal
        try:
            if failing or journal.outage_known(destination):
                journal.outage_over(destination)
        except Exception as exc:  # noqa: BLE001 - the delivery went through: that is what counts
            _errors.log(log, logging.WARNING, "outage", "the end of %s's outage not recorded: %s", destination,
                        in_words(exc))


NO_EVENTS = Events(None)
