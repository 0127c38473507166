"""Orthanc as a requester through the router: one Orthanc (the viewer's) has the router
declared as a modality and asks it over its REST API (`/modalities/ROUTER/query`); the
router takes the site's patient ID prefix off, forwards the query to a second Orthanc (the
PACS, filled over REST) and puts the prefix back on each answer. A query the rules reject is
a failure of the REST call. Each request is read back with `dicom-rules requests`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from helpers.cli import dicom_rules
from helpers.files import SAMPLES
from helpers.peers import Orthanc, RouterProcess, free_port

CT_CHEST_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # patient 123456, DOE^JOHN

RULES = """
rule "no queries for a withheld patient" on C-FIND {
  when DataSet.PatientID == "H1-WITHHELD"
  then reject "this patient is withheld from queries"
}

rule "H1 studies" on C-FIND {
  when Association.CallingAET == "VIEWER" and DataSet.PatientID startswith "H1-"
  then {
    set DataSet.PatientID = replace(DataSet.PatientID, /^H1-/, "")
    route to PACS
    on response {
      if exists DataSet.PatientID {
        set DataSet.PatientID = "H1-" + DataSet.PatientID
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The PACS (Orthanc, holding two studies), the router in front of it, and the viewer's
    Orthanc, which knows the router as the modality ROUTER."""
    root = tmp_path_factory.mktemp("orthanc-requester")
    pacs = Orthanc(root / "pacs", settings={"DicomAlwaysAllowFind": True}).start()
    for name in ("ct_head.dcm", "ct_chest.dcm"):
        request = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}/instances",
                                         data=(SAMPLES / name).read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
    port = free_port()
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
destinations:
  PACS: {{type: dicom, ae_title: {pacs.ae_title}, host: 127.0.0.1, port: {pacs.dicom_port}}}
""")
    router = RouterProcess(root / "router.yaml", port).start()
    viewer = Orthanc(root / "viewer", ae_title="VIEWER",
                     settings={"DicomModalities": {"ROUTER": ["ROUTER", "127.0.0.1", port]}}).start()
    yield viewer, router
    viewer.stop()
    router.stop()
    pacs.stop()


def query_through_the_router(viewer: Orthanc, patient_id: str) -> tuple[int, dict]:
    """Orthanc's own C-FIND at the modality ROUTER: (HTTP status, the JSON it answered)."""
    body = json.dumps({"Level": "Study", "Query": {"PatientID": patient_id, "StudyInstanceUID": ""}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{viewer.http_port}/modalities/ROUTER/query", data=body,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def last_request(router: RouterProcess) -> dict:
    result = dicom_rules("requests", router.config, "--format", "json", "--limit", "1", cwd=router.config.parent)
    assert result.returncode == 0, result.stderr
    [request] = json.loads(result.stdout)
    return request


def test_orthanc_asks_through_the_router_and_reads_the_answers_with_the_prefix(site):
    viewer, router = site
    status, answer = query_through_the_router(viewer, "H1-123456")
    assert status == 200, answer
    answers = viewer.get(f"/queries/{answer['ID']}/answers?expand&simplify")
    assert [(a["PatientID"], a["StudyInstanceUID"]) for a in answers] == [("H1-123456", CT_CHEST_STUDY)]
    request = last_request(router)
    assert request["from"]["calling_aet"] == "VIEWER"
    assert request["matching_keys"]["PatientID"] == "H1-123456"  # as it arrived, before the rules
    assert request["result"]["outcome"] == "answered" and request["result"]["matches"] == 1
    assert [(d["destination"], d["status"], d["matches"]) for d in request["result"]["destinations"]] == \
        [("PACS", 0, 1)]


def test_a_patient_the_pacs_does_not_hold_is_no_answers(site):
    viewer, router = site
    status, answer = query_through_the_router(viewer, "H1-NOBODY")
    assert status == 200, answer
    assert viewer.get(f"/queries/{answer['ID']}/answers") == []
    assert last_request(router)["result"]["outcome"] == "answered"


def test_a_query_the_rules_reject_is_a_failure_of_orthancs_call(site):
    viewer, router = site
    status, answer = query_through_the_router(viewer, "H1-WITHHELD")
    assert status >= 400
    assert "0xC124" in answer["Details"], answer
    request = last_request(router)
    assert request["result"]["outcome"] == "rejected" and request["result"]["status"] == 0xC124
    assert request["result"]["error"] == "this patient is withheld from queries"
