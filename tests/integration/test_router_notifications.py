"""Notifications from a real router: a destination that is down, with a tiny retry policy,
lets its delivery go dead; the router posts delivery-dead (and destination-unreachable)
to a webhook served by the test, and `dicom-rules notifications` lists what was sent."""

from __future__ import annotations

from helpers.cli import dicom_rules
from helpers.instances import CT_SMALL
from helpers.notify_peers import WebhookServer
from helpers.peers import free_port, storescu
from helpers.store_router import ROUTE_TO_STORE, router_config


def test_a_delivery_gone_dead_is_posted_to_the_webhook(router_factory, tmp_path, port):
    server = WebhookServer((200,))
    down = free_port()  # nothing listens there
    try:
        config = router_config(port, f"{{type: dicom, ae_title: DOWN, host: 127.0.0.1, port: {down}, "
                                     "retry: {delay: 0.1, multiplier: 1, max_attempts: 2}, "
                                     "timeouts: {connect: 2}}") + f"""
notifiers:
  ops-hook:
    type: webhook
    url: {server.url}
notify:
  - {{event: delivery-dead, to: [ops-hook]}}
  - {{event: destination-unreachable, to: [ops-hook]}}
"""
        router = router_factory(config, ROUTE_TO_STORE, port)
        sent = storescu(port, [CT_SMALL])
        assert sent.returncode == 0, sent.stderr
        posted = [item.json() for item in server.wait_for(2, timeout=60)]
        by_event = {item["event"]: item for item in posted}
        dead = by_event["delivery-dead"]
        assert dead["destination"] == "STORE" and dead["reason"].startswith("destination unreachable")
        assert dead["SOPInstanceUID"] == "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
        assert dead["attempts"] == 2 and dead["Modality"] == "CT" and dead["node"]
        assert "PatientName" not in dead and "PatientID" not in dead  # patient data was not opted in
        assert by_event["destination-unreachable"]["destination"] == "STORE"
        listing = dicom_rules("notifications", tmp_path / "router.yaml", "--state", "sent", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "sent 2" in listing.stdout and "delivery-dead" in listing.stdout, listing.stdout
        assert router.stop() == 0
        purged = dicom_rules("notifications", tmp_path / "router.yaml", "purge", cwd=tmp_path)
        assert purged.returncode == 0 and "purged 2 sent or dead notification(s)" in purged.stdout, purged.stderr
    finally:
        server.close()
