"""The operations console under test: a configuration with its storage, users of each role,
a journal with deliveries in every state and a quarantine, and clients logged in as each user."""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import time
from pathlib import Path
from typing import NamedTuple

from starlette.testclient import TestClient

from helpers.clock import StoppedClock
from helpers.files import SAMPLES
from rulesengine.arrival import Arrival
from rulesengine.config import ConsoleUser, load_config
from rulesengine.console.app import create_app
from rulesengine.console.auth import hash_password
from rulesengine.runtime.journal import ACCEPTED, NewDelivery
from rulesengine.runtime.storage import Storage

PASSWORD = "a long enough password"
# Hashing with argon2's default parameters costs ~50 ms each: made once for every test.
PASSWORD_HASH = hash_password(PASSWORD)
USERS = tuple(ConsoleUser(name, role, PASSWORD_HASH)
              for name, role in (("vera", "viewer"), ("otto", "operator"), ("ada", "admin")))

CONFIG = """\
# the console's test configuration
storage: var  # spool, journal, quarantine
processes: 1
rules: main.rules
secrets:
  hash_key_file: hash.key
destinations:
  PACS: {type: folder, path: out/pacs}
  ARCHIVE: {type: folder, path: out/archive}
console:
  bind: 127.0.0.1
  port: PORT
"""


DESTINATIONS = """\
  PACS: {type: folder, path: out/pacs}
  ARCHIVE: {type: folder, path: out/archive}
"""


def write_config(folder: Path, port: int = 8104, extra: str = "", destinations: str = DESTINATIONS) -> Path:
    """The test configuration; `destinations`: the lines of `destinations:` instead of PACS and ARCHIVE."""
    (folder / "main.rules").write_text('rule "all"\n  route to PACS\n', encoding="utf-8")
    (folder / "hash.key").write_text("a key that is secret\n", encoding="utf-8")
    path = folder / "router.yaml"
    path.write_text(CONFIG.replace("PORT", str(port)).replace(DESTINATIONS, destinations) + extra, encoding="utf-8")
    return path


def users_yaml(users=USERS) -> str:
    """The `users:` of the console section, for a console whose users come from its file."""
    return "  users:\n" + "".join(f"    - {{name: {u.name}, role: {u.role}, password_hash: '{u.password_hash}'}}\n"
                                  for u in users)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class ConsoleUnderTest:
    """A console app on a folder of its own, with a stopped clock."""

    def __init__(self, folder: Path, users=USERS, config_extra: str = "", destinations: str = DESTINATIONS,
                 now: float | None = None):
        self.folder = folder
        self.config_path = write_config(folder, extra=config_extra, destinations=destinations)
        self.config = load_config(self.config_path, secrets=False)
        self.clock = StoppedClock(now)
        self.app = create_app(self.config, clock=self.clock, users=users)
        self.storage = Storage(self.config.storage)
        self.journal = self.storage.journal()

    def client(self, user: str | None = None) -> TestClient:
        """A client (a browser of its own), logged in as `user` when given."""
        client = TestClient(self.app, base_url="http://127.0.0.1", follow_redirects=False)
        if user is not None:
            token = csrf_of(client.get("/login").text)
            answer = client.post("/login", data={"name": user, "password": PASSWORD, "csrf_token": token})
            assert answer.status_code == 303, answer.text
        return client

    def api_client(self, user: str) -> tuple[TestClient, str]:
        """A client logged in through the JSON API, with the session's CSRF token."""
        client = TestClient(self.app, base_url="http://127.0.0.1", follow_redirects=False)
        token = client.get("/login", headers={"accept": "application/json"}).json()["csrf_token"]
        answer = client.post("/login", json={"name": user, "password": PASSWORD}, headers={"x-csrf-token": token})
        assert answer.status_code == 200, answer.text
        return client, answer.json()["csrf_token"]

    # ---- the journal's content -------------------------------------------------------------------

    def delivery(self, destination: str, state: str = "dead", sample: str = "ct_head.dcm") -> int:
        """A delivery in `state` (queued, dead, delivered), with its spool file; returns its number."""
        source = self.storage.temp_path()
        shutil.copyfile(SAMPLES / sample, source)
        arrival = Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main", source_kind="listener")
        spooled = self.storage.accept(source, arrival)
        instance = self.journal.record(arrival, spooled, None, ACCEPTED)
        out = self.storage.output_path(instance, destination)
        shutil.copyfile(spooled, out)
        [number] = self.journal.add_deliveries(instance, [NewDelivery(destination, out, "1.2", f"1.2.3.{instance}",
                                                                      "1.2.840.10008.1.2.1")])
        if state != "queued":
            [claimed] = [d for d in self.journal.claim(destination, 100) if d.id == number]
            if state == "dead":
                self.journal.failed(claimed, time.time(), "destination unreachable: connection refused", None)
            elif state == "delivered":
                self.journal.delivered(claimed, time.time())
        return number

    def quarantined(self, sample: str = "ct_head.dcm", reason: str = "no rule routes it") -> str:
        """An instance kept aside as the router keeps one; returns its item name (DAY/NAME.dcm)."""
        source = self.storage.temp_path()
        shutil.copyfile(SAMPLES / sample, source)
        arrival = Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main", source_kind="listener",
                          sop_instance_uid=f"1.2.3.{time.monotonic_ns()}")
        path = self.storage.quarantine(source, reason, arrival.to_quarantine())
        return str(Path(path).relative_to(self.storage.quarantine_dir))


class ServerThread:
    """uvicorn serving an app on 127.0.0.1:port in a thread of this process, stopped at exit."""

    def __init__(self, app, port: int):
        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the console did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


# A router for the console to watch (tests/console/test_console_router.py and _browser.py):
# CT goes to STORE, anything else is quarantined.
ROUTER_RULES = """\
rule "CT to the store" {
  when DataSet.Modality == "CT"
  then route to STORE
}
"""


def router_config_text(listener_port: int, store_port: int, down_port: int | None = None) -> str:
    """A router beside the console: its listener, and storescp as STORE, tried once; with
    `down_port`, also DOWN there (nothing listens: its deliveries fail and die)."""
    down = f"""\
  DOWN:
    type: dicom
    ae_title: NOBODY
    host: 127.0.0.1
    port: {down_port}
    retry: {{delay: 0.2, max_attempts: 1}}
    timeouts: {{connect: 2}}
""" if down_port is not None else ""
    return f"""\
storage: var
processes: 1
rules: main.rules
no_destination: quarantine
listeners:
  - {{name: main, ae_title: ROUTER, port: {listener_port}, require_called_aet: false}}
destinations:
  STORE:
    type: dicom
    ae_title: STORESCP
    host: 127.0.0.1
    port: {store_port}
    retry: {{delay: 0.2, max_attempts: 1}}
    timeouts: {{connect: 2}}
{down}console: {{}}
"""


class RouterFolder(NamedTuple):
    config_path: Path
    listener_port: int
    store_port: int


def router_folder(folder: Path, rules: str = ROUTER_RULES, down: bool = False) -> RouterFolder:
    """main.rules and router.yaml of a router beside the console, on free ports (with `down`,
    also a destination DOWN that nothing answers)."""
    from helpers.peers import free_port

    listener_port, store_port = free_port(), free_port()
    (folder / "main.rules").write_text(rules, encoding="utf-8")
    config_path = folder / "router.yaml"
    config_path.write_text(router_config_text(listener_port, store_port, free_port() if down else None),
                           encoding="utf-8")
    return RouterFolder(config_path, listener_port, store_port)


@contextlib.contextmanager
def served_to_browsers(app):
    """The app served on a free port of 127.0.0.1; yields a function that opens a new browser on
    it (each with a profile of its own); every browser is closed and the server stopped at the end."""
    from helpers.browser import Browser
    from helpers.peers import free_port

    port = free_port()
    browsers: list[Browser] = []

    def new_browser() -> Browser:
        browsers.append(Browser(f"http://127.0.0.1:{port}"))
        return browsers[-1]

    with ServerThread(app, port):
        try:
            yield new_browser
        finally:
            for each in browsers:
                each.close()
