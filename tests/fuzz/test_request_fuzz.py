"""Requests fuzzed: the data sets of the campaign's mutants (the same seeded generator,
mutate.py) sent over the network as the identifier of a C-FIND, a C-MOVE and a C-GET and as
the attribute list of an MPPS N-CREATE, raw, as a broken requester would send them. The
router runs its rules on what it can decode and forwards it (C-FIND to a pynetdicom SCP that
answers one match, the others to a port where nothing listens, which fails at once).

Every request must get a final status (a decoding failure is 0xA900 or 0x0106, never an
aborted association), the router must log no internal error, and a well-formed request
must be answered normally afterwards. (An empty data set is not sent: pynetdicom would
announce an identifier and send none, a stalled message left to the network timeout.)"""

from __future__ import annotations

import re
import time
from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, N_CREATE
from pynetdicom.sop_class import (ModalityPerformedProcedureStep, StudyRootQueryRetrieveInformationModelFind,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove)
from pydicom.uid import generate_uid

from helpers.find_peer import FindPeer, study
from helpers.peers import RouterProcess, free_port

from . import mutate

SEED = 6
COUNT = 90  # 6 of each kind of mutation, each sent as four requests
# pydicom's opinion of the values the mutants hold, as the responses echo them: not the test's
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
PENDING = (0xFF00, 0xFF01)
SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
REQUESTS = {
    "C-FIND": StudyRootQueryRetrieveInformationModelFind,
    "C-MOVE": StudyRootQueryRetrieveInformationModelMove,
    "C-GET": StudyRootQueryRetrieveInformationModelGet,
    "N-CREATE": ModalityPerformedProcedureStep,
}

RULES = """
rule "queries" on C-FIND {
  then route to PACS
}

rule "retrievals and steps" on C-MOVE, C-GET, N-CREATE {
  then route to DOWN
}

rule "instances" {
  then route to DOWN
}
"""


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    root = tmp_path_factory.mktemp("request-fuzz")
    peer = FindPeer(matches=[study("1.2.3.4")], ae_title="PACS")
    port = free_port()
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, timeouts: {{dimse: 10}}}}
destinations:
  PACS: {{type: dicom, ae_title: PACS, host: 127.0.0.1, port: {peer.port}}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {free_port()}}}
  WS1: {{type: dicom, ae_title: WS1, host: 127.0.0.1, port: {free_port()}}}
""")
    process = RouterProcess(root / "router.yaml", port).start()
    yield process
    process.stop()
    peer.stop()


def _requester(port: int):
    ae = AE(ae_title="FUZZER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in REQUESTS.values():
        for syntax in SYNTAXES:  # one context each: the router accepts one syntax per context
            ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    return assoc


def _pause(assoc) -> None:
    """Stop the association's reactor from taking the responses this test reads itself
    (as pynetdicom's own send_* methods do)."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)


def _resume(assoc) -> None:
    assoc._reactor_checkpoint.set()


def _request(message: str, message_id: int, data: bytes):
    sop_class = REQUESTS[message]
    if message == "N-CREATE":
        request = N_CREATE()
        request.AffectedSOPInstanceUID = generate_uid()
        request.AttributeList = BytesIO(data)
    else:
        request = {"C-FIND": C_FIND, "C-MOVE": C_MOVE, "C-GET": C_GET}[message]()
        request.Priority = 2
        request.Identifier = BytesIO(data)
        if message == "C-MOVE":
            request.MoveDestination = "WS1"
    request.MessageID = message_id
    request.AffectedSOPClassUID = sop_class
    return request


def _with_level(data: bytes, syntax: str) -> bytes:
    """The data set with QueryRetrieveLevel STUDY before it (out of order, as a careless
    requester writes it), so that the rules and the forwarding see what decodes."""
    if syntax == ImplicitVRLittleEndian:
        return b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY " + data
    if syntax == ExplicitVRBigEndian:
        return b"\x00\x08\x00\x52CS\x00\x06STUDY " + data
    return b"\x08\x00\x52\x00CS\x06\x00STUDY " + data


def _context_id(assoc, sop_class: str, syntax: str) -> int:
    wanted = syntax if syntax in SYNTAXES else ExplicitVRLittleEndian  # compressed: the data set is explicit LE
    for context in assoc.accepted_contexts:
        if context.abstract_syntax == sop_class and context.transfer_syntax[0] == wanted:
            return context.context_id
    raise AssertionError(f"no context for {sop_class} in {wanted}")


def _final_status(assoc, timeout: float = 30) -> int | None:
    """Read responses until the final one; its status, None when the association ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not assoc.is_established:
            return None
        _context, response = assoc.dimse.get_msg(block=True)
        if response is None:
            continue
        status = getattr(response, "Status", None)
        if status is not None and status not in PENDING:
            return int(status)
    return None


@pytest.fixture(scope="module")
def answers(router):
    """(message, mutant kind, final status or None) for every request sent."""
    found = []
    assoc = _requester(router.port)
    _pause(assoc)
    message_id = 0
    try:
        for item in mutate.mutants(SEED, COUNT):
            # An empty data set would be a request announcing an identifier it never sends: the
            # router waits for it until the network timeout, as for any stalled message.
            if item.network is None or not item.network.dataset:
                continue
            for message in REQUESTS:
                message_id += 1
                if not assoc.is_established:
                    assoc = _requester(router.port)
                    _pause(assoc)
                context_id = _context_id(assoc, REQUESTS[message], item.network.syntax)
                data = item.network.dataset
                if item.number % 2 and message != "N-CREATE":
                    data = _with_level(data, item.network.syntax)
                assoc.dimse.send_msg(_request(message, message_id, data), context_id)
                found.append((message, item.kind, _final_status(assoc)))
    finally:
        _resume(assoc)
        if assoc.is_established:
            assoc.release()
    return found


def test_every_request_gets_a_final_status(answers):
    unanswered = [(message, kind) for message, kind, status in answers if status is None]
    assert answers and not unanswered, unanswered


def test_undecodable_requests_are_told_so_and_the_rest_are_answered(answers):
    statuses = {status for _message, _kind, status in answers}
    # decodable C-FINDs are answered by the peer; the others fail at DOWN or at decoding
    assert any(message == "C-FIND" and status == 0x0000 for message, _kind, status in answers)
    assert any(message == "C-MOVE" and status == 0xA900 for message, _kind, status in answers)
    assert any(message == "N-CREATE" and status == 0x0106 for message, _kind, status in answers)
    assert statuses <= {0x0000, 0xA900, 0xC000, 0xC124, 0x0106, 0x0110, 0x0124, 0x0213, 0xB000}, statuses


def test_no_internal_error_and_a_normal_query_is_answered_afterwards(router, answers):
    log = router.output()
    assert "Traceback" not in log and "internal error" not in log, log[-5000:]
    assert router.process.poll() is None
    assoc = _requester(router.port)
    try:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = ""
        responses = list(assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert [int(status.Status) for status, _ in responses] == [0xFF00, 0x0000]
    assert len(re.findall(r"C-FIND from FUZZER", log)) >= COUNT // 2
