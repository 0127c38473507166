"""What the console does, on a real journal and storage folder: the queues (counts, pages of
items, retry, pause and resume, purge after its confirmation), the quarantine (release to the
rules, delete after its confirmation), the configuration with its secrets masked; bad
parameters answered with 400 and a plain message; each action in the audit log."""

from __future__ import annotations

import os

import pytest

from helpers.console import ConsoleUnderTest, csrf_of
from rulesengine.runtime.journal import ACCEPTED


@pytest.fixture
def console(tmp_path):
    return ConsoleUnderTest(tmp_path)


def post(client, token, path, **body):
    return client.post(path, json=body, headers={"x-csrf-token": token})


def test_queues_show_counts_per_destination_and_the_items_page_by_page(console):
    numbers = [console.delivery("PACS", "dead") for _ in range(3)] + [console.delivery("ARCHIVE", "queued")]
    console.delivery("PACS", "delivered")
    client, _ = console.api_client("vera")
    answer = client.get("/api/queues").json()
    by_name = {d["name"]: d for d in answer["destinations"]}
    assert by_name["PACS"]["counts"] == {"queued": 0, "sending": 0, "delivered": 1, "retrying": 0, "dead": 3}
    assert by_name["ARCHIVE"]["counts"]["queued"] == 1 and not by_name["ARCHIVE"]["paused"]
    assert [item["id"] for item in answer["items"]] == sorted(numbers, reverse=True)  # not the delivered one
    first = client.get("/api/queues", params={"limit": 2, "state": "dead"}).json()
    assert [item["id"] for item in first["items"]] == sorted(numbers[:3], reverse=True)[:2]
    second = client.get("/api/queues", params={"limit": 2, "state": "dead", "before": first["next_before"]}).json()
    assert [item["id"] for item in second["items"]] == [numbers[0]] and second["next_before"] is None
    dead = first["items"][0]
    assert dead["last_error"] == "destination unreachable: connection refused" and dead["calling_aet"] == "CT1"
    page = console.client("vera").get("/queues").text
    assert "destination unreachable: connection refused" in page and "PACS" in page


@pytest.mark.parametrize("query, message", [
    ({"limit": "ten"}, "limit must be a whole number from 1 to 500, not 'ten'"),
    ({"limit": "0"}, "limit must be a whole number from 1 to 500, not 0"),
    ({"limit": "100000"}, "limit must be a whole number from 1 to 500, not 100000"),
    ({"before": "-3"}, "before must be a whole number from 1 to 9223372036854775807, not -3"),
    ({"before": "9" * 30}, "before must be a whole number from 1 to 9223372036854775807, not " + "9" * 30),
    ({"state": "lost"}, "state must be one of queued, sending, delivered, retrying, dead, not 'lost'"),
    ({"limit": ["1", "2"]}, "limit is given 2 times; give it once"),
])
def test_bad_query_parameters_get_400_with_a_clear_message(console, query, message):
    client, _ = console.api_client("vera")
    answer = client.get("/api/queues", params=query)
    assert answer.status_code == 400 and answer.json() == {"error": message}
    page = console.client("vera").get("/queues", params=query)
    assert page.status_code == 400 and message.replace("'", "&#39;") in page.text


@pytest.mark.parametrize("path, body, message", [
    ("/api/queues/retry", {"destination": "NOWHERE"}, "no destination 'NOWHERE' (destinations: ARCHIVE, PACS)"),
    ("/api/queues/retry", {"id": "x"}, "id must be a whole number from 1 to 9223372036854775807, not 'x'"),
    ("/api/queues/pause", {}, "destination is needed"),
    ("/api/queues/resume", {"destination": 7}, "destination must be text of at most 200 characters"),
    ("/api/queues/purge", {"state": ["sending"], "confirm": True}, "state must be one of delivered, dead, queued, "
                                                                   "retrying, not 'sending'"),
    ("/api/queues/purge", {"state": ["queued"], "confirm": True}, "queued deliveries are purged only for a "
                                                                  "destination no longer in the configuration, "
                                                                  "named as destination"),
    ("/api/queues/purge", {"state": ["dead"]}, "purge needs confirm=true (the GET of /queues/purge shows what it "
                                               "forgets)"),
    ("/api/quarantine/release", {}, "name at least one quarantined item (DAY/NAME.dcm, as the list shows it)"),
    ("/api/quarantine/delete", {"item": ["x.dcm"]}, "delete needs confirm=true (the GET of /quarantine/delete "
                                                    "shows what it removes)"),
])
def test_bad_action_parameters_get_400_with_a_clear_message(console, path, body, message):
    client, token = console.api_client("ada")
    answer = post(client, token, path, **body)
    assert answer.status_code == 400 and answer.json() == {"error": message}


def test_a_parameter_a_route_does_not_take_gets_400_and_nothing_is_done(console):
    pacs, archive = console.delivery("PACS", "dead"), console.delivery("ARCHIVE", "dead")
    client, token = console.api_client("otto")
    answer = post(client, token, "/api/queues/retry", destinaton="PACS")
    assert answer.status_code == 400
    assert answer.json() == {"error": "unknown parameter 'destinaton'; /api/queues/retry POST takes destination, id"}
    assert [console.journal.delivery(n).state for n in (pacs, archive)] == ["dead", "dead"]
    answer = client.get("/api/configuration", params={"full": "yes"})
    assert answer.json() == {"error": "unknown parameter 'full'; /api/configuration GET takes none"}


def test_a_body_that_is_not_a_json_object_gets_400(console):
    client, token = console.api_client("ada")
    answer = client.post("/api/queues/retry", content=b"[1, 2", headers={"x-csrf-token": token,
                                                                          "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json() == {"error": "the body is not valid JSON"}
    answer = client.post("/api/queues/retry", json=[1], headers={"x-csrf-token": token})
    assert answer.status_code == 400 and answer.json() == {"error": "the body must be a JSON object"}


def test_an_oversized_body_is_refused(console):
    client, token = console.api_client("ada")
    answer = client.post("/api/queues/retry", content=b"{" + b" " * (2 << 20) + b"}",
                         headers={"x-csrf-token": token, "content-type": "application/json"})
    assert answer.status_code == 413


def test_retry_dead_puts_them_back_in_the_queue_and_is_audited(console):
    pacs = [console.delivery("PACS", "dead") for _ in range(2)]
    archive = console.delivery("ARCHIVE", "dead")
    client, token = console.api_client("otto")
    answer = post(client, token, "/api/queues/retry", id=[pacs[0]])
    assert answer.json() == {"message": "1 dead delivery queued again", "queued": 1}
    assert [console.journal.delivery(n).state for n in (*pacs, archive)] == ["queued", "dead", "dead"]
    assert post(client, token, "/api/queues/retry", destination="PACS").json()["queued"] == 1
    assert console.journal.delivery(archive).state == "dead"
    browser = console.client("otto")
    token = csrf_of(browser.get("/queues").text)
    answer = browser.post("/queues/retry", data={"csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/queues"
    assert "1 dead delivery queued again" in browser.get("/queues").text  # shown once, after the redirect
    assert console.journal.delivery(archive).state == "queued"
    audit = [row for row in console.journal.audit_log() if row["action"] == "queue retry"]
    assert [(row["user"], row["target"], row["result"]) for row in reversed(audit)] == [
        ("otto", f"deliveries {pacs[0]}", "ok: 1 dead delivery queued again"),
        ("otto", "PACS", "ok: 1 dead delivery queued again"),
        ("otto", "every destination", "ok: 1 dead delivery queued again")]
    assert all(row["at"] == console.clock.now for row in audit)


def test_pause_holds_a_destination_s_queue_until_resumed(console):
    queued = console.delivery("PACS", "queued")
    client, token = console.api_client("otto")
    assert post(client, token, "/api/queues/pause", destination="PACS").json()["message"] == "PACS paused"
    assert console.journal.claim("PACS", 10) == []  # what a delivery worker asks: nothing while paused
    state = {d["name"]: d for d in client.get("/api/queues").json()["destinations"]}["PACS"]
    assert state["paused"] and state["waiting_until"] is None
    assert ">paused<" in console.client("otto").get("/queues").text
    answer = post(client, token, "/api/queues/resume", destination="PACS")
    assert answer.status_code == 200 and answer.json()["destination"] == "PACS"
    assert [d.id for d in console.journal.claim("PACS", 10)] == [queued]
    actions = [(row["action"], row["target"]) for row in reversed(console.journal.audit_log())
               if row["action"].startswith("queue")]
    assert actions == [("queue pause", "PACS"), ("queue resume", "PACS")]


def test_a_backoff_is_shown_as_waiting_and_can_be_ended(console):
    console.delivery("PACS", "queued")
    console.journal.postpone("PACS", console.clock.now + 120)
    client, token = console.api_client("otto")
    state = {d["name"]: d for d in client.get("/api/queues").json()["destinations"]}["PACS"]
    assert not state["paused"] and state["waiting_until"] == console.clock.now + 120
    post(client, token, "/api/queues/resume", destination="PACS")
    assert console.journal.pauses(console.clock.now) == {}


def test_purge_shows_what_it_forgets_then_forgets_it_with_the_spool_files(console):
    delivered = [console.delivery("PACS", "delivered") for _ in range(2)]
    dead = console.delivery("PACS", "dead")
    paths = [console.journal.delivery(n).path for n in delivered]
    browser = console.client("ada")
    confirm = browser.get("/queues/purge", params={"destination": "PACS"})
    assert confirm.status_code == 200 and "This forgets 2 deliveries (delivered) of" in confirm.text
    assert all(console.journal.delivery(n) for n in delivered)  # nothing happened yet
    answer = browser.post("/queues/purge", data={"csrf_token": csrf_of(confirm.text), "destination": "PACS",
                                                 "state": "delivered", "confirm": "yes"})
    assert answer.status_code == 303
    assert [console.journal.delivery(n) for n in delivered] == [None, None]
    assert console.journal.delivery(dead).state == "dead"
    assert not any(os.path.exists(path) for path in paths if path)
    row = console.journal.audit_log()[0]
    assert (row["user"], row["action"], row["target"]) == ("ada", "queue purge", "PACS: delivered")
    assert row["result"].startswith("ok: purged delivered deliveries of PACS")


def test_purge_of_the_queue_of_a_removed_destination(console):
    gone = console.delivery("OLD", "queued")
    client, token = console.api_client("ada")
    preview = client.get("/api/queues/purge", params={"destination": "OLD", "state": "queued"}).json()
    assert preview["deliveries"] == 1
    assert post(client, token, "/api/queues/purge", destination="OLD", state=["queued"], confirm=True).status_code == 200
    assert console.journal.delivery(gone) is None


def test_release_sends_a_quarantined_instance_back_to_the_rules(console):
    item = console.quarantined(reason="no rule routes it")
    listed = console.client("vera").get("/api/quarantine").json()["items"]
    assert [(e["item"], e["reason"], e["source"], e["calling_aet"]) for e in listed] == [
        (item, "no rule routes it", "main", "CT1")]
    assert "no rule routes it" in console.client("vera").get("/quarantine").text
    client, token = console.api_client("otto")
    answer = post(client, token, "/api/quarantine/release", item=[item])
    assert answer.status_code == 200
    [released] = answer.json()["released"]
    instance = console.journal.instance(released["instance_id"])
    assert instance.state == ACCEPTED and os.path.exists(instance.path)  # the router takes it from here
    assert instance.arrival.calling_aet == "CT1"
    assert client.get("/api/quarantine").json()["items"] == []
    assert console.journal.audit_log()[0]["target"] == item


def test_release_and_delete_name_only_what_the_quarantine_holds(console):
    console.quarantined()
    outside = console.folder / "router.yaml"
    client, token = console.api_client("ada")
    for path, extra in (("/api/quarantine/release", {}), ("/api/quarantine/delete", {"confirm": True})):
        answer = post(client, token, path, item=["../../router.yaml"], **extra)
        assert answer.status_code == 404 and answer.json() == {"error": "not in the quarantine: ../../router.yaml"}
    assert outside.exists()
    refused = console.journal.audit_log()[0]
    assert refused["result"] == "refused: not in the quarantine: ../../router.yaml"


def test_delete_asks_for_confirmation_then_removes_the_file_and_its_record(console):
    item = console.quarantined(reason="rejected by rule")
    path = os.path.join(console.storage.quarantine_dir, item)
    browser = console.client("ada")
    confirm = browser.get("/quarantine/delete", params={"item": item})
    assert confirm.status_code == 200 and "rejected by rule" in confirm.text and os.path.exists(path)
    answer = browser.post("/quarantine/delete", data={"csrf_token": csrf_of(confirm.text), "item": item,
                                                      "confirm": "yes"})
    assert answer.status_code == 303
    assert not os.path.exists(path) and not os.path.exists(path + ".json")
    assert console.journal.audit_log()[0]["result"] == "ok: 1 quarantined instance(s) deleted"


def test_the_configuration_is_shown_with_its_secrets_masked(tmp_path):
    from helpers.console import USERS
    console = ConsoleUnderTest(tmp_path, users=USERS)
    text = console.config_path.read_text()
    console.config_path.write_text(text + "  users:\n    - {name: ada, role: admin, password_hash: "
                                          "\"$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA\"}\n"
                                          "  metrics_token_file: metrics.token\n")
    from rulesengine.config import load_config
    from rulesengine.console.app import create_app
    from starlette.testclient import TestClient
    app = create_app(load_config(console.config_path, secrets=False), users=USERS)
    client = TestClient(app, base_url="http://127.0.0.1", follow_redirects=False)
    token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
    session = client.post("/login", json={"name": "vera", "password": "a long enough password"},
                          headers={"x-csrf-token": token})
    assert session.status_code == 200
    shown = client.get("/api/configuration").json()["yaml"]
    assert "argon2id" not in shown and "hash.key" not in shown and "metrics.token" not in shown
    assert "hash_key_file: '********'" in shown and "password_hash: '********'" in shown
    assert "# the console's test configuration" in shown and "PACS: {type: folder, path: out/pacs}" in shown
    page = client.get("/configuration").text
    assert "argon2id" not in page and "hash_key_file" in page


def test_what_the_pages_show_is_escaped(console):
    console.quarantined(reason='<script>alert("x")</script> & more')
    page = console.client("vera").get("/quarantine").text
    assert "<script>" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in page


def test_the_purge_step_can_choose_what_to_forget(console):
    console.delivery("PACS", "dead")
    page = console.client("ada").get("/queues/purge", params={"destination": "PACS", "state": ["dead"],
                                                              "older_than": "60"})
    assert page.status_code == 200
    assert "This forgets of the 1 delivery (dead) of\nPACS those not updated for 60 s" in page.text
    assert 'value="dead" checked' in page.text and 'name="older_than" value="60"' in page.text
