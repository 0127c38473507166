"""The Messages page and the trace of one instance, on a journal the router's own pipeline
filled (tests/helpers/traffic.py: real rules, real edits, real deliveries and attempts):
every filter, paging, bad parameters, hostile text in the search fields, and the masking of
patient data for a viewer, in the pages and in their API twins."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pydicom
import pytest
from starlette.testclient import TestClient

from helpers.console import PASSWORD, USERS, ConsoleUnderTest
from helpers.files import SAMPLES
from helpers.peers import free_port
from helpers.traffic import RECEIVED, RULES, fill, local
from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.console import masking
from rulesengine.console.actions import ActionError
from rulesengine.console.app import create_app
from rulesengine.console.params import moment
from rulesengine.runtime.journal import DONE, NewRequest, Outcome, trace_text


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    traffic = fill(tmp_path_factory.mktemp("messages"), free_port())
    app = create_app(load_config(traffic.config_path, secrets=False), users=USERS)
    return traffic, app


def client(app, user: str) -> TestClient:
    """A client logged in through the API (cookies then serve the pages too)."""
    session = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    token = session.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
    assert session.post("/login", json={"name": user, "password": PASSWORD},
                        headers={"x-csrf-token": token}).status_code == 200
    return session


def header(sample: str) -> pydicom.Dataset:
    return pydicom.dcmread(SAMPLES / sample, stop_before_pixels=True)


def ids(answer) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [row["id"] for row in answer.json()["instances"]]


def line_of(text: str) -> int:
    return RULES.splitlines().index(text) + 1


# ---- the list and its filters ----------------------------------------------------------------------


def test_the_list_shows_every_instance_newest_first_with_what_the_rules_decided(site):
    traffic, app = site
    operator = client(app, "otto")
    answer = operator.get("/api/messages").json()
    rows = {row["id"]: row for row in answer["instances"]}
    assert list(rows) == sorted(traffic.ids.values(), reverse=True) and answer["next_before"] is None
    chest = rows[traffic.ids["ct_chest.dcm"]]
    ds = header("ct_chest.dcm")
    assert (chest["patient_id"], chest["patient_name"], chest["accession_number"], chest["modality"]) == (
        ds.PatientID, str(ds.PatientName), ds.AccessionNumber, "CT")
    assert (chest["outcome"], chest["destinations"], chest["source_name"], chest["calling_aet"]) == (
        "route", ["PACS", "RESEARCH"], "main", "CT1")
    assert chest["received_at"] == local("2026-12-01T09:00")
    outcomes = {sample: rows[number]["outcome"] for sample, number in traffic.ids.items()}
    assert outcomes == {"ct_chest.dcm": "route", "ct_head.dcm": "route", "mr_knee.dcm": "quarantine",
                        "mr_japanese.dcm": "route", "ot_secondary.dcm": "reject", "sr_report.dcm": "drop"}
    assert rows[traffic.ids["ot_secondary.dcm"]]["reason"] == "secondary captures are not accepted"

    page = operator.get("/messages")
    assert page.status_code == 200
    for number in traffic.ids.values():
        assert f'href="/messages/{number}"' in page.text  # each row links to its trace
    assert str(ds.PatientName) in page.text and "Queries and retrievals" in page.text
    assert "matches its value exactly" in page.text


@pytest.mark.parametrize("parameter, value, samples", [
    ("patient_id", "123456", ["ct_chest.dcm"]),
    ("patient_id", "12345", []),  # exact, not a prefix
    ("accession_number", "ACC0001", ["ct_chest.dcm"]),
    ("study_instance_uid", header("ct_head.dcm").StudyInstanceUID, ["ct_head.dcm"]),
    ("series_instance_uid", header("mr_knee.dcm").SeriesInstanceUID, ["mr_knee.dcm"]),
    ("sop_instance_uid", header("sr_report.dcm").SOPInstanceUID, ["sr_report.dcm"]),
    ("calling_aet", "CT2", ["ct_head.dcm"]),
    ("source", "inbox", ["sr_report.dcm", "mr_japanese.dcm"]),
    ("outcome", "route", ["mr_japanese.dcm", "ct_head.dcm", "ct_chest.dcm"]),
    ("outcome", "drop", ["sr_report.dcm"]),
    ("outcome", "quarantine", ["mr_knee.dcm"]),
    ("outcome", "reject", ["ot_secondary.dcm"]),
    ("received_from", "2026-12-03", ["sr_report.dcm", "ot_secondary.dcm"]),
    ("received_from", "2026-12-02T10:00", ["sr_report.dcm", "ot_secondary.dcm", "mr_japanese.dcm"]),
    ("received_to", "2026-12-01", ["ct_head.dcm", "ct_chest.dcm"]),  # a date alone: the whole day
    ("received_to", "2026-12-01T10:00", ["ct_chest.dcm"]),  # a date-time: before it
    ("received_to", str(int(local("2026-12-01T09:00")) + 1), ["ct_chest.dcm"]),  # seconds since the epoch
])
def test_each_filter_finds_what_it_names(site, parameter, value, samples):
    traffic, app = site
    answer = client(app, "otto").get("/api/messages", params={parameter: value})
    assert ids(answer) == [traffic.ids[sample] for sample in samples]


def test_filters_combine_and_a_time_range_bounds_both_ends(site):
    traffic, app = site
    operator = client(app, "otto")
    both = operator.get("/api/messages", params={"received_from": "2026-12-02", "received_to": "2026-12-02",
                                                 "source": "main"})
    assert ids(both) == [traffic.ids["mr_knee.dcm"]]
    assert ids(operator.get("/api/messages", params={"outcome": "route", "calling_aet": "CT1"})) == [
        traffic.ids["ct_chest.dcm"]]
    page = operator.get("/messages", params={"outcome": "quarantine"})
    assert f'href="/messages/{traffic.ids["mr_knee.dcm"]}"' in page.text
    assert f'href="/messages/{traffic.ids["ct_chest.dcm"]}"' not in page.text
    assert "<option selected>quarantine</option>" in page.text  # the form keeps what was asked


def test_pages_follow_each_other_with_before_and_keep_the_filters(site):
    traffic, app = site
    operator = client(app, "otto")
    seen, before = [], None
    while True:
        answer = operator.get("/api/messages", params={"limit": 2, **({"before": before} if before else {})}).json()
        assert len(answer["instances"]) <= 2
        seen += [row["id"] for row in answer["instances"]]
        before = answer["next_before"]
        if before is None:
            break
        assert before == seen[-1]
    assert seen == sorted(traffic.ids.values(), reverse=True)
    # the page's link to the next one carries the filters and the limit
    page = operator.get("/messages", params={"outcome": "route", "limit": 1})
    link = re.search(r'href="/messages\?([^"]+)">Older instances', page.text).group(1).replace("&amp;", "&")
    assert sorted(link.split("&")) == sorted(["outcome=route", "limit=1", f"before={traffic.ids['mr_japanese.dcm']}"])
    assert ids(operator.get("/api/messages?" + link)) == [traffic.ids["ct_head.dcm"]]


@pytest.mark.parametrize("query, named", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("before=0", "before"),
    ("before=x", "before"), ("before=99999999999999999999999", "before"), ("outcome=routed", "outcome"),
    ("received_from=yesterday", "received_from"), ("received_to=2026-13-01", "received_to"),
    ("received_from=2026-12-03T25:00", "received_from"), ("received_to=1e9", "received_to"),
    ("message=C-ECHO", "message"), ("patient_id=" + "7" * 201, "patient_id"), ("outcome=drop&outcome=route", "outcome"),
    ("patientid=123456", "patientid"),
])
def test_a_bad_parameter_is_a_400_naming_it(site, query, named):
    _traffic, app = site
    operator = client(app, "otto")
    answer = operator.get("/api/messages?" + query)
    assert answer.status_code == 400 and named in answer.json()["error"], answer.text
    page = operator.get("/messages?" + query)
    assert page.status_code == 400 and named in page.text and "Traceback" not in page.text


def test_sql_and_html_in_the_search_fields_are_plain_text(site):
    traffic, app = site
    operator = client(app, "otto")
    for hostile in ("' OR '1'='1", "123456' --", "\" OR 1=1; DROP TABLE instances; --", "%", "*"):
        assert ids(operator.get("/api/messages", params={"patient_id": hostile})) == []
        assert ids(operator.get("/api/messages", params={"source": hostile, "calling_aet": hostile})) == []
    script = "<script>alert('x')</script>"
    page = operator.get("/messages", params={"accession_number": script, "source": '"><img src=x onerror=alert(1)>'})
    assert page.status_code == 200 and "No instance matches." in page.text
    assert script not in page.text and "&lt;script&gt;" in page.text
    assert "<img src=x" not in page.text
    assert len(ids(operator.get("/api/messages"))) == len(traffic.ids)  # the journal is whole


# ---- requests ----------------------------------------------------------------------------------------


def test_the_requests_are_listed_beside_the_instances(site):
    traffic, app = site
    operator = client(app, "otto")
    requests = operator.get("/api/messages").json()["requests"]
    assert [r["id"] for r in requests] == traffic.requests[::-1]
    move, find = requests
    assert (find["message"], find["level"], find["outcome"], find["matches"], find["calling_aet"]) == (
        "C-FIND", "STUDY", "answered", 1, "VIEWER1")
    assert find["matching_keys"]["PatientName"] == "DOE^JOHN"
    assert (move["message"], move["outcome"], move["status"], move["error"], move["move_destination"]) == (
        "C-MOVE", "failed", 0xA801, "unknown move destination", "VIEWER1")
    only_finds = operator.get("/api/messages", params={"message": "C-FIND"}).json()["requests"]
    assert [r["id"] for r in only_finds] == [find["id"]]
    page = operator.get("/messages").text
    assert "unknown move destination" in page and "0xA801" in page and "PatientName=DOE^JOHN" in page


# ---- the trace -------------------------------------------------------------------------------------


def test_the_trace_shows_the_arrival_the_rules_the_edits_and_the_deliveries(site):
    traffic, app = site
    operator = client(app, "otto")
    number = traffic.ids["ct_chest.dcm"]
    view = operator.get(f"/api/messages/{number}").json()
    rules_file = str(traffic.folder / "main.rules")
    instance, decided = view["instance"], view["trace"]
    assert (instance["source_kind"], instance["source_name"], instance["calling_aet"], instance["called_aet"],
            instance["peer"], instance["received_at"]) == ("listener", "main", "CT1", "ROUTER", "127.0.0.1:40100",
                                                           local("2026-12-01T09:00"))
    assert decided["ruleset_version"] == instance["ruleset_version"] and decided["ruleset_version"]
    assert decided["rules_fired"] == [{"name": "CT to the PACS", "file": rules_file,
                                       "line": line_of('rule "CT to the PACS" {')}]
    edits = {(e["destination"], e["path"]): (e["old"], e["new"], e["line"]) for e in decided["edits"]}
    assert edits == {
        (None, "DataSet.InstitutionName"): ("GENERAL HOSPITAL", "ROUTED <b>here</b>",
                                            line_of('  set DataSet.InstitutionName = "ROUTED <b>here</b>"')),
        ("RESEARCH", "DataSet.PatientID"): ("123456", "ANON", line_of('    set DataSet.PatientID = "ANON"')),
        ("RESEARCH", "DataSet.PatientName"): ("DOE^JOHN", "ANON^ANON",
                                              line_of('    set DataSet.PatientName = "ANON^ANON"')),
        ("RESEARCH", "DataSet.PatientBirthDate"): ("19700101", "19000101",
                                                   line_of('    set DataSet.PatientBirthDate = "19000101"')),
    }
    deliveries = {d["destination"]: d for d in view["deliveries"]}
    assert set(deliveries) == {"PACS", "RESEARCH"}
    for delivery in deliveries.values():
        [attempt] = delivery["tries"]
        assert delivery["state"] == "delivered" and attempt["ok"] and attempt["seconds"] >= 0
        assert attempt["detail"].endswith(header("ct_chest.dcm").SOPInstanceUID + ".dcm")

    page = operator.get(f"/messages/{number}").text
    line = line_of('    set DataSet.PatientName = "ANON^ANON"')
    assert f'href="/rules#main.rules:{line}"' in page  # named as the Rules page names it
    rule_line = line_of('rule "CT to the PACS" {')
    assert f'href="/rules#main.rules:{rule_line}"' in page
    assert "The copy for RESEARCH" in page and "The document every destination starts from" in page
    assert "DOE^JOHN" in page and "ANON^ANON" in page and "19700101" in page
    assert "ROUTED &lt;b&gt;here&lt;/b&gt;" in page and "<b>here</b>" not in page  # an edit's value is text


def test_every_rule_link_of_a_trace_lands_on_a_line_of_the_rules_page(site):
    traffic, app = site
    operator = client(app, "otto")
    rules_page = operator.get("/rules").text
    page = operator.get(f"/messages/{traffic.ids['ct_chest.dcm']}").text
    links = set(re.findall(r'href="/rules#([^"]+)"', page))
    assert len(links) >= 3
    for anchor in links:
        assert f'id="{anchor}"' in rules_page, anchor


def test_the_trace_of_a_failed_delivery_shows_each_attempt_and_its_error(site):
    traffic, app = site
    operator = client(app, "otto")
    view = operator.get(f"/api/messages/{traffic.ids['mr_japanese.dcm']}").json()
    assert view["instance"]["source_kind"] == "folder" and view["instance"]["calling_aet"] is None
    [delivery] = view["deliveries"]
    [attempt] = delivery["tries"]
    assert (delivery["destination"], delivery["state"], attempt["ok"]) == ("DOWN", "dead", False)
    assert "connection refused" in attempt["detail"] and attempt["detail"] == delivery["last_error"]
    page = operator.get(f"/messages/{traffic.ids['mr_japanese.dcm']}").text
    assert "DOWN: dead" in page and "connection refused" in page and "failed" in page


def test_the_trace_of_an_instance_not_routed_says_why(site):
    traffic, app = site
    operator = client(app, "otto")
    held = operator.get(f"/api/messages/{traffic.ids['mr_knee.dcm']}").json()
    assert (held["trace"]["outcome"], held["trace"]["reason"], held["deliveries"]) == (
        "quarantine", "knee under review", [])
    assert held["trace"]["rules_fired"][0]["name"] == "hold the knee"
    page = operator.get(f"/messages/{traffic.ids['ot_secondary.dcm']}").text
    assert "reject: secondary captures are not accepted" in page and "the instance was not routed" in page


@pytest.mark.parametrize("number, status", [("999999", 404), ("abc", 400), ("0", 400), ("-3", 400),
                                            ("1.5", 400), ("99999999999999999999999", 400)])
def test_an_unknown_or_malformed_instance_number_is_a_clear_error(site, number, status):
    _traffic, app = site
    operator = client(app, "otto")
    answer = operator.get(f"/api/messages/{number}")
    assert answer.status_code == status and "instance" in answer.json()["error"]
    page = operator.get(f"/messages/{number}")
    assert page.status_code == status and "Traceback" not in page.text
    if status == 404:
        assert "no instance 999999 in the journal" in page.text


def test_the_trace_route_is_in_the_openapi_document_with_its_path_parameter(site):
    _traffic, app = site
    document = client(app, "vera").get("/api/openapi.json").json()
    [parameter] = document["paths"]["/api/messages/{instance_id}"]["get"]["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == ("instance_id", "path", True)
    names = [p["name"] for p in document["paths"]["/api/messages"]["get"]["parameters"]]
    assert names[:7] == ["patient_id", "accession_number", "study_instance_uid", "series_instance_uid",
                         "sop_instance_uid", "calling_aet", "source"]


# ---- masking for a viewer ----------------------------------------------------------------------------


# What the sample instances hold of their patients, and the edits and requests repeat.
PATIENT_DATA = [str(header(sample).PatientName) for sample, *_ in RECEIVED] + ["DOE^JOHN", "ACC0001", "19700101"]
PATIENT_IDS = [header(sample).PatientID for sample, *_ in RECEIVED]


def test_a_viewer_sees_no_patient_name_id_or_date_in_the_list(site):
    traffic, app = site
    viewer = client(app, "vera")
    answer = viewer.get("/api/messages")
    text = answer.text + viewer.get("/messages").text
    for value in PATIENT_DATA + PATIENT_IDS + ["Müller", "山田", "\\u5c71"]:
        assert value not in text, value
    for row in answer.json()["instances"]:
        assert row["patient_name"] == masking.MASK and row["patient_id"] == masking.MASK
        assert row["accession_number"] in (None, masking.MASK) and row["modality"]  # the rest is shown
    assert "masked for your role" in viewer.get("/messages").text
    [find] = [r for r in answer.json()["requests"] if r["message"] == "C-FIND"]
    assert find["matching_keys"] == {"PatientName": masking.MASK, "PatientID": masking.MASK,
                                     "StudyDate": masking.MASK, "ModalitiesInStudy": "CT"}


def test_a_viewer_may_search_by_patient_id_and_sees_it_masked(site):
    traffic, app = site
    viewer = client(app, "vera")
    answer = viewer.get("/api/messages", params={"patient_id": "123456"})
    assert ids(answer) == [traffic.ids["ct_chest.dcm"]]
    assert "123456" not in answer.text and "DOE^JOHN" not in answer.text
    page = viewer.get("/messages", params={"patient_id": "123456"}).text
    # only where the form gives back what they typed (the search, and the requests' filter)
    assert page.count("123456") == page.count('value="123456"') == 2 and 'name="patient_id" value="123456"' in page
    assert "DOE^JOHN" not in page and f'href="/messages/{traffic.ids["ct_chest.dcm"]}"' in page


def test_a_viewer_sees_the_trace_with_the_patient_values_of_its_edits_masked(site):
    traffic, app = site
    viewer, operator = client(app, "vera"), client(app, "otto")
    number = traffic.ids["ct_chest.dcm"]
    answer = viewer.get(f"/api/messages/{number}")
    page = viewer.get(f"/messages/{number}").text
    for value in PATIENT_DATA + ["123456", "ANON^ANON", "19000101"]:
        assert value not in answer.text and value not in page, value
    view = answer.json()
    edits = {e["path"]: (e["old"], e["new"]) for e in view["trace"]["edits"]}
    assert edits["DataSet.PatientName"] == edits["DataSet.PatientID"] == edits["DataSet.PatientBirthDate"] == (
        masking.MASK, masking.MASK)
    assert edits["DataSet.InstitutionName"] == ("GENERAL HOSPITAL", "ROUTED <b>here</b>")  # not the patient's
    assert view["instance"]["patient_name"] == masking.MASK and view["instance"]["accession_number"] == masking.MASK
    # the rest of the trace is the operator's, unmasked
    seen = operator.get(f"/api/messages/{number}").json()
    assert view["deliveries"] == seen["deliveries"] and view["trace"]["rules_fired"] == seen["trace"]["rules_fired"]
    assert view["instance"]["study_instance_uid"] == seen["instance"]["study_instance_uid"]
    assert "GENERAL HOSPITAL" in page and "Patient data is masked for your role" in page


def test_an_admin_sees_everything(site):
    traffic, app = site
    admin = client(app, "ada")
    text = admin.get("/api/messages").text + admin.get(f"/messages/{traffic.ids['ct_chest.dcm']}").text
    assert "DOE^JOHN" in text and "123456" in text and "ACC0001" in text


@pytest.mark.parametrize("path, hidden", [
    ("DataSet.PatientName", True), ("DataSet.PatientID", True), ("DataSet.AccessionNumber", True),
    ("DataSet.PatientBirthDate", True), ("DataSet.StudyDate", True), ("DataSet.StudyTime", True),
    ("DataSet.AcquisitionDateTime", True), ("DataSet.ReferringPhysicianName", True), ("DataSet.PatientSex", True),
    ("DataSet.(0010,0010)", True), ("DataSet.(0010,1040)", True),  # PatientName, PatientAddress by tag
    ("DataSet.OtherPatientIDsSequence[0].TypeOfPatientID", True),  # inside an identifying sequence
    ("DataSet.RequestAttributesSequence[0].ScheduledProcedureStepID", True),
    ("DataSet.ReferencedImageSequence", True),  # a sequence: its items may hold anything
    ('DataSet.(0009,"ACME 1.1",10)', True), ("DataSet.(0009,1010)", True),  # private: cannot be told
    ("DataSet.NoSuchKeyword", True), ("(0010, 0020)", True), ("PatientName", True),
    ("ScheduledProcedureStepSequence.ScheduledProcedureStepStartDate", True),
    ("DataSet.Modality", False), ("DataSet.InstitutionName", False), ("DataSet.StudyInstanceUID", False),
    ("DataSet.(0008,0060)", False), ("DataSet.ReferencedImageSequence[0].ReferencedSOPInstanceUID", False),
    ("DataSet.WindowCenter", False), ("ModalitiesInStudy", False), ("Association.CallingAET", False),
    ("FileMeta.TransferSyntaxUID", False), ("ScheduledProcedureStepSequence.Modality", False),
])
def test_what_masking_hides_is_decided_by_the_dicom_dictionary(path, hidden):
    assert masking.identifying(path) is hidden
    change = {"path": path, "old": "before", "new": None, "rule": "r", "file": "f", "line": 1}
    masked = masking.edit(change, "viewer")
    assert masked["old"] == (masking.MASK if hidden else "before") and masked["new"] is None
    assert masking.edit(change, "operator") == change and masking.edit(change, "admin") == change


# ---- time parameters ---------------------------------------------------------------------------------


def test_a_time_parameter_is_a_local_date_a_date_time_or_seconds():
    assert moment("2026-12-03", "t") == datetime(2026, 12, 3).timestamp()
    assert moment("2026-12-03", "t", whole_day=True) == (datetime(2026, 12, 3) + timedelta(days=1)).timestamp()
    assert moment("2026-12-03T10:15", "t", whole_day=True) == datetime(2026, 12, 3, 10, 15).timestamp()
    assert moment("2026-12-03 10:15:30", "t") == datetime(2026, 12, 3, 10, 15, 30).timestamp()
    assert moment("2026-12-03T10:15Z", "t") == 1796292900.0
    assert moment("2026-12-03T11:15+01:00", "t") == 1796292900.0
    assert moment("1796292900", "t") == moment("1796292900.0", "t") == 1796292900.0
    assert moment("", "t") is None and moment(None, "t") is None
    for bad in ("20261203T1015", "2026-12-03T10", "tomorrow", "-5", "2026-02-30", "1" * 13, "2026-12-03T10:15+25:00"):
        with pytest.raises(ActionError, match="^t must be an ISO 8601"):
            moment(bad, "t")


def test_the_api_answers_are_json_the_page_renders(site):
    traffic, app = site
    operator = client(app, "otto")
    answer = operator.get(f"/api/messages/{traffic.ids['sr_report.dcm']}")
    assert answer.headers["content-type"] == "application/json"
    assert json.loads(answer.text)["trace"]["outcome"] == "drop"


def test_an_instance_not_processed_yet_has_no_trace_and_a_cut_trace_says_so(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    instance_id = console.journal.delivery(console.delivery("PACS", "queued")).instance_id  # journaled, accepted
    operator = console.client("otto")
    view = operator.get(f"/api/messages/{instance_id}").json()
    assert view["trace"] is None and view["deliveries"][0]["tries"] == []
    page = operator.get(f"/messages/{instance_id}").text
    assert "No trace: the rules have not run on this instance yet" in page and "Not tried yet." in page

    edits = [{"path": "DataSet.InstitutionName", "old": "A", "new": "B", "rule": "r", "file": "main.rules",
              "line": 3, "destination": None}]
    cut = console.journal.record(
        Arrival(source_kind="folder", source_name="inbox"), None,
        Outcome("v1", "drop", None, ("r",), (), trace_text("drop", None, "v1", [{"name": "r", "file": "main.rules",
                                                                                 "line": 2}], edits, left_out=7)),
        DONE)
    page = operator.get(f"/messages/{cut}").text
    assert "7 more edit(s) were made and not kept" in page and 'href="/rules#main.rules:3"' in page


def test_requests_are_chosen_by_calling_ae_and_time_and_paged(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    ids = {}
    for number in range(1, 26):
        asked = Arrival(calling_aet="WS2" if number % 5 == 0 else "WS1", called_aet="ROUTER", source_name="main",
                        source_kind="listener")
        ids[number] = console.journal.record_request(NewRequest("C-FIND", asked, "STUDY", {"PatientID": "P"}),
                                                     now=1_000_000.0 + number)
    operator = console.client("otto")
    first = operator.get("/api/messages").json()
    assert [r["id"] for r in first["requests"]] == [ids[n] for n in range(25, 5, -1)]
    assert first["requests_next_before"] == ids[6]
    second = operator.get("/api/messages", params={"requests_before": ids[6]}).json()
    assert [r["id"] for r in second["requests"]] == [ids[n] for n in range(5, 0, -1)]
    assert second["requests_next_before"] is None
    page = operator.get("/messages").text
    assert f'href="/messages?limit=50&amp;requests_before={ids[6]}">Older requests' in page
    by_ae = operator.get("/api/messages", params={"calling_aet": "WS2"}).json()["requests"]
    assert [r["id"] for r in by_ae] == [ids[n] for n in (25, 20, 15, 10, 5)]
    in_time = operator.get("/api/messages", params={"received_from": "1000003", "received_to": "1000005"}).json()
    assert [r["id"] for r in in_time["requests"]] == [ids[4], ids[3]]
    assert operator.get("/api/messages", params={"requests_before": "x"}).json()["error"].startswith(
        "requests_before must be a whole number")
