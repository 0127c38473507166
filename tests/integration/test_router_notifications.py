"""Notifications from a real router: a destination that is down, with a tiny retry policy,
lets its delivery go dead; the router posts delivery-dead and destination-unreachable to a
webhook served by the test, an instance a rule quarantines to another one that opted in to
patient data, and `dicom-rules notifications` lists and purges what was sent."""

from __future__ import annotations

from helpers.cli import dicom_rules
from helpers.instances import CT_SMALL, make_instances
from helpers.notify_peers import WebhookServer
from helpers.peers import free_port, storescu
from helpers.store_router import router_config

RULES = """
rule "hold the second" {
  when DataSet.InstanceNumber == 2
  then quarantine "held for review"
}

rule "everything else" {
  then route to STORE
}
"""


def test_a_dead_delivery_and_a_quarantined_instance_are_posted_to_their_webhooks(router_factory, tmp_path, port):
    ops, private = WebhookServer((200,)), WebhookServer((200,))
    down = free_port()  # nothing listens there
    [held] = make_instances(tmp_path / "held", 1, first_number=2)
    try:
        config = router_config(port, f"{{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {down}, "
                                     "retry: {delay: 0.1, multiplier: 1, max_attempts: 2}, "
                                     "timeouts: {connect: 2}}") + f"""
notifiers:
  ops-hook: {{type: webhook, url: "{ops.url}"}}
  review-hook:
    type: webhook
    url: {private.url}
    patient_data: true
    body: '{{"patient": {{{{ PatientName }}}}, "reason": {{{{ reason }}}}, "uid": {{{{ SOPInstanceUID }}}}}}'
notify:
  - {{event: delivery-dead, to: [ops-hook]}}
  - {{event: destination-unreachable, to: [ops-hook]}}
  - {{event: instance-quarantined, to: [review-hook]}}
"""
        router = router_factory(config, RULES, port)
        sent = storescu(port, [CT_SMALL, held.path])
        assert sent.returncode == 0, sent.stderr
        by_event = {item.json()["event"]: item.json() for item in ops.wait_for(2, timeout=60)}
        dead = by_event["delivery-dead"]
        assert dead["destination"] == "STORE" and dead["reason"].startswith("destination unreachable")
        assert dead["SOPInstanceUID"] == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
        assert dead["attempts"] == 2 and dead["Modality"] == "CT" and dead["node"]
        assert "PatientName" not in dead and "PatientID" not in dead  # patient data was not opted in
        assert by_event["destination-unreachable"]["destination"] == "STORE"
        [review] = private.wait_for(1, timeout=60)
        assert review.json() == {"patient": "CompressedSamples^CT1", "reason": "held for review", "uid": held.sop_instance_uid}
        listing = dicom_rules("notifications", tmp_path / "router.yaml", "--state", "sent", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "sent 3" in listing.stdout and "instance-quarantined" in listing.stdout, listing.stdout
        assert "CompressedSamples" not in listing.stdout  # the listing never shows what a notification carries
        assert router.stop() == 0
        purged = dicom_rules("notifications", tmp_path / "router.yaml", "purge", cwd=tmp_path)
        assert purged.returncode == 0 and "purged 3 sent or dead notification(s)" in purged.stdout, purged.stderr
    finally:
        ops.close()
        private.close()
