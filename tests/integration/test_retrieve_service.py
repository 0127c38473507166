"""The router answering C-MOVE and C-GET as a proxy, against real peers: Orthanc is the PACS
(instances uploaded over its REST API, the router declared to it as a modality so that a
C-MOVE can reach it), DCMTK's storescp the move destinations, DCMTK's movescu and getscu the
requesters. The PACS is asked by C-MOVE to the router's own AE title or by C-GET, as each
destination's `retrieve` says; each retrieved instance goes through the store rules with the
facts of its retrieval (a research workstation gets a de-identified copy). Also: a move
destination the router does not know (0xA801), a rule that rejects (0xC124), a PACS that is
down (failure, promptly, with the reason), an identifier with a level its model does not
have (0xA900), and a C-CANCEL in the middle of a long C-MOVE (pynetdicom as the requester:
movescu cannot cancel). Each request is read back with `dicom-rules requests`."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from helpers.cli import dicom_rules
from helpers.instances import CT_SMALL, received_by_uid
from helpers.peers import Orthanc, RouterProcess, StoreSCP, free_port, require

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

rule "no retrievals from BAD" on C-MOVE, C-GET {
  when Association.CallingAET == "BAD"
  then reject "callers named BAD may not retrieve"
}

rule "other retrievals" on C-MOVE, C-GET {
  then route to PACS
}

rule "retrieved instances carry the site prefix" {
  when Source.Kind == "retrieve"
  then set DataSet.PatientID = "H1-" + DataSet.PatientID
}

rule "the research workstation sees no names" {
  when Retrieve.MoveDestination == "RESEARCH"
  then {
    set DataSet.PatientName = "ANONYMOUS"
    set DataSet.InstitutionName = "retrieved for " + Retrieve.Requester + " by " + Retrieve.Message
  }
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
    pacs = Orthanc(root / "orthanc", settings={
        "DicomModalities": {"ROUTER": ["ROUTER", "127.0.0.1", port]}, "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True}).start()
    study, uids = make_study(root / "study", STUDY_SIZE, "123")
    long_study, long_uids = make_study(root / "long", LONG_STUDY_SIZE, "456")
    upload(pacs, root / "study")
    upload(pacs, root / "long")
    ws1 = StoreSCP(root / "ws1", ae_title="WS1").start()
    research = StoreSCP(root / "research", ae_title="RESEARCH").start()
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, timeouts: {{dimse: 20}}}}
destinations:
  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {pacs.dicom_port}, calling_ae_title: ROUTER}}
  PACS_BY_GET: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {pacs.dicom_port}, retrieve: c-get}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {free_port()}}}
  WS1_STATION: {{type: dicom, ae_title: WS1, host: 127.0.0.1, port: {ws1.port}}}
  RESEARCH: {{type: dicom, ae_title: RESEARCH, host: 127.0.0.1, port: {research.port}}}
  OUT: {{type: folder, path: out}}
""")
    router = RouterProcess(root / "router.yaml", port).start()
    router.study, router.uids, router.long_study, router.long_uids = study, uids, long_study, long_uids
    router.ws1, router.research, router.pacs = ws1, research, pacs
    yield router
    router.stop()
    ws1.stop()
    research.stop()
    pacs.stop()


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
