"""Notification templates naming values by the rules language's paths (`DataSet.Modality`,
`Association.CallingAET`): sent to a real local webhook server, checked with the file and line
when the configuration is read, and never a way to patient data a notifier did not opt in to."""

from __future__ import annotations

import json
import re

import pytest
from helpers.notify_peers import WebhookServer, write_config

from rulesengine.arrival import Arrival
from rulesengine.config import ConfigError, load_config
from rulesengine.config.notification_templates import render
from rulesengine.lang.ruleset import RuleNotification
from rulesengine.runtime.events import Events
from rulesengine.runtime.journal import SQLiteJournal
from rulesengine.runtime.notifications import NotificationSender, Notifications
from rulesengine.runtime.notifiers import template_values

ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40112,
                  source_name="main", source_kind="listener", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                  sop_instance_uid="1.2.3.4", patient_id="PID-77", patient_name="DOE^JANE", accession_number="ACC9",
                  study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", modality='C"T\\')
BODY = ('{"event": {{ event }}, "study": {{ DataSet.StudyInstanceUID }}, "modality": {{ DataSet["Modality"] }}, '
        '"sop": {{ DataSet.SOPInstanceUID }}, "from": {{ Association.CallingAET }}, "to": {{ Association.CalledAET }}, '
        '"source": {{ Source.Name }}, "old": {{ StudyInstanceUID }}, "message": {{ message }}}')
PATIENT_BODY = '{"who": {{ DataSet.PatientName }}, "id": {{ notification.DataSet.PatientID }}, "all": {{ DataSet }}}'
# Keys a template computes when it runs: no check at load can see them, the values are not there.
LEAKS = ('{"a": {{ DataSet|tojson }}, "b": {{ notification|tojson }}, "c": {{ DataSet.get(event[:0] ~ "Patient" ~ "Name") }}, '
         '"d": {{ notification[event[:0] ~ "Data" ~ "Set"][event[:0] ~ "Patient" ~ "ID"] }}, '
         '"e": {{ notification.values()|list|tojson }}}')


@pytest.fixture
def journal(tmp_path):
    opened = SQLiteJournal(str(tmp_path / "journal.sqlite"), node="router-a")
    yield opened
    opened.close()


@pytest.fixture
def servers():
    started: list[WebhookServer] = []
    yield lambda: started.append(WebhookServer((200,))) or started[-1]
    for server in started:
        server.close()


def test_one_template_reads_the_paths_of_an_event_and_of_a_rules_notification(tmp_path, journal, servers):
    server = servers()
    config = load_config(write_config(tmp_path, f"""
        notifiers:
          hook:
            type: webhook
            url: {server.url}
            body: {json.dumps(BODY)}
        notify:
          - {{event: instance-quarantined, to: [hook]}}
        """))
    events = Events(Notifications(journal, config))
    events.instance_quarantined(7, ARRIVAL, "no rule routed it")
    events.rule_notifications([RuleNotification("hook", "ready", "CT")], ARRIVAL, instance_id=7)
    events.rule_notifications([RuleNotification("hook", "study done", "per study")], ARRIVAL,
                              group=("study", "1.2.3", None, 4))
    NotificationSender(journal, config).tick()
    posted = sorted((post.json() for post in server.wait_for(3)), key=lambda body: (body["event"], body["sop"] or ""))
    same = {"study": "1.2.3", "modality": 'C"T\\', "from": "CT1", "to": "ROUTER", "source": "main", "old": "1.2.3"}
    assert posted == [
        {"event": "instance-quarantined", "sop": "1.2.3.4", "message": None, **same},
        {"event": "rule", "sop": None, "message": "study done", **same},  # a group's values: no one instance's
        {"event": "rule", "sop": "1.2.3.4", "message": "ready", **same},
    ]


def test_patient_data_by_path_reaches_only_the_notifier_that_opted_in_whatever_the_route(tmp_path, journal, servers):
    plain, opted = servers(), servers()
    config = load_config(write_config(tmp_path, f"""
        notifiers:
          plain:
            type: webhook
            url: {plain.url}
            body: {json.dumps(LEAKS)}
          opted:
            type: webhook
            url: {opted.url}
            patient_data: true
            body: {json.dumps(PATIENT_BODY)}
        notify:
          - {{event: instance-quarantined, to: [plain, opted]}}
        """))
    notifications = Notifications(journal, config)
    plain_id, opted_id = Events(notifications).instance_quarantined(7, ARRIVAL, "no rule routed it")
    # A caller handing a DataSet or an Association of its own cannot slip patient data in either.
    smuggled = notifications.send("plain", "instance-quarantined", {
        "DataSet": {"PatientName": "DOE^JANE"}, "Association": {"CallingAET": "CT1", "PatientID": "PID-77"},
        "notification": {"PatientName": "DOE^JANE"}}, {"PatientName": "DOE^JANE"})
    for number in (plain_id, smuggled):
        stored = json.dumps(journal.notification(number).context)
        assert "DOE^JANE" not in stored and "PID-77" not in stored and "ACC9" not in stored
    NotificationSender(journal, config).tick()
    for post in plain.wait_for(2):
        body = post.body.decode()
        assert "DOE^JANE" not in body and "PID-77" not in body and "ACC9" not in body
        assert post.json()["c"] is None and post.json()["d"] is None
    assert plain.wait_for(2)[0].json()["a"]["StudyInstanceUID"] == "1.2.3"
    received = opted.wait_for(1)[0].json()
    assert (received["who"], received["id"], received["all"]["AccessionNumber"]) == ("DOE^JANE", "PID-77", "ACC9")
    # Stored for an opted-in notifier, then the opt-in withdrawn: rendering leaves it out.
    withdrawn = template_values(journal.notification(opted_id).context, patient_data=False)
    assert "DOE^JANE" not in json.dumps(withdrawn) and withdrawn["DataSet"]["Modality"] == 'C"T\\'


def test_an_element_the_event_does_not_give_is_null_and_values_stay_json():
    context = template_values({"event": "reload-refused", "reason": 'a "quoted"\nreason', "findings": 1}, False)
    body = render('{"m": {{ DataSet.Modality }}, "c": {{ Association.CallingAET }}, "r": {{ reason }}}', "json", context)
    assert json.loads(body) == {"m": None, "c": None, "r": 'a "quoted"\nreason'}
    assert render("[{{ DataSet.Modality }}]", "text", context) == "[]"


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ DataSet.NoSuchKeyword }}", "DataSet.NoSuchKeyword: NoSuchKeyword is not a DICOM keyword"),
    ("{{ DataSet.PatientsName }}", "PatientsName is not a DICOM keyword; did you mean PatientName"),
    ("{{ DataSet.StudyInstanceUid }}", "did you mean DataSet.StudyInstanceUID?"),
    ("{{ DataSet.BodyPartExamined }}", "a notification does not give BodyPartExamined"),
    ("{{ notification.DataSet.Modalty }}", "did you mean DataSet.Modality?"),
    ("{{ Association.CallingAe }}", "did you mean Association.CallingAET?"),
    ("{{ DataSet.PatientName }}", "DataSet.PatientName: patient data: set patient_data: true"),
    ('{{ DataSet["PatientID"] }}', "DataSet.PatientID: patient data: set patient_data: true"),
    ("{{ DataSet|attr('AccessionNumber') }}", "'AccessionNumber': patient data: set patient_data: true"),
    ("{{ notification.DataSet.PatientName }}", "notification.DataSet.PatientName: patient data"),
    ('{{ notification["PatientID"] }}', "notification.PatientID: patient data"),
    ("{{ DataSet.get('PatientName') }}", "'PatientName': patient data"),
    ("{% set d = DataSet %}{{ d.PatientName }}", "d.PatientName: patient data"),
    ('{{ notification["Data" ~ "Set"]["Patient" ~ "ID"] }}', "PatientID: patient data"),
])
def test_a_path_a_template_cannot_read_is_refused_with_the_file_and_line(tmp_path, template, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, f"""
            notifiers:
              hook:
                type: webhook
                url: https://hooks.example.org/x
                body: |
                  {{"a": 1,
                   "b": {template}}}
            """))
    assert re.search(rf"router\.yaml:12: notifiers\.hook\.body: [^\n]*{re.escape(expected)}", str(caught.value))
