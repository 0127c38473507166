"""A real PostgreSQL server for the tests: Debian's, initialised in a temporary folder,
listening on 127.0.0.1 on a free port, stopped by its PID.

initdb refuses to run as root: as root, the server runs as the `postgres` user that
Debian's package makes, owning its folder. fsync is off: nothing here outlives the tests.
When PostgreSQL is missing, the tests that need it fail (never skip): `make test` installs it.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

from .peers import free_port

SUPERUSER = "postgres"
SHARED_DATABASE = "journals"


def server_folder() -> str:
    """The newest installed server's bin folder (/usr/lib/postgresql/VERSION/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(path.split("/")[-3]) if path.split("/")[-3].isdigit() else 0)
    if not found:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)",
                    pytrace=False)
    return os.path.dirname(found[-1])


@dataclass
class PostgresServer:
    folder: str
    port: int
    process: subprocess.Popen
    _numbers: itertools.count
    _shared: bool = False

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, *statements: str, database: str = "postgres") -> list:
        """Run statements as the superuser (outside a transaction: CREATE DATABASE may be one);
        returns the last one's rows."""
        import psycopg
        rows: list = []
        with psycopg.connect(self.url(database), autocommit=True) as db:
            for statement in statements:
                cursor = db.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def new_database(self, template: str = "template0") -> str:
        """A new empty database (copied from `template`); returns its URL."""
        name = f"test_{next(self._numbers)}"
        self.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def new_schema(self) -> str:
        """A new empty schema, in a database the tests share, and the URL that works in it
        (its search_path): a tenth of the time of a new database."""
        if not self._shared:
            self.admin(f"CREATE DATABASE {SHARED_DATABASE} TEMPLATE template0")
            self._shared = True
        name = f"test_{next(self._numbers)}"
        self.admin(f"CREATE SCHEMA {name}", database=SHARED_DATABASE)
        return f"{self.url(SHARED_DATABASE)}?options=-csearch_path%3D{name}"

    def stop_server(self) -> None:
        """Stop the server (by its PID), keeping its data: `start_server` starts it again."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # fast shutdown: clients are disconnected
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def start_server(self) -> None:
        """Start the stopped server again, on the same port with the same data; returns once it answers."""
        assert self.process.poll() is not None, "the server runs already"
        self.process = _launch(self.folder, self.port)
        _wait_until_up(self)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_server_user() -> dict:
    """Popen's arguments that run a program as the server's user: the PID is the server's own,
    which a wrapper (runuser, su) would hide."""
    return {"user": SUPERUSER, "group": SUPERUSER, "extra_groups": []} if os.geteuid() == 0 else {}


def start_postgres() -> PostgresServer:
    binaries = server_folder()
    folder = tempfile.mkdtemp(prefix="postgres-")
    data = os.path.join(folder, "data")
    os.makedirs(data)
    if os.geteuid() == 0:
        account = pwd.getpwnam(SUPERUSER)
        os.chmod(folder, 0o755)
        for path in (folder, data):
            os.chown(path, account.pw_uid, account.pw_gid)
    subprocess.run([os.path.join(binaries, "initdb"), "-D", data, "-U", SUPERUSER, "-A", "trust", "--no-sync",
                    "-E", "UTF8", "--locale", "C"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   cwd=folder, **_as_server_user())
    # The superuser needs no password (the tests' own server, on 127.0.0.1); every other role
    # gives its password, as a router's would.
    with open(os.path.join(data, "pg_hba.conf"), "w") as hba:
        hba.write("local all all trust\n"
                  f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
                  "host all all 127.0.0.1/32 scram-sha-256\n")
    port = free_port()
    server = PostgresServer(folder, port, _launch(folder, port), itertools.count(1))
    try:
        _wait_until_up(server)
    except BaseException:
        server.stop()
        raise
    return server


def _launch(folder: str, port: int) -> subprocess.Popen:
    data = os.path.join(folder, "data")
    log = open(os.path.join(folder, "server.log"), "ab")
    process = subprocess.Popen([
        os.path.join(server_folder(), "postgres"), "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
        "-c", f"unix_socket_directories={folder}", "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off", "-c", "max_connections=200"], stdout=log, stderr=subprocess.STDOUT,
        cwd=folder, **_as_server_user())
    log.close()
    return process


def _wait_until_up(server: PostgresServer) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.process.poll() is not None:
            with open(os.path.join(server.folder, "server.log"), errors="replace") as text:
                raise RuntimeError(f"PostgreSQL exited with {server.process.returncode}: {text.read()[-2000:]}")
        try:
            server.admin("SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
