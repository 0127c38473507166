"""Group rules in a real router: storescu sends two series of a study, the router holds them;
the group, pending when the router stops, fires a short real quiet time after its last arrival
once the router runs again; its deliveries, queued together, find the store down and retry as
usual; storescp receives the whole study once it listens. A study rule for an AI tool fires
as soon as its two series are in, Orthanc and storescp get the study, and an instance of the
second series arriving after the firing is refired by the `late` policy.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from helpers.instances import make_study, received_by_uid, store_router_config
from helpers.peers import StoreSCP, free_port, storescu, wait_until

import pydicom


def study_rule(quiet: str) -> str:
    return f"""
rule "whole study to the store" per study {{
  complete after {quiet}
  when count() >= 4
  then route to STORE
}}
"""


def journal_rows(tmp_path: Path, query: str) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query).fetchall()


def uids(files) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files}


def group_members(tmp_path: Path) -> int:
    rows = journal_rows(tmp_path, "SELECT COUNT(*) AS n FROM group_members")
    return rows[0]["n"]


def test_a_group_pending_at_a_restart_fires_after_it_and_a_store_down_then_gets_it_by_retries(router_factory,
                                                                                              tmp_path, port):
    peer_port = free_port()  # the store listens only at the end
    router = router_factory(store_router_config(port, peer_port), study_rule("3s"), port)
    files = [instance.path for instance in make_study(tmp_path / "study", [("Axial T2", 2, 1), ("Sag T1", 2, 2)])]
    assert storescu(port, files[:2]).returncode == 0  # one association per series
    assert storescu(port, files[2:]).returncode == 0
    wait_until(lambda: group_members(tmp_path) == 4, timeout=20, what="the four instances in their group")
    assert router.stop() == 0
    assert router.log_path.read_text().count("held for group 1 of rule 'whole study to the store'") == 4
    [group] = journal_rows(tmp_path, "SELECT * FROM groups")
    assert (group["state"], group["level"]) == ("open", "study")  # its timer is in the journal
    assert journal_rows(tmp_path, "SELECT * FROM deliveries") == []  # held

    router.start()
    # it fires 3 s after the last arrival, after the restart; the store is down: its deliveries retry
    wait_until(lambda: any(row["attempts"] > 0 for row in journal_rows(tmp_path, "SELECT * FROM deliveries")),
               timeout=30, what="a failed attempt of the group's deliveries")
    [group] = journal_rows(tmp_path, "SELECT * FROM groups")
    assert group["state"] == "fired" and group["fired_at"] >= group["last_arrival"] + 3
    deliveries = journal_rows(tmp_path, "SELECT * FROM deliveries ORDER BY id")
    assert len(deliveries) == 4 and len({row["created_at"] for row in deliveries}) == 1  # queued together
    peer = StoreSCP(tmp_path / "storescp", port=peer_port).start()
    try:
        wait_until(lambda: len(peer.files()) == 4, timeout=30, what="the study delivered once the store listens")
        assert set(received_by_uid(peer.folder)) == uids(files)
        wait_until(lambda: {row["state"] for row in journal_rows(tmp_path, "SELECT * FROM deliveries")}
                   == {"delivered"}, timeout=20, what="every delivery delivered")
    finally:
        peer.stop()
    output = router.output()
    assert "group 1 of rule 'whole study to the store'" in output and "fired (quiet): 4 instance(s)" in output
    assert "Traceback" not in output
    assert router.stop() == 0
    # the spool keeps nothing of the group once delivered
    assert not any(Path(row["path"]).exists() for row in journal_rows(tmp_path, "SELECT path FROM instances"))


def test_a_sync_listener_delivers_what_its_instance_rules_route_and_holds_only_the_rest(router_factory, tmp_path,
                                                                                      port):
    peer = StoreSCP(tmp_path / "storescp").start()
    try:
        config = store_router_config(port, peer.port).replace(f"port: {port}}}", f"port: {port}, mode: sync}}")
        assert "mode: sync" in config
        rules = """
rule "axial series at once" {
  when DataSet.SeriesDescription == "Axial T2"
  then route to STORE
}

rule "the rest of the study" per study {
  complete when count() >= 2
  then route to STORE
}
"""
        router = router_factory(config, rules, port)
        files = [instance.path for instance in make_study(tmp_path / "study", [("Axial T2", 2, 1), ("Sag T1", 2, 2)])]
        assert storescu(port, files[:2]).returncode == 0
        assert len(peer.files()) == 2  # sync: delivered before the answer, and in no group
        assert group_members(tmp_path) == 0
        assert storescu(port, files[2:]).returncode == 0  # routed by no instance rule: spooled, held, grouped
        wait_until(lambda: len(peer.files()) == 4, timeout=20, what="the held series delivered by its group")
        assert set(received_by_uid(peer.folder)) == uids(files)
        assert group_members(tmp_path) == 2
        assert "fired (complete): 2 instance(s)" in router.output()
    finally:
        peer.stop()


TWO_SERIES_RULE = """
rule "AI brain: axial T2 and sagittal T1" per study {
  complete when any(DataSet.SeriesDescription == "Axial T2") and any(DataSet.SeriesDescription == "Sag T1")
  complete after 10m
  then {
    set DataSet.InstitutionName = "AI READY"
    route to ORTHANC
    copy to STORE
  }
}
"""


def test_a_study_rule_fires_when_its_two_series_are_in_and_orthanc_and_storescp_get_the_study(
        router_factory, orthanc, storescp, tmp_path, port):
    config = (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n"
              f"  - {{name: main, ae_title: ROUTER, port: {port}}}\ndestinations:\n"
              f"  ORTHANC: {{type: dicom, ae_title: {orthanc.ae_title}, host: 127.0.0.1, port: {orthanc.dicom_port}}}\n"
              f"  STORE: {{type: dicom, ae_title: {storescp.ae_title}, host: 127.0.0.1, port: {storescp.port}}}\n")
    router = router_factory(config, TWO_SERIES_RULE, port)
    study = make_study(tmp_path / "study", [("Localizer", 1, 1), ("Axial T2", 2, 2), ("Sag T1", 2, 3)])
    assert storescu(port, [item.path for item in study[:3]]).returncode == 0  # localizer, axial: not yet
    wait_until(lambda: group_members(tmp_path) == 3, timeout=20, what="three instances held")
    assert journal_rows(tmp_path, "SELECT * FROM deliveries") == [] and orthanc.count() == 0
    assert storescu(port, [item.path for item in study[3:]]).returncode == 0  # sagittal: complete
    wait_until(lambda: orthanc.count() == 5 and len(storescp.files()) == 5, timeout=60,
               what="the whole study at Orthanc and at storescp")
    stored = orthanc.instances()
    assert {row["SOPInstanceUID"] for row in stored} == {item.sop_instance_uid for item in study}
    assert {row["InstitutionName"] for row in stored} == {"AI READY"}
    assert {row["SeriesDescription"] for row in stored} == {"Localizer", "Axial T2", "Sag T1"}
    assert set(received_by_uid(storescp.folder)) == {item.sop_instance_uid for item in study}
    # it fired as the first sagittal instance came (4 instances); the second came late: refired
    output = router.output()
    assert "fired (complete): 4 instance(s)" in output and ", refired: " in output
    assert "late for its group: handled by the group rule's late policy" in output
    assert "quarantine" not in output and "Traceback" not in output
    assert [row["outcome"] for row in journal_rows(tmp_path, "SELECT outcome FROM instances")] == ["route"] * 5
    assert router.stop() == 0
