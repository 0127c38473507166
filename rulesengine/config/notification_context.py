"""What a notification's templates read: the events the configuration can subscribe to
(`notify:`), the event of a rule's `notify` action, the values each gives, and the patient
data a notifier receives only when it says `patient_data: true`.

A template names a DICOM element as the rules do, by its path: `DataSet.StudyInstanceUID`,
`DataSet.Modality`, `DataSet.PatientName` (patient data); and how the instance arrived as
`Association.CallingAET`, `Association.CalledAET`, `Source.Name`. The bare names
(`{{ StudyInstanceUID }}`) read the same values. An element an event does not give (a
reload-refused has no instance) is null: empty in a text, `null` in a JSON body.

The configuration checks templates against these names (and renders them with the sample
values) when it is read; the router fills them in (runtime/events.py).
"""

from __future__ import annotations

import difflib

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

# The roots of the language's paths a template reads, and the fields each gives (the data set's
# elements: the instance's values above that are DICOM keywords, with the patient data only
# for a notifier that opted in; built when a notification is rendered, from its stored values).
DATASET, ASSOCIATION, SOURCE = "DataSet", "Association", "Source"
DATASET_KEYWORDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
ARRIVAL_PATHS: dict[str, tuple[str, ...]] = {ASSOCIATION: ("CallingAET", "CalledAET", "PeerAddress", "PeerPort"),
                                             SOURCE: ("Name", "Kind")}
_ARRIVAL_SAMPLE = {ASSOCIATION: {"CallingAET": "CT_SCANNER", "CalledAET": "ROUTER", "PeerAddress": "10.0.0.7",
                                 "PeerPort": 40112},
                   SOURCE: {"Name": "modalities", "Kind": "listener"}}

# The name of every value at once, as a mapping (`{{ notification | tojson }}`).
WHOLE = "notification"

# The events of the disk watermark: raised only with `storage_min_free`.
DISK_EVENTS = ("disk-low", "disk-recovered")

# The events that can wait `after` before they are raised.
EVENTS_WITH_AFTER = ("destination-unreachable",)


def known_fields(patient_data: bool) -> set[str]:
    """Every name a notifier's template may read."""
    names = set(COMMON_FIELDS) | {WHOLE} | set(RULE_FIELDS) | {DATASET} | set(ARRIVAL_PATHS)
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
    values.update({root: dict(fields) for root, fields in _ARRIVAL_SAMPLE.items()})
    return with_paths(values, patient_data)


def path_fields(patient_data: bool) -> dict[str, tuple[str, ...]]:
    """The fields each root of a path gives a notifier's template."""
    return {DATASET: DATASET_KEYWORDS + (tuple(PATIENT_FIELDS) if patient_data else ()), **ARRIVAL_PATHS}


def with_paths(values: dict[str, object], patient_data: bool) -> dict[str, object]:
    """What a template reads, from a notification's stored values: those values (never patient
    data where the notifier did not opt in, whatever was stored), `DataSet` made of them, the
    arrival's mappings (only their fields), and all of them as one mapping (`notification`)."""
    flat = {key: value for key, value in values.items()
            if key not in (DATASET, WHOLE) and (patient_data or key not in PATIENT_FIELDS)}
    for root, fields in ARRIVAL_PATHS.items():
        given = flat.get(root)
        flat[root] = {field: given[field] for field in fields if field in given} if isinstance(given, dict) else {}
    flat[DATASET] = {keyword: flat[keyword] for keyword in path_fields(patient_data)[DATASET] if keyword in flat}
    return {**flat, WHOLE: dict(flat)}


def unknown_field(root: str, name: str, patient_data: bool) -> str:
    """Why `root.name` is not something a template can read, with what it may have meant."""
    from ..lang.paths import lookup_keyword, suggest_keywords  # the DICOM dictionary, when a template errs
    given = path_fields(patient_data).get(root, ())
    close = difflib.get_close_matches(name, given, n=1, cutoff=0.75)
    if close:
        hint = f"did you mean {root}.{close[0]}?"
    elif root == DATASET and lookup_keyword(name) is None:
        suggestions = suggest_keywords(name)
        return (f"{name} is not a DICOM keyword" + (f"; did you mean {' or '.join(suggestions)}?" if suggestions else "")
                + f" (a notification gives {root}.{', '.join(given)})")
    else:
        hint = f"a notification gives {root}.{', '.join(given)}"
    return f"a notification does not give {name}; {hint}"
