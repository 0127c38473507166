"""What the journal holds, as records: instances, their deliveries and the attempts, and the
requests (queries, retrievals, MPPS) the router answered.

Every backend returns these. Each is built from a row by column name (`from_row`), and
is read by column name too (`record["state"]`, `dict(record)`), as the table stores it,
for the commands and checks that list the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from enum import StrEnum
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from ...arrival import Arrival


class DeliveryState(StrEnum):
    """A delivery's state; the stored text is the value."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"


class InstanceState(StrEnum):
    """An instance's state: answered, then processed (deliveries queued) or done (no delivery)."""

    ACCEPTED = "accepted"
    PROCESSED = "processed"
    DONE = "done"


class _Columns:
    """Read a record by column name, as the table stores it (`to_row`)."""

    def to_row(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def __getitem__(self, column: str) -> Any:
        return self.to_row()[column]

    def keys(self) -> Iterator[str]:
        return iter(self.to_row())


def _by_name(cls, row: Mapping[str, Any]) -> dict[str, Any]:
    return {field.name: row[field.name] for field in fields(cls)}


@dataclass(frozen=True)
class Outcome:
    """What the rules decided, as the journal records it; `trace` is the decision in detail
    (`trace_text`), kept with it for the operations console."""

    ruleset_version: str | None
    outcome: str | None
    reason: str | None
    rules_fired: tuple[str, ...]
    destinations: tuple[str, ...]
    trace: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {"ruleset_version": self.ruleset_version, "outcome": self.outcome, "reason": self.reason,
                "rules_fired": json.dumps(list(self.rules_fired)),
                "destinations": json.dumps(list(self.destinations)), "trace": self.trace}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Outcome":
        # A listing (search_instances) leaves the trace out: it is read one instance at a time.
        return cls(row["ruleset_version"], row["outcome"], row["reason"], tuple(json.loads(row["rules_fired"] or "[]")),
                   tuple(json.loads(row["destinations"] or "[]")), row["trace"] if "trace" in row.keys() else None)


# A trace is bounded: a de-identification profile edits hundreds of elements, and every
# instance keeps its trace until it is purged.
MAX_TRACE_EDITS = 500
MAX_TRACE_BYTES = 256 * 1024


def trace_text(outcome: str | None, reason: str | None, ruleset_version: str | None,
               rules_fired: Iterable[Mapping[str, Any]] = (), edits: Iterable[Mapping[str, Any]] = (),
               left_out: int = 0) -> str:
    """The trace column: a JSON object with the outcome, its reason, the rule set version, the
    rules fired ({name, file, line}) and the edits made ({path, old, new, rule, file, line,
    destination}), the edits cut at MAX_TRACE_EDITS and the whole at MAX_TRACE_BYTES;
    `truncated` counts the edits left out (`left_out`: those the caller left out already)."""
    edits = list(edits)
    kept = edits[:MAX_TRACE_EDITS]
    left_out += len(edits) - len(kept)
    trace = {"outcome": outcome, "reason": reason, "ruleset_version": ruleset_version,
             "rules_fired": list(rules_fired), "edits": kept, "truncated": left_out}
    text = json.dumps(trace, separators=(",", ":"), default=str)
    if len(text) <= MAX_TRACE_BYTES:
        return text
    # Rare (long values): keep the edits that fit, one at a time.
    trace["edits"] = []
    budget = MAX_TRACE_BYTES - len(json.dumps(trace, separators=(",", ":"), default=str)) - 32
    for edit in kept:
        size = len(json.dumps(edit, separators=(",", ":"), default=str)) + 1
        if size > budget:
            break
        budget -= size
        trace["edits"].append(edit)
    trace["truncated"] = left_out + len(kept) - len(trace["edits"])
    text = json.dumps(trace, separators=(",", ":"), default=str)
    if len(text) > MAX_TRACE_BYTES:  # a long reason or too many rules: what fits is the outcome
        trace.update(rules_fired=trace["rules_fired"][:MAX_TRACE_EDITS], reason=(reason or "")[:1024])
        text = json.dumps(trace, separators=(",", ":"), default=str)
    return text


@dataclass(frozen=True)
class Instance(_Columns):
    """An instance received: how it arrived, where its file is, and what the rules decided."""

    id: int
    received_at: float
    arrival: Arrival
    path: str | None
    state: InstanceState
    outcome: Outcome
    processed_at: float | None
    # The spool file as the intake checked it (`Document.fingerprint`): processing
    # reads it without checking it again while it still matches. None: check it again.
    checked: str | None = None
    # Until when its spool file is kept, as received, after the router is done with it
    # (retention.delivered); None: not retained.
    retained_until: float | None = None

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at, **self.arrival.to_row(), "path": self.path,
                "state": self.state, **self.outcome.to_row(), "processed_at": self.processed_at,
                "checked": self.checked, "retained_until": self.retained_until}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Instance":
        keys = row.keys()
        return cls(row["id"], row["received_at"], Arrival.from_row(row), row["path"], InstanceState(row["state"]),
                   Outcome.from_row(row), row["processed_at"], row["checked"] if "checked" in keys else None,
                   row["retained_until"] if "retained_until" in keys else None)


@dataclass(frozen=True)
class RetainedFile:
    """A retained instance whose time is up (Journal.expired_retentions): its spool file goes,
    unless a delivery still names it (`needed`: a dead one, kept for `queue retry`)."""

    instance_id: int
    path: str | None
    received_at: float
    retained_until: float
    needed: bool


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to queue: the file a destination receives, and the instance it holds."""

    destination: str
    path: str
    sop_class_uid: str | None
    sop_instance_uid: str | None
    transfer_syntax: str | None
    priority: int = 0  # URGENT: claimed before the others of its destination's queue
    delivery_window: str | None = None  # a window of the configuration: claimed only while it is open


URGENT = 1  # the priority of a delivery of an `urgent` document (0: any other)


@dataclass(frozen=True)
class Delivery(_Columns):
    """One file for one destination, as a worker claims it."""

    id: int
    instance_id: int
    destination: str
    path: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    transfer_syntax: str | None
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    priority: int = 0  # NewDelivery.priority
    delivery_window: str | None = None  # NewDelivery.delivery_window

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Delivery":
        values = _by_name(cls, row)
        return cls(**{**values, "state": DeliveryState(values["state"])})


@dataclass(frozen=True)
class Lease:
    """The process sending a delivery (or processing an instance): its node (`owner`) and its
    id there (`process`), and until when it holds it (None: a sync delivery, held by its
    process until it finishes it, or its node restarts, or its supervisor gives it back)."""

    owner: str
    expires_at: float | None
    process: int | None = None


class GroupState(StrEnum):
    """A group of a group rule: open (collecting its instances, its timer running), then fired."""

    OPEN = "open"
    FIRED = "fired"


@dataclass(frozen=True)
class Group(_Columns):
    """The instances of one study (or series) for one group rule, and its timer: it fires at
    `due_at` (quiet time after its last arrival), or sooner when its rule's `complete when` holds.
    `series_uid` is "" for a study-level group."""

    id: int
    rule: str
    ruleset_version: str | None
    level: str  # series | study
    study_uid: str
    series_uid: str
    state: GroupState
    first_arrival: float
    last_arrival: float
    due_at: float
    lease_owner: str | None
    lease_process: int | None
    lease_expires: float | None
    fired_at: float | None
    members: int = 0  # how many instances it holds (as listed by pending_groups)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Group":
        values = {field.name: row[field.name] for field in fields(cls) if field.name != "members"}
        members = row["members"] if "members" in row.keys() else 0
        return cls(**{**values, "state": GroupState(values["state"]), "members": members or 0})


class GroupJoin(NamedTuple):
    """An instance joining its group: the group, and whether the instance came after it fired
    (`late`: a new member of a fired group; one that was a member before it fired is not)."""

    group: Group
    late: bool


class GroupChanged(RuntimeError):
    """An instance joined a group while it was being fired: it is evaluated again, with it."""


class ClaimLost(RuntimeError):
    """What this process claimed was taken over by another (its lease expired meanwhile), or
    finished by it: what the other did stands, and this process lets it go."""


@dataclass(frozen=True, kw_only=True)
class ListedDelivery(Delivery):
    """A delivery as `dicom-rules queue` lists it: when it changed, and where its instance came from."""

    created_at: float
    updated_at: float
    delivered_at: float | None
    source_name: str | None
    calling_aet: str | None


@dataclass(frozen=True)
class Attempt(_Columns):
    """One try to send a delivery, and how it ended (the status answered, or the error)."""

    id: int
    delivery_id: int
    started_at: float
    finished_at: float
    ok: bool
    detail: str | None

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Attempt":
        values = _by_name(cls, row)
        return cls(**{**values, "ok": bool(values["ok"])})


@dataclass(frozen=True)
class DeliveryTrace:
    """One delivery of an instance, when it was queued, changed and delivered, and every attempt."""

    delivery: Delivery
    created_at: float
    updated_at: float
    delivered_at: float | None
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class InstanceTrace:
    """An instance with its trace (the decided outcome in detail, see trace_text; None for one
    not processed yet, or journaled before traces were kept), its deliveries and their attempts."""

    instance: Instance
    trace: Mapping[str, Any] | None
    deliveries: tuple[DeliveryTrace, ...]


class Counter(NamedTuple):
    """One counter of the journal (see Journal.counters): monotonic, also across purges."""

    name: str
    label: str
    value: float


class RouterStatus(NamedTuple):
    """What a router last said of itself (Journal.write_status): `status` as it wrote it."""

    node: str
    updated_at: float
    status: Mapping[str, Any]


# ---- requests: C-FIND, C-MOVE, C-GET, N-CREATE, N-SET ------------------------------------------


class RequestOutcome(StrEnum):
    """How the router answered a request; the stored text is the value."""

    ANSWERED = "answered"  # every destination asked answered (a final Success, matches or not)
    PARTIAL = "partial"  # some destinations failed; the others' answers were returned
    FAILED = "failed"  # answered with a failure status
    REJECTED = "rejected"  # by a rule, with its reason
    CANCELLED = "cancelled"  # the requester sent a C-CANCEL


@dataclass(frozen=True)
class NewRequest:
    """A request as it arrived: who asked (the arrival facts; the SOP class is the request's
    Affected SOP Class, the instance its Affected SOP Instance for N-CREATE and N-SET), which
    message, at which level, with which keys (the identifier's non-empty keys, as text)."""

    message: str
    arrival: Arrival
    level: str | None = None
    matching_keys: Mapping[str, str] = dataclass_field(default_factory=dict)
    move_destination: str | None = None


@dataclass(frozen=True)
class DestinationAnswer:
    """How one destination answered a forwarded request."""

    destination: str
    status: int | None  # its final status; None when it gave none (unreachable, silent)
    matches: int = 0  # C-FIND responses it returned
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination, "status": self.status, "matches": self.matches,
                "error": self.error, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "DestinationAnswer":
        return cls(value["destination"], value.get("status"), value.get("matches", 0), value.get("error"),
                   value.get("seconds", 0.0))


@dataclass(frozen=True)
class RequestResult:
    """How a request ended: the final status answered, what each destination did, and the
    counts (matches returned for C-FIND; sub-operations for C-MOVE and C-GET)."""

    outcome: RequestOutcome
    status: int
    answers: tuple[DestinationAnswer, ...] = ()
    matches: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    error: str | None = None  # the reason, as the final status's Error Comment and the log say it

    def to_row(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "status": self.status,
                "answers": json.dumps([answer.to_json() for answer in self.answers]), "matches": self.matches,
                "completed": self.completed, "failed": self.failed, "warning": self.warning, "error": self.error}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RequestResult | None":
        if row["outcome"] is None:
            return None
        answers = tuple(DestinationAnswer.from_json(value) for value in json.loads(row["answers"] or "[]"))
        return cls(RequestOutcome(row["outcome"]), row["status"], answers, row["matches"], row["completed"],
                   row["failed"], row["warning"], row["error"])


@dataclass(frozen=True)
class Request(_Columns):
    """A request the router received, and how it ended (`result` is None while it runs, or
    when the router stopped before it ended)."""

    id: int
    received_at: float
    finished_at: float | None
    message: str
    arrival: Arrival
    level: str | None
    matching_keys: Mapping[str, str]
    move_destination: str | None
    result: RequestResult | None

    @property
    def seconds(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.received_at

    def to_row(self) -> dict[str, Any]:
        ended = self.result.to_row() if self.result is not None else dict.fromkeys(_RESULT_COLUMNS)
        return {"id": self.id, "received_at": self.received_at, "finished_at": self.finished_at,
                "message": self.message, **self.arrival.to_row(header=False), "level": self.level,
                "matching_keys": json.dumps(dict(self.matching_keys)), "move_destination": self.move_destination, **ended}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Request":
        return cls(row["id"], row["received_at"], row["finished_at"], row["message"], Arrival.from_row(row),
                   row["level"], json.loads(row["matching_keys"] or "{}"), row["move_destination"], RequestResult.from_row(row))


_RESULT_COLUMNS = ("outcome", "status", "answers", "matches", "completed", "failed", "warning", "error")


# ---- replays: retained instances queued for processing again (`dicom-rules replay`) ----------------


@dataclass(frozen=True)
class NewReplay:
    """A replay about to be queued: who asks, the rule set version its instances are processed
    with (recorded with each of them), the rule file named (None: the rules in place), the
    period of arrival it selected (None: open), and how many selected instances had lost their file."""

    requested_by: str
    rules_version: str
    rules_file: str | None
    received_from: float | None
    received_to: float | None
    missing: int = 0


@dataclass(frozen=True)
class ReplayedInstance:
    """A retained instance queued again: the instance as first received, and the name its
    file has in the spool for the replay (a link of its own, which processing may move or remove)."""

    original: Instance
    path: str


@dataclass(frozen=True)
class Replay(_Columns):
    """A replay and how far the router got with it: its instances not yet processed
    (`waiting`), the others by outcome (route, drop, quarantine), their deliveries by state."""

    id: int
    created_at: float
    requested_by: str
    rules_version: str
    rules_file: str | None
    received_from: float | None
    received_to: float | None
    instances: int
    missing: int
    waiting: int = 0
    outcomes: Mapping[str, int] = dataclass_field(default_factory=dict)
    deliveries: Mapping[str, int] = dataclass_field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Replay":
        return cls(row["id"], row["created_at"], row["requested_by"], row["rules_version"], row["rules_file"],
                   row["received_from"], row["received_to"], row["instances"], row["missing"])
