"""The C-FIND handler without a network: an identifier that cannot be decoded or names no
level of its model, a bug inside the handler, a C-CANCEL while answering from a worklist
folder or while a silent PACS is asked. The event is pynetdicom's, stood in for."""

from __future__ import annotations

import logging
from io import BytesIO
import socket
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode

import rulesengine
from helpers.peers import dump2dcm, require
from helpers.wlmscpfs import ITEM, worklist_item
from rulesengine.config import DicomDestination, Listener, Timeouts, WorklistDestination
from rulesengine.runtime.find_service import FindService

WORKLIST = "1.2.840.10008.5.1.4.31"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
LISTENER = Listener(name="main", ae_title="ROUTER", port=104, timeouts=Timeouts(dimse=5))


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
    """What the handler reads of pynetdicom's EVT_C_FIND event."""

    def __init__(self, identifier: Dataset | bytes, sop_class: str = WORKLIST, cancel_after: int | None = None):
        self._identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=sop_class, MessageID=7, Priority=0)
        requestor = SimpleNamespace(ae_title="CT1", address="127.0.0.1", port=40000,
                                    primitive=SimpleNamespace(called_ae_title="ROUTER"))
        self.assoc = SimpleNamespace(requestor=requestor)
        self.cancel_after = cancel_after  # cancelled once the handler has yielded this many responses
        self.yielded = 0

    @property
    def identifier(self) -> Dataset:
        if isinstance(self._identifier, bytes):  # as pynetdicom decodes it: implicit VR little endian here
            return decode(BytesIO(self._identifier), True, True, False)
        return self._identifier

    @property
    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and self.yielded >= self.cancel_after


def service(rules: str, destinations: dict) -> tuple[FindService, Journal]:
    infos = {name: {"type": d.type, "answers": None} for name, d in destinations.items()}
    holder = SimpleNamespace(current=rulesengine.compile_source(rules, infos),
                             config=SimpleNamespace(destinations=destinations))
    journal = Journal()
    return FindService(journal, holder), journal


def answer(find: FindService, event: Event) -> list:
    responses = []
    for status, identifier in find.handle(LISTENER, event):
        responses.append((status, identifier))
        event.yielded += 1
    return responses


def code(status) -> int:
    return int(status.Status) if isinstance(status, Dataset) else int(status)


ROUTE_WL = 'rule "wl" on C-FIND {\n  then route to WL\n}\n'
WL_NOWHERE = {"WL": WorklistDestination("WL", "/nonexistent")}
# (0040,0100) ScheduledProcedureStepSequence of undefined length, whose item is cut short
TRUNCATED_SEQUENCE = b"\x40\x00\x00\x01\xff\xff\xff\xff" + b"garbage!" * 2


def test_an_identifier_that_cannot_be_decoded_is_answered_a900_and_journaled(caplog):
    find, journal = service(ROUTE_WL, WL_NOWHERE)
    with caplog.at_level(logging.INFO, logger="rulesengine.find"):
        [(status, identifier)] = answer(find, Event(TRUNCATED_SEQUENCE))
    assert code(status) == 0xA900 and identifier is None
    assert "cannot be decoded" in status.ErrorComment and len(status.ErrorComment) <= 64
    [result] = journal.results.values()
    assert result.outcome == "failed" and result.status == 0xA900
    assert any("cannot be decoded" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("level", ["", "SERIE", "WORKLIST"])
def test_a_level_the_model_does_not_have_is_answered_a900(level):
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    find, journal = service(ROUTE_WL, WL_NOWHERE)
    [(status, _)] = answer(find, Event(identifier, sop_class=STUDY_ROOT))
    assert code(status) == 0xA900
    assert "QueryRetrieveLevel" in status.ErrorComment


def test_a_bug_in_the_handler_is_answered_c000_and_logged_with_its_traceback(caplog):
    find, journal = service(ROUTE_WL, WL_NOWHERE)
    find.rules = SimpleNamespace()  # no `current`: an AttributeError inside the handler
    identifier = Dataset()
    identifier.AccessionNumber = ""
    with caplog.at_level(logging.ERROR, logger="rulesengine.find"):
        [(status, identifier)] = answer(find, Event(identifier))
    assert code(status) == 0xC000 and "internal error" in status.ErrorComment
    [record] = [r for r in caplog.records if r.exc_info]
    assert "internal error" in record.getMessage()
    [result] = journal.results.values()
    assert result.outcome == "failed"


def test_the_request_is_journaled_once_its_final_status_is_handed_over(caplog):
    """pynetdicom sends the final status, then closes the handler without asking for more: the
    request is journaled and logged as it ended (not as cancelled), after the requester's answer."""
    find, journal = service('rule "no" on C-FIND {\n  then reject "no queries"\n}\n', WL_NOWHERE)
    identifier = Dataset()
    identifier.AccessionNumber = ""
    responses = find.handle(LISTENER, Event(identifier))
    with caplog.at_level(logging.INFO, logger="rulesengine.find"):
        status, _ = next(responses)
        assert code(status) == 0xC124 and journal.results == {}  # handed over: nothing written yet
        responses.close()
    [result] = journal.results.values()
    assert result.outcome == "rejected" and result.status == 0xC124 and result.error == "no queries"
    [record] = caplog.records
    assert "C-FIND from CT1 (worklist): rejected, status 0xC124, 0 matches in " in record.getMessage()
    assert record.getMessage().endswith(": no queries") and record.levelno == logging.WARNING


@pytest.fixture
def worklist_folder(tmp_path):
    require("dump2dcm")
    for number in range(1, 6):
        dump = tmp_path / f"item{number}.dump"
        dump.write_text(ITEM.format(**worklist_item(number)), encoding="latin-1")
        dump2dcm(dump, tmp_path / f"item{number}.wl")
    return tmp_path


def worklist_identifier() -> Dataset:
    identifier = Dataset()
    identifier.AccessionNumber = ""
    return identifier


def test_a_worklist_folder_answers_and_is_read_once(worklist_folder):
    find, journal = service(ROUTE_WL, {"WL": WorklistDestination("WL", str(worklist_folder))})
    responses = answer(find, Event(worklist_identifier()))
    assert [code(s) for s, _ in responses] == [0xFF00] * 5 + [0x0000]
    folder = find.folder(WorklistDestination("WL", str(worklist_folder)))
    assert folder.reads == 5
    answer(find, Event(worklist_identifier()))
    assert folder.reads == 5  # the same folder, its files unchanged: not parsed again


def test_a_cancel_while_answering_from_a_worklist_folder_ends_with_fe00(worklist_folder):
    find, journal = service(ROUTE_WL, {"WL": WorklistDestination("WL", str(worklist_folder))})
    responses = answer(find, Event(worklist_identifier(), cancel_after=2))
    assert [code(s) for s, _ in responses] == [0xFF00, 0xFF00, 0xFE00]
    [result] = journal.results.values()
    assert result.outcome == "cancelled" and result.status == 0xFE00 and result.matches == 2


def test_a_worklist_folder_asked_a_study_query_is_that_destinations_failure(worklist_folder):
    find, journal = service(ROUTE_WL, {"WL": WorklistDestination("WL", str(worklist_folder))})
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    [(status, _)] = answer(find, Event(identifier, sop_class=STUDY_ROOT))
    assert code(status) == 0xC000 and status.ErrorComment.startswith("WL: a worklist folder answers")


def test_a_cancel_while_a_silent_pacs_is_asked_ends_promptly():
    """A peer that takes the connection and never answers: the requester's C-CANCEL ends the
    query long before the timeout."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        pacs = DicomDestination("PACS", "PACS", "127.0.0.1", silent.getsockname()[1])
        find, journal = service('rule "pacs" on C-FIND {\n  then route to PACS\n}\n', {"PACS": pacs})
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        event = Event(identifier, sop_class=STUDY_ROOT, cancel_after=0)
        started = time.monotonic()
        responses = answer(find, event)
        seconds = time.monotonic() - started
    finally:
        silent.close()
    assert [code(s) for s, _ in responses] == [0xFE00]
    assert seconds < LISTENER.timeouts.dimse / 2, f"{seconds:.2f} s"
    [result] = journal.results.values()
    assert result.outcome == "cancelled"


def test_a_worklist_folder_beside_a_provider_that_is_down_is_a_partial_result(worklist_folder):
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    port = down.getsockname()[1]
    down.close()  # nothing listens there now: the connection is refused
    destinations = {"WL": WorklistDestination("WL", str(worklist_folder)),
                    "RIS": DicomDestination("RIS", "RIS", "127.0.0.1", port)}
    find, journal = service('rule "both" on C-FIND {\n  then route to WL, RIS\n}\n', destinations)
    responses = answer(find, Event(worklist_identifier()))
    assert [code(s) for s, _ in responses] == [0xFF00] * 5 + [0xB000]
    assert responses[-1][0].ErrorComment.startswith("RIS: ")
    [result] = journal.results.values()
    assert result.outcome == "partial" and result.matches == 5
    assert [(a.destination, a.error is None) for a in result.answers] == [("WL", True), ("RIS", False)]
