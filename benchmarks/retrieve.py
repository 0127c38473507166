"""C-MOVE of a study: Orthanc moving it directly to a storescp, and the router moving it there
for the requester, retrieving from the same Orthanc by C-MOVE (to itself) or by C-GET.

Orthanc is filled over its REST API with one study of STUDY_SIZE small generated CT
instances. A pynetdicom client in this process asks for the study by C-MOVE, move
destination DCMTK's storescp, and times the whole request, as movescu does: association,
C-MOVE, every response, release. The final response comes once every instance is stored in
storescp, so the figure is instances per second end to end. The three paths alternate, so
that a change in the machine's load affects them alike; each figure is the median of RUNS.

Run alone: `python -m benchmarks.retrieve`. All processes run on 127.0.0.1 and are stopped
by their PID.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from .queries import _no_nagle
from .router import DCMTK_ENV, DCMTK_PATH, ROOT, free_port, stop, wait_for_port

STUDY_SIZE = 200
STUDY_UID = "2.25.400000000000000000001"
RUNS = 5
WARM_UP = 1  # moves on each path before timing: imports, Orthanc's first read of the study
TARGET_SHARE = 0.7  # the router's rate at least this share of the direct rate

# The requester's AE title chooses how the router retrieves.
BY_MOVE, BY_GET = "BENCHMOVE", "BENCHGET"

RULES = f"""\
rule "retrieved by C-GET" on C-MOVE, C-GET {{
  when Association.CallingAET == "{BY_GET}"
  then {{
    route to PACS_BY_GET
    stop
  }}
}}

rule "retrieved by C-MOVE" on C-MOVE, C-GET {{
  then route to PACS
}}

rule "marked" {{
  when Source.Kind == "retrieve"
  then set DataSet.InstitutionName = "RETRIEVED"
}}
"""


@dataclass
class MovePath:
    label: str
    port_name: str  # which port the requester calls: "orthanc" or "router"
    called: str
    calling: str


PATHS = (
    MovePath("Orthanc -> storescp (direct)", "orthanc", "ORTHANC", "BENCH"),
    MovePath("router, retrieve: c-move", "router", "ROUTER", BY_MOVE),
    MovePath("router, retrieve: c-get", "router", "ROUTER", BY_GET),
)


@dataclass
class Row:
    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return STUDY_SIZE / self.median

    @property
    def spread(self) -> tuple[float, float]:
        """The slowest and fastest rates, instances per second."""
        return STUDY_SIZE / max(self.seconds), STUDY_SIZE / min(self.seconds)


# ---- the peers and the router ------------------------------------------------------------------


def start_storescp(folder: Path, log) -> tuple[subprocess.Popen, int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen([shutil.which("storescp", path=DCMTK_PATH) or "storescp", "-aet", "STORESCP", "+xa",
                                "-od", str(folder), str(port)], stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV,
                               cwd=folder)
    wait_for_port(port, process)
    return process, port


def start_orthanc(folder: Path, router_port: int, storescp_port: int, log) -> tuple[subprocess.Popen, int, int]:
    """Orthanc knowing the router and storescp as modalities; (process, DICOM port, HTTP port)."""
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "Plugins": [], "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "ORTHANC",
        "DicomPort": dicom_port, "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True, "StorageCompression": False, "SaveJobs": False,
        "DicomModalities": {"ROUTER": ["ROUTER", "127.0.0.1", router_port],
                            "STORESCP": ["STORESCP", "127.0.0.1", storescp_port]},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen([shutil.which("Orthanc") or "Orthanc", str(folder / "orthanc.json")],
                               stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    wait_for_port(http_port, process)
    wait_for_port(dicom_port, process)
    return process, dicom_port, http_port


def fill_orthanc(http_port: int) -> None:
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    template.PatientID, template.PatientName = "RETRIEVE", "BENCH^RETRIEVE"
    template.StudyInstanceUID = STUDY_UID
    template.SeriesInstanceUID = "2.25.400000000000000000002"
    for index in range(STUDY_SIZE):
        template.SOPInstanceUID = f"2.25.{4 * 10 ** 20 + 1000 + index}"
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = index + 1
        buffer = BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}/instances", data=buffer.getvalue(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            if response.status != 200:
                raise RuntimeError(f"Orthanc refused an instance: {response.status}")


def start_router(folder: Path, port: int, orthanc_port: int, storescp_port: int, log) -> subprocess.Popen:
    (folder / "bench.rules").write_text(RULES)
    (folder / "router.yaml").write_text(
        f"storage: storage\nrules: bench.rules\nlog: {{level: warning}}\nprocesses: 1\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
        f"destinations:\n"
        f"  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {orthanc_port}, calling_ae_title: ROUTER}}\n"
        f"  PACS_BY_GET: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {orthanc_port}, "
        f"retrieve: c-get}}\n"
        f"  STORESCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {storescp_port}}}\n")
    process = subprocess.Popen([sys.executable, "-m", "rulesengine", "run", str(folder / "router.yaml")],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for_port(port, process)
    return process


# ---- one move ------------------------------------------------------------------------------------


def study_identifier() -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = STUDY_UID
    return identifier


def move(port: int, path: MovePath, identifier: Dataset) -> float:
    """Seconds from association request to release; raises unless every instance was moved."""
    ae = AE(ae_title=path.calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.dimse_timeout = ae.network_timeout = 300
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=path.called, evt_handlers=[(evt.EVT_CONN_OPEN, _no_nagle)])
    if not assoc.is_established:
        raise RuntimeError(f"no association with {path.called} on {port}")
    final = None
    for status, _identifier in assoc.send_c_move(identifier, "STORESCP", StudyRootQueryRetrieveInformationModelMove):
        if status and "Status" in status:
            final = status
    assoc.release()
    seconds = time.perf_counter() - started
    if final is None or final.Status != 0x0000 or int(final.get("NumberOfCompletedSuboperations") or 0) \
            != STUDY_SIZE:
        raise RuntimeError(f"{path.label}: the C-MOVE ended with {final!r}")
    return seconds


def measure(ports: dict[str, int], runs: int, received: Path) -> list[Row]:
    identifier = study_identifier()
    times: dict[str, list[float]] = {path.label: [] for path in PATHS}
    for run in range(WARM_UP + runs):
        for path in PATHS:
            seconds = move(ports[path.port_name], path, identifier)
            if run >= WARM_UP:
                times[path.label].append(seconds)
            for stored in received.iterdir():  # storescp overwrites by SOP Instance UID: keep the disk small
                stored.unlink()
    return [Row(path.label, times[path.label]) for path in PATHS]


# ---- the report ------------------------------------------------------------------------------------


def run(runs: int = RUNS) -> int:
    for program in ("storescp",):
        if shutil.which(program, path=DCMTK_PATH) is None:
            print(f"{program} is missing: `make bench` installs DCMTK (apt-get install dcmtk)", file=sys.stderr)
            return 1
    if shutil.which("Orthanc") is None:
        print("Orthanc is missing: `make bench` installs it (apt-get install orthanc)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="retrieve-bench-"))
    processes: list[subprocess.Popen] = []
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        with open(work / "peers.log", "ab") as log:
            storescp, storescp_port = start_storescp(work / "received", log)
            processes.append(storescp)
            router_port = free_port()
            orthanc, orthanc_port, http_port = start_orthanc(work, router_port, storescp_port, log)
            processes.append(orthanc)
            fill_orthanc(http_port)
            router = start_router(work, router_port, orthanc_port, storescp_port, log)
            processes.append(router)
            rows = measure({"orthanc": orthanc_port, "router": router_port}, runs, work / "received")
        report(rows, runs)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rows: list[Row], runs: int) -> None:
    direct = rows[0]
    print()
    print(f"C-MOVE of a study: {STUDY_SIZE} CT instances of {_instance_kb():.0f} KB from Orthanc to storescp; "
          f"pynetdicom requester in-process (association + C-MOVE + all responses + release), median of {runs}")
    print(f"  {'path':<30} {'median s':>9} {'inst/s':>8} {'inst/s range':>15} {'of direct':>10}")
    for row in rows:
        slow, fast = row.spread
        print(f"  {row.label:<30} {row.median:>9.2f} {row.rate:>8.1f} {f'{slow:.0f}-{fast:.0f}':>15} "
              f"{row.rate / direct.rate:>10.0%}")
    print()
    print("Targets:")
    for row in rows[1:]:
        share = row.rate / direct.rate
        print(f"  {'PASS' if share >= TARGET_SHARE else 'MISS'}  C-MOVE through the router ({row.label}) >= "
              f"{TARGET_SHARE:.0%} of the direct rate: {share:.0%} ({row.rate:.0f} vs {direct.rate:.0f} inst/s)")


def _instance_kb() -> float:
    return os.path.getsize(get_testdata_file("CT_small.dcm", download=False)) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.retrieve",
                                     description="C-MOVE of a study, directly from Orthanc and through the router.")
    parser.add_argument("--runs", type=int, default=RUNS, help="moves per path (median)")
    options = parser.parse_args(argv)
    return run(options.runs)


if __name__ == "__main__":
    sys.exit(main())
