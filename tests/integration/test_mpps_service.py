"""The router relaying MPPS through its rules, end to end. Neither DCMTK nor Orthanc has an
MPPS tool, so both sides are pynetdicom's (helpers/mpps_peer.py): a modality sends N-CREATE
(IN PROGRESS) then N-SET (COMPLETED) to a real router process, which relays them to a RIS
(a pynetdicom MPPS SCP) with the patient ID prefix taken off and put back; a rule rejects,
no rule routes, the RIS is down, silent, or answers a failure, one of two destinations is
down, a data set cannot be decoded, and a listener whose services leave MPPS out refuses
it. Each request is read back from the journal, and with `dicom-rules requests`."""

from __future__ import annotations

import json
import time

import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from helpers.cli import dicom_rules
from helpers.mpps_peer import Modality, MppsPeer, step_completed, step_in_progress
from helpers.peers import RouterProcess, free_port, wait_until
from rulesengine.runtime.journal import RequestResult
from rulesengine.runtime.storage import Storage

LISTENER_TIMEOUT = 1  # the listener's timeouts.dimse: how long a request may wait for its destinations

RULES = """
rule "CT1 steps" on N-CREATE, N-SET {
  when Association.CallingAET == "CT1"
  then {
    if exists DataSet.PatientID {
      set DataSet.PatientID = replace(DataSet.PatientID, /^H1-/, "")
    }
    route to RIS
    on response {
      if exists DataSet.PatientID {
        set DataSet.PatientID = "H1-" + DataSet.PatientID
      }
    }
  }
}

rule "no steps from BAD" on N-CREATE, N-SET {
  when Association.CallingAET == "BAD"
  then reject "BAD may not report steps"
}

rule "the RIS that is down" on N-CREATE {
  when Association.CallingAET == "LONELY"
  then route to DOWN
}

rule "the RIS that says nothing" on N-CREATE {
  when Association.CallingAET == "QUIET"
  then route to SILENT
}

rule "the RIS that knows no such step" on N-SET {
  when Association.CallingAET == "STRICT"
  then route to STRICT
}

rule "two RIS" on N-CREATE {
  when Association.CallingAET == "BOTH"
  then route to RIS, DOWN
}

rule "instances" {
  then route to OUT
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The router in front of three RIS (one answering, one silent, one answering 0x0112) and
    a port where nothing listens (DOWN); a second listener offers no MPPS."""
    root = tmp_path_factory.mktemp("mpps")
    ris, silent, strict = MppsPeer(), MppsPeer(silent=True), MppsPeer(status=0x0112, comment="no such step")
    port, no_mpps = free_port(), free_port()
    (root / "main.rules").write_text(RULES)
    (root / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}, timeouts: {{dimse: {LISTENER_TIMEOUT}}}}}
  - {{name: nompps, ae_title: ROUTER, port: {no_mpps}, services: [echo, store, find]}}
destinations:
  RIS: {{type: dicom, ae_title: RIS, host: 127.0.0.1, port: {ris.port}}}
  SILENT: {{type: dicom, ae_title: RIS, host: 127.0.0.1, port: {silent.port}}}
  STRICT: {{type: dicom, ae_title: RIS, host: 127.0.0.1, port: {strict.port}}}
  DOWN: {{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {free_port()}}}
  OUT: {{type: folder, path: out}}
""")
    router = RouterProcess(root / "router.yaml", port).start()
    router.ris, router.no_mpps = ris, no_mpps
    yield router
    router.stop()
    for peer in (ris, silent, strict):
        peer.stop()


def requests(router: RouterProcess, *options: str):
    result = dicom_rules("requests", router.config, *options, cwd=router.config.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


def last_request(router: RouterProcess) -> dict:
    """The journal's last request as `dicom-rules requests --format json` gives it."""
    [request] = json.loads(requests(router, "--format", "json", "--limit", "1"))
    return request


def last_result(router: RouterProcess) -> RequestResult:
    """The journal's last request's result, read directly (faster than the command)."""
    [request] = Storage(str(router.config.parent / "var")).journal().requests((), 1)
    return request.result


def send(router: RouterProcess, calling: str, message: str = "N-CREATE", **values):
    """One request from a modality calling as `calling`: (status, attribute list, seconds)."""
    uid = generate_uid()
    with Modality(router.port, calling) as modality:
        assert modality.accepted
        started = time.monotonic()
        if message == "N-CREATE":
            status, answer = modality.create(step_in_progress(**values), uid)
        else:
            status, answer = modality.update(step_completed(**values), uid)
        return status, answer, time.monotonic() - started


def test_a_step_is_relayed_in_progress_then_completed_with_the_prefix_off_and_back(site):
    uid = generate_uid()
    site.ris.requests.clear()
    with Modality(site.port, "CT1") as modality:
        created, created_answer = modality.create(step_in_progress("H1-123"), uid)
        completed, completed_answer = modality.update(step_completed(), uid)
    assert created.Status == 0 and created_answer.PatientID == "H1-123"  # put back by `on response`
    assert created_answer.PerformedProcedureStepStatus == "IN PROGRESS"
    assert completed.Status == 0 and completed_answer.PerformedProcedureStepStatus == "COMPLETED"
    assert "PatientID" not in completed_answer  # the N-SET had none: the rule added none
    [(_, create_uid, create), (_, set_uid, update)] = site.ris.requests
    assert (create_uid, set_uid) == (uid, uid)
    assert create.PatientID == "123" and "PatientID" not in update
    assert update.PerformedProcedureStepStatus == "COMPLETED"
    request = last_request(site)
    assert request["message"] == "N-SET" and request["from"]["calling_aet"] == "CT1"
    assert request["sop_class_uid"] == "1.2.840.10008.3.1.2.3.3"
    assert request["matching_keys"] == {"SOPInstanceUID": uid, "PerformedProcedureStepStatus": "COMPLETED"}
    assert request["result"]["outcome"] == "answered" and request["result"]["status"] == 0
    assert [(d["destination"], d["status"]) for d in request["result"]["destinations"]] == [("RIS", 0)]
    listed = requests(site, "--message", "N-CREATE", "--limit", "1")
    assert f"N-CREATE from CT1 (127.0.0.1) SOPInstanceUID={uid} PerformedProcedureStepStatus=IN PROGRESS: " \
           "answered (status 0x0000)" in listed and "; RIS: status 0x0000" in listed
    assert f"N-CREATE from CT1 (MPPS {uid}): answered, status 0x0000 (RIS 0x0000) in " in site.output()


def test_a_rejected_step_is_a_failure_with_the_reason(site):
    status, answer, _ = send(site, "BAD")
    assert status.Status == 0x0124 and status.ErrorComment == "BAD may not report steps" and answer is None
    result = last_result(site)
    assert (result.outcome, result.status, result.error) == ("rejected", 0x0124, "BAD may not report steps")


def test_a_step_no_rule_routes_is_refused(site):
    status, _, _ = send(site, "NOBODY", "N-SET")
    assert status.Status == 0x0124 and status.ErrorComment == "no rule routed this N-SET"


def test_a_ris_that_is_down_is_a_failure_at_once_with_the_reason(site):
    status, answer, seconds = send(site, "LONELY")
    assert status.Status == 0x0213 and status.ErrorComment == "DOWN: connection refused" and answer is None
    assert seconds < LISTENER_TIMEOUT, f"{seconds:.2f} s"
    result = last_result(site)
    assert result.outcome == "failed"
    [down] = result.answers
    assert down.destination == "DOWN" and "connection refused" in down.error
    wait_until(lambda: "N-CREATE from LONELY" in site.output(), timeout=10, interval=0.05, what="the log line")
    assert "DOWN: association with DOWN@127.0.0.1:" in site.output()


def test_a_silent_ris_is_a_failure_within_the_listeners_timeout(site):
    status, answer, seconds = send(site, "QUIET")
    assert status.Status == 0x0213 and status.ErrorComment == f"SILENT: no answer within {LISTENER_TIMEOUT} s"
    assert LISTENER_TIMEOUT <= seconds < LISTENER_TIMEOUT + 1, f"{seconds:.2f} s"


def test_a_ris_failure_status_is_passed_back(site):
    status, answer, _ = send(site, "STRICT", "N-SET")
    assert status.Status == 0x0112 and status.ErrorComment == "STRICT: status 0x0112 no such step"
    assert last_result(site).answers[0].status == 0x0112


def test_one_ris_down_of_two_is_a_failure_naming_it_and_the_other_got_the_step(site):
    site.ris.requests.clear()
    status, answer, _ = send(site, "BOTH")
    assert status.Status == 0x0213 and status.ErrorComment == "DOWN: connection refused"
    assert [message for message, _, _ in site.ris.requests] == ["N-CREATE"]
    result = last_result(site)
    assert result.outcome == "partial"
    assert [(a.destination, a.status) for a in result.answers] == [("RIS", 0), ("DOWN", None)]


# (0040,0270) ScheduledStepAttributesSequence of undefined length, whose item is cut short (implicit VR)
TRUNCATED_SEQUENCE = b"\x40\x00\x70\x02\xff\xff\xff\xff" + b"garbage!" * 2


def test_a_data_set_that_cannot_be_decoded_is_a_failure_that_says_so(site):
    with Modality(site.port, "CT1", transfer_syntaxes=[ImplicitVRLittleEndian]) as modality:
        response = modality.create_raw(TRUNCATED_SEQUENCE, generate_uid())
    assert response.Status == 0x0106 and response.ErrorComment.startswith("the data set cannot be decoded")
    assert last_result(site).outcome == "failed"


def test_a_listener_without_mpps_refuses_its_context_and_says_why(site):
    with Modality(site.no_mpps, "CT1") as modality:
        assert not modality.accepted
    wait_until(lambda: "a service this listener does not offer (services: echo, store, find)" in site.output(),
               timeout=10, interval=0.05, what="the refusal in the log")
