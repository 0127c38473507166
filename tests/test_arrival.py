"""The arrival record, in each shape the router keeps it: journal row, spool file name,
quarantine .json; and names and rows written before there was one record still read."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from rulesengine import Arrival
from rulesengine.arrival import MAX_FILENAME_FACTS_LENGTH, MAX_HEADER_FACT_LENGTH, header_text

LISTENER = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                   source_name="main", source_kind="listener", source_path=None,
                   sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid="1.2.3.4")
FOLDER = Arrival(source_name="inbox", source_kind="folder")
WITH_HEADER = replace(LISTENER, patient_id="P1", patient_name="Müller^Jürgen", accession_number="A1",
                      study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", modality="MR")


@pytest.mark.parametrize("arrival", [LISTENER, FOLDER, WITH_HEADER], ids=["listener", "folder", "header"])
def test_the_journal_row_round_trips(arrival):
    row = arrival.to_row()
    assert list(row) == list(Arrival.ROW_COLUMNS + Arrival.HEADER_COLUMNS)
    assert Arrival.from_row(row) == arrival


def test_a_request_row_has_no_header_facts_and_reads_without_them():
    row = WITH_HEADER.to_row(header=False)
    assert list(row) == list(Arrival.ROW_COLUMNS)
    assert Arrival.from_row(row) == LISTENER


def test_the_header_facts_go_through_the_quarantine_but_not_the_spool_file_name():
    assert Arrival.from_quarantine(WITH_HEADER.to_quarantine()) == WITH_HEADER
    assert Arrival.from_filename(WITH_HEADER.to_filename("u")) == Arrival.from_filename(LISTENER.to_filename("u"))


@pytest.mark.parametrize("value, kept", [
    (None, None), ("", None), ("  ", None), ("P1 ", "P1"), ("P1\0", "P1"), (MultiValue(str, ["A", "B"]), "A\\B"),
    (PersonName("Doe^Jane"), "Doe^Jane"), (b"RAW ", "RAW"), ("x" * 1000, "x" * MAX_HEADER_FACT_LENGTH)])
def test_a_header_value_is_kept_as_text_and_bounded(value, kept):
    assert header_text(value) == kept


def test_the_row_carries_the_peer_as_one_text():
    assert LISTENER.to_row()["peer"] == "127.0.0.1:40123"
    assert FOLDER.to_row()["peer"] is None
    ipv6 = Arrival(peer_address="::1", peer_port=104)
    assert Arrival.from_row({**ipv6.to_row()}).peer_address == "::1"


@pytest.mark.parametrize("arrival", [LISTENER, FOLDER], ids=["listener", "folder"])
def test_the_spool_file_name_carries_the_arrival_but_not_the_instance(arrival):
    name = arrival.to_filename("0123abcd")
    assert name.startswith("0123abcd.") and name.endswith(".dcm")
    assert Arrival.from_filename(name) == arrival.with_instance(None, None)


@pytest.mark.parametrize("name, expected", [
    # as routers wrote them before the one record: existing spool files must still route
    ("2f1c.WyJsaXN0ZW5lciIsIm1haW4iLCJDVDEiLCJST1VURVIiLCIxMjcuMC4wLjE6NDAxMjMiXQ.dcm",
     Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123, source_name="main",
             source_kind="listener")),
    ("2f1c.WyJmb2xkZXIiLCJpbmJveCIsbnVsbCxudWxsLG51bGxd.dcm", Arrival(source_name="inbox", source_kind="folder")),
    ("2f1c.dcm", Arrival(source_kind="unknown")),
    ("2f1c.not-base64!.dcm", Arrival(source_kind="unknown")),
])
def test_spool_file_names_written_before_read_on(name, expected):
    assert Arrival.from_filename(name) == expected
    if expected.source_kind != "unknown":
        assert expected.to_filename("2f1c") == name  # and are written the same way


def test_a_name_too_long_keeps_what_fits():
    long = Arrival(calling_aet="A" * 16, called_aet="B" * 16, peer_address="fe80::1234:5678:9abc:def0%eth0",
                   peer_port=11112, source_name="radiology-main-building-" * 4, source_kind="listener")
    name = long.to_filename("0" * 32)
    assert len(name) <= 32 + 2 + MAX_FILENAME_FACTS_LENGTH + 4
    kept = Arrival.from_filename(name)
    assert (kept.calling_aet, kept.source_kind, kept.called_aet, kept.peer) == ("A" * 16, "listener", None, None)


KEPT_IN_NAME = replace(LISTENER, received_at=1795251600.125, store_command=(
    ("CommandField", 1), ("MessageID", 5), ("Priority", 1), ("AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
    ("AffectedSOPInstanceUID", "1.2.3.4"), ("MoveOriginatorApplicationEntityTitle", "PACS"),
    ("MoveOriginatorMessageID", 12)))


def test_the_name_keeps_the_time_and_the_command_set_with_the_instances_uids_as_zero():
    name = KEPT_IN_NAME.to_filename("0" * 32)
    assert facts_of(name) == ["listener", "main", "CT1", "ROUTER", "127.0.0.1:40123", 1795251600125,
                              [1, 5, 1, 0, 0, "PACS", 12]]
    assert Arrival.recover_from_filename(name, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4") == (KEPT_IN_NAME, ())
    # read without the file's UIDs (it could not be read): the command set's are lost with them
    arrival, lost = Arrival.recover_from_filename(name)
    assert lost == ("AffectedSOPClassUID", "AffectedSOPInstanceUID")
    assert dict(arrival.store_command) == {"CommandField": 1, "MessageID": 5, "Priority": 1,
                                           "MoveOriginatorApplicationEntityTitle": "PACS",
                                           "MoveOriginatorMessageID": 12}


def test_affected_uids_other_than_the_instances_are_written_out_while_there_is_room():
    other = replace(KEPT_IN_NAME, sop_instance_uid="1.2.3.5")  # the file meta was remade from the data set
    name = other.to_filename("0" * 32)
    assert facts_of(name)[6] == [1, 5, 1, 0, "1.2.3.4", "PACS", 12]
    assert Arrival.from_filename(name, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.5") == other


def test_a_command_set_without_move_originator_keeps_its_absence():
    plain = replace(KEPT_IN_NAME, store_command=KEPT_IN_NAME.store_command[:5])
    name = plain.to_filename("0" * 32)
    assert facts_of(name)[6] == [1, 5, 1, 0, 0, None, None]
    assert Arrival.from_filename(name, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4") == plain


def test_a_name_too_long_drops_first_the_command_sets_own_uids_then_the_peer_then_the_command_set():
    uid = "1.2.826.0.1.3680043.8.498." + "1" * 38
    long = Arrival(calling_aet="A" * 16, called_aet="B" * 16, peer_address="fe80::1234:5678:9abc:def0%eth0",
                   peer_port=11112, source_name="radiology-main-building-" * 4, source_kind="listener",
                   sop_class_uid=uid[:-1] + "2", sop_instance_uid=uid[:-1] + "3", received_at=1795251600.0,
                   store_command=(("CommandField", 1), ("MessageID", 65535), ("Priority", 2),
                                  ("AffectedSOPClassUID", uid), ("AffectedSOPInstanceUID", uid[:-1] + "4"),
                                  ("MoveOriginatorApplicationEntityTitle", "M" * 16),
                                  ("MoveOriginatorMessageID", 65535)))
    name = long.to_filename("0" * 32)
    assert len(name) <= 32 + 2 + MAX_FILENAME_FACTS_LENGTH + 4
    kept, lost = Arrival.recover_from_filename(name, long.sop_class_uid, long.sop_instance_uid)
    assert lost == ("AffectedSOPClassUID", "AffectedSOPInstanceUID")
    assert (kept.received_at, kept.called_aet, kept.peer) == (1795251600.0, None, None)
    assert dict(kept.store_command)["MoveOriginatorApplicationEntityTitle"] == "M" * 16

    odd = replace(long, calling_aet="\u00c4\u0416" * 8, source_name="\u6771" * 64,
                  store_command=(("MoveOriginatorApplicationEntityTitle", "\u0416" * 16),))
    name = odd.to_filename("0" * 32)
    assert len(name.encode()) <= 255
    kept, lost = Arrival.recover_from_filename(name, long.sop_class_uid, long.sop_instance_uid)
    assert (kept.calling_aet, kept.received_at, kept.store_command, lost) == (
        odd.calling_aet, 1795251600.0, None, ("store_command",))


@pytest.mark.parametrize("name, lost", [
    ("2f1c.WyJsaXN0ZW5lciIsIm1haW4iLCJDVDEiLCJST1VURVIiLCIxMjcuMC4wLjE6NDAxMjMiXQ.dcm",
     ("received_at", "store_command")),  # a listener's, before the name kept them
    ("2f1c.WyJmb2xkZXIiLCJpbmJveCIsbnVsbCxudWxsLG51bGxd.dcm", ("received_at",)),  # a folder has no command set
    ("2f1c.dcm", ("received_at", "store_command")),
    ("2f1c.bnVsbA.dcm", ("received_at", "store_command")),  # JSON null
    ("2f1c.WzEsMiwzLDQsNSwiYSIsImIiXQ.dcm", ("received_at", "store_command")),  # numbers where texts go
])
def test_what_an_older_or_damaged_name_cannot_give_back(name, lost):
    assert Arrival.recover_from_filename(name)[1] == lost


def facts_of(name: str) -> list:
    encoded = name.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def test_the_quarantine_json_round_trips_and_older_ones_read():
    info = LISTENER.to_quarantine()
    assert list(info.items()) == list({"sop_instance_uid": "1.2.3.4", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "source": "main",
                    "source_kind": "listener", "calling_aet": "CT1", "called_aet": "ROUTER",
                    "peer": "127.0.0.1:40123", "patient_id": None, "patient_name": None,
                    "accession_number": None, "study_instance_uid": None, "series_instance_uid": None,
                    "modality": None}.items())  # the order docs/operations.md shows
    assert Arrival.from_quarantine(info) == LISTENER
    # written before the source kind was: a calling AE title means a listener
    assert Arrival.from_quarantine({"calling_aet": "CT1"}).source_kind == "listener"
    assert Arrival.from_quarantine({"source": "inbox"}) == FOLDER


def test_the_rules_read_the_association_and_the_source():
    assert LISTENER.value("Association", "PeerPort") == 40123
    changed = LISTENER.with_value("Association", "CallingAET", "CT2")
    assert (changed.calling_aet, changed.sop_instance_uid) == ("CT2", "1.2.3.4")
    assert Arrival("CT1", "ROUTER", "127.0.0.1", 104, "main").source_name == "main"  # the positional order kept


STORED = Arrival(calling_aet="CT1", source_name="main", source_kind="listener",
                 store_command=(("CommandField", 1), ("MessageID", 7), ("Priority", 1),
                                ("AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
                                ("AffectedSOPInstanceUID", "1.2.3.4"),
                                ("MoveOriginatorApplicationEntityTitle", "PACS"), ("MoveOriginatorMessageID", 3)))


def test_the_c_store_command_round_trips_through_the_journal_and_the_quarantine():
    row = STORED.to_row(header=False)
    assert list(row) == list(Arrival.ROW_COLUMNS)
    assert isinstance(row["store_command"], str)  # one TEXT column
    assert Arrival.from_row(row) == STORED
    info = STORED.to_quarantine()
    assert info["store_command"]["MoveOriginatorApplicationEntityTitle"] == "PACS"
    assert Arrival.from_quarantine(info) == STORED
    assert "store_command" not in FOLDER.to_quarantine()


def test_the_c_store_command_is_the_rules_command_set():
    command_set = STORED.command_set()
    assert (command_set.MessageID, command_set.Priority) == (7, 1)
    assert command_set.MoveOriginatorApplicationEntityTitle == "PACS"
    assert command_set.CommandField == 1
    assert FOLDER.command_set() is None


@pytest.mark.parametrize("stored", [None, "", "not json", "[1, 2]", '{"Unknown": 1, "Priority": 2}'])
def test_a_journal_row_without_a_readable_command_reads(stored):
    arrival = Arrival.from_row({**LISTENER.to_row(), "store_command": stored})
    assert arrival.with_instance(LISTENER.sop_class_uid, LISTENER.sop_instance_uid) == (
        LISTENER if stored != '{"Unknown": 1, "Priority": 2}' else
        Arrival.from_row({**LISTENER.to_row(), "store_command": '{"Priority": 2}'}))
