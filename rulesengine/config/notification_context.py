"""What a notification's templates read: the events the configuration can subscribe to
(`notify:`), the event of a rule's `notify` action, the values each gives, and the patient
data a notifier receives only when it says `patient_data: true`.

The configuration checks templates against these names (and renders them with the sample
values) when it is read; the router fills them in (runtime/events.py).
"""

from __future__ import annotations

# Every notification has these.
COMMON_FIELDS = {"event": "delivery-dead", "node": "router-1", "time": "2026-01-31T22:05:00Z",
                 "notifier": "ops-hook"}

# The values each event gives, with a sample of each (what check_template renders with).
_INSTANCE = {"instance_id": 1234, "SOPInstanceUID": "1.2.826.0.1.3680043.2.1125.1",
             "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.2",
             "SeriesInstanceUID": "1.2.826.0.1.3680043.2.1125.3", "Modality": "CT", "source": "CT_SCANNER"}
EVENTS: dict[str, dict[str, object]] = {
    # a delivery gone dead after its retries
    "delivery-dead": {"destination": "PACS", "reason": "destination unreachable: connection refused",
                      "attempts": 20, "delivery_id": 5678, **_INSTANCE},
    # an instance kept aside in the quarantine (by a rule, or because it could not be handled)
    "instance-quarantined": {"reason": "no rule routed it", **_INSTANCE},
    # a changed rule file or configuration refused: the running one stays in place
    "reload-refused": {"reason": "rules.rules:3:5: unknown destination PACSS", "findings": 1},
    # a destination that could not be reached for longer than the subscription's `after`
    "destination-unreachable": {"destination": "PACS", "reason": "connection refused", "since": "2026-01-31T21:55:00Z",
                                "seconds": 600, "waiting": 42},
    # the storage's free space fell below storage_min_free: new instances are refused
    "disk-low": {"reason": "the disk of the router's storage is low: 1.2 GB free, storage_min_free is 5%",
                 "min_free": "5%"},
    # the free space is back above storage_min_free: instances are taken again
    "disk-recovered": {"reason": "the disk of the router's storage has room again", "min_free": "5%"},
}

# A rule's `notify NOTIFIER "message"` (not subscribed to: the rule names its notifier). An
# instance rule gives its instance's values; a group rule, once per firing, the group's.
RULE_EVENT = "rule"
RULE_FIELDS: dict[str, object] = {"rule": "CT to the AI", "message": "study ready for the AI",
                                  "level": "instance", "instances": 1, **_INSTANCE}

# Patient data: in a notification only for a notifier with `patient_data: true`.
PATIENT_FIELDS = {"PatientName": "DOE^JANE", "PatientID": "12345", "AccessionNumber": "A-1"}

# The name of every value at once, as a mapping (`{{ notification | tojson }}`).
WHOLE = "notification"

# The events of the disk watermark: raised only with `storage_min_free`.
DISK_EVENTS = ("disk-low", "disk-recovered")

# The events that can wait `after` before they are raised.
EVENTS_WITH_AFTER = ("destination-unreachable",)


def known_fields(patient_data: bool) -> set[str]:
    """Every name a notifier's template may read."""
    names = set(COMMON_FIELDS) | {WHOLE} | set(RULE_FIELDS)
    for fields in EVENTS.values():
        names |= set(fields)
    return names | set(PATIENT_FIELDS) if patient_data else names


def sample(patient_data: bool) -> dict[str, object]:
    """Values for every name, to render a template with when the configuration is read."""
    values: dict[str, object] = {**COMMON_FIELDS, **RULE_FIELDS}
    for fields in EVENTS.values():
        values.update(fields)
    if patient_data:
        values.update(PATIENT_FIELDS)
    return {**values, WHOLE: dict(values)}
