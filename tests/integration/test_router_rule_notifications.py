"""A rule's `notify` from a real router: storescu sends two instances of a study to an async
listener and one to a sync-mode listener; the webhook served by the test gets one notification
per instance from the instance rule and one for the study from the group rule (not one per
instance), and storescp, the destination, gets every instance."""

from __future__ import annotations

import re

from helpers.cli import dicom_rules
from helpers.instances import make_instances, make_study, received_by_uid
from helpers.notify_peers import WebhookServer
from helpers.peers import free_port, storescu, wait_until

RULES = """
rule "every CT" {
  when DataSet.Modality == "CT"
  then {
    route to STORE
    notify ops "CT " + DataSet.SOPInstanceUID + " via " + Association.CalledAET
  }
}

rule "study complete" per study {
  complete when count() >= 2
  then {
    route to STORE
    notify ops "study of " + count()
  }
}
"""


def test_instance_and_group_rules_notify_through_a_real_router(router_factory, storescp, tmp_path, port):
    ops = WebhookServer((200,))
    sync_port = free_port()
    instances = make_instances(tmp_path / "study", 2)
    [alone] = make_study(tmp_path / "alone", [("Axial", 1, 1)])  # a study of its own
    try:
        config = f"""
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {port}}}
  - {{name: sync, ae_title: FAST, port: {sync_port}, mode: sync}}
destinations:
  STORE: {{type: dicom, ae_title: {storescp.ae_title}, host: 127.0.0.1, port: {storescp.port}}}
notifiers:
  ops: {{type: webhook, url: "{ops.url}", body: '{{"m": {{{{ message }}}}, "l": {{{{ level }}}}, "n": {{{{ instances }}}}, "r": {{{{ rule }}}}, "s": {{{{ StudyInstanceUID }}}}}}'}}
"""
        router = router_factory(config, RULES, port)
        sent = storescu(port, [item.path for item in instances])
        assert sent.returncode == 0, sent.stderr
        posted = sorted((item.json() for item in ops.wait_for(3, timeout=60)), key=lambda body: body["m"])
        study = posted[0]["s"]
        assert posted == sorted([
            *({"m": f"CT {item.sop_instance_uid} via ROUTER", "l": "instance", "n": 1, "r": "every CT", "s": study}
              for item in instances),
            {"m": "study of 2", "l": "study", "n": 2, "r": "study complete", "s": study}], key=lambda body: body["m"])

        synced = storescu(sync_port, [alone.path], called="FAST")
        assert synced.returncode == 0, synced.stderr
        [*_, last] = ops.wait_for(4, timeout=60)
        assert last.json()["m"] == f"CT {alone.sop_instance_uid} via FAST" and last.json()["l"] == "instance"
        wait_until(lambda: alone.sop_instance_uid in received_by_uid(storescp.folder), timeout=30)
        listing = dicom_rules("notifications", tmp_path / "router.yaml", "--state", "sent", cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "sent 4" in listing.stdout, listing.stdout
        assert len(ops.posted) == 4  # one per instance, one for the study: nothing twice
        assert re.search(rf"{re.escape(alone.sop_instance_uid)} via sync .*-> STORE; notify ops", router.output())
        assert router.stop() == 0
    finally:
        ops.close()
