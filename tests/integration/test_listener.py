"""What the listener answers when it does not take an instance, as real senders see it:
every failure is a failure status that DCMTK's storescu and dcmsend, pynetdicom and Orthanc
report as such, with the reason in Error Comment, and nothing is left in the spool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from helpers.files import bundled
from helpers.peers import DCMTK_ENV, Orthanc, require, storescu, wait_until
from pynetdicom import AE
from pynetdicom.status import code_to_category

CT_SMALL = bundled("CT_small.dcm")
MR_SMALL = bundled("MR_small.dcm")

REJECT_MR = """
rule "no MR here" {
  when DataSet.Modality == "MR"
  then reject "MR goes to the other router"
}

rule "everything else" {
  then route to ARCHIVE
}
"""

ROUTE_ALL = """
rule "everything" {
  then route to ARCHIVE
}
"""


def config(port: int) -> str:
    return (f"storage: var\nprocesses: 1\nrules: main.rules\nlisteners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
            f"destinations:\n  ARCHIVE: {{type: folder, path: received}}\n")


def pynetdicom_store(port: int, path: str) -> pydicom.Dataset:
    """C-STORE from pynetdicom as the sender; the status data set it gets back."""
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="ROUTER")
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()


def dcmsend(port: int, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([require("dcmsend"), "-v", "-aet", "CT1", "-aec", "ROUTER", "127.0.0.1", str(port), path],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=60)


def spool_tmp(router) -> list[str]:
    return sorted(os.listdir(router.config.parent / "var" / "spool" / "tmp"))


def archived(tmp_path: Path, path: str) -> Path:
    return tmp_path / "received" / f"{pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID}.dcm"


def store_and_wait(port: int, tmp_path: Path, path: str) -> None:
    """An instance sent and delivered: the router, its worker included, is up and well."""
    result = storescu(port, [path])
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: archived(tmp_path, path).is_file(), what=f"{path} in the archive")


# ---- 17. a rule's reject -----------------------------------------------------------------------------


def orthanc_request(peer: Orthanc, method: str, path: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{peer.http_port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_a_rejected_instance_is_a_failure_for_every_sender(router_factory, orthanc, tmp_path, port):
    """0x0124 was "Unknown Status" to storescu and "unknown status" (exit 0) to dcmsend."""
    router = router_factory(config(port), REJECT_MR, port)

    result = storescu(port, [MR_SMALL], "CT1", "ROUTER", "-v")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Received Store Response (Error: CannotUnderstand)" in output, output
    assert "Unknown Status" not in output, output

    # dcmsend exits 0 whatever the answer (DCMTK 3.6.7): its summary says how it counted it.
    sent = dcmsend(port, MR_SMALL)
    output = sent.stdout + sent.stderr
    assert "* with status ERROR    : 1" in output, output
    assert "unknown status" not in output, output

    status = pynetdicom_store(port, MR_SMALL)
    assert code_to_category(status.Status) == "Failure", hex(status.Status)
    assert status.ErrorComment == "MR goes to the other router"

    # Orthanc as the sender (REST: /modalities/{id}/store) reports the failure with the status.
    assert orthanc_request(orthanc, "PUT", "/modalities/router", json.dumps(
        {"AET": "ROUTER", "Host": "127.0.0.1", "Port": port}).encode())[0] == 200
    code, uploaded = orthanc_request(orthanc, "POST", "/instances", Path(MR_SMALL).read_bytes())
    assert code == 200, uploaded
    code, answer = orthanc_request(orthanc, "POST", "/modalities/router/store",
                                   json.dumps({"Resources": [uploaded["ID"]]}).encode())
    assert code >= 400 and "0xC124" in answer.get("Details", ""), (code, answer)

    # Nothing of it went anywhere, and a CT still does.
    assert storescu(port, [CT_SMALL]).returncode == 0
    wait_until(lambda: list((tmp_path / "received").glob("*.dcm")), what="the CT in the archive")
    assert [pydicom.dcmread(p).Modality for p in (tmp_path / "received").glob("*.dcm")] == ["CT"]
    assert spool_tmp(router) == []


# ---- 16. failures while storing ----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """The router's storage folder on a file system of its own, 16 MiB, that the test fills:
    a real full disk. Mounting needs root, which `make test` has in CI."""
    if os.geteuid() != 0:
        pytest.fail("a full disk is made with a tmpfs mount, which needs root (CI runs `make test` as root)",
                    pytrace=False)
    folder = tmp_path / "var"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write into `folder` until its file system is full."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_answered_out_of_resources_and_leaves_nothing(small_disk, router_factory, tmp_path, port):
    """It used to abort the association (the write failed in pynetdicom's reading thread) and
    leave an empty file in spool/tmp."""
    router = router_factory(config(port), ROUTE_ALL, port)
    store_and_wait(port, tmp_path, MR_SMALL)
    filler = fill(small_disk)
    assert os.statvfs(small_disk).f_bavail == 0

    result = storescu(port, [CT_SMALL], "CT1", "ROUTER", "-v")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Received Store Response (Refused: OutOfResources)" in output, output
    status = pynetdicom_store(port, CT_SMALL)
    assert status.Status == 0xA700
    assert status.ErrorComment == "not stored: No space left on device"
    assert spool_tmp(router) == []
    wait_until(lambda: "not stored: No space left on device" in router.output(), what="the failure in the log")
    assert "Traceback" not in router.output()

    filler.unlink()  # the disk has room again: the same sender gets through
    store_and_wait(port, tmp_path, CT_SMALL)
    assert spool_tmp(router) == []


def test_a_storage_failure_is_answered_out_of_resources_and_leaves_nothing(router_factory, tmp_path, port):
    """spool/in is not a folder any more (an operator's mistake, a broken disk): moving the
    received file there fails inside the C-STORE handler. That used to answer 0xC211 and
    leave the file, under two names, in spool/tmp."""
    router = router_factory(config(port), ROUTE_ALL, port)
    store_and_wait(port, tmp_path, MR_SMALL)
    incoming = tmp_path / "var" / "spool" / "in"
    shutil.rmtree(incoming)
    incoming.write_text("not a folder")

    result = storescu(port, [CT_SMALL], "CT1", "ROUTER", "-v")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Received Store Response (Refused: OutOfResources)" in output, output
    status = pynetdicom_store(port, CT_SMALL)
    assert status.Status == 0xA700 and status.ErrorComment == "not stored: File exists", status
    assert spool_tmp(router) == []
    assert "Traceback" not in router.output()

    incoming.unlink()
    incoming.mkdir()
    store_and_wait(port, tmp_path, CT_SMALL)
    assert spool_tmp(router) == []

