"""Notifications: webhooks received by a real local HTTP server, mail by a real local SMTP
server (aiosmtpd, with STARTTLS and a test certificate), the outbox on both journal backends,
the router's events with an injected clock, and templates that stay in their sandbox."""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
import textwrap
from email import message_from_bytes
from pathlib import Path

import pytest
from helpers.clock import StoppedClock
from helpers.notify_peers import SMTPServer, WebhookServer, make_pki, write_config

from rulesengine.arrival import Arrival
from rulesengine.config import ConfigError, load_config
from rulesengine.config.notification_templates import TemplateProblem, render
from rulesengine.runtime.events import Events
from rulesengine.runtime.journal import NotificationState, SQLiteJournal
from rulesengine.runtime.notifications import NotificationSender, Notifications, iso_time
from rulesengine.runtime.rules import RulesHolder

SENT, DEAD, RETRYING, QUEUED = (NotificationState.SENT, NotificationState.DEAD, NotificationState.RETRYING,
                                NotificationState.QUEUED)
ARRIVAL = Arrival(calling_aet="CT1", source_name="main", source_kind="listener", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                  sop_instance_uid="1.2.3.4", patient_id="PID-77", patient_name="DOE^JANE", accession_number="ACC9",
                  study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", modality="CT")


def problems(folder: Path, body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(folder, body))
    return str(caught.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(ca.crt, a server context for 127.0.0.1 signed by that CA)."""
    ca, certificate, key = make_pki(tmp_path_factory.mktemp("pki"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return ca, context


@pytest.fixture
def webhook():
    servers: list[WebhookServer] = []

    def start(*answers: int, hang: bool = False, tls_context=None) -> WebhookServer:
        servers.append(WebhookServer(answers or (200,), hang=hang, tls_context=tls_context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def journal(tmp_path):
    opened = SQLiteJournal(str(tmp_path / "journal.sqlite"), node="router-a")
    yield opened
    opened.close()


def hook_config(tmp_path, url: str, extra: str = ""):
    """ops-hook posting to `url` (3 attempts, 10 s apart, then 20), and the notifiers of `extra`."""
    return load_config(write_config(tmp_path, "notifiers:\n"
                                    f"  ops-hook:\n    type: webhook\n    url: {url}\n    timeout: 0.5\n"
                                    "    retry: {delay: 10, multiplier: 2, cap: 60, max_attempts: 3}\n"
                                    + textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n"
                                    "notify:\n  - {event: delivery-dead, to: [ops-hook]}\n"))


# ---- webhooks -------------------------------------------------------------------------------------


def test_a_webhook_posts_its_rendered_json_body_with_its_headers_and_secret_headers(tmp_path, webhook, journal,
                                                                                  monkeypatch):
    server = webhook(200)
    (tmp_path / "token.txt").write_text("Bearer from-a-file\n", encoding="utf-8")
    monkeypatch.setenv("HOOK_SIGNATURE", "s3cret")
    config = load_config(write_config(tmp_path, f"""
        notifiers:
          ops-hook:
            type: webhook
            url: {server.url}
            headers:
              X-Source: router
              Authorization: {{value_file: token.txt}}
              X-Signature: {{value_env: HOOK_SIGNATURE}}
            body: |
              {{"text": {{{{ reason }}}},
               "where": {{{{ destination }}}},
               "tries": {{{{ attempts }}}},
               "all": {{{{ notification | tojson }}}}}}
        """))
    clock = StoppedClock(1_800_000_000.0)
    number = Notifications(journal, config, clock).send(
        "ops-hook", "delivery-dead", {"destination": "PACS", "reason": 'refused "x"\n\\ }', "attempts": 3})
    sender = NotificationSender(journal, config, clock)
    assert sender.tick() == 1
    [posted] = server.wait_for(1)
    body = posted.json()
    assert body["text"] == 'refused "x"\n\\ }' and body["where"] == "PACS" and body["tries"] == 3
    assert body["all"]["event"] == "delivery-dead" and body["all"]["node"] == "router-a"
    assert body["all"]["time"] == "2027-01-15T08:00:00Z"
    assert posted.headers["authorization"] == "Bearer from-a-file" and posted.headers["x-signature"] == "s3cret"
    assert posted.headers["x-source"] == "router" and posted.headers["content-type"] == "application/json"
    assert journal.notification(number).state == SENT and journal.due_notifications(10, clock()) == []
    sender.stop()


def test_a_failed_post_is_retried_after_its_backoff_then_sent(tmp_path, webhook, journal):
    server = webhook(500, 200)
    config = hook_config(tmp_path, server.url)
    clock = StoppedClock()
    number = Notifications(journal, config, clock).send("ops-hook", "delivery-dead", {"reason": "x"})
    sender = NotificationSender(journal, config, clock)
    sender.tick()
    server.wait_for(1)
    failed = journal.notification(number)
    assert failed.state == RETRYING and failed.attempts == 1 and failed.last_error.startswith("HTTP 500")
    assert failed.next_attempt_at == clock.now + 10
    assert sender.tick() == 0 and len(server.posted) == 1  # not due before its backoff
    clock.advance(10)
    assert sender.tick() == 1
    assert len(server.wait_for(2)) == 2 and journal.notification(number).state == SENT
    sender.stop()


def test_a_notification_is_dead_after_its_attempts_with_the_reason_logged(tmp_path, webhook, journal, caplog):
    server = webhook(503)
    config = hook_config(tmp_path, server.url)
    clock = StoppedClock()
    number = Notifications(journal, config, clock).send("ops-hook", "delivery-dead", {"reason": "x"})
    sender = NotificationSender(journal, config, clock)
    with caplog.at_level(logging.WARNING, logger="rulesengine.notifications"):
        for _ in range(5):
            sender.tick()
            clock.advance(120)
    assert len(server.posted) == 3  # max_attempts: never retried for ever
    dead = journal.notification(number)
    assert dead.state == DEAD and dead.attempts == 3 and "HTTP 503" in dead.last_error
    assert any(record.levelno == logging.ERROR and f"notification {number}" in record.getMessage()
               and "is dead" in record.getMessage() for record in caplog.records)
    assert [n.id for n in journal.notifications([DEAD])] == [number]
    sender.stop()


def test_a_server_that_never_answers_times_out_and_is_tried_again(tmp_path, webhook, journal):
    server = webhook(hang=True)
    config = hook_config(tmp_path, server.url)
    clock = StoppedClock()
    number = Notifications(journal, config, clock).send("ops-hook", "delivery-dead", {"reason": "x"})
    sender = NotificationSender(journal, config, clock)
    sender.tick()
    waiting = journal.notification(number)
    assert waiting.state == RETRYING and "no answer within 0.5 s" in waiting.last_error
    sender.stop()


def test_an_https_webhook_is_posted_to_a_server_whose_certificate_chains_to_its_ca_certificates(tmp_path, webhook,
                                                                                                journal, pki):
    ca, context = pki
    server = webhook(200, tls_context=context)
    trusting = hook_config(tmp_path, server.url, extra=f"""
        checked:
          type: webhook
          url: {server.url}
          ca_certificates: {ca}
        """)
    refused = Notifications(journal, trusting).send("ops-hook", "delivery-dead", {"reason": "x"})  # system CAs
    sent = Notifications(journal, trusting).send("checked", "delivery-dead", {"reason": "y"})
    NotificationSender(journal, trusting).tick()
    assert [posted.json()["reason"] for posted in server.wait_for(1)] == ["y"]
    assert journal.notification(sent).state == SENT
    failed = journal.notification(refused)
    assert failed.state == RETRYING and "CERTIFICATE_VERIFY_FAILED" in failed.last_error


def test_a_request_the_server_refuses_as_bad_is_dead_at_once(tmp_path, webhook, journal):
    server = webhook(400)
    config = hook_config(tmp_path, server.url)
    number = Notifications(journal, config).send("ops-hook", "delivery-dead", {"reason": "x"})
    NotificationSender(journal, config).tick()
    assert journal.notification(number).state == DEAD and len(server.posted) == 1


def test_a_body_that_only_a_real_value_makes_invalid_is_dead_with_the_reason(tmp_path, webhook, journal):
    server = webhook(200)
    # the sample values (20 attempts) render valid JSON, so the configuration is accepted
    config = hook_config(tmp_path, server.url, extra="""
        late:
          type: webhook
          url: URL
          body: '{"a": {{ attempts }}{% if attempts > 100 %},{% endif %}}'
        """.replace("URL", server.url))
    number = Notifications(journal, config).send("late", "delivery-dead", {"attempts": 101})
    NotificationSender(journal, config).tick()
    dead = journal.notification(number)
    assert dead.state == DEAD and "not valid JSON" in dead.last_error and server.posted == []


def test_a_notifier_removed_from_the_configuration_leaves_its_notifications_dead_not_waiting(tmp_path, webhook,
                                                                                           journal):
    server = webhook(200)
    config = hook_config(tmp_path, server.url)
    number = Notifications(journal, config).send("ops-hook", "delivery-dead", {"reason": "x"})
    sender = NotificationSender(journal, config)
    sender.configure(dataclasses.replace(config, notifiers={}))  # a reload removed it
    sender.tick()
    dead = journal.notification(number)
    assert dead.state == DEAD and "no notifier of that name" in dead.last_error


# ---- privacy --------------------------------------------------------------------------------------


def test_patient_data_reaches_only_a_notifier_that_opted_in(tmp_path, webhook, journal):
    plain, opted = webhook(200), webhook(200)
    config = load_config(write_config(tmp_path, f"""
        notifiers:
          plain: {{type: webhook, url: "{plain.url}"}}
          opted:
            type: webhook
            url: {opted.url}
            patient_data: true
            body: '{{"who": {{{{ PatientName }}}}, "id": {{{{ PatientID }}}}, "uid": {{{{ SOPInstanceUID }}}}}}'
        notify:
          - {{event: instance-quarantined, to: [plain, opted]}}
        """))
    events = Events(Notifications(journal, config))
    plain_id, opted_id = events.instance_quarantined(7, ARRIVAL, "no rule routed it")
    stored = journal.notification(plain_id).context
    assert "PatientName" not in stored and "PatientID" not in stored and "AccessionNumber" not in stored
    assert "DOE^JANE" not in json.dumps(stored) and "PID-77" not in json.dumps(stored)  # never in the journal
    assert stored["SOPInstanceUID"] == "1.2.3.4" and stored["reason"] == "no rule routed it"
    assert journal.notification(opted_id).context["PatientName"] == "DOE^JANE"
    NotificationSender(journal, config).tick()
    assert "DOE^JANE" not in plain.wait_for(1)[0].body.decode()
    assert opted.wait_for(1)[0].json() == {"who": "DOE^JANE", "id": "PID-77", "uid": "1.2.3.4"}


def test_a_template_naming_patient_data_without_the_opt_in_is_refused_at_load(tmp_path):
    text = problems(tmp_path, """
        notifiers:
          hook:
            type: webhook
            url: https://hooks.example.org/x
            body: |
              {"a": 1,
               "who": {{ PatientName }}}
        """)
    assert "router.yaml:12: notifiers.hook.body: PatientName: patient data: set patient_data: true" in text


# ---- templates in their sandbox -------------------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ reason.__class__.__base__.__subclasses__() }}",
    "{{ reason['__class__'] }}",
    "{{ notification.__init__.__globals__ }}",
    "{{ reason|attr('__class__') }}",
    "{% set x = reason._private %}{{ x }}",
])
def test_a_template_reaching_for_python_internals_is_refused_when_the_configuration_is_read(tmp_path, template):
    text = problems(tmp_path, f"""
        notifiers:
          hook:
            type: email
            host: 127.0.0.1
            from: router@example.org
            to: [ops@example.org]
            tls: none
            subject: {json.dumps(template)}
        """)
    assert "router.yaml:13: notifiers.hook.subject:" in text and "refused" in text


def test_the_sandbox_refuses_what_slips_past_the_checks_and_bounds_what_a_template_builds():
    built = "('_' ~ '_cla' ~ 'ss_' ~ '_')"  # a name put together at run time: the sandbox refuses it
    assert render(f"{{{{ reason|attr{built} }}}}", "text", {"reason": "x"}) == ""  # nothing of the class
    assert render(f"{{{{ reason|attr{built} }}}}", "json", {"reason": "x"}) == "null"
    with pytest.raises(TemplateProblem, match="sandbox"):
        render(f"{{{{ (reason|attr{built}).mro() }}}}", "text", {"reason": "x"})
    with pytest.raises(TemplateProblem, match="sandbox"):
        render("{{ 'x' * 10**8 }}", "text", {})
    with pytest.raises(TemplateProblem, match="Range too big|range"):
        render("{% for i in range(10**8) %}{% endfor %}", "text", {})
    with pytest.raises(TemplateProblem, match="exponent"):
        render("{{ 9 ** 99999999 }}", "text", {})


def test_every_value_of_a_json_body_is_written_as_json_whatever_it_holds():
    hostile = '"}, "admin": true, "x": {"'
    body = render('{"reason": {{ reason }}, "n": {{ count }}, "none": {{ missing }}}', "json",
                  {"reason": hostile, "count": 3})
    assert json.loads(body) == {"reason": hostile, "n": 3, "none": None}


# ---- e-mail ---------------------------------------------------------------------------------------


@pytest.fixture
def smtp():
    servers: list[SMTPServer] = []

    def start(**options) -> SMTPServer:
        servers.append(SMTPServer(**options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def mail_config(tmp_path, port: int, tls: str, extra: str = ""):
    return load_config(write_config(tmp_path, "notifiers:\n  ops-mail:\n    type: email\n    host: 127.0.0.1\n"
                                    f"    port: {port}\n    tls: {tls}\n    from: router@example.org\n"
                                    "    to: [ops@example.org, pacs-admin@example.org]\n    timeout: 5\n"
                                    "    retry: {delay: 1, max_attempts: 2}\n"
                                    + textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n"
                                    "notify:\n  - {event: delivery-dead, to: [ops-mail]}\n"))


def test_mail_is_sent_over_starttls_with_a_login_checked_against_the_test_ca(tmp_path, smtp, journal, monkeypatch,
                                                                            pki):
    ca, context = pki
    server = smtp(tls_context=context, user="router", password="pw-1")
    monkeypatch.setenv("SMTP_PASSWORD", "pw-1")
    config = mail_config(tmp_path, server.port, "starttls", extra=f"""
        username: router
        password_env: SMTP_PASSWORD
        ca_certificates: {ca}
        subject: "[{{{{ node }}}}] {{{{ event }}}}: {{{{ reason }}}}"
        """)
    number = Notifications(journal, config).send(
        "ops-mail", "delivery-dead", {"destination": "PACS", "reason": "refused\r\nBcc: victim@example.org"})
    NotificationSender(journal, config).tick()
    [envelope] = server.wait_for(1)
    message = message_from_bytes(envelope.content)
    assert envelope.rcpt_tos == ["ops@example.org", "pacs-admin@example.org"] and server.logins == ["router"]
    assert message["Subject"] == "[router-a] delivery-dead: refused Bcc: victim@example.org"  # one line, no header
    assert message["Bcc"] is None and "victim" not in " ".join(envelope.rcpt_tos)
    assert "destination: PACS" in message.get_payload(decode=True).decode()
    assert journal.notification(number).state == SENT


def test_a_server_without_starttls_gets_nothing_in_plain_text_when_starttls_is_asked(tmp_path, smtp, journal):
    server = smtp()  # plain only
    config = mail_config(tmp_path, server.port, "starttls")
    number = Notifications(journal, config).send("ops-mail", "delivery-dead", {"reason": "x"})
    NotificationSender(journal, config).tick()
    failed = journal.notification(number)
    assert failed.state == RETRYING and "STARTTLS" in failed.last_error and server.messages == []


def test_plain_smtp_when_configured_so(tmp_path, smtp, journal):
    server = smtp()
    config = mail_config(tmp_path, server.port, "none")
    Notifications(journal, config).send("ops-mail", "delivery-dead", {"reason": "disk full", "destination": "PACS"})
    NotificationSender(journal, config).tick()
    message = message_from_bytes(server.wait_for(1)[0].content)
    assert message["Subject"] == "[router-a] delivery-dead: PACS" and message["From"] == "router@example.org"


# ---- the outbox, on both journal backends ----------------------------------------------------------


def test_the_outbox_keeps_notifications_until_sent_or_dead(open_journal):
    journal = open_journal("a", 1)
    first = journal.add_notification("hook", "delivery-dead", {"reason": "x", "n": 1}, now=100.0)
    second = journal.add_notification("mail", "reload-refused", {"reason": "é"}, now=101.0)
    assert second > first
    assert [n.id for n in journal.due_notifications(10, now=100.5)] == [first]
    assert journal.next_notification_due() == 100.0
    assert journal.notification_failed(first, "HTTP 500", retry_at=200.0, now=102.0) == RETRYING
    assert [n.id for n in journal.due_notifications(10, now=150.0)] == [second]
    journal.notification_sent(second, now=103.0)
    assert journal.notification_failed(first, "HTTP 500" + "!" * 5000, retry_at=None, now=201.0) == DEAD
    dead = journal.notification(first)
    assert dead.attempts == 2 and len(dead.last_error) == 2000 and dead.context == {"reason": "x", "n": 1}
    assert journal.notification(second).context == {"reason": "é"} and journal.notification(second).sent_at == 103.0
    assert journal.due_notifications(10, now=10_000.0) == [] and journal.next_notification_due() is None
    assert journal.notification_counts() == {SENT: 1, DEAD: 1}
    other = open_journal("b", 2)  # another process, or another node: the same outbox
    assert [n.id for n in other.notifications([DEAD])] == [first]
    assert other.purge_notifications(older_than=202.0) == 2 and journal.notification_counts() == {}
    third = journal.add_notification("hook", "delivery-dead", {}, now=300.0)
    assert third > second  # numbers are never reused


def test_one_sender_at_a_time_sends_the_outbox(open_journal, tmp_path, webhook):
    server = webhook(200)
    config = hook_config(tmp_path, server.url)
    first, second = open_journal("a", 1), open_journal("b", 2)
    sent: list[str] = []
    one = NotificationSender(first, config, send=lambda notifier, context: sent.append("one") or "ok")
    two = NotificationSender(second, config, send=lambda notifier, context: sent.append("two") or "ok")
    first.add_notification("ops-hook", "delivery-dead", {})
    assert one.tick() == 1 and two.tick() == 0  # two waits while one holds the lock "notifications"
    second.add_notification("ops-hook", "delivery-dead", {})
    assert two.tick() == 0 and one.tick() == 1
    one.stop()  # one stops: two takes over
    second.add_notification("ops-hook", "delivery-dead", {})
    assert two.tick() == 1 and sent == ["one", "one", "two"]
    two.stop()


# ---- the router's events --------------------------------------------------------------------------


HOOK_AT_ONCE_PAGER_AFTER_10M = """
    notifiers:
      hook: {type: webhook, url: "https://hooks.example.org/x"}
      pager: {type: webhook, url: "https://pager.example.org/x"}
    notify:
      - {event: destination-unreachable, to: [hook]}
      - {event: destination-unreachable, after: 10m, to: [pager]}
    """


def test_an_unreachable_destination_is_told_once_it_has_been_down_for_after(tmp_path, journal):
    config = load_config(write_config(tmp_path, HOOK_AT_ONCE_PAGER_AFTER_10M))
    clock = StoppedClock(1_000_000.0)
    events = Events(Notifications(journal, config, clock), clock)
    [first] = events.destination_failed("PACS", "connection refused", lambda: 42)
    assert journal.notification(first).notifier == "hook"
    clock.advance(599)
    assert events.destination_failed("PACS", "connection refused") == []
    clock.advance(1)
    [paged] = events.destination_failed("PACS", "connection refused", lambda: 40)
    context = journal.notification(paged).context
    assert context["seconds"] == 600 and context["waiting"] == 40 and context["destination"] == "PACS"
    clock.advance(3600)
    assert events.destination_failed("PACS", "still refused") == []  # once per outage
    events.destination_reached("PACS")
    clock.advance(60)
    assert len(events.destination_failed("PACS", "refused again")) == 1  # a new outage: hook at once, pager later
    assert events.destination_failed("OTHER", "refused") != []  # each destination its own outage


def test_an_outage_met_by_several_processes_and_nodes_is_told_once(tmp_path, open_journal):
    """Each worker process meets the destination down in turn (the journal's pause passes the
    queue from one to the next): the outage is the cluster's, told once per subscription."""
    config = load_config(write_config(tmp_path, HOOK_AT_ONCE_PAGER_AFTER_10M))
    clock = StoppedClock(1_000_000.0)
    journals = [open_journal("node-a", 1), open_journal("node-a", 2), open_journal("node-b", 1)]
    processes = [Events(Notifications(journal, config, clock), clock) for journal in journals]
    told = []
    for minute in range(15):  # a failed attempt a minute, each process in turn
        told += processes[minute % 3].destination_failed("PACS", "connection refused")
        clock.advance(60)
    by_notifier = sorted(journals[0].notification(number).notifier for number in told)
    assert by_notifier == ["hook", "pager"], by_notifier
    paged = journals[0].notification(max(told)).context
    assert paged["seconds"] == 600 and paged["since"] == iso_time(1_000_000.0)
    # a process that never met the outage delivers: it asks the journal, and the outage is over
    processes[1]._failing.clear()
    processes[1].destination_reached("PACS")
    assert not journals[2].outage_known("PACS")
    assert len(processes[2].destination_failed("PACS", "refused again")) == 1  # a new outage: the hook again


def test_a_refused_reload_raises_reload_refused_with_the_findings(tmp_path, journal):
    path = write_config(tmp_path, """
        notifiers:
          hook: {type: webhook, url: "https://hooks.example.org/x"}
        notify:
          - {event: reload-refused, to: [hook]}
        """)
    config = load_config(path)
    holder = RulesHolder(config, journal)
    holder.events = Events(Notifications(journal, config))
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PACSS\n}\n', encoding="utf-8")
    assert holder.reload() is False
    [notification] = journal.notifications()
    assert notification.event == "reload-refused" and "PACSS" in notification.context["reason"]
    assert "main.rules:2" in notification.context["reason"] and notification.context["findings"] >= 1


def test_nothing_is_queued_for_an_event_nobody_subscribed_to(tmp_path, journal):
    config = load_config(write_config(tmp_path, """
        notifiers:
          hook: {type: webhook, url: "https://hooks.example.org/x"}
        notify:
          - {event: reload-refused, to: [hook]}
        """))
    events = Events(Notifications(journal, config))
    assert events.instance_quarantined(1, ARRIVAL, "x") == [] and journal.notification_counts() == {}


# ---- the configuration, checked adversarially -------------------------------------------------------


def test_every_mistake_of_notifiers_and_subscriptions_is_reported_with_its_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VARIABLE_FOR_TESTS", raising=False)
    text = problems(tmp_path, """
        notifiers:
          local-file: {type: webhook, url: "file:///etc/passwd"}
          with-credentials: {type: webhook, url: "https://user:pw@hooks.example.org/"}
          no-host: {type: webhook, url: "https:///x"}
          bad-body:
            type: webhook
            url: https://hooks.example.org/
            body: |
              {"a": 1,
               "b": {{ reason }
          quoted: {type: webhook, url: "https://hooks.example.org/", body: '{"a": "{{ reason }}"}'}
          unknown-name: {type: webhook, url: "https://hooks.example.org/", body: '{{ nonsense }}'}
          secret: {type: webhook, url: "https://h.example.org/", headers: {X-Key: {value_env: NO_SUCH_VARIABLE_FOR_TESTS}}}
          header-break: {type: webhook, url: "https://h.example.org/", headers: {X-Key: "a\\r\\nX-Evil: 1"}}
          mail-plain-password:
            type: email
            host: smtp.example.org
            from: router@example.org
            to: [ops@example.org]
            tls: none
            username: router
            password_env: SMTP_PASSWORD
          mail-no-password: {type: email, host: smtp.example.org, from: a@b.c, to: [ops@example.org], username: r}
          mail-no-to: {type: email, host: smtp.example.org, from: a@b.c, to: []}
        notify:
          - {event: delivery-dead, to: [local-flie]}
          - {event: disk-full, to: [quoted]}
          - {event: reload-refused, to: [quoted], after: 5m}
          - {event: destination-unreachable, to: [quoted], after: soon}
        """)
    expected = [
        "router.yaml:7: notifiers.local-file.url: 'file:///etc/passwd': only http:// and https://",
        "router.yaml:8: notifiers.with-credentials.url: the address holds credentials",
        "router.yaml:9: notifiers.no-host.url: 'https:///x' names no host",
        "router.yaml:15: notifiers.bad-body.body: not a valid template",
        "router.yaml:16: notifiers.quoted.body: the body is not valid JSON",
        "router.yaml:17: notifiers.unknown-name.body: unknown name nonsense",
        "router.yaml:18: notifiers.secret.headers.X-Key.value_env: the environment variable "
        "NO_SUCH_VARIABLE_FOR_TESTS is not set",
        "router.yaml:19: notifiers.header-break.headers.X-Key",
        "router.yaml:25: notifiers.mail-plain-password.tls: a password is never sent without TLS",
        "router.yaml:28: notifiers.mail-no-password.username: a username without a password",
        "router.yaml:29: notifiers.mail-no-to.to: [] should be non-empty",
        "router.yaml:31: notify[0].to[0]: unknown notifier 'local-flie' (did you mean local-file?)",
        "router.yaml:32: notify[1].event: must be one of delivery-dead, instance-quarantined, reload-refused, "
        "destination-unreachable, disk-low, disk-recovered, not 'disk-full'",
        "router.yaml:33: notify[2].after: after applies to destination-unreachable only",
        "router.yaml:34: notify[3].after:",
    ]
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"


def test_a_valid_configuration_loads_its_notifiers_and_subscriptions(tmp_path):
    config = load_config(write_config(tmp_path, """
        notifiers:
          ops-hook: {type: webhook, url: "https://hooks.example.org/x", timeout: 3}
          ops-mail: {type: email, host: smtp.example.org, tls: implicit, from: a@b.org, to: [c@d.org]}
        notify:
          - {event: delivery-dead, to: [ops-mail, ops-hook]}
          - {event: destination-unreachable, after: 10m, to: [ops-hook]}
          - {event: destination-unreachable, after: 90, to: [ops-hook]}
        """))
    assert config.notifiers["ops-hook"].timeout == 3.0 and config.notifiers["ops-mail"].smtp_port() == 465
    assert [(s.event, s.to, s.after) for s in config.notify] == [
        ("delivery-dead", ("ops-mail", "ops-hook"), 0.0), ("destination-unreachable", ("ops-hook",), 600.0),
        ("destination-unreachable", ("ops-hook",), 90.0)]


def test_the_console_shows_a_webhook_without_its_headers_nor_the_path_of_its_address():
    from rulesengine.console.actions import MASK, masked_configuration
    shown = masked_configuration(textwrap.dedent("""
        notifiers:
          chat:
            type: webhook
            url: https://hooks.example.org:8443/services/T000/B000/SECRETPATH?token=SECRETQUERY
            headers: {Authorization: Bearer SECRETHEADER, X-Key: {value_env: HOOK_KEY}}
          mail: {type: email, host: smtp.example.org, password_file: /etc/smtp-password, from: a@b.c, to: [d@e.f]}
        """))
    assert "SECRET" not in shown and "HOOK_KEY" not in shown and "/etc/smtp-password" not in shown
    assert f"https://hooks.example.org:8443/{MASK}" in shown and "smtp.example.org" in shown

