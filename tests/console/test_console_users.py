"""The Users page: an admin adds users, changes roles and passwords, removes users; they are
written into the configuration file (comments kept) and count in this console at once; nobody
is locked out."""

from __future__ import annotations

import pytest

from helpers.console import PASSWORD, ConsoleUnderTest, csrf_of, users_yaml
from rulesengine.config import ConsoleUser, load_config
from rulesengine.console.auth import USERS_FILE, Users, hash_password, password_matches


@pytest.fixture
def console(tmp_path):
    return ConsoleUnderTest(tmp_path, users=None, config_extra=users_yaml())


def _login(console, name: str, password: str):
    client = console.client()
    token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
    return client.post("/login", json={"name": name, "password": password}, headers={"x-csrf-token": token})


def test_an_admin_adds_a_user_who_can_log_in_at_once_and_is_in_the_file(console):
    before = console.config_path.read_text()
    client, token = console.api_client("ada")
    answer = client.post("/api/users/save", json={"name": "nina", "role": "operator", "password": "nina's password"},
                         headers={"x-csrf-token": token})
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "added nina (operator)"
    after = console.config_path.read_text()
    assert after.startswith(before.split("  users:")[0])  # the comments and the rest are kept
    [nina] = [u for u in load_config(console.config_path, secrets=False).console.users if u.name == "nina"]
    assert nina.role == "operator" and password_matches(nina.password_hash, "nina's password")
    assert "nina's password" not in after
    assert _login(console, "nina", "nina's password").json()["role"] == "operator"
    listed = client.get("/api/users").json()["users"]
    assert [(u["name"], u["role"]) for u in listed] == [("ada", "admin"), ("nina", "operator"), ("otto", "operator"),
                                                         ("vera", "viewer")]
    [entry] = [e for e in console.journal.audit_log(10) if e["action"] == "user save"]
    assert (entry["user"], entry["target"], entry["result"]) == ("ada", "nina", "ok: added nina (operator)")


def test_a_new_password_and_role_replace_the_old_ones(console):
    client, token = console.api_client("ada")
    client.post("/api/users/save", json={"name": "otto", "role": "admin", "password": "a new password"},
                headers={"x-csrf-token": token})
    assert _login(console, "otto", PASSWORD).status_code == 401
    assert _login(console, "otto", "a new password").json()["role"] == "admin"


def test_a_removed_user_loses_the_session_and_the_login(console):
    otto, _ = console.api_client("otto")
    client, token = console.api_client("ada")
    answer = client.post("/api/users/remove", json={"name": "otto", "confirm": True}, headers={"x-csrf-token": token})
    assert answer.status_code == 200, answer.text
    assert otto.get("/api/queues").status_code == 401
    assert _login(console, "otto", PASSWORD).status_code == 401
    assert "otto" not in [u.name for u in load_config(console.config_path, secrets=False).console.users]


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/users/save", {"name": "x", "role": "root", "password": "long enough!"}, 400,
     "role must be one of viewer, operator, admin"),
    ("/api/users/save", {"name": "x", "role": "viewer", "password": "short"}, 400,
     "the password needs at least 10 characters"),
    ("/api/users/save", {"role": "viewer", "password": "long enough!"}, 400, "name is needed"),
    ("/api/users/save", {"name": "a/b", "role": "viewer", "password": "long enough!"}, 400,
     "console.users[3].name: 'a/b' is not valid"),
    ("/api/users/save", {"name": "ada", "role": "operator", "password": "long enough!"}, 400,
     "ada is the last admin: make another admin first"),
    ("/api/users/remove", {"name": "ada", "confirm": True}, 400, "an admin cannot remove themselves"),
    ("/api/users/remove", {"name": "nobody", "confirm": True}, 404, "no console user 'nobody'"),
    ("/api/users/remove", {"name": "otto"}, 400, "remove needs confirm=true"),
])
def test_what_would_break_the_file_or_lock_out_is_refused_and_the_file_stays(console, path, body, status, message):
    before = console.config_path.read_text()
    client, token = console.api_client("ada")
    answer = client.post(path, json=body, headers={"x-csrf-token": token})
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert console.config_path.read_text() == before
    assert [p.name for p in console.folder.iterdir() if p.name.startswith(".console-users-")] == []


def test_only_an_admin_sees_and_changes_users(console):
    client, token = console.api_client("otto")
    assert client.get("/api/users").status_code == 403
    answer = client.post("/api/users/save", json={"name": "otto", "role": "admin", "password": "promote me now"},
                         headers={"x-csrf-token": token})
    assert answer.status_code == 403
    assert [u.role for u in load_config(console.config_path, secrets=False).console.users if u.name == "otto"] == \
        ["operator"]


def test_with_the_first_run_admin_the_first_user_written_must_be_an_admin(tmp_path):
    console = ConsoleUnderTest(tmp_path, users=None)
    assert (tmp_path / "var" / USERS_FILE).exists()
    app_console = console.app.state.console
    assert app_console.configured_users == ()
    # The first-run admin's password is printed once by `dicom-rules console`; here it is replaced.
    app_console.users = Users({"admin": ConsoleUser("admin", "admin", hash_password(PASSWORD))})
    client, token = console.api_client("admin")
    page = client.get("/users").text
    assert "the first-run admin is in use" in page
    answer = client.post("/api/users/save", json={"name": "vera", "role": "viewer", "password": "long enough!"},
                         headers={"x-csrf-token": token})
    assert answer.status_code == 400 and "the first one written must be an admin" in answer.json()["error"]
    answer = client.post("/api/users/save", json={"name": "ada", "role": "admin", "password": "long enough!"},
                         headers={"x-csrf-token": token})
    assert answer.status_code == 200
    assert client.get("/api/users").status_code == 401  # the first-run admin is gone: only configured users
    assert _login(console, "ada", "long enough!").json()["role"] == "admin"


def test_the_page_form_works_without_the_api(console):
    client = console.client("ada")
    page = client.get("/users")
    assert page.status_code == 200 and 'action="/users/save"' in page.text
    answer = client.post("/users/save", data={"name": "nina", "role": "viewer", "password": "nina's password",
                                              "csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303 and answer.headers["location"] == "/users"
    assert "added nina (viewer)" in client.get("/users").text
