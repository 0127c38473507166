"""What the journal holds, as records: instances, their deliveries and the attempts.

Every backend returns these. Each is built from a row by column name (`from_row`), and
is read by column name too (`record["state"]`, `dict(record)`), as the table stores it,
for the commands and checks that list the journal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Iterator, Mapping

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
    """What the rules decided, as the journal records it."""

    ruleset_version: str | None
    outcome: str | None
    reason: str | None
    rules_fired: tuple[str, ...]
    destinations: tuple[str, ...]

    def to_row(self) -> dict[str, Any]:
        return {"ruleset_version": self.ruleset_version, "outcome": self.outcome, "reason": self.reason,
                "rules_fired": json.dumps(list(self.rules_fired)),
                "destinations": json.dumps(list(self.destinations))}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Outcome":
        return cls(row["ruleset_version"], row["outcome"], row["reason"], tuple(json.loads(row["rules_fired"] or "[]")),
                   tuple(json.loads(row["destinations"] or "[]")))


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

    def to_row(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at, **self.arrival.to_row(), "path": self.path,
                "state": self.state, **self.outcome.to_row(), "processed_at": self.processed_at}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Instance":
        return cls(row["id"], row["received_at"], Arrival.from_row(row), row["path"], InstanceState(row["state"]),
                   Outcome.from_row(row), row["processed_at"])


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to queue: the file a destination receives, and the instance it holds."""

    destination: str
    path: str
    sop_class_uid: str | None
    sop_instance_uid: str | None
    transfer_syntax: str | None


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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Delivery":
        values = _by_name(cls, row)
        return cls(**{**values, "state": DeliveryState(values["state"])})


@dataclass(frozen=True)
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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Attempt":
        values = _by_name(cls, row)
        return cls(**{**values, "ok": bool(values["ok"])})
