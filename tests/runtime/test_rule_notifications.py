"""A rule's `notify` at run time, and the disk watermark's events: queued in the journal's outbox
once an instance is settled (a group rule's once per firing, with the group's values), sent by
the NotificationSender to a real local HTTP server and a real SMTP server (aiosmtpd); a notifier
removed by a reload, a template a real value breaks, and a low disk told once per change
(statvfs and the clock injected)."""

from __future__ import annotations

import dataclasses
import logging
import textwrap
from email import message_from_bytes
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.clock import StoppedClock
from helpers.files import write
from helpers.instances import make_study
from helpers.notify_peers import SMTPServer, WebhookServer
from pydicom.uid import generate_uid

from rulesengine.arrival import Arrival
from rulesengine.config import ConfigError, load_config
from rulesengine.runtime.disk_space import CHECK_SECONDS, DiskSpace
from rulesengine.runtime.events import Events
from rulesengine.runtime.journal import NotificationState
from rulesengine.runtime.notifications import NotificationSender, Notifications
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.service import Router
from rulesengine.runtime.storage import Storage

GB = 10 ** 9
ARRIVAL = Arrival(calling_aet="CT1", called_aet="ROUTER", peer_address="127.0.0.1", peer_port=40123,
                  source_name="main", source_kind="listener")

RULES = """
rule "every CT" {
  when DataSet.Modality == "CT"
  then {
    route to PACS
    notify hook "CT from " + Association.CallingAET
  }
}

rule "study for the AI" per study {
  late refire
  when count() >= 2
  then {
    route to AI
    notify mail "study ready: " + count() + " instances"
  }
}
"""


def config_text(hook_url: str, smtp_port: int, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        storage: storage
        processes: 1
        rules: main.rules
        group_quiet_time: 1m
        destinations:
          AI: {{type: folder, path: out/ai}}
          PACS: {{type: folder, path: out/pacs}}
        notifiers:
          hook: {{type: webhook, url: "{hook_url}", timeout: 5, retry: {{delay: 10, max_attempts: 2}}}}
          mail:
            type: email
            host: 127.0.0.1
            port: {smtp_port}
            tls: none
            from: router@example.org
            to: [radiology@example.org]
            timeout: 5
        """) + textwrap.dedent(extra)


@dataclasses.dataclass
class Setup:
    config: object
    storage: Storage
    journal: object
    pipeline: Pipeline
    clock: StoppedClock
    sender: NotificationSender

    def send(self, source: Path) -> int:
        path = self.storage.temp_path()
        Path(path).write_bytes(Path(source).read_bytes())
        return self.pipeline.receive(path, ARRIVAL).instance_id

    def notifications(self):
        return sorted(self.journal.notifications(), key=lambda item: item.id)


@pytest.fixture
def peers():
    hook, smtp = WebhookServer((200,)), SMTPServer()
    yield hook, smtp
    hook.close()
    smtp.close()


@pytest.fixture
def setup(tmp_path, peers):
    made: list[Setup] = []

    def make(rules: str = RULES, extra: str = "") -> Setup:
        hook, smtp = peers
        write(tmp_path / "router.yaml", config_text(hook.url, smtp.port, extra))
        write(tmp_path / "main.rules", rules)
        config = load_config(tmp_path / "router.yaml")
        storage = Storage(config.storage)
        journal = storage.journal()
        clock = StoppedClock(1_800_000_000.0)
        events = Events(Notifications(journal, config, clock), clock)
        pipeline = Pipeline(storage, journal, RulesHolder(config, journal), lambda names: None,
                            on_accepted=lambda _id: None, clock=clock, events=events)
        made.append(Setup(config, storage, journal, pipeline, clock, NotificationSender(journal, config, clock)))
        return made[-1]

    yield make
    for one in made:
        one.pipeline.claims.stop()
        one.sender.stop()
        one.journal.close()


def test_an_instance_rule_notifies_once_settled_and_the_webhook_gets_its_values(setup, peers, tmp_path):
    hook, _ = peers
    router = setup()
    [first] = make_study(tmp_path / "study", [("Axial", 1, 1)])
    instance_id = router.send(first.path)
    assert router.notifications() == []  # nothing before it is processed
    router.pipeline.process_pending()
    [queued] = router.notifications()
    assert (queued.notifier, queued.event) == ("hook", "rule")
    context = queued.context
    assert context["rule"] == "every CT" and context["message"] == "CT from CT1"
    assert (context["level"], context["instances"], context["instance_id"]) == ("instance", 1, instance_id)
    assert context["SOPInstanceUID"] == first.sop_instance_uid and context["Modality"] == "CT"
    assert "PatientName" not in context and "PatientID" not in context  # the hook did not opt in
    assert router.sender.tick() == 1
    [posted] = hook.wait_for(1)
    body = posted.json()
    assert body["event"] == "rule" and body["message"] == "CT from CT1" and body["rule"] == "every CT"
    assert router.journal.notification(queued.id).state == NotificationState.SENT
    router.pipeline.process_pending()
    assert len(router.notifications()) == 1  # processed once, notified once


def test_a_group_rule_notifies_once_per_firing_with_the_group_values_by_mail(setup, peers, tmp_path):
    _, smtp = peers
    router = setup()
    study = generate_uid()
    files = make_study(tmp_path / "study", [("Axial", 2, 1), ("Sag", 1, 2)], study_uid=study)
    for made in files:
        router.send(made.path)
    router.pipeline.process_pending()
    assert [item.notifier for item in router.notifications()] == ["hook"] * 3  # the instance rule, each
    router.clock.advance(61)
    assert router.pipeline.groups.fire_due() == 1
    [group] = [item for item in router.notifications() if item.notifier == "mail"]
    context = group.context
    assert context["rule"] == "study for the AI" and context["message"] == "study ready: 3 instances"
    assert (context["level"], context["instances"], context["StudyInstanceUID"]) == ("study", 3, study)
    assert context["SeriesInstanceUID"] is None and "SOPInstanceUID" not in context
    router.sender.tick()
    [envelope] = smtp.wait_for(1)
    message = message_from_bytes(envelope.content)
    assert message["Subject"].endswith("] rule: study ready: 3 instances")
    assert "level: study" in message.get_payload(decode=True).decode()

    [late] = make_study(tmp_path / "late", [("Axial", 1, 1)], study_uid=study)
    router.send(late.path)
    router.pipeline.process_pending()  # late refire: its actions for it alone, once
    refired = [item for item in router.notifications() if item.notifier == "mail"][1:]
    assert [(item.context["instances"], item.context["message"]) for item in refired] == [
        (1, "study ready: 4 instances")]


def test_a_notifier_removed_by_a_reload_leaves_what_was_queued_for_it_dead_with_the_reason(setup, tmp_path, caplog):
    router = setup()
    [first] = make_study(tmp_path / "study", [("Axial", 1, 1)])
    router.send(first.path)
    router.pipeline.process_pending()
    [queued] = router.notifications()
    router.sender.configure(dataclasses.replace(router.config, notifiers={}))  # a reload removed `hook`
    caplog.set_level(logging.ERROR, logger="rulesengine.notifications")
    assert router.sender.tick() == 1
    dead = router.journal.notification(queued.id)
    assert dead.state == NotificationState.DEAD and "no notifier of that name" in dead.last_error
    router.clock.advance(3600)
    assert router.sender.tick() == 0  # dead is dead: never tried again
    # a rule set version answered before the reload, still naming it: said, not queued, not raised
    notifications = Notifications(router.journal, dataclasses.replace(router.config, notifiers={}))
    assert notifications.send("hook", "rule", {"rule": "every CT"}) is None
    assert "no notifier of that name is configured" in caplog.text


def test_a_template_that_a_real_rule_breaks_is_dead_at_once_with_the_reason(setup, peers, tmp_path):
    hook, _ = peers
    rules = 'rule "all" {\n  then {\n    route to PACS\n    notify hook\n  }\n}\n'
    router = setup(rules, extra="""\
        notify: []
        """)
    router.sender.configure(dataclasses.replace(router.config, notifiers={
        "hook": dataclasses.replace(router.config.notifiers["hook"], body='{"text": {{ message.upper() }}}')}))
    [first] = make_study(tmp_path / "study", [("Axial", 1, 1)])
    router.send(first.path)
    router.pipeline.process_pending()
    [queued] = router.notifications()
    assert queued.context["message"] is None  # `notify hook` without a message
    router.sender.tick()
    dead = router.journal.notification(queued.id)
    assert dead.state == NotificationState.DEAD and "cannot be rendered" in dead.last_error
    assert dead.attempts == 1 and hook.posted == []


def test_the_rule_event_s_values_are_known_to_templates_when_the_configuration_is_read(tmp_path):
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    write(tmp_path / "router.yaml", textwrap.dedent("""\
        storage: storage
        rules: main.rules
        destinations:
          PACS: {type: folder, path: out}
        notifiers:
          hook:
            type: webhook
            url: "http://127.0.0.1:9/x"
            body: '{"t": {{ rule ~ ": " ~ (message or "") }}, "n": {{ instances }}, "l": {{ level }}}'
        """))
    assert load_config(tmp_path / "router.yaml").notifiers["hook"].body.startswith('{"t"')


# ---- the disk watermark ---------------------------------------------------------------------------


class FakeDisk:
    """statvfs of a 100 GB file system whose free space the test sets."""

    def __init__(self, free: int):
        self.free = free

    def __call__(self, folder: str):
        return SimpleNamespace(f_bavail=self.free, f_frsize=1, f_blocks=100 * GB)


def test_a_low_disk_is_told_once_per_change_not_once_per_refused_instance(tmp_path, peers):
    hook, smtp = peers
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    write(tmp_path / "router.yaml", config_text(hook.url, smtp.port, """\
        storage_min_free: 2GB
        notify:
          - {event: disk-low, to: [hook]}
          - {event: disk-recovered, to: [hook, mail]}
        """))
    router = Router(load_config(tmp_path / "router.yaml"))  # not started: its wiring is what is tested
    disk, clock = FakeDisk(free=50 * GB), StoppedClock(100.0)
    router.storage.disk.statvfs, router.storage.disk.clock = disk, clock
    try:
        assert router.storage.disk.low() is None
        disk.free = GB
        for _ in range(5):  # five instances refused, the housekeeper asking in between
            clock.advance(CHECK_SECONDS)
            assert router.storage.disk.low() is not None
        [low] = router.journal.notifications()
        assert (low.notifier, low.event) == ("hook", "disk-low")
        assert low.context["min_free"] == "2GB" and "1.0 GB free" in low.context["reason"]
        disk.free = 50 * GB
        clock.advance(CHECK_SECONDS)
        assert router.storage.disk.low() is None
        clock.advance(CHECK_SECONDS)
        router.storage.disk.low()
        recovered = [item for item in router.journal.notifications() if item.event == "disk-recovered"]
        assert sorted(item.notifier for item in recovered) == ["hook", "mail"]
        assert "room again" in recovered[0].context["reason"]
        disk.free = GB
        clock.advance(CHECK_SECONDS)
        router.storage.disk.low()
        assert len([item for item in router.journal.notifications() if item.event == "disk-low"]) == 2
        sender = NotificationSender(router.journal, router.config)
        while sender.tick():
            pass
        assert sorted(post.json()["event"] for post in hook.wait_for(3)) == ["disk-low", "disk-low", "disk-recovered"]
        assert "disk-recovered" in message_from_bytes(smtp.wait_for(1)[0].content)["Subject"]
        sender.stop()
    finally:
        router.journal.close()


def test_a_watermark_without_subscriptions_queues_nothing(tmp_path):
    events = Events(None)
    space = DiskSpace("/s", None)
    space.on_change.append(lambda low, reason: events.disk_changed(low, reason))
    assert space.low() is None and events.disk_changed(True, "low") == []


@pytest.mark.parametrize("body, problem", [
    ("storage_min_free: 0\nnotify:\n  - {event: disk-low, to: [hook]}\n",
     "notify[0].event: disk-low is raised only with storage_min_free, which is not set"),
    ("notify:\n  - {event: disk-recovered, to: [hook]}\n",
     "notify[0].event: disk-recovered is raised only with storage_min_free"),
    ("storage_min_free: 5%\nnotify:\n  - {event: disk-full, to: [hook]}\n", "disk-full"),
    ("storage_min_free: 5%\nnotify:\n  - {event: disk-low, after: 10m, to: [hook]}\n",
     "after applies to destination-unreachable only, not to disk-low"),
    ("storage_min_free: 5%\nnotify:\n  - {event: disk-low, to: [hok]}\n", "unknown notifier 'hok' (did you mean hook?)"),
])
def test_disk_subscriptions_are_checked_when_the_configuration_is_read(tmp_path, body, problem):
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to PACS\n}\n')
    write(tmp_path / "router.yaml", config_text("http://127.0.0.1:9/x", 25, body))
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "router.yaml")
    assert problem in str(caught.value)
    assert "router.yaml:" in str(caught.value)
