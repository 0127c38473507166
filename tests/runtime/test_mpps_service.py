"""The MPPS handler without a listener: the request is pynetdicom's event, stood in for; the
RIS it relays to is a real MPPS SCP over TCP (pynetdicom's: neither DCMTK nor Orthanc has
one, see helpers/mpps_peer.py). A data set that cannot be decoded, a request on another SOP
class, a bug inside the handler, a RIS that answers a failure, is down or is silent, a
destination that cannot answer MPPS, a response the rules drop or fail on, and an N-CREATE
that leaves its UID to the SCP."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from io import BytesIO
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode

import rulesengine
from helpers.find_peer import FindPeer
from helpers.mpps_peer import MppsPeer, step_completed, step_in_progress
from rulesengine.config import DicomDestination, FolderDestination, Listener, Timeouts
from rulesengine.runtime.mpps_service import N_CREATE, N_SET, MppsService, relay

MPPS = "1.2.840.10008.3.1.2.3.3"
UID = "1.2.826.0.1.3680043.8.498.1"
LISTENER = Listener(name="main", ae_title="ROUTER", port=104, timeouts=Timeouts(dimse=1))

ROUTE_RIS = """
rule "mpps" on N-CREATE, N-SET {
  then {
    set DataSet.PatientID = replace(DataSet.PatientID, /^H1-/, "")
    route to RIS
    on response {
      if exists DataSet.PatientID {
        set DataSet.PatientID = "H1-" + DataSet.PatientID
      }
    }
  }
}
"""


@dataclass
class Journal:
    requests: list = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def record_request(self, request, now=None) -> int:
        self.requests.append(request)
        return len(self.requests)

    def finish_request(self, request_id, result, now=None) -> None:
        self.results[request_id] = result


class Event:
    """What the handler reads of pynetdicom's EVT_N_CREATE or EVT_N_SET event."""

    def __init__(self, message: str, dataset: Dataset | bytes, uid: str | None = UID, sop_class: str = MPPS):
        self._dataset = dataset
        if message == N_CREATE:
            self.request = SimpleNamespace(AffectedSOPClassUID=sop_class, AffectedSOPInstanceUID=uid, MessageID=3)
        else:
            self.request = SimpleNamespace(RequestedSOPClassUID=sop_class, RequestedSOPInstanceUID=uid, MessageID=4)
        requestor = SimpleNamespace(ae_title="CT1", address="127.0.0.1", port=40000,
                                    primitive=SimpleNamespace(called_ae_title="ROUTER"))
        self.assoc = SimpleNamespace(requestor=requestor)

    def _decoded(self) -> Dataset:
        if isinstance(self._dataset, bytes):  # as pynetdicom decodes it: implicit VR little endian here
            return decode(BytesIO(self._dataset), True, True, False)
        return self._dataset

    attribute_list = property(_decoded)
    modification_list = property(_decoded)


def service(rules: str, destinations: dict) -> tuple[MppsService, Journal]:
    infos = {name: {"type": d.type, "answers": None} for name, d in destinations.items()}
    holder = SimpleNamespace(current=rulesengine.compile_source(rules, infos),
                             config=SimpleNamespace(destinations=destinations))
    journal = Journal()
    return MppsService(journal, holder), journal


def code(status) -> int:
    return int(status.Status) if isinstance(status, Dataset) else int(status)


@pytest.fixture(scope="module")
def peers():
    """Two RIS for the module (stopping one takes half a second of pynetdicom's)."""
    started = MppsPeer(), MppsPeer(ae_title="OTHER")
    yield started
    for peer in started:
        peer.stop()


@pytest.fixture
def ris(peers):
    peer = peers[0]
    peer.requests.clear()
    peer.status, peer.comment = 0x0000, None
    return peer


def refused_port() -> int:
    """A port where nothing listens: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_both_messages_are_relayed_with_the_rules_edits_both_ways(ris):
    mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress("H1-123")))
    assert code(status) == 0x0000
    assert answer.PatientID == "H1-123"  # put back by `on response`
    status, answer = mpps.handle(LISTENER, N_SET, Event(N_SET, step_completed(PatientID="H1-123")))
    assert code(status) == 0x0000 and answer.PerformedProcedureStepStatus == "COMPLETED"
    assert [(m, uid, ds.PatientID) for m, uid, ds in ris.requests] == [("N-CREATE", UID, "123"), ("N-SET", UID, "123")]
    create, update = journal.requests
    assert (create.message, update.message) == ("N-CREATE", "N-SET")
    assert create.matching_keys == {"SOPInstanceUID": UID, "PerformedProcedureStepStatus": "IN PROGRESS"}
    assert create.arrival.sop_instance_uid == UID and create.arrival.calling_aet == "CT1"
    assert [(r.outcome, r.status, [a.destination for a in r.answers]) for r in journal.results.values()] == \
        [("answered", 0, ["RIS"])] * 2


# (0040,0270) ScheduledStepAttributesSequence of undefined length, whose item is cut short
TRUNCATED_SEQUENCE = b"\x40\x00\x70\x02\xff\xff\xff\xff" + b"garbage!" * 2


def test_a_data_set_that_cannot_be_decoded_is_answered_0106_and_journaled(ris, caplog):
    mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
    with caplog.at_level(logging.INFO, logger="rulesengine.mpps"):
        status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, TRUNCATED_SEQUENCE))
    assert code(status) == 0x0106 and answer is None
    assert status.ErrorComment.startswith("the data set cannot be decoded") and len(status.ErrorComment) <= 64
    assert ris.requests == []
    [result] = journal.results.values()
    assert result.outcome == "failed" and result.status == 0x0106
    assert any("cannot be decoded" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_request_on_another_sop_class_is_answered_0118(ris):
    mpps, _ = service(ROUTE_RIS, {"RIS": ris.destination()})
    status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress(), sop_class="1.2.840.10008.5.1.1.1"))
    assert code(status) == 0x0118 and "not MPPS" in status.ErrorComment
    assert ris.requests == []


def test_a_rejection_is_answered_0124_with_the_reason(ris):
    rules = 'rule "no" on N-CREATE {\n  when DataSet.Modality == "CT"\n  then reject "CT steps go elsewhere"\n}\n'
    mpps, journal = service(rules, {"RIS": ris.destination()})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0124 and status.ErrorComment == "CT steps go elsewhere" and answer is None
    status, _ = mpps.handle(LISTENER, N_SET, Event(N_SET, step_completed()))
    assert code(status) == 0x0124 and status.ErrorComment == "no rule routed this N-SET"
    assert [r.outcome for r in journal.results.values()] == ["rejected", "rejected"]
    assert ris.requests == []


def test_a_rule_that_fails_is_answered_0110_rule_error(ris):
    rules = ('rule "bad" on N-CREATE {\n  then {\n    set DataSet.StudyDate = DataSet.PatientID\n'
             '    route to RIS\n  }\n}\n')  # a patient ID is no date: the rule fails as it runs
    mpps, journal = service(rules, {"RIS": ris.destination()})
    status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0110 and status.ErrorComment.startswith("rule error: ")
    assert ris.requests == []


def test_a_bug_in_the_handler_is_answered_0110_and_logged_with_its_traceback(ris, caplog):
    mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
    mpps.rules = SimpleNamespace()  # no `current`: an AttributeError inside the handler
    with caplog.at_level(logging.ERROR, logger="rulesengine.mpps"):
        status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0110 and status.ErrorComment == "internal error of the router, see its log"
    [record] = [r for r in caplog.records if r.exc_info]
    assert "internal error" in record.getMessage()
    [result] = journal.results.values()
    assert result.outcome == "failed"


def test_a_ris_failure_status_is_passed_back_with_the_destination_named(ris):
    ris.status, ris.comment = 0x0112, "no such step"
    mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
    status, answer = mpps.handle(LISTENER, N_SET, Event(N_SET, step_completed()))
    assert code(status) == 0x0112 and status.ErrorComment == "RIS: status 0x0112 no such step" and answer is None
    [result] = journal.results.values()
    assert result.outcome == "failed" and result.answers[0].status == 0x0112


def test_a_ris_that_is_down_fails_at_once_with_the_reason(caplog):
    mpps, journal = service(ROUTE_RIS, {"RIS": DicomDestination("RIS", "RIS", "127.0.0.1", refused_port())})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="rulesengine.mpps"):
        status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    seconds = time.monotonic() - started
    assert code(status) == 0x0213 and status.ErrorComment == "RIS: connection refused" and answer is None
    assert seconds < LISTENER.timeouts.dimse / 2, f"{seconds:.2f} s"  # the connection is refused at once
    [line] = [r.getMessage() for r in caplog.records if r.name == "rulesengine.mpps"]
    assert "N-CREATE from CT1" in line and "connection refused" in line and "RIS@127.0.0.1" in line
    [result] = journal.results.values()
    assert result.outcome == "failed" and "connection refused" in result.answers[0].error


def test_a_silent_ris_is_given_up_at_the_listeners_timeout():
    ris = MppsPeer(silent=True)
    try:
        mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
        started = time.monotonic()
        status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
        seconds = time.monotonic() - started
    finally:
        ris.stop()
    assert code(status) == 0x0213 and status.ErrorComment == "RIS: no answer within 1 s"
    assert LISTENER.timeouts.dimse <= seconds < LISTENER.timeouts.dimse + 1, f"{seconds:.2f} s"


def test_two_destinations_one_down_fail_naming_it_and_the_other_still_gets_it(ris):
    rules = 'rule "both" on N-CREATE {\n  then route to RIS, DOWN\n}\n'
    down = DicomDestination("DOWN", "DOWN", "127.0.0.1", refused_port())
    mpps, journal = service(rules, {"RIS": ris.destination(), "DOWN": down})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0213 and status.ErrorComment == "DOWN: connection refused" and answer is None
    assert [m for m, _, _ in ris.requests] == ["N-CREATE"]
    [result] = journal.results.values()
    assert result.outcome == "partial"
    assert [(a.destination, a.status) for a in result.answers] == [("RIS", 0), ("DOWN", None)]


def test_two_destinations_that_answer_give_the_first_ones_answer(ris, peers):
    other = peers[1]
    other.requests.clear()
    rules = 'rule "both" on N-CREATE {\n  then route to RIS, OTHER\n}\n'
    mpps, journal = service(rules, {"RIS": ris.destination(), "OTHER": other.destination("OTHER")})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress("P9")))
    assert code(status) == 0 and answer.PatientID == "P9"
    assert len(ris.requests) == len(other.requests) == 1


def test_a_destination_that_cannot_answer_mpps_is_a_failure(ris, tmp_path):
    rules = 'rule "both" on N-CREATE {\n  then route to RIS, FILES\n}\n'
    destinations = {"RIS": ris.destination(), "FILES": FolderDestination("FILES", str(tmp_path))}
    infos = {name: {"type": d.type, "answers": None} for name, d in destinations.items()}
    mpps, journal = service(rules, destinations)
    mpps.rules.current = rulesengine.compile_source(rules, infos)
    status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0110 and status.ErrorComment == "FILES: cannot answer N-CREATE: not a dicom destination"
    assert len(ris.requests) == 1


def test_a_peer_that_does_not_offer_mpps_is_a_processing_failure():
    pacs = FindPeer(ae_title="RIS")  # C-FIND only
    try:
        mpps, journal = service(ROUTE_RIS, {"RIS": pacs.destination("RIS")})
        status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    finally:
        pacs.stop()
    assert code(status) == 0x0110 and status.ErrorComment == "RIS: MPPS not offered"
    [result] = journal.results.values()
    assert "it does not offer MPPS" in result.answers[0].error


def test_a_response_the_rules_drop_is_answered_with_its_status_alone(ris):
    rules = 'rule "mpps" on N-CREATE {\n  then {\n    route to RIS\n    on response {\n      drop\n    }\n  }\n}\n'
    mpps, journal = service(rules, {"RIS": ris.destination()})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0 and answer is None
    [result] = journal.results.values()
    assert result.outcome == "answered"


def test_a_response_edit_that_fails_is_answered_0110(ris):
    rules = ('rule "mpps" on N-CREATE {\n  then {\n    route to RIS\n    on response {\n'
             '      set DataSet.StudyDate = DataSet.PatientID\n    }\n  }\n}\n')
    mpps, journal = service(rules, {"RIS": ris.destination()})
    status, _ = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress()))
    assert code(status) == 0x0110 and status.ErrorComment.startswith("rule error on the response: ")


def test_an_n_create_without_a_uid_gets_one_made_by_the_router_for_every_destination(ris):
    mpps, journal = service(ROUTE_RIS, {"RIS": ris.destination()})
    status, answer = mpps.handle(LISTENER, N_CREATE, Event(N_CREATE, step_in_progress(), uid=None))
    assert code(status) == 0
    [(_, uid, _)] = ris.requests
    assert uid and answer.AffectedSOPInstanceUID == uid  # pynetdicom moves it to the response's command set
    assert journal.requests[0].matching_keys["SOPInstanceUID"] == uid


def test_relay_returns_within_its_timeout_whatever_the_destinations_do():
    silent = MppsPeer(silent=True)
    try:
        destinations = [silent.destination("A"), DicomDestination("B", "B", "127.0.0.1", refused_port())]
        started = time.monotonic()
        results = relay(destinations, N_CREATE, UID, step_in_progress(), timeout=0.5)
        seconds = time.monotonic() - started
    finally:
        silent.stop()
    assert [(r.destination, r.ok, r.unreachable) for r in results] == [("A", False, True), ("B", False, True)]
    assert seconds < 1.5, f"{seconds:.2f} s"
