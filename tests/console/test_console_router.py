"""The console beside a running router (`dicom-rules run` as a process, DCMTK's storescu and
storescp as the peers): a delivery dead while its destination was down is retried from the
console and arrives; a quarantined instance released from the console is routed again by
the router; an instance the router received is found on the Messages page and traced."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from helpers.console import PASSWORD, USERS, router_folder
from helpers.files import SAMPLES
from helpers.peers import RouterProcess, StoreSCP, storescu, wait_until
from rulesengine.config import load_config
from rulesengine.console.app import create_app

@pytest.fixture
def setup(tmp_path):
    config_path, listener_port, store_port = router_folder(tmp_path)
    router = RouterProcess(config_path, listener_port).start()
    peer = StoreSCP(tmp_path / "received", port=store_port)
    yield config_path, router, peer, listener_port
    peer.stop()
    router.stop()


def operator(config_path: Path) -> tuple[TestClient, dict]:
    client = TestClient(create_app(load_config(config_path, secrets=False), users=USERS),
                        base_url="http://127.0.0.1", follow_redirects=False)
    token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
    session = client.post("/login", json={"name": "otto", "password": PASSWORD}, headers={"x-csrf-token": token})
    assert session.status_code == 200
    return client, {"x-csrf-token": session.json()["csrf_token"]}


def store_counts(client: TestClient) -> dict:
    return {d["name"]: d for d in client.get("/api/queues").json()["destinations"]}["STORE"]["counts"]


def test_a_dead_delivery_retried_from_the_console_arrives(setup):
    config_path, router, peer, listener_port = setup
    assert storescu(listener_port, [SAMPLES / "ct_head.dcm"]).returncode == 0
    client, headers = operator(config_path)
    wait_until(lambda: store_counts(client)["dead"] == 1, timeout=30, what="the delivery to the stopped peer died")
    [dead] = client.get("/api/queues", params={"state": "dead"}).json()["items"]
    assert "STORESCP@127.0.0.1" in dead["last_error"]
    peer.start()
    answer = client.post("/api/queues/retry", json={"id": [dead["id"]]}, headers=headers)
    assert answer.json()["queued"] == 1
    wait_until(lambda: store_counts(client)["delivered"] == 1, timeout=30, what="the retried delivery arrived")
    assert len(peer.files()) == 1


def test_a_quarantined_instance_released_from_the_console_is_routed_again(setup):
    config_path, router, peer, listener_port = setup
    assert storescu(listener_port, [SAMPLES / "mr_knee.dcm"]).returncode == 0
    client, headers = operator(config_path)
    [held] = wait_until(lambda: client.get("/api/quarantine").json()["items"], timeout=30,
                        what="the MR was quarantined")
    answer = client.post("/api/quarantine/release", json={"item": [held["item"]]}, headers=headers)
    assert answer.status_code == 200 and len(answer.json()["released"]) == 1
    # No rule routes an MR: the router runs the rules on it again, and quarantines it again.
    wait_until(lambda: router.output().count("quarantine: no rule routed this document") == 2, timeout=30,
               what="the router ran the rules on the released MR")
    again = wait_until(lambda: client.get("/api/quarantine").json()["items"], timeout=30,
                       what="the released MR was routed again")
    assert [entry["sop_instance_uid"] for entry in again] == [held["sop_instance_uid"]]


def test_an_instance_the_router_received_is_found_and_traced_from_the_console(setup):
    config_path, router, peer, listener_port = setup
    peer.start()
    assert storescu(listener_port, [SAMPLES / "ct_head.dcm"]).returncode == 0
    client, _headers = operator(config_path)
    [row] = wait_until(lambda: client.get("/api/messages", params={"patient_id": "654321", "outcome": "route"})
                       .json()["instances"], timeout=30, what="the CT was journaled and routed")
    assert (row["outcome"], row["destinations"], row["source_name"], row["modality"]) == (
        "route", ["STORE"], "main", "CT")
    trace = wait_until(lambda: (view := client.get(f"/api/messages/{row['id']}").json())["deliveries"][0]["tries"]
                       and view, timeout=30, what="the delivery to storescp was tried")
    # the router runs in the configuration's folder: rule files are named relative to it
    assert trace["trace"]["rules_fired"] == [{"name": "CT to the store", "file": "main.rules", "line": 1}]
    assert 'href="/rules#main.rules:1"' in client.get(f"/messages/{row['id']}").text
    [delivery] = trace["deliveries"]
    assert (delivery["destination"], delivery["state"], delivery["tries"][0]["ok"]) == ("STORE", "delivered", True)
    assert trace["instance"]["called_aet"] == "ROUTER" and trace["instance"]["peer"].startswith("127.0.0.1:")
