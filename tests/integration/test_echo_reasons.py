"""`dicom-rules echo` says why a destination refuses: the peer's own reason from its
A-ASSOCIATE-RJ, in plain words (Orthanc checking AE titles, DCMTK's storescp refusing)."""

from __future__ import annotations

import pytest
from helpers.cli import dicom_rules
from helpers.peers import Orthanc, StoreSCP, free_port


@pytest.fixture
def strict_orthanc(tmp_path):
    """Orthanc answering only to its own AE title, and only to the callers it knows."""
    peer = Orthanc(tmp_path / "orthanc", settings={
        "DicomCheckCalledAet": True, "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False,
        "DicomModalities": {"router": ["ROUTER", "127.0.0.1", free_port()]}}).start()
    yield peer
    peer.stop()


@pytest.fixture
def refusing_storescp(tmp_path):
    peer = StoreSCP(tmp_path / "storescp", extra=("--refuse",)).start()
    yield peer
    peer.stop()


def test_echo_gives_the_peers_reason_for_rejecting_the_association(tmp_path, strict_orthanc, refusing_storescp):
    orthanc, storescp = strict_orthanc, refusing_storescp
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PACS\n}\n', encoding="utf-8")
    (tmp_path / "router.yaml").write_text(f"""
storage: var
processes: 1
rules: main.rules
destinations:
  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {orthanc.dicom_port}}}
  MISSPELT: {{type: dicom, ae_title: ORTANC, host: 127.0.0.1, port: {orthanc.dicom_port}}}
  STRANGER: {{type: dicom, ae_title: ORTHANC, calling_ae_title: STRANGER, host: 127.0.0.1,
             port: {orthanc.dicom_port}}}
  REFUSING: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {storescp.port}}}
""", encoding="utf-8")

    def echo(name: str):
        return dicom_rules("echo", "router.yaml", name, cwd=tmp_path)

    known = echo("PACS")
    assert (known.returncode, known.stdout.strip()) == (
        0, f"PACS (ORTHANC@127.0.0.1:{orthanc.dicom_port}): C-ECHO 0x0000"), known.stderr
    rejected = "not established: rejected by the peer's DICOM application (permanent)"
    misspelt = echo("MISSPELT")
    assert (misspelt.returncode, misspelt.stdout) == (1, "")
    assert misspelt.stderr.strip() == (
        f"MISSPELT: association with ORTANC@127.0.0.1:{orthanc.dicom_port} {rejected}: called AE title not "
        "recognised; it does not answer to 'ORTANC' (ae_title)")
    stranger = echo("STRANGER")
    assert stranger.returncode == 1
    assert stranger.stderr.strip() == (
        f"STRANGER: association with ORTHANC@127.0.0.1:{orthanc.dicom_port} {rejected}: calling AE title not "
        "recognised; it does not accept calls from 'STRANGER' (calling_ae_title)")
    refusing = echo("REFUSING")
    assert refusing.returncode == 1
    assert refusing.stderr.strip() == (
        f"REFUSING: association with STORESCP@127.0.0.1:{storescp.port} {rejected}: no reason given")
