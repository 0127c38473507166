"""The router, as a process, around a PACS that aborts the association on one instance:
the others are delivered at once, and the log and `dicom-rules queue` say what happened
to the one (an instance failure, not an unreachable destination)."""

from __future__ import annotations

from helpers.store_router import (
    ROUTE_TO_STORE,
    queue_command,
    queue_counts,
    router_config,
)
from helpers.instances import make_instances
from helpers.peers import storescu, wait_until
from helpers.strict_peer import StrictPeer


def test_the_router_delivers_around_an_instance_the_pacs_aborts_on(router_factory, tmp_path, port):
    instances = make_instances(tmp_path / "outbox", 4)
    bad = instances[1].sop_instance_uid
    pacs = StrictPeer(abort_on={bad}, ae_title="PACS")
    try:
        destination = (f"{{type: dicom, ae_title: PACS, host: 127.0.0.1, port: {pacs.port}, "
                       "retry: {delay: 600, cap: 600, max_attempts: 3}}")
        router = router_factory(router_config(port, destination), ROUTE_TO_STORE, port)
        result = storescu(port, [instance.path for instance in instances])
        assert result.returncode == 0, result.stdout + result.stderr

        wait_until(lambda: len(pacs.stored) == 3, timeout=30, what="the three other instances at the PACS")
        assert sorted(pacs.stored) == sorted(i.sop_instance_uid for i in instances if i.sop_instance_uid != bad)
        failure = f"aborted by the peer while sending {bad}; the destination answers C-ECHO"
        router.wait_for_log(f"to STORE: instance failed (attempt 1): {failure}; this instance is tried again in "
                            "600 s, the queue goes on")
        assert "STORE unreachable" not in router.output()

        report = queue_command(tmp_path)
        assert queue_counts(report) == {"queued": 0, "sending": 0, "delivered": 3, "retrying": 1, "dead": 0}, report
        [line] = [line for line in report.splitlines() if line.startswith("#")]
        assert bad in line and " retrying " in line and " attempts 1 " in line, report
        assert line.endswith(f"  instance failed: {failure}"), report
    finally:
        pacs.stop()
