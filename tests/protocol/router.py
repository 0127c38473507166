"""The protocol-abuse suite's router: one real router process for the whole package, with
three listeners, and what it costs the operating system (memory, threads, open files),
read from /proc, so that every test can check that the router gave it all back.

- `main`: plain TCP, ARTIM 2 s, at most 4 associations, 16 KiB PDUs, network timeout 3 s;
- `patient`: plain TCP, ARTIM 60 s (connections that request nothing stay a while);
- `secure`: DICOM TLS, ARTIM 2 s.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.files import bundled
from helpers.peers import DCMTK_ENV, RouterProcess, free_port, require, wait_for_port, wait_until

CT_SMALL = bundled("CT_small.dcm")

# What the router may keep after a test: memory that the C library keeps for reuse once
# hundreds of short-lived threads have allocated in their own arenas (it levels off at
# about 20 MiB over the whole suite; reading an announced 256 MiB would be far over), a
# thread for the summaries of refusals, one still finishing; no file.
RSS_MARGIN_KIB = 32 * 1024
THREADS_MARGIN = 2
FDS_MARGIN = 2


@dataclass(frozen=True)
class Usage:
    rss_kib: int
    threads: int
    fds: int

    def within(self, baseline: "Usage") -> bool:
        return (self.rss_kib <= baseline.rss_kib + RSS_MARGIN_KIB and self.threads <= baseline.threads + THREADS_MARGIN
                and self.fds <= baseline.fds + FDS_MARGIN)


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))
    return Usage(rss, len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd")))


def openssl(folder: Path, *args: str) -> None:
    result = subprocess.run([require("openssl"), *args], cwd=folder, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def make_pki(folder: Path) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    folder.mkdir()
    openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days",
            "2", "-subj", "/CN=test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, extensions in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                             ("client", "extendedKeyUsage=clientAuth")):
        (folder / f"{name}.ext").write_text(extensions + "\n")
        openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
                str(len(name)), "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext")
    return folder


CONFIG = """
storage: var
processes: 1
rules: main.rules
listeners:
  - {{name: main, ae_title: ROUTER, port: {main}, max_associations: 4, max_pdu: 16384,
      timeouts: {{artim: 2, network: 3}}}}
  - {{name: patient, ae_title: ROUTER, port: {patient}, max_associations: 4, timeouts: {{artim: 60}}}}
  - {{name: secure, ae_title: ROUTER, port: {secure}, timeouts: {{artim: 2}},
      tls: {{certificate: pki/server.crt, private_key: pki/server.key, ca_certificates: pki/ca.crt}}}}
destinations:
  ARCHIVE: {{type: folder, path: received}}
"""

RULES = """
rule "everything" {
  then route to ARCHIVE
}
"""


class Router:
    """The router under test, its listeners' ports and its baseline usage."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pki = make_pki(folder / "pki")
        self.ports = {"main": free_port(), "patient": free_port(), "secure": free_port()}
        (folder / "main.rules").write_text(RULES, encoding="utf-8")
        (folder / "router.yaml").write_text(CONFIG.format(**self.ports), encoding="utf-8")
        self.process = RouterProcess(folder / "router.yaml").start()
        for port in self.ports.values():
            wait_for_port(port, self.process.process)
        self.pid = self.process.process.pid
        # Warm up: the first association of each kind loads code and allocates what stays.
        for _ in range(2):
            self.assert_stores("main")
            self.assert_stores("patient")
            self.assert_stores("secure")
        self.baseline = self._settled_usage()

    def _settled_usage(self) -> Usage:
        """Usage once the warm-up's threads have ended: the same thread count twice, half a second apart."""
        previous = self.usage()
        for _ in range(60):
            time.sleep(0.5)
            current = self.usage()
            if current.threads == previous.threads:
                return current
            previous = current
        return previous

    def usage(self) -> Usage:
        return usage(self.pid)

    def log(self) -> str:
        return self.process.output()

    def storescu(self, listener: str = "main", path: str = CT_SMALL, timeout: float = 60) -> subprocess.CompletedProcess:
        extra = []
        if listener == "secure":
            extra = ["+tls", str(self.pki / "client.key"), str(self.pki / "client.crt"), "+cf", str(self.pki / "ca.crt")]
        return subprocess.run([require("storescu"), "-v", "-aet", "CT1", "-aec", "ROUTER", *extra, "127.0.0.1",
                               str(self.ports[listener]), path], env=DCMTK_ENV, capture_output=True, text=True,
                              timeout=timeout)

    def assert_stores(self, listener: str = "main") -> None:
        """A normal sender gets its instance stored (storescu is given 60 s: a sender locked out
        waits forever or fails, it does not take a little longer)."""
        result = self.storescu(listener)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "Received Store Response (Success)" in output, output

    def assert_recovered(self) -> None:
        """After an abuse: a normal storescu succeeds, and memory, threads and open files come
        back to the baseline (within a small margin)."""
        self.assert_stores("main")
        try:
            wait_until(lambda: self.usage().within(self.baseline), timeout=60, interval=0.25,
                       what="the router's usage to return to its baseline")
        except TimeoutError:
            pytest.fail(f"the router did not return to its baseline: {self.usage()} against {self.baseline} "
                        f"(margins: {RSS_MARGIN_KIB} KiB, {THREADS_MARGIN} threads, {FDS_MARGIN} files)")

    def stop(self) -> None:
        self.process.stop()
