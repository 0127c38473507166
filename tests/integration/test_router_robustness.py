"""The router under stress and failure, against real peers: a destination that is down,
a SIGKILL in the middle of a transfer, rules rewritten while instances stream in,
many senders at once, DICOM TLS, an instance a destination refuses, and a transfer
syntax conversion. The router runs as its own process; what counts is what the
peers actually received.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from helpers.files import bundled
from helpers.cli import dicom_rules
from helpers.instances import CT_SMALL, make_instances, received_by_uid
from helpers.peers import DCMTK_ENV, ROOT, StoreSCP, free_port, require, storescu, wait_until
from helpers.store_router import ROUTE_TO_STORE, queue_command, queue_counts, router_config
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

JPEG2000 = bundled("JPEG2000.dcm")  # JPEG 2000, cannot be sent uncompressed without decoding


# ---- the router's configuration and its journal ---------------------------------------------


def dicom_destination(peer_port: int, retry: str = "{delay: 0.2, multiplier: 1, max_attempts: 1000}") -> str:
    return f"{{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {peer_port}, retry: {retry}}}"


def journal_rows(tmp_path: Path, query: str, *args) -> list[sqlite3.Row]:
    """Read the router's journal as another process would (it is SQLite in WAL mode)."""
    with closing(sqlite3.connect(tmp_path / "var" / "journal.sqlite", timeout=30)) as db:
        db.row_factory = sqlite3.Row
        return db.execute(query, args).fetchall()


def unfinished(tmp_path: Path) -> int:
    return journal_rows(tmp_path, "SELECT COUNT(*) FROM deliveries WHERE state IN "
                                  "('queued', 'sending', 'retrying')")[0][0]


# ---- storescu and storescp output ------------------------------------------------------------------


class StorescuStream:
    """storescu -v in the background, its output read as it comes: which files it saw
    acknowledged with success, while it is still sending."""

    def __init__(self, port: int, files, calling: str = "CT1", called: str = "ROUTER", *extra: str):
        self.process = subprocess.Popen(
            [require("storescu"), "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
             *map(str, files)], env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def acknowledged(self) -> list[str]:
        return acknowledged_files(self.output())

    def wait_for_acknowledged(self, count: int, timeout: float = 60) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(acknowledged_files("\n".join(self.lines))) >= count
                                          or self.process.poll() is not None, timeout):
                raise TimeoutError(f"storescu saw fewer than {count} acknowledgements:\n" + "\n".join(self.lines))

    def wait(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def acknowledged_files(output: str) -> list[str]:
    """storescu -v names each file before sending it, then logs the C-STORE response."""
    acknowledged, current = [], None
    for line in output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def stored_order(peer: StoreSCP) -> list[Path]:
    """The files storescp -v reports storing, in the order it stored them (repeats included)."""
    log = peer.folder.parent / f"storescp-{peer.port}.log"
    return [peer.folder / Path(line.split("storing DICOM file: ", 1)[1].strip()).name
            for line in log.read_text().splitlines() if "storing DICOM file: " in line]


@pytest.fixture
def started_peers():
    """Peers a test starts itself (on a port fixed in advance), stopped afterwards by PID."""
    peers: list = []
    yield peers
    for peer in peers:
        peer.stop()


@pytest.fixture
def verbose_storescp(tmp_path):
    """storescp that logs every file it stores, so the order of arrival can be read back."""
    peer = StoreSCP(tmp_path / "storescp", extra=("-v",)).start()
    yield peer
    peer.stop()


# ---- 1. a destination that is down ---------------------------------------------------------------


def test_destination_down_queues_then_delivers_everything_in_order(router_factory, tmp_path, port,
                                                                   started_peers):
    peer_port = free_port()  # nothing listens there yet
    retry = "{delay: 0.5, multiplier: 2, cap: 2, max_attempts: 1000}"
    router_factory(router_config(port, dicom_destination(peer_port, retry)), ROUTE_TO_STORE, port)
    backlog = make_instances(tmp_path / "backlog", 20)

    # Async listener: instances are answered once spooled and journaled, destination or not.
    result = storescu(port, [i.path for i in backlog])
    assert result.returncode == 0, result.stdout + result.stderr

    def waiting_in_queue():
        report = queue_command(tmp_path)
        counts = queue_counts(report)
        return report if sum(counts.values()) == 20 and counts.get("retrying", 0) >= 1 else None

    report = wait_until(waiting_in_queue, timeout=30, what="20 deliveries queued and retrying")
    counts = queue_counts(report)
    assert counts["delivered"] == 0 and counts["dead"] == 0, report
    assert f"STORESCP@127.0.0.1:{peer_port}" in report, report  # each retrying item shows its last error

    # The destination comes up; a modality keeps sending while the backlog waits its backoff.
    peer = StoreSCP(tmp_path / "storescp", port=peer_port, extra=("-v",)).start()
    started_peers.append(peer)
    late = make_instances(tmp_path / "late", 5, first_number=21)
    result = storescu(port, [i.path for i in late])
    assert result.returncode == 0, result.stdout + result.stderr

    sent = backlog + late
    wait_until(lambda: len(peer.files()) == len(sent), timeout=60, what="25 instances at storescp")
    wait_until(lambda: unfinished(tmp_path) == 0, timeout=30, what="an empty queue")
    peer.stop()  # its log is complete once it has exited

    received = received_by_uid(peer.folder)
    assert set(received) == {i.sop_instance_uid for i in sent}
    # One association at a time (max_associations 1): storescp stored them in the order sent.
    order = [int(pydicom.dcmread(path, stop_before_pixels=True).InstanceNumber) for path in stored_order(peer)]
    assert order == [i.number for i in sent]


# ---- 2. SIGKILL in the middle of a transfer ----------------------------------------------------------


def test_sigkill_mid_transfer_loses_no_acknowledged_instance(router_factory, tmp_path, port, verbose_storescp):
    config = router_config(port, dicom_destination(verbose_storescp.port))
    router = router_factory(config, ROUTE_TO_STORE, port)
    sent = make_instances(tmp_path / "sent", 200)
    uid_of = {str(i.path): i.sop_instance_uid for i in sent}

    sender = StorescuStream(port, [i.path for i in sent])
    try:
        sender.wait_for_acknowledged(60)
        router.kill()  # SIGKILL: no shutdown code runs
        at_kill = len(verbose_storescp.files())
        sender.wait()
    finally:
        sender.stop()
    acknowledged = {uid_of[path] for path in sender.acknowledged()}
    assert 60 <= len(acknowledged) < len(sent), "the kill did not land in the middle of the transfer"

    # Same configuration, same storage: the restarted router finishes what it had answered.
    router_factory(config, ROUTE_TO_STORE, port)
    wait_until(lambda: acknowledged <= set(received_by_uid(verbose_storescp.folder)), timeout=90,
               what="every acknowledged instance at storescp")
    wait_until(lambda: unfinished(tmp_path) == 0, timeout=60, what="an empty queue")

    received = received_by_uid(verbose_storescp.folder)
    assert acknowledged <= set(received)  # duplicates allowed, losses not
    verbose_storescp.stop()
    stores = len(stored_order(verbose_storescp))
    journaled = journal_rows(tmp_path, "SELECT COUNT(*) FROM instances")[0][0]
    print(f"\nSIGKILL: {len(acknowledged)} acknowledged by the router, {journaled} journaled, {at_kill} at "
          f"storescp when killed, {len(received)} distinct at storescp, {stores - len(received)} duplicate store(s)")


# ---- 3. rules rewritten while instances stream in ---------------------------------------------------


def versioned_rules(institution: str) -> str:
    return f"""
rule "version" {{
  then {{
    set DataSet.InstitutionName = "{institution}"
    route to STORE
  }}
}}
"""


BROKEN_RULES = """
rule "version" {
  then {
    set DataSet.InstitutionName = "V3
    route to STORE
  }
}
"""


def test_rules_reloaded_during_a_stream_apply_from_the_next_instance(router_factory, tmp_path, port, storescp):
    router = router_factory(router_config(port, dicom_destination(storescp.port)), versioned_rules("V1"), port)
    first_version = re.search(r"rules (\S+) loaded from", router.output()).group(1)
    sent = make_instances(tmp_path / "sent", 150)

    sender = StorescuStream(port, [i.path for i in sent])
    try:
        sender.wait_for_acknowledged(5)
        (tmp_path / "main.rules").write_text(versioned_rules("V2"), encoding="utf-8")
        assert sender.wait() == 0, sender.output()
    finally:
        sender.stop()
    assert len(sender.acknowledged()) == len(sent), sender.output()  # no association failed
    router.wait_for_log("rules reloaded")
    second_version = re.search(r"rules reloaded: version (\S+)", router.output()).group(1)
    assert second_version != first_version

    wait_until(lambda: len(storescp.files()) == len(sent), timeout=60, what="150 instances at storescp")
    versions = {row["sop_instance_uid"]: row["ruleset_version"] for row in journal_rows(
        tmp_path, "SELECT sop_instance_uid, ruleset_version FROM instances ORDER BY id")}
    sequence = list(versions.values())
    switch = sequence.index(second_version)
    # Before the reload every instance ran the first rules; from it on, every one the second.
    assert sequence == [first_version] * switch + [second_version] * (len(sequence) - switch), sequence
    assert 0 < switch < len(sent), "the reload did not land in the middle of the stream"
    print(f"\nreload: {switch} of {len(sent)} instances ran the first rules")
    institution = {first_version: "V1", second_version: "V2"}
    received = received_by_uid(storescp.folder)
    assert {uid: str(ds.InstitutionName) for uid, ds in received.items()} == {
        uid: institution[version] for uid, version in versions.items()}
    for uid, version in versions.items():  # one log line per instance, naming its rule set version
        assert f"{uid} via main from CT1@127.0.0.1: rules {version} " in router.output()

    # A broken edit is refused with where it is wrong; the running rules stay.
    (tmp_path / "main.rules").write_text(BROKEN_RULES, encoding="utf-8")
    router.wait_for_log("do not compile")
    assert re.search(r"main\.rules:4:\d+: error", router.output()), router.output()
    late = make_instances(tmp_path / "late", 1, first_number=151)[0]
    result = storescu(port, [late.path])
    assert result.returncode == 0, result.stdout + result.stderr
    arrived = wait_until(lambda: received_by_uid(storescp.folder).get(late.sop_instance_uid), timeout=30,
                         what="the instance sent after the broken edit")
    assert arrived.InstitutionName == "V2"


# ---- 4. many senders at once ------------------------------------------------------------------------


def test_sixteen_senders_at_once_all_arrive(router_factory, tmp_path, port):
    destination = "{type: folder, path: received}"
    router_factory(router_config(port, destination, ", max_associations: 32"), ROUTE_TO_STORE, port)
    batches = [make_instances(tmp_path / f"sender{n:02d}", 8) for n in range(16)]

    senders = [StorescuStream(port, [i.path for i in batch], f"CT{n:02d}") for n, batch in enumerate(batches)]
    try:
        codes = [sender.wait() for sender in senders]
    finally:
        for sender in senders:
            sender.stop()
    for sender, code, batch in zip(senders, codes, batches):
        assert code == 0, sender.output()
        assert "Association Accepted" in sender.output() and "Rejected" not in sender.output(), sender.output()
        assert len(sender.acknowledged()) == len(batch), sender.output()

    expected = {i.sop_instance_uid for batch in batches for i in batch}
    wait_until(lambda: len(list((tmp_path / "received").glob("*.dcm"))) == len(expected), timeout=60,
               what="128 files in the destination folder")
    assert set(received_by_uid(tmp_path / "received")) == expected


# ---- 5. DICOM TLS ------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run([require("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)


def make_certificate(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions + "\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=folder)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-set_serial",
            str(abs(hash(name)) % 10**9), "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
            cwd=folder)


def test_tls_listener_accepts_a_client_certificate_and_refuses_none(router_factory, tmp_path, port):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    make_certificate(pki, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    make_certificate(pki, "client", "ca", "extendedKeyUsage=clientAuth")
    make_certificate(pki, "stranger", "other-ca", "extendedKeyUsage=clientAuth")
    tls = (", tls: {certificate: pki/server.crt, private_key: pki/server.key, ca_certificates: pki/ca.crt, "
           "require_client_certificate: true}")
    router_factory(router_config(port, "{type: folder, path: received}", tls), ROUTE_TO_STORE, port)
    first, second, third, fourth = make_instances(tmp_path / "sent", 4)
    trust = ("+cf", str(pki / "ca.crt"))

    accepted = storescu(port, [first.path], "CT1", "ROUTER", "+tls", str(pki / "client.key"),
                        str(pki / "client.crt"), *trust)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    wait_until(lambda: (tmp_path / "received" / f"{first.sop_instance_uid}.dcm").is_file(), timeout=30,
               what="the instance sent over TLS")

    no_certificate = storescu(port, [second.path], "CT1", "ROUTER", "+tla", *trust)
    assert no_certificate.returncode != 0, no_certificate.stdout + no_certificate.stderr
    unknown_ca = storescu(port, [third.path], "CT1", "ROUTER", "+tls", str(pki / "stranger.key"),
                          str(pki / "stranger.crt"), *trust)
    assert unknown_ca.returncode != 0, unknown_ca.stdout + unknown_ca.stderr
    plain = storescu(port, [fourth.path])
    assert plain.returncode != 0, plain.stdout + plain.stderr

    # The refusals left the listener running: a good client still gets through, nothing else arrived.
    again = storescu(port, [fourth.path], "CT1", "ROUTER", "+tls", str(pki / "client.key"),
                     str(pki / "client.crt"), *trust)
    assert again.returncode == 0, again.stdout + again.stderr
    wait_until(lambda: (tmp_path / "received" / f"{fourth.sop_instance_uid}.dcm").is_file(), timeout=30,
               what="the second instance sent over TLS")
    assert set(received_by_uid(tmp_path / "received")) == {first.sop_instance_uid, fourth.sop_instance_uid}


def test_a_tls_destination_checks_the_host_name_in_the_certificate_unless_told_not_to(router_factory, tmp_path,
                                                                                       port):
    pki = tmp_path / "pki"
    pki.mkdir()
    make_ca(pki, "ca")
    make_certificate(pki, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    make_certificate(pki, "client", "ca", "extendedKeyUsage=clientAuth")
    tls = ", tls: {certificate: pki/server.crt, private_key: pki/server.key, ca_certificates: pki/ca.crt}"
    router_factory(router_config(port, "{type: folder, path: received}", tls), ROUTE_TO_STORE, port)

    def destination(host: str, check: str = "") -> str:
        return (f"{{type: dicom, ae_title: ROUTER, host: {host}, port: {port}, tls: {{certificate: pki/client.crt, "
                f"private_key: pki/client.key, ca_certificates: pki/ca.crt{check}}}}}")

    (tmp_path / "client.yaml").write_text(f"""
storage: client-var
processes: 1
rules: main.rules
destinations:
  BY_ADDRESS: {destination("127.0.0.1")}
  BY_NAME: {destination("localhost")}
  BY_NAME_UNCHECKED: {destination("localhost", ", check_hostname: false")}
""", encoding="utf-8")
    # The server's certificate names 127.0.0.1 only; "localhost" reaches the same listener.
    by_address = dicom_rules("echo", "client.yaml", "BY_ADDRESS", cwd=tmp_path)
    assert by_address.returncode == 0 and "C-ECHO 0x0000" in by_address.stdout, by_address.stderr
    by_name = dicom_rules("echo", "client.yaml", "BY_NAME", cwd=tmp_path)
    assert by_name.returncode == 1, by_name.stdout
    assert by_name.stderr.strip() == (
        f"BY_NAME: association with ROUTER@localhost:{port} not established: TLS: the destination's certificate "
        "is not accepted: Hostname mismatch, certificate is not valid for 'localhost'."), by_name.stderr
    unchecked = dicom_rules("echo", "client.yaml", "BY_NAME_UNCHECKED", cwd=tmp_path)
    assert unchecked.returncode == 0 and "C-ECHO 0x0000" in unchecked.stdout, unchecked.stderr


# ---- 6. a destination that refuses one instance ------------------------------------------------------


@pytest.fixture
def uncompressed_storescp(tmp_path):
    """storescp that accepts the uncompressed transfer syntaxes only (+x= overrides the fixture's +xa)."""
    peer = StoreSCP(tmp_path / "storescp", extra=("+x=",)).start()
    yield peer
    peer.stop()


def test_refused_instance_ends_dead_with_its_reason_while_the_others_arrive(router_factory, tmp_path, port,
                                                                           uncompressed_storescp):
    retry = "{delay: 0.2, multiplier: 1, max_attempts: 3}"
    router_factory(router_config(port, dicom_destination(uncompressed_storescp.port, retry)), ROUTE_TO_STORE, port)
    before = make_instances(tmp_path / "before", 3)
    compressed = make_instances(tmp_path / "compressed", 1, first_number=4, source=JPEG2000)[0]
    after = make_instances(tmp_path / "after", 3, first_number=5)

    # -R -xw: storescu proposes JPEG 2000 for the classes it sends; the router takes it as it is.
    result = storescu(port, [i.path for i in before + [compressed] + after], "CT1", "ROUTER", "-R", "-xw")
    assert result.returncode == 0, result.stdout + result.stderr

    def dead():
        rows = journal_rows(tmp_path, "SELECT * FROM deliveries WHERE state='dead'")
        return rows[0] if rows else None

    dead_row = wait_until(dead, timeout=30, what="a dead delivery")
    assert dead_row["sop_instance_uid"] == compressed.sop_instance_uid
    assert dead_row["attempts"] == 3
    wait_until(lambda: len(uncompressed_storescp.files()) == 6, timeout=30, what="the six other instances")
    assert set(received_by_uid(uncompressed_storescp.folder)) == {i.sop_instance_uid for i in before + after}

    report = queue_command(tmp_path)
    assert queue_counts(report) == {"queued": 0, "sending": 0, "delivered": 6, "retrying": 0, "dead": 1}, report
    dead_line = next(line for line in report.splitlines() if compressed.sop_instance_uid in line)
    assert "dead" in dead_line and "attempts 3" in dead_line, report
    assert "cannot be converted without decompressing" in dead_line, report

    # An operator queues it again: it is attempted again (and refused again, for the same reason).
    assert "1 dead delivery queued again" in queue_command(tmp_path, "retry")
    attempts = f"SELECT COUNT(*) FROM attempts WHERE delivery_id={dead_row['id']}"
    wait_until(lambda: journal_rows(tmp_path, attempts)[0][0] == 6 and dead(), timeout=30,
               what="three more attempts, then dead again")
    assert len(uncompressed_storescp.files()) == 6


# ---- 7. conversion between uncompressed transfer syntaxes ---------------------------------------------


@pytest.fixture
def implicit_only_storescp(tmp_path):
    """storescp that accepts Implicit VR Little Endian only (+xi overrides the fixture's +xa)."""
    peer = StoreSCP(tmp_path / "storescp", extra=("+xi",)).start()
    yield peer
    peer.stop()


def test_explicit_vr_instance_arrives_converted_at_an_implicit_only_destination(router_factory, tmp_path, port,
                                                                               implicit_only_storescp):
    peer = implicit_only_storescp
    router_factory(router_config(port, dicom_destination(peer.port)), ROUTE_TO_STORE, port)
    original = pydicom.dcmread(CT_SMALL)
    assert original.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    result = storescu(port, [CT_SMALL], "CT1", "ROUTER", "-xe")  # to the router as Explicit VR, as stored
    assert result.returncode == 0, result.stdout + result.stderr

    arrived_path = wait_until(lambda: peer.files(), timeout=30, what="the instance at storescp")[0]
    arrived = pydicom.dcmread(arrived_path)
    assert arrived.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert arrived.SOPInstanceUID == original.SOPInstanceUID
    assert arrived.PatientName == original.PatientName
    assert arrived.PixelData == original.PixelData
    # The peer has the file a moment before the worker records the delivery.
    query = "SELECT transfer_syntax, state FROM deliveries"
    wait_until(lambda: [row["state"] for row in journal_rows(tmp_path, query)] == ["delivered"], timeout=30,
               what="the delivery recorded")
    assert [tuple(row) for row in journal_rows(tmp_path, query)] == [(ExplicitVRLittleEndian, "delivered")]


def test_a_destination_changed_in_the_configuration_applies_without_a_restart(router_factory, tmp_path, port,
                                                                              storescp):
    """Hot reload of the configuration: the listener keeps running (no association fails), and
    instances received after the change go to the destination's new address."""
    second = StoreSCP(tmp_path / "second").start()
    try:
        router = router_factory(router_config(port, dicom_destination(storescp.port)), ROUTE_TO_STORE, port)
        first_batch = make_instances(tmp_path / "first", 3)
        assert storescu(port, [i.path for i in first_batch]).returncode == 0
        wait_until(lambda: {i.sop_instance_uid for i in first_batch} <= set(received_by_uid(storescp.folder)),
                   what="the first batch at the first storescp")

        config = tmp_path / "router.yaml"
        config.write_text(router_config(port, dicom_destination(second.port)), encoding="utf-8")
        router.wait_for_log("configuration applied")

        second_batch = make_instances(tmp_path / "second-batch", 3, first_number=10)
        assert storescu(port, [i.path for i in second_batch]).returncode == 0
        wait_until(lambda: {i.sop_instance_uid for i in second_batch} <= set(received_by_uid(second.folder)),
                   what="the second batch at the second storescp")
        assert not {i.sop_instance_uid for i in second_batch} & set(received_by_uid(storescp.folder))
        assert "listeners or watched folders changed" not in router.output()
    finally:
        second.stop()


def test_sighup_reads_configuration_and_rules_again_and_the_router_goes_on(router_factory, tmp_path, port,
                                                                             storescp):
    """SIGHUP's default action would end the router like a crash; it is a reload instead."""
    router = router_factory(router_config(port, dicom_destination(storescp.port)), ROUTE_TO_STORE, port)
    os.kill(router.process.pid, signal.SIGHUP)
    router.wait_for_log("SIGHUP received: reading the configuration and the rules again")
    router.wait_for_log("configuration applied")

    batch = make_instances(tmp_path / "after-hangup", 3)
    assert storescu(port, [i.path for i in batch]).returncode == 0
    wait_until(lambda: {i.sop_instance_uid for i in batch} <= set(received_by_uid(storescp.folder)),
               what="the instances sent after SIGHUP at the storescp")
    assert router.stop() == 0


def test_a_second_router_on_the_same_storage_does_not_start(router_factory, tmp_path, port, storescp):
    """At its start a router removes spool files no journal entry names: a second one on the
    same folder would remove what the first is receiving. It refuses to start instead."""
    router = router_factory(router_config(port, dicom_destination(storescp.port)), ROUTE_TO_STORE, port)
    second_config = tmp_path / "second.yaml"  # same folder, so the same storage `var`
    second_config.write_text(router_config(free_port(), dicom_destination(storescp.port)), encoding="utf-8")
    second = subprocess.run([sys.executable, "-m", "rulesengine", "run", str(second_config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert second.returncode == 1, second.stdout + second.stderr
    storage = (tmp_path / "var").resolve()
    assert f"storage {storage} is in use by another router (process {router.process.pid})" in second.stdout + \
        second.stderr

    batch = make_instances(tmp_path / "first-still-runs", 2)
    assert storescu(port, [i.path for i in batch]).returncode == 0
    wait_until(lambda: {i.sop_instance_uid for i in batch} <= set(received_by_uid(storescp.folder)),
               what="the first router's deliveries")
    assert router.stop() == 0
    # Stopped, it has released the folder: a router starts on it again.
    again = router_factory(router_config(port, dicom_destination(storescp.port)), ROUTE_TO_STORE, port)
    assert again.stop() == 0


HOLD_EVERYTHING = """
rule "hold" {
  then quarantine "held for review"
}
"""

ROUTE_CT1_TO_STORE = """
rule "from CT1" {
  when Association.CallingAET == "CT1"
  then route to STORE
}
"""


def test_a_quarantined_instance_released_runs_through_the_new_rules_with_its_arrival_facts(
        router_factory, tmp_path, port, storescp):
    router = router_factory(router_config(port, dicom_destination(storescp.port)), HOLD_EVERYTHING, port)
    [held, kept] = make_instances(tmp_path / "sent", 2)
    assert storescu(port, [held.path, kept.path]).returncode == 0
    quarantine = tmp_path / "var" / "quarantine"
    wait_until(lambda: len(list(quarantine.glob("*/*.dcm"))) == 2, what="two instances in the quarantine")

    listed = dicom_rules("quarantine", "router.yaml", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("main CT1  held for review") for line in lines), listed.stdout

    (tmp_path / "main.rules").write_text(ROUTE_CT1_TO_STORE, encoding="utf-8")
    router.wait_for_log("rules reloaded")
    released = dicom_rules("quarantine", "router.yaml", "release", held.sop_instance_uid, cwd=tmp_path)
    assert released.returncode == 0, released.stderr
    assert "1 instance(s) released" in released.stdout
    # The rule reads the calling AE title: the release kept it from the first arrival.
    wait_until(lambda: held.sop_instance_uid in received_by_uid(storescp.folder),
               what="the released instance at the storescp")
    assert kept.sop_instance_uid not in received_by_uid(storescp.folder)
    remaining = dicom_rules("quarantine", "router.yaml", cwd=tmp_path).stdout.splitlines()
    assert len(remaining) == 1 and kept.sop_instance_uid in remaining[0]

    unknown = dicom_rules("quarantine", "router.yaml", "release", "1.2.3.4.5", cwd=tmp_path)
    assert unknown.returncode == 2 and "not in the quarantine: 1.2.3.4.5" in unknown.stderr
    assert router.stop() == 0
