"""The router answering C-FIND through its rules, asked by DCMTK's findscu: a worklist folder
destination filtered by the caller, the same kind of query forwarded to DCMTK's wlmscpfs, a
study query forwarded to Orthanc with the patient ID prefix taken off and put back, a query
a rule rejects, an `on response` edit that fails, a PACS that is down (alone, and beside one
that answers), and a listener whose services leave C-FIND out. Each request is then read back
with `dicom-rules requests`."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from helpers.cli import dicom_rules
from helpers.files import SAMPLES
from helpers.peers import Orthanc, RouterProcess, dump2dcm, free_port, require
from helpers.wlmscpfs import ITEM, worklist_item, worklist_provider

LISTENER_TIMEOUT = 20  # the listener's timeouts.dimse: how long a query may wait for its destinations

RULES = """
rule "CT1 reads its own worklist" on C-FIND {
  when Association.CallingAET == "CT1"
  then {
    route to WL
    on response {
      if DataSet.ScheduledProcedureStepSequence[1].ScheduledStationAETitle != "CT1" {
        drop
      }
    }
  }
}

rule "CT2 asks the RIS" on C-FIND {
  when Association.CallingAET == "CT2"
  then route to RIS
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

rule "the PACS that is down" on C-FIND {
  when Association.CallingAET == "LONELY"
  then route to DOWN
}

rule "both PACS" on C-FIND {
  when Association.CallingAET == "BOTH"
  then route to PACS, DOWN
}

rule "a response edit that fails" on C-FIND {
  when Association.CallingAET == "BROKEN"
  then {
    route to PACS
    on response {
      set DataSet.StudyDate = DataSet.PatientID
    }
  }
}

rule "no queries from BAD" on C-FIND {
  when Association.CallingAET == "BAD"
  then reject "callers named BAD may not query"
}

rule "instances" {
  then route to OUT
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The router, in front of a worklist folder, wlmscpfs (RIS), Orthanc (PACS) and a port
    where nothing listens (DOWN); a second listener offers only C-ECHO and C-STORE."""
    require("findscu")
    root = tmp_path_factory.mktemp("find")
    folder = root / "worklists"
    folder.mkdir()
    for number, station in ((1, "CT1"), (2, "MR1"), (3, "CT1")):
        dump = root / f"item{number}.dump"
        dump.write_text(ITEM.format(**worklist_item(number, ScheduledStationAETitle=station)), encoding="latin-1")
        dump2dcm(dump, folder / f"item{number}.wl")
    ris = worklist_provider(root / "ris", [worklist_item(11), worklist_item(12, Modality="MR")])
    pacs = Orthanc(root / "orthanc", settings={"DicomAlwaysAllowFind": True}).start()
    for name in ("ct_head.dcm", "ct_chest.dcm"):
        request = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}/instances",
                                         data=(SAMPLES / name).read_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
    port, store_only, strict = free_port(), free_port(), free_port()
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, timeouts: {{dimse: {LISTENER_TIMEOUT}}}}}
  - {{name: storeonly, ae_title: ROUTER, port: {store_only}, services: [echo, store]}}
  - {{name: strict, ae_title: ROUTER, port: {strict}, partial_results: false, timeouts: {{dimse: {LISTENER_TIMEOUT}}}}}
destinations:
  WL: {{type: worklist, path: worklists}}
  RIS: {{type: dicom, ae_title: WLM, host: 127.0.0.1, port: {ris.port}}}
  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {pacs.dicom_port}}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {free_port()}}}
  OUT: {{type: folder, path: out}}
""")
    router = RouterProcess(root / "router.yaml", port).start()
    router.store_only, router.strict = store_only, strict
    yield router
    router.stop()
    pacs.stop()
    ris.stop()


def findscu(router: RouterProcess, calling: str, model: str, *keys: str, port: int | None = None):
    """findscu's run (-d: it prints each response's command set, Error Comment included) and
    the responses it received, read from the files it extracted."""
    out = router.config.parent / f"responses-{time.time_ns()}"
    out.mkdir()
    args = [require("findscu"), "-d", model, "-aet", calling, "-aec", "ROUTER", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    started = time.monotonic()
    result = subprocess.run([*args, "127.0.0.1", str(port or router.port)], capture_output=True, text=True,
                            timeout=120)
    result.seconds = time.monotonic() - started
    result.responses = [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return result


def final_status(result) -> int:
    """The Status of the last response findscu printed (-d prints each command set)."""
    statuses = re.findall(r"DIMSE Status +: 0x([0-9a-f]{4})", result.stdout + result.stderr)
    assert statuses, result.stdout + result.stderr
    return int(statuses[-1], 16)


def last_request(router: RouterProcess) -> dict:
    result = dicom_rules("requests", router.config, "--format", "json", "--limit", "1", cwd=router.config.parent)
    assert result.returncode == 0, result.stderr
    [request] = json.loads(result.stdout)
    return request


WORKLIST_KEYS = ("ScheduledProcedureStepSequence[0].ScheduledStationAETitle", "AccessionNumber", "PatientName")


def test_a_worklist_folder_answers_each_station_its_own_items(site):
    result = findscu(site, "CT1", "-W", *WORKLIST_KEYS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r.AccessionNumber for r in result.responses) == ["ACC0001", "ACC0003"]
    assert {r.ScheduledProcedureStepSequence[0].ScheduledStationAETitle for r in result.responses} == {"CT1"}
    request = last_request(site)
    assert request["from"]["calling_aet"] == "CT1"
    assert request["sop_class_uid"] == "1.2.840.10008.5.1.4.31"
    assert request["result"]["outcome"] == "answered" and request["result"]["status"] == 0
    assert request["result"]["matches"] == 2
    assert [(d["destination"], d["matches"]) for d in request["result"]["destinations"]] == [("WL", 3)]
    assert "C-FIND from CT1 (worklist): answered, status 0x0000, 2 matches (WL 3) in " in site.output()


def test_a_worklist_query_is_forwarded_to_the_upstream_provider(site):
    result = findscu(site, "CT2", "-W", "ScheduledProcedureStepSequence[0].Modality=MR", "AccessionNumber")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.AccessionNumber for r in result.responses] == ["ACC0012"]
    request = last_request(site)
    assert request["result"]["outcome"] == "answered"
    assert request["matching_keys"] == {"ScheduledProcedureStepSequence.Modality": "MR"}
    assert [(d["destination"], d["status"], d["matches"]) for d in request["result"]["destinations"]] == \
        [("RIS", 0, 1)]


def test_a_study_query_loses_the_prefix_on_the_way_and_gets_it_back(site):
    result = findscu(site, "VIEWER", "-S", "QueryRetrieveLevel=STUDY", "PatientID=H1-123456", "StudyInstanceUID",
                     "PatientName")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(r.PatientID, str(r.PatientName)) for r in result.responses] == [("H1-123456", "DOE^JOHN")]
    request = last_request(site)
    assert request["level"] == "STUDY"
    assert request["matching_keys"] == {"PatientID": "H1-123456"}  # as it arrived, before the rules
    assert request["result"]["matches"] == 1


def test_a_rejected_query_is_a_failure_with_the_reason(site):
    result = findscu(site, "BAD", "-W", "AccessionNumber")
    assert final_status(result) == 0xC124
    assert "callers named BAD may not query" in result.stdout + result.stderr
    assert result.responses == []
    request = last_request(site)
    assert request["result"]["outcome"] == "rejected" and request["result"]["status"] == 0xC124
    assert request["result"]["error"] == "callers named BAD may not query"


def test_an_on_response_edit_that_fails_is_a_failure_with_the_reason(site):
    """A patient ID is no date: the edit fails on the first match, which is not passed on."""
    result = findscu(site, "BROKEN", "-S", "QueryRetrieveLevel=STUDY", "PatientID=123456", "StudyInstanceUID",
                     "StudyDate")
    output = result.stdout + result.stderr
    assert final_status(result) == 0xC000
    assert re.search(r"\(0000,0902\) LO \[rule error on a response: ", output), output  # Error Comment
    assert result.responses == []
    request = last_request(site)
    assert request["result"]["outcome"] == "failed" and request["result"]["status"] == 0xC000
    assert request["result"]["error"].startswith("rule error on a response: ")
    assert "rule 'a response edit that fails'" in request["result"]["error"]
    assert "C-FIND from BROKEN (study): failed, status 0xC000" in site.output()


def test_a_query_no_rule_routes_is_refused(site):
    result = findscu(site, "NOBODY", "-W", "AccessionNumber")
    assert final_status(result) == 0xC124
    assert "no rule routed this C-FIND" in result.stdout + result.stderr
    assert last_request(site)["result"]["outcome"] == "rejected"


def test_a_pacs_that_is_down_is_a_failure_at_once(site):
    result = findscu(site, "LONELY", "-S", "QueryRetrieveLevel=STUDY", "PatientID=123456", "StudyInstanceUID")
    output = result.stdout + result.stderr
    assert final_status(result) == 0xC000 and "DOWN: " in output
    assert result.responses == []
    assert result.seconds < LISTENER_TIMEOUT / 4, f"{result.seconds:.1f} s"
    request = last_request(site)
    assert request["result"]["outcome"] == "failed" and request["result"]["status"] == 0xC000
    [down] = request["result"]["destinations"]
    assert down["destination"] == "DOWN" and down["error"]


def test_one_pacs_down_of_two_is_a_partial_result(site):
    result = findscu(site, "BOTH", "-S", "QueryRetrieveLevel=STUDY", "PatientID=123456", "StudyInstanceUID")
    output = result.stdout + result.stderr
    assert [r.PatientID for r in result.responses] == ["123456"]
    assert final_status(result) == 0xB000 and "DOWN: " in output
    request = last_request(site)
    assert request["result"]["outcome"] == "partial" and request["result"]["status"] == 0xB000
    assert sorted(d["destination"] for d in request["result"]["destinations"]) == ["DOWN", "PACS"]


def test_without_partial_results_one_pacs_down_of_two_fails_the_query_with_no_matches(site):
    result = findscu(site, "BOTH", "-S", "QueryRetrieveLevel=STUDY", "PatientID=123456", "StudyInstanceUID",
                     port=site.strict)
    output = result.stdout + result.stderr
    assert result.responses == []  # PACS answered, but its match was held and is not returned
    assert final_status(result) == 0xC000 and "DOWN: " in output
    request = last_request(site)
    assert request["result"]["outcome"] == "failed" and request["result"]["matches"] == 0
    assert request["from"]["listener"] == "strict"


def test_a_listener_without_find_refuses_its_contexts_and_says_why(site):
    result = findscu(site, "CT1", "-W", "AccessionNumber", port=site.store_only)
    assert result.returncode != 0
    assert result.responses == []
    deadline = time.time() + 10
    while "a service this listener does not offer (services: echo, store)" not in site.output():
        assert time.time() < deadline, site.output()
        time.sleep(0.05)
