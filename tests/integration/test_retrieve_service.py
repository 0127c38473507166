"""The router answering C-MOVE and C-GET as a proxy, against real peers: Orthanc is the PACS
(instances uploaded over its REST API, the router declared to it as a modality so that a
C-MOVE can reach it), DCMTK's storescp the move destinations, DCMTK's movescu and getscu the
requesters. The PACS is asked by C-MOVE to the router's own AE title or by C-GET, as each
destination's `retrieve` says; each retrieved instance goes through the store rules with the
facts of its retrieval (a research workstation gets a de-identified copy). Also: a move
destination the router does not know (0xA801), a rule that rejects (0xC124), a PACS that is
down (failure, promptly, with the reason), an identifier with a level its model does not
have (0xA900), and a C-CANCEL in the middle of a long C-MOVE (pynetdicom as the requester:
movescu cannot cancel). Each request is read back with `dicom-rules requests`.

A second Orthanc (CLIENT) retrieves through the router with its REST API, by C-MOVE and by
query then retrieve. Bad input and slow sources, with pynetdicom as the requester: a source
that takes the connection and never answers, one that holds the C-MOVE (helpers/
retrieve_source.py), an identifier that cannot be decoded, an unknown level of the Patient
Root model, a listener whose services leave out move and get, an instance a store rule
rejects, and a source whose sub-operations fail part-way."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import (PatientRootQueryRetrieveInformationModelMove,
                                  StudyRootQueryRetrieveInformationModelGet,
                                  StudyRootQueryRetrieveInformationModelMove, Verification)

from helpers.cli import dicom_rules
from helpers.instances import CT_SMALL, received_by_uid
from helpers.peers import Orthanc, RouterProcess, StoreSCP, free_port, require
from helpers.retrieve_source import RetrieveSource
from rulesengine.runtime.pynetdicom_setup import tune_connection

STUDY_SIZE = 5
LONG_STUDY_SIZE = 40

RULES = """
rule "H1 retrievals" on C-MOVE, C-GET {
  when DataSet.PatientID startswith "H1-"
  then {
    set DataSet.PatientID = replace(DataSet.PatientID, /^H1-/, "")
    route to PACS
    stop
  }
}

rule "getters retrieve by C-GET" on C-MOVE, C-GET {
  when Association.CallingAET == "GETTER"
  then {
    route to PACS_BY_GET
    stop
  }
}

rule "the PACS that is down" on C-MOVE, C-GET {
  when Association.CallingAET == "LONELY"
  then {
    route to DOWN
    stop
  }
}

rule "the PACS that is down, then the one that answers" on C-MOVE {
  when Association.CallingAET == "PATIENT"
  then {
    route to DOWN, PACS
    stop
  }
}

rule "a source that accepts the connection and never answers" on C-MOVE, C-GET {
  when Association.CallingAET == "HUSH"
  then {
    route to SILENT
    stop
  }
}

rule "a source that never answers the C-MOVE" on C-MOVE, C-GET {
  when Association.CallingAET == "WAITER"
  then {
    route to HELD
    stop
  }
}

rule "a source that never answers the C-GET" on C-MOVE, C-GET {
  when Association.CallingAET == "GETWAITER"
  then {
    route to HELD_BY_GET
    stop
  }
}

rule "a source that fails part-way" on C-MOVE, C-GET {
  when Association.CallingAET == "SPLIT"
  then {
    route to PARTIAL_SOURCE
    stop
  }
}

rule "a source that fails part-way, asked by C-GET" on C-MOVE, C-GET {
  when Association.CallingAET == "SPLITGET"
  then {
    route to PARTIAL_BY_GET
    stop
  }
}

rule "a source that goes silent part-way" on C-MOVE, C-GET {
  when Association.CallingAET == "STALLED"
  then {
    route to STALLING
    stop
  }
}

rule "no retrievals from BAD" on C-MOVE, C-GET {
  when Association.CallingAET == "BAD"
  then reject "callers named BAD may not retrieve"
}

rule "other retrievals" on C-MOVE, C-GET {
  then route to PACS
}

rule "queries" on C-FIND {
  then route to PACS
}

rule "retrieved instances carry the site prefix" {
  when Source.Kind == "retrieve" and missing CommandSet.CommandField  # the source's C-STORE is not theirs
  then set DataSet.PatientID = "H1-" + DataSet.PatientID
}

rule "the research workstation sees no names" {
  when Retrieve.MoveDestination == "RESEARCH"
  then {
    set DataSet.PatientName = "ANONYMOUS"
    set DataSet.InstitutionName = "retrieved for " + Retrieve.Requester + " by " + Retrieve.Message
  }
}

rule "PICKY may not have the second instance" {
  when Retrieve.Requester == "PICKY" and DataSet.InstanceNumber == 2
  then reject "the second instance is withheld"
}

rule "instances" {
  when Source.Kind != "retrieve"
  then route to OUT
}
"""


def make_study(folder: Path, count: int, patient_id: str) -> tuple[str, list[str]]:
    """`count` instances of one new study of patient `patient_id`: its Study Instance UID and theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = pydicom.dcmread(CT_SMALL)
    dataset.PatientID, dataset.PatientName = patient_id, "DOE^JANE"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    uids = []
    for number in range(1, count + 1):
        uid = generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = uid
        dataset.InstanceNumber = number
        dataset.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)
        uids.append(uid)
    return str(dataset.StudyInstanceUID), uids


def upload(orthanc: Orthanc, folder: Path) -> None:
    for path in sorted(folder.glob("*.dcm")):
        request = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/instances", data=path.read_bytes(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The router in front of Orthanc (PACS, asked by C-MOVE; PACS_BY_GET, the same Orthanc
    asked by C-GET) and a port where nothing listens (DOWN); storescp as the workstations
    WS1 and RESEARCH."""
    require("movescu")
    root = tmp_path_factory.mktemp("retrieve")
    port = free_port()
    held = RetrieveSource(port, hold=True, ae_title="HELD")
    partial = RetrieveSource(port, fail=1, ae_title="PARTIAL")
    stalling = RetrieveSource(port, count=4, stall_after=2, ae_title="STALLING")
    pacs = Orthanc(root / "orthanc", settings={
        "DicomModalities": {"ROUTER": ["ROUTER", "127.0.0.1", port]}, "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True}).start()
    study, uids = make_study(root / "study", STUDY_SIZE, "123")
    long_study, long_uids = make_study(root / "long", LONG_STUDY_SIZE, "456")
    upload(pacs, root / "study")
    upload(pacs, root / "long")
    ws1 = StoreSCP(root / "ws1", ae_title="WS1").start()
    research = StoreSCP(root / "research", ae_title="RESEARCH").start()
    client_port = free_port()  # the second Orthanc, a client of the router (started by `client`)
    silent = socket.socket()  # takes connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    store_only_port = free_port()
    quick = "{connect: 1, acse: 1.5, dimse: 2, network: 2}"
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, timeouts: {{dimse: 20}}}}
  - {{name: store-only, ae_title: ROUTER, port: {store_only_port}, services: [echo, store, find]}}
destinations:
  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {pacs.dicom_port}, calling_ae_title: ROUTER}}
  PACS_BY_GET: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {pacs.dicom_port}, retrieve: c-get}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {free_port()}}}
  WS1_STATION: {{type: dicom, ae_title: WS1, host: 127.0.0.1, port: {ws1.port}}}
  RESEARCH: {{type: dicom, ae_title: RESEARCH, host: 127.0.0.1, port: {research.port}}}
  CLIENT_VIEWER: {{type: dicom, ae_title: CLIENT, host: 127.0.0.1, port: {client_port}}}
  SILENT: {{type: dicom, ae_title: SILENT, host: 127.0.0.1, port: {silent.getsockname()[1]}, timeouts: {quick}}}
  HELD: {{type: dicom, ae_title: HELD, host: 127.0.0.1, port: {held.port}, timeouts: {quick}}}
  PARTIAL_SOURCE: {{type: dicom, ae_title: PARTIAL, host: 127.0.0.1, port: {partial.port}, timeouts: {quick}}}
  HELD_BY_GET: {{type: dicom, ae_title: HELD, host: 127.0.0.1, port: {held.port}, retrieve: c-get, timeouts: {quick}}}
  STALLING: {{type: dicom, ae_title: STALLING, host: 127.0.0.1, port: {stalling.port}, timeouts: {quick}}}
  PARTIAL_BY_GET: {{type: dicom, ae_title: PARTIAL, host: 127.0.0.1, port: {partial.port}, retrieve: c-get,
                   timeouts: {quick}}}
  OUT: {{type: folder, path: out}}
""")
    router = RouterProcess(root / "router.yaml", port).start()
    router.study, router.uids, router.long_study, router.long_uids = study, uids, long_study, long_uids
    router.ws1, router.research, router.pacs, router.client_port = ws1, research, pacs, client_port
    router.held, router.partial, router.stalling, router.store_only_port = held, partial, stalling, store_only_port
    yield router
    # The sources first: a held one keeps an association with the router open, and the
    # router's process ends only once its associations have.
    held.stop()
    partial.stop()
    stalling.stop()
    router.stop()
    silent.close()
    ws1.stop()
    research.stop()
    pacs.stop()


@pytest.fixture(scope="module")
def client(site, tmp_path_factory):
    """A second Orthanc (AE title CLIENT) that knows the router as a modality and is itself
    the router's destination CLIENT_VIEWER: it retrieves through the router with its REST API."""
    orthanc = Orthanc(tmp_path_factory.mktemp("client"), ae_title="CLIENT", dicom_port=site.client_port, settings={
        "DicomModalities": {"ROUTER": ["ROUTER", "127.0.0.1", site.port]}}).start()
    yield orthanc
    orthanc.stop()


def rest(orthanc: Orthanc, method: str, path: str, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def empty(orthanc: Orthanc) -> None:
    for instance in orthanc.get("/instances"):
        rest(orthanc, "DELETE", f"/instances/{instance}")


def dcmtk(router: RouterProcess, tool: str, calling: str, *args: str, keys=()):
    out = router.config.parent / f"{tool}-{time.time_ns()}"
    out.mkdir()
    command = [require(tool), "-d", "-S", "-aet", calling, "-aec", "ROUTER", *args]
    for key in keys:
        command += ["-k", key]
    if tool == "getscu":
        command += ["-od", str(out)]
    started = time.monotonic()
    result = subprocess.run([*command, "127.0.0.1", str(router.port)], capture_output=True, text=True, timeout=120,
                            cwd=out)
    result.seconds = time.monotonic() - started
    result.folder = out
    result.text = result.stdout + result.stderr
    return result


def final_status(result) -> int:
    statuses = re.findall(r"DIMSE Status +: 0x([0-9a-f]{4})", result.text)
    assert statuses, result.text
    return int(statuses[-1], 16)


def study_keys(study: str) -> tuple[str, ...]:
    return ("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")


def test_a_c_move_of_a_study_reaches_the_move_destination_through_the_store_rules(site):
    before = set(received_by_uid(site.ws1.folder))
    result = dcmtk(site, "movescu", "VIEWER", "-aem", "WS1", keys=study_keys(site.study))
    assert final_status(result) == 0x0000, result.text
    received = {uid: ds for uid, ds in received_by_uid(site.ws1.folder).items() if uid not in before}
    assert sorted(received) == sorted(site.uids)
    assert {str(ds.PatientID) for ds in received.values()} == {"H1-123"}
    assert {str(ds.PatientName) for ds in received.values()} == {"DOE^JANE"}
    assert "Number of Completed Sub-operations : 5" in result.text or "Completed Suboperations : 5" in result.text \
        or re.search(r"Completed.*: *5", result.text), result.text


def test_the_research_workstation_gets_a_de_identified_copy_by_rule(site):
    result = dcmtk(site, "movescu", "VIEWER", "-aem", "RESEARCH", keys=study_keys(site.study))
    assert final_status(result) == 0x0000, result.text
    received = {uid: ds for uid, ds in received_by_uid(site.research.folder).items() if uid in site.uids}
    assert sorted(received) == sorted(site.uids)
    assert {str(ds.PatientName) for ds in received.values()} == {"ANONYMOUS"}
    assert {str(ds.InstitutionName) for ds in received.values()} == {"retrieved for VIEWER by C-MOVE"}


@pytest.mark.parametrize("calling", ["GETTER", "VIEWER"])
def test_a_c_get_returns_the_instances_on_the_same_association(site, calling):
    """GETTER's rules retrieve by C-GET from the PACS, VIEWER's by C-MOVE to the router."""
    result = dcmtk(site, "getscu", calling, keys=study_keys(site.study))
    assert final_status(result) == 0x0000, result.text
    received = received_by_uid(result.folder)
    assert sorted(received) == sorted(site.uids)
    assert {str(ds.PatientID) for ds in received.values()} == {"H1-123"}


def test_the_requester_gets_one_pending_response_per_instance(site):
    """The source's own pending response after each instance tells nothing new: not passed on.
    The source's next instance may overtake its pending response for the one before (two
    associations, two threads): one pending response then counts both, so the counts rise
    without repeating rather than by exactly one."""
    responses = pynetdicom_move(site.port, "VIEWER", study_identifier(site.study))
    pending = [int(status.NumberOfCompletedSuboperations) for status, _ in responses if status.Status == 0xFF00]
    assert pending == sorted(set(pending)), pending
    assert pending and pending[-1] == STUDY_SIZE, pending
    assert responses[-1][0].Status == 0x0000


def test_a_move_destination_the_router_does_not_know_is_0xa801(site):
    result = dcmtk(site, "movescu", "VIEWER", "-aem", "NOBODY", keys=study_keys(site.study))
    assert final_status(result) == 0xA801, result.text
    assert "move destination NOBODY is not a configured destination" in result.text


def test_a_rule_rejects_a_retrieval(site):
    result = dcmtk(site, "movescu", "BAD", "-aem", "WS1", keys=study_keys(site.study))
    assert final_status(result) == 0xC124, result.text
    assert "callers named BAD may not retrieve" in result.text


def test_a_pacs_that_is_down_fails_promptly_with_the_reason(site):
    result = dcmtk(site, "movescu", "LONELY", "-aem", "WS1", keys=study_keys(site.study))
    assert final_status(result) == 0xC000, result.text
    assert "DOWN: connection refused" in result.text
    assert result.seconds < 15, result.seconds


def test_a_source_that_is_down_hands_over_to_the_next(site):
    result = dcmtk(site, "movescu", "PATIENT", "-aem", "WS1", keys=study_keys(site.study))
    assert final_status(result) == 0x0000, result.text


def test_a_level_the_model_does_not_have_is_0xa900(site):
    result = dcmtk(site, "movescu", "VIEWER", "-aem", "WS1", keys=("QueryRetrieveLevel=PATIENT",
                                                                    f"StudyInstanceUID={site.study}"))
    assert final_status(result) == 0xA900, result.text
    assert "QueryRetrieveLevel PATIENT is not one of STUDY, SERIES, IMAGE" in result.text


def test_a_c_cancel_during_a_long_c_move_ends_it_with_0xfe00(site):
    """movescu cannot send a C-CANCEL: pynetdicom is the requester."""
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", site.port, ae_title="ROUTER")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = site.long_study
    statuses = []
    try:
        for status, _identifier in assoc.send_c_move(identifier, "WS1", StudyRootQueryRetrieveInformationModelMove,
                                                     msg_id=7):
            statuses.append(status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelMove)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00, statuses
    assert final.NumberOfCompletedSuboperations < LONG_STUDY_SIZE


def test_each_retrieval_is_in_the_journal(site):
    listing = dicom_rules("requests", site.config, "--format", "json", cwd=site.config.parent)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    moves = [row for row in rows if row["message"] == "C-MOVE"]
    assert any(row["move_destination"] == "WS1" and row["result"]["completed"] == STUDY_SIZE
               and row["result"]["outcome"] == "answered" and row["from"]["calling_aet"] == "VIEWER"
               and row["level"] == "STUDY" and row["result"]["destinations"][0]["destination"] == "PACS"
               for row in moves), moves
    assert any(row["move_destination"] == "NOBODY" and row["result"]["status"] == 0xA801 for row in moves), moves
    assert any(row["from"]["calling_aet"] == "BAD" and row["result"]["outcome"] == "rejected" for row in moves), moves
    cancelled = [row for row in moves if row["result"]["outcome"] == "cancelled"]
    assert cancelled and cancelled[0]["result"]["status"] == 0xFE00, moves
    gets = [row for row in rows if row["message"] == "C-GET"]
    assert {row["result"]["destinations"][0]["destination"] for row in gets} == {"PACS", "PACS_BY_GET"}, gets
    assert all(row["result"]["completed"] == STUDY_SIZE for row in gets), gets


def test_orthanc_moves_a_study_through_the_router_to_itself(site, client):
    empty(client)
    rest(client, "POST", "/modalities/ROUTER/move", {
        "Level": "Study", "Resources": [{"StudyInstanceUID": site.study}], "TargetAet": "CLIENT",
        "Synchronous": True})
    received = {str(tags["SOPInstanceUID"]): tags for tags in client.instances()}
    assert sorted(received) == sorted(site.uids)
    assert {tags["PatientID"] for tags in received.values()} == {"H1-123"}  # the store rules' edit


def test_orthanc_queries_through_the_router_then_retrieves_the_answer(site, client):
    empty(client)
    query = rest(client, "POST", "/modalities/ROUTER/query", {
        "Level": "Study", "Query": {"StudyInstanceUID": site.study, "PatientID": ""}})
    answers = rest(client, "GET", f"/queries/{query['ID']}/answers?expand")
    assert [answer["0020,000d"]["Value"] for answer in answers] == [site.study], answers
    rest(client, "POST", f"/queries/{query['ID']}/retrieve", {"TargetAet": "CLIENT", "Synchronous": True})
    received = {str(tags["SOPInstanceUID"]): tags for tags in client.instances()}
    assert sorted(received) == sorted(site.uids)
    assert {tags["PatientID"] for tags in received.values()} == {"H1-123"}


# ---- bad input and slow sources ----


def pynetdicom_move(port: int, calling: str, identifier: Dataset | bytes, destination: str = "WS1",
                    model=StudyRootQueryRetrieveInformationModelMove) -> list[tuple[Dataset, Dataset | None]]:
    """A C-MOVE with pynetdicom: its responses, (status, identifier). Bytes are sent as the
    identifier as they are (implicit VR little endian), whether they decode or not."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(model, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.dimse_timeout = 20
    # the router's own fix of pynetdicom's reactor race: the C-ECHO right after the C-MOVE would
    # otherwise now and then lose its answer to the association's reactor
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER", evt_handlers=[(evt.EVT_CONN_OPEN, tune_connection)])
    assert assoc.is_established
    try:
        if isinstance(identifier, Dataset):
            responses = list(assoc.send_c_move(identifier, destination, model, msg_id=3))
        else:
            request = C_MOVE()
            request.MessageID, request.AffectedSOPClassUID, request.Priority = 3, model, 2
            request.MoveDestination = destination
            request.Identifier = BytesIO(identifier)
            assoc._reactor_checkpoint.clear()  # as pynetdicom's own requests do: its reactor leaves the answers
            while not assoc._is_paused:
                time.sleep(0.001)
            assoc.dimse.send_msg(request, assoc._get_valid_context(model, "", "scu").context_id)
            responses = []
            while True:
                _context, response = assoc.dimse.get_msg(block=True)
                assert response is not None, "no answer within the DIMSE timeout"
                identifier = None
                if response.Identifier is not None:
                    identifier = decode(response.Identifier, True, True, False)
                status = Dataset()
                for keyword in ("Status", "ErrorComment", "NumberOfCompletedSuboperations",
                                "NumberOfFailedSuboperations"):
                    if getattr(response, keyword, None) is not None:
                        setattr(status, keyword, getattr(response, keyword))
                responses.append((status, identifier))
                if status.Status not in (0xFF00, 0xFF01):
                    break
            assoc._reactor_checkpoint.set()
        assert assoc.send_c_echo().Status == 0x0000  # the listener serves the association still
    finally:
        assoc.release()
    return responses


def failed_uids(identifier: Dataset) -> list[str]:
    value = identifier.FailedSOPInstanceUIDList  # one UID: pydicom gives a str
    return [value] if isinstance(value, str) else list(value)


def study_identifier(study: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    return identifier


def test_a_source_that_takes_the_connection_and_never_answers_fails_within_its_timeouts(site):
    started = time.monotonic()
    [(final, _)] = pynetdicom_move(site.port, "HUSH", study_identifier(site.study))
    seconds = time.monotonic() - started
    assert final.Status == 0xC000, final
    assert final.ErrorComment.startswith("SILENT: "), final
    assert seconds < 1.5 + 2, f"{seconds:.1f} s: the source's acse timeout is 1.5 s"


@pytest.mark.parametrize("calling, source", [("WAITER", "HELD"), ("GETWAITER", "HELD_BY_GET")])
def test_a_source_that_never_answers_the_request_fails_after_its_dimse_timeout(site, calling, source):
    """The source accepts the association and holds the C-MOVE (WAITER's rules) or the C-GET
    (GETWAITER's): the listener's thread comes back after the source's dimse timeout (2 s)
    with the failure, and serves the association."""
    started = time.monotonic()
    [(final, _)] = pynetdicom_move(site.port, calling, study_identifier(site.study))
    seconds = time.monotonic() - started
    assert final.Status == 0xC000, final
    assert final.ErrorComment == f"{source}: no answer within 2 s", final
    assert 2 <= seconds < 2 + 2, f"{seconds:.1f} s"
    assert site.held.requests, "the C-MOVE never reached the source"


def test_an_identifier_that_cannot_be_decoded_is_0xa900_with_the_reason(site):
    # (0040,0100) of undefined length, whose item is cut short
    [(final, _)] = pynetdicom_move(site.port, "VIEWER", b"\x40\x00\x00\x01\xff\xff\xff\xff" + b"garbage!" * 2)
    assert final.Status == 0xA900, final
    assert "cannot be decoded" in final.ErrorComment, final


def test_an_unknown_level_of_the_patient_root_model_is_0xa900(site):
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "FRAME"
    identifier.PatientID = "123"
    [(final, _)] = pynetdicom_move(site.port, "VIEWER", identifier,
                                   model=PatientRootQueryRetrieveInformationModelMove)
    assert final.Status == 0xA900, final
    assert "QueryRetrieveLevel FRAME" in final.ErrorComment, final


def test_a_listener_without_move_and_get_refuses_them_with_the_reason_in_the_log(site):
    ae = AE(ae_title="NOMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", site.store_only_port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
    finally:
        assoc.release()
    assert accepted == {Verification}
    site.wait_for_log("listener store-only: association from NOMOVE")
    line = next(line for line in site.output().splitlines() if "association from NOMOVE" in line)
    assert "refused 2 presentation context(s)" in line, line
    assert line.count("a service this listener does not offer (services: echo, store, find)") == 2, line


def test_an_instance_a_store_rule_rejects_is_a_failed_sub_operation(site):
    responses = pynetdicom_move(site.port, "PICKY", study_identifier(site.study))
    final, identifier = responses[-1]
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (STUDY_SIZE - 1, 1)
    assert failed_uids(identifier) == [site.uids[1]]  # instance number 2
    assert "the second instance is withheld" in site.output()


@pytest.mark.parametrize("calling", ["SPLIT", "SPLITGET"])
def test_a_source_that_fails_part_way_is_0xb000_with_the_counts(site, calling):
    """SPLIT's rules retrieve by C-MOVE (pynetdicom's SCP names itself the Move Originator),
    SPLITGET's by C-GET: one instance of three cannot be sent by the source."""
    responses = pynetdicom_move(site.port, calling, study_identifier(site.study))
    final, identifier = responses[-1]
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1), final
    assert failed_uids(identifier) == site.partial.failing_uids
    assert "1 of 3 sub-operations failed" in final.ErrorComment, final
    received = received_by_uid(site.ws1.folder)
    assert all(str(instance.SOPInstanceUID) in received for instance in site.partial.instances[:2])


def test_a_source_that_goes_silent_part_way_leaves_the_rest_failed(site):
    """Two instances of four, then nothing: after the source's dimse timeout (2 s) the
    requester is told 2 completed and 2 failed, never a success."""
    started = time.monotonic()
    responses = pynetdicom_move(site.port, "STALLED", study_identifier(site.study))
    seconds = time.monotonic() - started
    final, _identifier = responses[-1]
    assert final.Status == 0xB000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 2), final
    assert "2 of 4 sub-operations failed; STALLING: no answer within 2 s" in final.ErrorComment, final
    assert seconds < 2 + 2, f"{seconds:.1f} s"
