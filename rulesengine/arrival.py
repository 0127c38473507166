"""The arrival record: how an instance arrived, in every shape the router keeps it.

The rules read it as `Association.*` and `Source.*`; the router journals it with the
instance it brought (the SOP Class and Instance UIDs), writes it into the spool file's
name, and beside a quarantined file. Each of those shapes is made and read here, so that
a new fact touches this record and the journal's schema only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, ClassVar, Mapping

from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

_TIME_ROOT = "Arrival"  # the rules' Arrival.Date, Arrival.Time, Arrival.DateTime and Arrival.Weekday
_TIME_VRS = {"Date": "DA", "Time": "TM", "DateTime": "DT"}
# What the router keeps of a C-STORE request's command set, for CommandSet.* in the rules.
STORE_COMMAND_KEYWORDS = ("CommandField", "MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                          "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")
# The header facts (Arrival.HEADER_COLUMNS) and the data set keyword each is read from.
HEADER_KEYWORDS = {"patient_id": "PatientID", "patient_name": "PatientName", "accession_number": "AccessionNumber",
                   "study_instance_uid": "StudyInstanceUID", "series_instance_uid": "SeriesInstanceUID",
                   "modality": "Modality"}
MAX_HEADER_FACT_LENGTH = 256  # a malformed value is journaled cut, not whole
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# The facts a spool file's name carries, in this order (the SOP UIDs are in the file itself).
# A file name has room for 255 bytes: the uuid, the dots and ".dcm" take 38 of them.
_FILENAME_FACTS = ("source_kind", "source_name", "calling_aet", "called_aet", "peer")
# After them: the arrival time and the C-STORE command set (see Arrival.to_filename); a command
# set's Affected UIDs are written as 0 when they are the instance's own (see _filename_command).
_OWN_UIDS = {"AffectedSOPClassUID": "sop_class_uid", "AffectedSOPInstanceUID": "sop_instance_uid"}
MAX_FILENAME_FACTS_LENGTH = 200
# A quarantined file's .json names a few facts otherwise than the journal, and shows these first.
_QUARANTINE_KEYS = {"source_name": "source"}
_QUARANTINE_FIRST = ("sop_instance_uid", "sop_class_uid", "source_name")


@dataclass(frozen=True)
class Arrival:
    """How a document arrived: the association (for a listener), the source, and, once the
    router has read it, the instance it brought."""

    calling_aet: str | None = None
    called_aet: str | None = None
    peer_address: str | None = None
    peer_port: int | None = None
    source_name: str | None = None
    source_kind: str | None = None  # listener | folder | file
    source_path: str | None = None  # not journaled: a restart reads the spool file, not the source
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    # An instance retrieved for a C-MOVE or C-GET (source_kind "retrieve"): the requester's AE
    # title, the move destination (the requester itself for a C-GET), and the message.
    retrieve_requester: str | None = None
    move_destination: str | None = None
    retrieve_message: str | None = None
    # When it arrived: seconds since the epoch, from the router's clock (the journal's received_at).
    # The rules read it, in local time, as Arrival.Date, Arrival.Time, Arrival.DateTime, Arrival.Weekday.
    received_at: float | None = None
    # The C-STORE request that brought it to a listener: (keyword, value) pairs of its command set
    # (STORE_COMMAND_KEYWORDS), which the rules read as CommandSet.*; None for what came otherwise.
    store_command: tuple[tuple[str, Any], ...] | None = None
    # What the router read of the instance's header when it took it in, for searching the journal:
    # text as received (cut at MAX_HEADER_FACT_LENGTH), None when the data set lacks it. A spool
    # file's name does not carry them: an instance journaled again from its name has none.
    patient_id: str | None = None
    patient_name: str | None = None
    accession_number: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str | None = None

    # The journal's columns (instances and requests tables), in its order.
    ROW_COLUMNS: ClassVar[tuple[str, ...]] = ("source_kind", "source_name", "calling_aet", "called_aet", "peer",
                                              "sop_class_uid", "sop_instance_uid", "store_command")
    # The header facts: columns of the instances table (and keys of a quarantined file's .json) only.
    HEADER_COLUMNS: ClassVar[tuple[str, ...]] = tuple(HEADER_KEYWORDS)

    # What the rules read: Association.CallingAET and the like.
    _RULE_FIELDS: ClassVar[dict[tuple[str, str], str]] = {
        ("Association", "CallingAET"): "calling_aet",
        ("Association", "CalledAET"): "called_aet",
        ("Association", "PeerAddress"): "peer_address",
        ("Association", "PeerPort"): "peer_port",
        ("Source", "Name"): "source_name",
        ("Source", "Kind"): "source_kind",
        ("Source", "Path"): "source_path",
        ("Retrieve", "Requester"): "retrieve_requester",
        ("Retrieve", "MoveDestination"): "move_destination",
        ("Retrieve", "Message"): "retrieve_message",
    }

    # ---- the rules' view --------------------------------------------------------------------

    def value(self, root: str, name: str) -> Any:
        if root == _TIME_ROOT:
            return self._time_value(name)
        return getattr(self, self._RULE_FIELDS[(root, name)])

    def with_value(self, root: str, name: str, value: Any) -> "Arrival":
        if root == _TIME_ROOT:
            return replace(self, received_at=self._time_with(name, value))
        return replace(self, **{self._RULE_FIELDS[(root, name)]: value})

    # ---- the arrival time, as the rules read it ---------------------------------------------

    @property
    def received(self) -> datetime | None:
        """When it arrived, in local time (None: not known)."""
        return datetime.fromtimestamp(self.received_at) if self.received_at is not None else None

    def _time_value(self, name: str) -> str | None:
        when = self.received
        if when is None:
            return None
        if name == "Date":
            return when.strftime("%Y%m%d")
        if name == "Time":
            return when.strftime("%H%M%S")
        if name == "DateTime":
            return when.strftime("%Y%m%d%H%M%S")
        return _WEEKDAYS[when.weekday()]  # in English, whatever the locale

    def _time_with(self, name: str, value: Any) -> float:
        """received_at with one field given (a test fixing the clock): a DT gives all of it,
        a DA the day (at the time already given, or midnight), a TM the time (of the day given)."""
        text = "" if value is None else str(value).strip()
        current = self.received or datetime(2000, 1, 1)
        try:
            if name == "DateTime":
                digits = text.split(".")[0].ljust(14, "0") if len(text) >= 8 else ""
                when = datetime.strptime(digits, "%Y%m%d%H%M%S")
            elif name == "Date":
                day = datetime.strptime(text, "%Y%m%d")
                when = current.replace(year=day.year, month=day.month, day=day.day)
            elif name == "Time":
                digits = text.replace(":", "").split(".")[0].ljust(6, "0")
                clock = datetime.strptime(digits, "%H%M%S")
                when = current.replace(hour=clock.hour, minute=clock.minute, second=clock.second)
            else:
                raise ValueError(f"Arrival.{name} follows from Arrival.Date")
        except ValueError as exc:
            if "follows" in str(exc):
                raise
            raise ValueError(f"Arrival.{name}: {text!r} is not a valid {_TIME_VRS[name]} value") from None
        return when.timestamp()

    def command_set(self) -> Dataset | None:
        """The C-STORE request's command set as the rules read it (CommandSet.*), or None."""
        if not self.store_command:
            return None
        command_set = Dataset()
        for keyword, value in self.store_command:
            if value is not None and keyword in STORE_COMMAND_KEYWORDS:
                tag = tag_for_keyword(keyword)
                # as the sender sent it: a malformed UID is the rules' to judge, not an error here
                command_set.add(DataElement(tag, dictionary_VR(tag), value, validation_mode=config.IGNORE))
        return command_set

    def with_instance(self, sop_class_uid: str | None, sop_instance_uid: str | None,
                      header: Mapping[str, Any] | None = None) -> "Arrival":
        """With the instance's UIDs, and the header facts read from its data set (`header`:
        keyword -> value, as HEADER_KEYWORDS names them)."""
        facts = {}
        if header is not None:
            facts = {column: header_text(header.get(keyword)) for column, keyword in HEADER_KEYWORDS.items()}
        return replace(self, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid, **facts)

    # ---- the peer, as one text ("address:port") ---------------------------------------------------

    @property
    def peer(self) -> str | None:
        if not self.peer_address:
            return None
        return self.peer_address if self.peer_port is None else f"{self.peer_address}:{self.peer_port}"

    @staticmethod
    def _split_peer(peer: str | None) -> tuple[str | None, int | None]:
        if not peer:
            return None, None
        address, colon, port = peer.rpartition(":")
        if colon and port.isdigit():
            return address or None, int(port)
        return peer, None

    @classmethod
    def _from_facts(cls, facts: Mapping[str, Any]) -> "Arrival":
        """From facts named as the journal names them (the peer as one text)."""
        address, port = cls._split_peer(facts.get("peer"))
        known = {f.name for f in fields(cls)} - {"peer_address", "peer_port"}
        return cls(peer_address=address, peer_port=port, **{k: v for k, v in facts.items() if k in known})

    # ---- the journal row ----------------------------------------------------------------------

    def to_row(self, header: bool = True) -> dict[str, Any]:
        """The instances table's arrival columns (the C-STORE command as a JSON object); without
        the header facts (`header=False`), the requests table's."""
        columns = self.ROW_COLUMNS + self.HEADER_COLUMNS if header else self.ROW_COLUMNS
        row = {column: getattr(self, column) for column in columns}
        if self.store_command is not None:
            row["store_command"] = json.dumps(dict(self.store_command), separators=(",", ":"))
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Arrival":
        """From a row of the instances table, or of the requests table (without header facts)."""
        facts = {column: row[column] for column in cls.ROW_COLUMNS}
        facts["store_command"] = _command_from_text(facts["store_command"])
        present = row.keys()
        facts.update({column: row[column] for column in cls.HEADER_COLUMNS if column in present})
        return cls._from_facts(facts)

    # ---- the spool file's name ----------------------------------------------------------------

    def to_filename(self, unique: str) -> str:
        """`UNIQUE.FACTS.dcm`: the facts base64 JSON, so that the file alone is enough to
        route it (its journal entry may be lost with a power cut after the answer): how it
        arrived, when (milliseconds), and the C-STORE command set (see _filename_command).
        The name is written by the rename that spools the file: keeping these costs no write."""
        for room in range(5):
            facts = self._filename_facts(room)
            if len(facts) <= MAX_FILENAME_FACTS_LENGTH:
                break
        return f"{unique}.{facts}.dcm"

    def _filename_facts(self, room: int = 0) -> str:
        """The facts, with less and less of them as `room` grows, until they fit in a name:
        1, a command's Affected UIDs that are not the instance's own are left out; 2, also a
        long source name is cut, the called AE title and the peer left out (a long name or IPv6
        address); 3, also the command set; 4, the source name cut short (letters of 3 bytes)."""
        arrival = self
        if room >= 2:
            arrival = replace(self, peer_address=None, peer_port=None, called_aet=None,
                              source_name=(self.source_name or "")[:40 if room < 4 else 12])
        values: list[Any] = [getattr(arrival, key) for key in _FILENAME_FACTS]
        command = self._filename_command(own_uids_only=room >= 1)
        if room >= 3 and command is not None:
            command = 1  # none of it kept
        if self.received_at is not None or command is not None:
            values.append(None if self.received_at is None else int(self.received_at * 1000))
        if command is not None:
            values.append(command)
        data = json.dumps(values, separators=(",", ":"), ensure_ascii=False)  # an odd AE title: 2 bytes a letter, not 6
        return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")

    def _filename_command(self, own_uids_only: bool) -> list[Any] | None:
        """The C-STORE command set as a list in STORE_COMMAND_KEYWORDS order (null: not sent).
        Its Affected SOP Class and Instance UIDs are nearly always the instance's own, which
        the file carries: 0 says so; a UID of its own is written out, or 1 when there is no room
        (it is lost with the journal entry). The whole command is 1 when none of it was kept."""
        if self.store_command is None:
            return None
        command = dict(self.store_command)
        values: list[Any] = []
        for keyword in STORE_COMMAND_KEYWORDS:
            value = command.get(keyword)
            own = _OWN_UIDS.get(keyword)
            if own is not None and value is not None:
                if value == getattr(self, own):
                    value = 0
                elif own_uids_only:
                    value = 1
            values.append(value)
        return values

    @classmethod
    def from_filename(cls, name: str, sop_class_uid: str | None = None,
                      sop_instance_uid: str | None = None) -> "Arrival":
        """The facts a spool file's name carries (see to_filename); an unknown source when it
        carries none. The instance's UIDs (read from the file) complete the command set."""
        return cls.recover_from_filename(name, sop_class_uid, sop_instance_uid)[0]

    @classmethod
    def recover_from_filename(cls, name: str, sop_class_uid: str | None = None,
                              sop_instance_uid: str | None = None) -> tuple["Arrival", tuple[str, ...]]:
        """from_filename, and what it cannot give back of what the journal would have had:
        "received_at" (a name written before the time was in it), "store_command" (none of it),
        or the keywords of the command set's fields lost for want of room."""
        parts = name.split(".")
        values: Any = None
        if len(parts) == 3:
            try:
                values = json.loads(base64.urlsafe_b64decode(parts[1].encode() + b"=" * (-len(parts[1]) % 4)))
            except (ValueError, TypeError):
                values = None
        if not isinstance(values, list) or len(values) < len(_FILENAME_FACTS):
            return cls(source_kind="unknown"), ("received_at", "store_command")
        try:
            arrival = cls._from_facts(dict(zip(_FILENAME_FACTS, values)))
        except (ValueError, TypeError, AttributeError):
            return cls(source_kind="unknown"), ("received_at", "store_command")
        arrival = arrival.with_instance(sop_class_uid, sop_instance_uid)
        lost: list[str] = []
        stamp = values[len(_FILENAME_FACTS)] if len(values) > len(_FILENAME_FACTS) else None
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            arrival = replace(arrival, received_at=stamp / 1000)
        else:
            lost.append("received_at")
        command = values[len(_FILENAME_FACTS) + 1] if len(values) > len(_FILENAME_FACTS) + 1 else None
        if isinstance(command, list) and len(command) == len(STORE_COMMAND_KEYWORDS):
            kept = []
            for keyword, value in zip(STORE_COMMAND_KEYWORDS, command):
                own = _OWN_UIDS.get(keyword)
                if own is not None and value in (0, 1) and not isinstance(value, bool):
                    if value == 1 or getattr(arrival, own) is None:
                        lost.append(keyword)
                        continue
                    value = getattr(arrival, own)
                if value is not None:
                    kept.append((keyword, value))
            arrival = replace(arrival, store_command=tuple(kept))
        elif command == 1 or (command is None and len(values) <= len(_FILENAME_FACTS) + 1
                              and arrival.source_kind == "listener"):
            lost.append("store_command")  # no room for it, or a name written before it was kept
        return arrival, tuple(lost)

    # ---- the quarantine's .json ---------------------------------------------------------------

    def to_quarantine(self) -> dict[str, Any]:
        """The facts written beside a quarantined file: the journal's, the source named "source"."""
        row = self.to_row()
        row.pop("store_command")  # written as an object, and only for what a C-STORE brought
        if self.store_command is not None:
            row["store_command"] = dict(self.store_command)
        columns = [*_QUARANTINE_FIRST, *(column for column in row if column not in _QUARANTINE_FIRST)]
        return {_QUARANTINE_KEYS.get(column, column): row[column] for column in columns if column in row}

    @classmethod
    def from_quarantine(cls, info: Mapping[str, Any]) -> "Arrival":
        """What a quarantined file's .json says of its arrival; files from before the source
        kind was written there came from a listener when they name a calling AE title."""
        facts = {column: info.get(_QUARANTINE_KEYS.get(column, column))
                 for column in cls.ROW_COLUMNS + cls.HEADER_COLUMNS}
        facts.update({column: header_text(facts[column]) for column in cls.HEADER_COLUMNS})  # a hand-edited .json
        facts["store_command"] = _command_from_text(facts["store_command"])
        facts["source_kind"] = facts["source_kind"] or ("listener" if facts["calling_aet"] else "folder")
        return cls._from_facts(facts)


def header_text(value: Any) -> str | None:
    """A header value as the journal keeps it: its text as received (the values of a multi-valued
    element joined by backslashes), cut at MAX_HEADER_FACT_LENGTH; None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1")
    elif isinstance(value, Sequence):  # a multi-valued element
        text = "\\".join("" if item is None else str(item) for item in value)
    else:
        text = str(value)
    text = text.strip("\0 ")
    return text[:MAX_HEADER_FACT_LENGTH] or None


def _command_from_text(value: Any) -> tuple[tuple[str, Any], ...] | None:
    """A journaled (JSON text) or quarantined (object) C-STORE command; None when absent or unreadable,
    as in journals and quarantined files from before it was kept."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return tuple((str(keyword), item) for keyword, item in value.items() if keyword in STORE_COMMAND_KEYWORDS)


__all__ = ["Arrival", "HEADER_KEYWORDS", "MAX_FILENAME_FACTS_LENGTH", "MAX_HEADER_FACT_LENGTH",
           "STORE_COMMAND_KEYWORDS", "header_text"]
