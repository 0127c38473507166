"""Arrivals written the short way the journal's tests have always written them."""

from __future__ import annotations

from rulesengine.arrival import Arrival


def Received(source_kind: str | None, source_name: str | None = None, calling_aet: str | None = None,  # noqa: N802
             called_aet: str | None = None, peer: str | None = None, sop_class_uid: str | None = None,
             sop_instance_uid: str | None = None) -> Arrival:
    """An Arrival from its facts in the journal's column order (the peer as "address:port")."""
    return Arrival.from_row({"source_kind": source_kind, "source_name": source_name, "calling_aet": calling_aet,
                             "called_aet": called_aet, "peer": peer, "sop_class_uid": sop_class_uid,
                             "sop_instance_uid": sop_instance_uid, "store_command": None})
