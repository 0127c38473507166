"""Real DICOM peers for the integration tests: DCMTK's tools, Orthanc, and the router
itself as a separate process. Everything listens on 127.0.0.1 on a free port and is
stopped by its own PID.

When DCMTK or Orthanc is missing, the tests that need them fail (never skip):
`make test` installs both.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# pynetdicom installs tools of DCMTK's names (storescu, echoscu...) beside the Python that
# runs the tests: with the virtual environment activated they come first on the PATH. The
# peers are looked up without that folder.
_SCRIPTS = {os.path.realpath(sysconfig.get_path("scripts")), os.path.realpath(os.path.dirname(sys.executable))}
PEERS_PATH = os.pathsep.join(folder for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
                             if os.path.realpath(folder) not in _SCRIPTS)
# DCMTK leaves Nagle's algorithm on unless told; every DCMTK process gets this.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1", "PATH": PEERS_PATH}


def require(program: str) -> str:
    path = shutil.which(program, path=PEERS_PATH)
    if path is None:
        pytest.fail(f"{program} is not installed: `make test` installs DCMTK and Orthanc "
                    "(apt-get install dcmtk orthanc)", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Stop a process we started, by its PID; kill it if it does not stop in time."""
    if process.poll() is None:
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.returncode


# ---- DCMTK --------------------------------------------------------------------------------


@dataclass
class StoreSCP:
    """DCMTK's storescp writing what it receives to a folder."""

    folder: Path
    ae_title: str = "STORESCP"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    extra: tuple[str, ...] = ()

    def start(self) -> "StoreSCP":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = open(self.folder.parent / f"storescp-{self.port}.log", "w")
        accept_all = () if "-xf" in self.extra else ("+xa",)  # a configuration file decides instead
        self.process = subprocess.Popen(
            [require("storescp"), "-aet", self.ae_title, *accept_all, "-od", str(self.folder), *self.extra,
             str(self.port)], env=DCMTK_ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.log.close()

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


def storescu(port: int, files, calling: str = "CT1", called: str = "ROUTER", *extra: str,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Send files with DCMTK's storescu; `extra` options go before host and port."""
    return subprocess.run([require("storescu"), "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
                           *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


def echoscu(port: int, calling: str = "CT1", called: str = "ROUTER", *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("echoscu"), "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


@dataclass
class WorklistSCP:
    """DCMTK's wlmscpfs answering Modality Worklist queries from `folder`/CALLED_AE/*.wl, one
    process for every association (so that stopping its PID stops it all)."""

    folder: Path  # holds a folder per called AE title
    ae_title: str = "WORKLIST"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    extra: tuple[str, ...] = ()

    @property
    def items(self) -> Path:
        """The folder of the worklist files answered to `ae_title`."""
        return self.folder / self.ae_title

    def start(self) -> "WorklistSCP":
        self.items.mkdir(parents=True, exist_ok=True)
        (self.items / "lockfile").touch()  # older releases lock it during a query
        self.log = open(self.folder.parent / f"wlmscpfs-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [require("wlmscpfs"), "--single-process", "-dfp", str(self.folder), *self.extra, str(self.port)],
            env=DCMTK_ENV, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.log.close()


def dump2dcm(dump: Path, target: Path) -> Path:
    """A DICOM file (with file meta information) from a DCMTK text dump."""
    subprocess.run([require("dump2dcm"), "-q", "-g", "+te", str(dump), str(target)], env=DCMTK_ENV, check=True,
                   capture_output=True, timeout=60)
    return target


# ---- Orthanc ------------------------------------------------------------------------------------


@dataclass
class Orthanc:
    folder: Path
    ae_title: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    settings: dict = field(default_factory=dict)  # Orthanc configuration options over the defaults below

    def start(self) -> "Orthanc":
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "tests", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "Plugins": [], "HttpServerEnabled": True, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port, "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "StorageCompression": False,
            "SaveJobs": False, "ConcurrentJobs": 1,
        } | self.settings
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(self.folder / "orthanc.log", "w")
        self.process = subprocess.Popen([require("Orthanc"), str(path)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}; see {self.folder}/orthanc.log")
            try:
                self.get("/system")
                break
            except OSError:
                time.sleep(0.1)
        wait_for_port(self.dicom_port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
            self.log.close()

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as response:
            return json.loads(response.read())

    def instances(self) -> list[dict]:
        """Simplified tags of every instance Orthanc holds."""
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]

    def count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])


# ---- the router as a process ------------------------------------------------------------------------


@dataclass
class RouterProcess:
    """`dicom-rules run CONFIG` in its own process, so that it can be killed like the real thing."""

    config: Path
    port: int | None = None  # the first listener's port, waited for at start
    process: subprocess.Popen | None = None

    def start(self, wait_for: int | None = None, wait: bool = True) -> "RouterProcess":
        """Start it and wait until it listens (or, without a port, runs); `wait=False` returns at once."""
        self.log_path = self.config.parent / f"router-{time.time_ns()}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "rulesengine", "run", str(self.config)],
                                        cwd=self.config.parent, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONPATH": str(ROOT)})
        if not wait:
            return self
        port = wait_for or self.port
        if port:
            wait_for_port(port, self.process, timeout=30)
        else:
            self.wait_for_log("router running")
        return self

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the router exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the router's log:\n{self.output()}")

    def stop(self) -> int:
        code = stop_process(self.process, signal.SIGTERM, timeout=60) if self.process else 0
        self.log.close()
        return code

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.log.close()


def wait_until(check, timeout: float = 60, interval: float = 0.1, what: str = "the condition"):
    """Poll `check()` until it returns something true; return it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s (last: {last!r})")
