"""Who may use the console: no session, no page and no API answer (every route enumerated);
no CSRF token, no action; roles below the one a route needs are refused; a brute force on the
login is stopped, and let through again after the window (a stopped clock, no sleeps)."""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route

from helpers.console import PASSWORD, ConsoleUnderTest, csrf_of

# /logout without a session does nothing but send to /login; /metrics is for Prometheus, which has
# no session (a bearer token guards it when `console: metrics_token_file` is set).
OPEN = {"/login", "/logout", "/metrics"}


@pytest.fixture
def console(tmp_path):
    return ConsoleUnderTest(tmp_path)


def routes(app):
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods - {"HEAD"}):
                yield route.path, method
        else:
            assert isinstance(route, Mount) and route.path == "/static", f"an unexpected kind of route: {route}"


def test_every_route_but_the_login_needs_a_session(console):
    client = console.client()
    checked = []
    for path, method in routes(console.app):
        if path in OPEN:
            continue
        answer = client.request(method, path, data={"destination": "PACS", "confirm": "yes"}
                                if method == "POST" else None)
        if path.startswith("/api/"):
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.json() == {"error": "not logged in: POST /login first"}
        else:
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/login?next=")
        checked.append((method, path))
    # The enumeration saw the pages, their API twins and the actions.
    assert {("GET", "/queues"), ("GET", "/api/queues"), ("POST", "/api/queues/purge"), ("POST", "/quarantine/release"),
            ("GET", "/api/openapi.json"), ("GET", "/configuration"), ("GET", "/audit"), ("GET", "/messages"),
            ("GET", "/api/messages"), ("GET", "/messages/{instance_id}"), ("GET", "/api/messages/{instance_id}"),
            ("GET", "/rules"), ("GET", "/api/rules"), ("POST", "/rules/dry-run"), ("POST", "/api/rules/dry-run")
            } <= set(checked)
    assert console.journal.counts() == {}  # and nothing was done


def test_static_files_and_the_login_page_are_open(console):
    client = console.client()
    assert client.get("/static/console.css").status_code == 200
    assert client.get("/static/live.js").status_code == 200
    # without a metrics_token_file, Prometheus scrapes without a session or a token
    assert client.get("/metrics").status_code == 200
    page = client.get("/login")
    assert page.status_code == 200 and 'name="csrf_token"' in page.text


def test_a_forged_or_expired_session_cookie_is_no_session(console):
    client = console.client("ada")
    assert client.get("/api/session").status_code == 200
    client.cookies.set("rulesengine_console", "eyJ1c2VyIjogImFkYSJ9.forged.signature")
    assert client.get("/api/session").status_code == 401
    client = console.client("ada")
    console.clock.advance(console.config.console.session_minutes * 60 + 1)
    assert client.get("/api/session").status_code == 401


def test_a_post_without_or_with_a_wrong_csrf_token_is_refused(console):
    dead = console.delivery("PACS", "dead")
    client = console.client("ada")
    token = csrf_of(client.get("/queues").text)
    assert client.post("/queues/retry", data={"destination": "PACS"}).status_code == 403
    assert client.post("/queues/retry", data={"destination": "PACS", "csrf_token": token + "x"}).status_code == 403
    api, api_token = console.api_client("ada")
    assert api.post("/api/queues/retry", json={"destination": "PACS"}).status_code == 403
    assert api.post("/api/queues/retry", json={"destination": "PACS"},
                    headers={"x-csrf-token": "not-the-token"}).status_code == 403
    # Another session's token is no good either.
    assert api.post("/api/queues/retry", json={"destination": "PACS"}, headers={"x-csrf-token": token}).status_code == 403
    assert console.journal.delivery(dead).state == "dead"
    answer = client.post("/queues/retry", data={"destination": "PACS", "csrf_token": token})
    assert answer.status_code == 303 and console.journal.delivery(dead).state == "queued"
    audit = console.journal.audit_log()
    assert [row["result"] for row in audit if row["action"] == "POST /queues/retry"].count(
        "refused: no valid CSRF token") == 2


def test_the_login_form_needs_its_csrf_token(console):
    client = console.client()
    answer = client.post("/login", data={"name": "ada", "password": PASSWORD})
    assert answer.status_code == 403
    assert client.get("/api/session").status_code == 401


def test_roles_viewer_below_operator_below_admin(console):
    dead = console.delivery("PACS", "dead")
    item = console.quarantined()
    for user in ("vera", "otto"):
        client, token = console.api_client(user)
        headers = {"x-csrf-token": token}
        purge = client.post("/api/queues/purge", json={"state": ["delivered"], "confirm": True}, headers=headers)
        assert purge.status_code == 403 and "needs the role admin" in purge.json()["error"]
        delete = client.post("/api/quarantine/delete", json={"item": [item], "confirm": True}, headers=headers)
        assert delete.status_code == 403
        assert client.get("/api/audit").status_code == 403
    viewer, token = console.api_client("vera")
    for path, body in (("/api/queues/retry", {"destination": "PACS"}), ("/api/queues/pause", {"destination": "PACS"}),
                       ("/api/quarantine/release", {"item": [item]}), ("/api/rules/dry-run", {})):
        answer = viewer.post(path, json=body, headers={"x-csrf-token": token})
        assert answer.status_code == 403, path
        assert answer.json()["error"] == f"{path} needs the role operator; vera is viewer"
    assert viewer.get("/api/queues").status_code == 200  # looking is allowed
    # Nothing changed for all that.
    assert console.journal.delivery(dead).state == "dead"
    assert console.journal.pauses() == {}
    assert [entry["item"] for entry in console.client("ada").get("/api/quarantine").json()["items"]] == [item]
    denied = [row for row in console.journal.audit_log() if row["result"].startswith("denied")]
    assert {(row["user"], row["action"]) for row in denied} >= {
        ("vera", "POST /api/queues/retry"), ("vera", "POST /api/quarantine/release"), ("vera", "POST /api/rules/dry-run"),
        ("otto", "POST /api/queues/purge")}


def test_the_pages_show_only_the_actions_the_role_allows(console):
    console.delivery("PACS", "dead")
    console.quarantined()
    viewer = console.client("vera").get("/queues").text
    assert "Retry dead" not in viewer and "Purge" not in viewer and "Audit log" not in viewer
    operator = console.client("otto").get("/queues").text
    assert "Retry dead" in operator and "Pause" in operator and "Purge" not in operator
    admin = console.client("ada").get("/queues").text
    assert "Purge" in admin and "Audit log" in admin
    assert "Release" not in console.client("vera").get("/quarantine").text
    assert "Delete" not in console.client("otto").get("/quarantine").text


def test_a_brute_force_on_the_login_gets_429_until_the_window_has_passed(console):
    client = console.client()
    token = csrf_of(client.get("/login").text)
    for _ in range(5):
        answer = client.post("/login", data={"name": "ada", "password": "guess", "csrf_token": token})
        assert answer.status_code == 401
    # Now even the right password is refused, with when to try again.
    answer = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "300"
    assert "too many failed logins" in answer.text
    # From another address, the user name is still limited.
    other = console.client()
    other_token = csrf_of(other.get("/login").text)
    assert other.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": other_token},
                      headers={"x-forwarded-for": "10.0.0.9"}).status_code == 429
    console.clock.advance(200)
    answer = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "100"
    console.clock.advance(101)
    answer = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == "/overview"
    logins = [row for row in reversed(console.journal.audit_log()) if row["action"] == "login"]
    assert [row["result"].split(":")[0] for row in logins] == ["failed"] * 5 + ["refused"] * 3 + ["ok"]
    assert all(row["user"] == "ada" and row["target"] == "testclient" for row in logins)


def test_an_address_that_tries_many_names_is_limited_too(console):
    client = console.client()
    token = csrf_of(client.get("/login").text)
    for number in range(5):
        client.post("/login", data={"name": f"user{number}", "password": "guess", "csrf_token": token})
    assert client.post("/login", data={"name": "otto", "password": PASSWORD, "csrf_token": token}).status_code == 429


def test_an_unknown_user_and_a_wrong_password_answer_alike(console):
    client = console.client()
    token = csrf_of(client.get("/login").text)
    unknown = client.post("/login", data={"name": "nobody", "password": PASSWORD, "csrf_token": token})
    wrong = client.post("/login", data={"name": "ada", "password": "wrong", "csrf_token": token})
    assert unknown.status_code == wrong.status_code == 401
    assert "Wrong user name or password." in unknown.text and "Wrong user name or password." in wrong.text


def test_login_goes_back_to_the_page_asked_for_but_never_to_another_site(console):
    client = console.client()
    assert client.get("/quarantine").headers["location"] == "/login?next=%2Fquarantine"
    token = csrf_of(client.get("/login?next=/quarantine").text)
    answer = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token,
                                         "next": "/quarantine"})
    assert answer.headers["location"] == "/quarantine"
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client = console.client()
        token = csrf_of(client.get("/login").text)
        answer = client.post("/login", data={"name": "ada", "password": PASSWORD, "csrf_token": token,
                                             "next": target})
        assert answer.headers["location"] == "/overview", target


def test_logout_ends_the_session(console):
    client = console.client("otto")
    token = csrf_of(client.get("/queues").text)
    assert client.post("/logout", data={}).status_code == 403  # a page elsewhere cannot log one out
    assert client.post("/logout", data={"csrf_token": token}).headers["location"] == "/login"
    assert client.get("/queues").status_code == 303
    assert console.journal.audit_log()[0]["action"] == "logout"


def test_a_user_no_longer_configured_loses_the_session(console):
    client = console.client("otto")
    del console.app.state.console.users.by_name["otto"]
    assert client.get("/api/queues").status_code == 401


def test_cookies_are_strict_and_http_only_and_answers_carry_security_headers(console):
    client = console.client()
    page = client.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "samesite=strict" in cookie and "httponly" in cookie and "secure" not in cookie  # no TLS configured
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


def test_with_tls_the_cookie_is_sent_over_https_only(tmp_path):
    from dataclasses import replace

    from rulesengine.config import ConsoleTLS
    from rulesengine.console.app import create_app
    from helpers.console import USERS

    console = ConsoleUnderTest(tmp_path)
    config = replace(console.config, console=replace(console.config.console, tls=ConsoleTLS("c.pem", "k.pem")))
    from starlette.testclient import TestClient
    client = TestClient(create_app(config, users=USERS), base_url="https://127.0.0.1")
    assert "secure" in client.get("/login").headers["set-cookie"].lower()


def test_the_openapi_document_names_every_api_route(console):
    client = console.client("vera")
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    api_routes = {(path, method) for path, method in routes(console.app) if path.startswith("/api/")}
    assert api_routes <= documented
    assert documented - api_routes == {("/login", "POST")}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"], (path, method)


def test_every_page_has_its_api_twin(console):
    pages = {(path, method) for path, method in routes(console.app)
             if not path.startswith(("/api/", "/static")) and path not in OPEN}
    api = {(path, method) for path, method in routes(console.app) if path.startswith("/api/")}
    assert pages and all(("/api" + path, method) in api for path, method in pages)


def test_the_navigation_links_pages_that_exist_each_with_its_api_twin(console):
    from rulesengine.console.app import NAVIGATION
    get_routes = {path for path, method in routes(console.app) if method == "GET"}
    for path, _title, _role in NAVIGATION:
        assert path in get_routes and "/api" + path in get_routes, path
    admin = console.client("ada").get("/queues").text
    viewer = console.client("vera").get("/queues").text
    for path, _title, role in NAVIGATION:
        assert f'href="{path}"' in admin
        assert (f'href="{path}"' in viewer) == (role == "viewer")


def test_the_openapi_document_gives_the_parameters_of_each_route(console):
    declared = console.app.state.console.parameters
    document = console.client("vera").get("/api/openapi.json").json()
    for (path, method), parameters in declared.items():
        entry = document["paths"]["/api" + path if path != "/" else "/api/"][method.lower()]
        bodies = list(entry.get("requestBody", {}).get("content", {}).values())  # JSON, or a multipart upload
        names = [p["name"] for p in entry.get("parameters", ()) if p["in"] == "query"] or \
            list(bodies[0]["schema"]["properties"] if bodies else ())
        assert names == [name for name, *_ in parameters], (path, method)
    queues = document["paths"]["/api/queues"]["get"]["parameters"]
    assert [p["name"] for p in queues] == ["destination", "state", "before", "limit"]
    assert queues[1]["schema"] == {"type": "array", "items": {"type": "string"}}
    retry = document["paths"]["/api/queues/retry"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(retry["properties"]) == {"destination", "id"}
    assert document["paths"]["/api/queues/retry"]["post"]["description"].endswith("Role: operator or above.")


def test_the_login_page_sends_a_logged_in_user_on(console):
    client = console.client("vera")
    assert client.get("/login?next=/quarantine").headers["location"] == "/quarantine"
    assert client.get("/login?next=//evil.example/").headers["location"] == "/overview"
