"""Urgent instances overtake a queued backlog: a real router (`dicom-rules run`), DCMTK's
storescu sending and storescp receiving. The destination is paused by an operator while the
backlog and then the urgent instances arrive; once it is resumed, the urgent ones are sent
first, and `dicom-rules queue` showed them as urgent while they waited."""

from __future__ import annotations

import time

from helpers.cli import dicom_rules
from helpers.instances import make_instances, received_by_uid, store_router_config
from helpers.peers import storescu, wait_until

from rulesengine.config import load_config
from rulesengine.console import actions
from rulesengine.runtime.journal import DELIVERED, QUEUED, SQLiteJournal

RULES = """\
rule "late results are urgent" {
  when DataSet.InstanceNumber >= 100
  then urgent
}

rule "everything to the store" {
  then route to STORE
}
"""


def test_urgent_instances_are_sent_before_a_backlog_that_waited(router_factory, storescp, port, tmp_path):
    config_text = store_router_config(port, storescp.port)
    (tmp_path / "router.yaml").write_text(config_text, encoding="utf-8")
    config = load_config(tmp_path / "router.yaml")
    router = router_factory(config_text, RULES, port)
    journal = SQLiteJournal(str(tmp_path / "var" / "journal.sqlite"))
    try:
        actions.pause(config, journal, "STORE")  # as an operator does from the console
        backlog = make_instances(tmp_path / "backlog", 8)
        urgent = make_instances(tmp_path / "urgent", 3, first_number=100)
        for batch in (backlog, urgent):
            result = storescu(port, [item.path for item in batch])
            assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: journal.counts().get("STORE", {}).get(QUEUED) == 11, timeout=60,
                   what="eleven deliveries queued behind the pause")
        assert received_by_uid(storescp.folder) == {}  # paused: nothing could be sent

        listed = dicom_rules("queue", tmp_path / "router.yaml", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split() for line in listed.stdout.splitlines() if line.startswith("#")]
        assert len(rows) == 11
        # #ID DESTINATION STATE attempts N DATE TIME UID [urgent]
        assert {row[7] for row in rows if row[8:] == ["urgent"]} == {item.sop_instance_uid for item in urgent}
        assert {row[7] for row in rows if row[8:] == []} == {item.sop_instance_uid for item in backlog}

        actions.resume(config, journal, "STORE", now=time.time())
        wait_until(lambda: journal.counts().get("STORE", {}).get(DELIVERED) == 11, timeout=60,
                   what="every delivery made once resumed")
        delivered = journal.deliveries([DELIVERED], "STORE", limit=20)
        sent_order = [item.sop_instance_uid for item in sorted(
            delivered, key=lambda item: journal.attempts(item.id)[0].id)]
        assert set(sent_order[:3]) == {item.sop_instance_uid for item in urgent}
        assert sent_order[3:] == [item.sop_instance_uid for item in backlog]  # the backlog keeps its order
        assert sent_order[:3] == [item.sop_instance_uid for item in urgent]  # and so do the urgent ones
        assert set(received_by_uid(storescp.folder)) == set(sent_order)
    finally:
        journal.close()
    assert router.stop() == 0
