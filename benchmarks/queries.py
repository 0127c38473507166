"""C-FIND round trip: directly to Orthanc, and through the router to the same Orthanc.

Orthanc is filled over its REST API with small generated CT instances: one patient with a
single study, and one with MATCHES_MANY studies, four instances each. A pynetdicom client in
this process asks a STUDY-level Study Root query by Patient ID, so that it matches 1 or
MATCHES_MANY studies, and times one whole round trip, as findscu does: association, query,
every response, release. Direct and routed queries alternate, so that a change in the
machine's load affects both alike; each figure is the median of RUNS round trips.

Run alone: `python -m benchmarks.queries`. All processes run on 127.0.0.1 and are stopped by
their PID.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
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
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from .router import DCMTK_ENV, ROOT, free_port, stop, wait_for_port

MATCHES_FEW = 1
MATCHES_MANY = 50
INSTANCES_PER_STUDY = 4
RUNS = 15
WARM_UP = 3  # round trips on each path before timing: imports, caches, Orthanc's first query

TARGET_RATIO = 1.2
TARGET_EXTRA_MS = 5.0

RULES = """\
rule "queries go to the PACS" on C-FIND {
  then route to PACS
}
"""


@dataclass
class Row:
    matches: int
    direct_ms: float
    router_ms: float
    direct_quartiles: tuple[float, float] = (0.0, 0.0)  # the spread: first and third quartiles, ms
    router_quartiles: tuple[float, float] = (0.0, 0.0)
    router_cpu_ms: float | None = None  # the router process's CPU time per routed round trip

    @property
    def passed(self) -> bool:
        return self.router_ms <= TARGET_RATIO * self.direct_ms + TARGET_EXTRA_MS


# ---- Orthanc and the router ------------------------------------------------------------------------


def start_orthanc(folder: Path, log) -> tuple[subprocess.Popen, int, int]:
    """Orthanc answering C-FIND from anyone; (process, DICOM port, HTTP port)."""
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "bench", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "Plugins": [], "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "ORTHANC",
        "DicomPort": dicom_port, "DicomCheckCalledAet": False, "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowFind": True, "StorageCompression": False,
        "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen([shutil.which("Orthanc") or "Orthanc", str(folder / "orthanc.json")],
                               stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    wait_for_port(http_port, process)
    wait_for_port(dicom_port, process)
    return process, dicom_port, http_port


def _instance(template: Dataset, patient: str, study: int, index: int) -> bytes:
    ds = template.copy()
    ds.PatientID = patient
    ds.PatientName = f"BENCH^{patient}"
    ds.StudyInstanceUID = f"2.25.{10 ** 20 + study}"
    ds.SeriesInstanceUID = f"2.25.{2 * 10 ** 20 + study}"
    ds.SOPInstanceUID = f"2.25.{3 * 10 ** 20 + study * 100 + index}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyID = str(study)
    ds.AccessionNumber = f"ACC{study:05d}"
    ds.StudyDescription = f"benchmark study {study}"
    ds.InstanceNumber = index + 1
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fill_orthanc(http_port: int) -> int:
    """Upload the studies; the number of instances uploaded."""
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    studies = [("FEW", 0)] + [("MANY", 1 + number) for number in range(MATCHES_MANY)]
    uploaded = 0
    for patient, study in studies:
        for index in range(INSTANCES_PER_STUDY):
            request = urllib.request.Request(f"http://127.0.0.1:{http_port}/instances",
                                             data=_instance(template, patient, study, index), method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                if response.status != 200:
                    raise RuntimeError(f"Orthanc refused an instance: {response.status}")
            uploaded += 1
    return uploaded


def start_router(folder: Path, orthanc_port: int, log) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (folder / "bench.rules").write_text(RULES)
    (folder / "router.yaml").write_text(
        f"storage: storage\nrules: bench.rules\nlog: {{level: warning}}\nprocesses: 1\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}}}\n"
        f"destinations:\n  PACS: {{type: dicom, ae_title: ORTHANC, host: 127.0.0.1, port: {orthanc_port}}}\n")
    process = subprocess.Popen([sys.executable, "-m", "rulesengine", "run", str(folder / "router.yaml")],
                               cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    wait_for_port(port, process)
    return process, port


# ---- the round trip ---------------------------------------------------------------------------------


def study_query(patient: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient
    query.PatientName = ""
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    query.StudyDescription = ""
    query.AccessionNumber = ""
    query.NumberOfStudyRelatedInstances = ""
    return query


def _no_nagle(event) -> None:
    """pynetdicom leaves Nagle's algorithm on: the query's command and identifier PDUs would then
    wait for the peer's delayed ACK (40 ms on Linux), a delay the router itself does not add."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def round_trip(ae: AE, port: int, called: str, query: Dataset) -> tuple[float, int]:
    """Seconds from association request to release, and the number of matches."""
    started = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_CONN_OPEN, _no_nagle)])
    if not assoc.is_established:
        raise RuntimeError(f"no association with {called} on {port}")
    matches = 0
    final = None
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        final = status.Status if status else None
        if identifier is not None and final in (0xFF00, 0xFF01):
            matches += 1
    assoc.release()
    seconds = time.perf_counter() - started
    if final != 0x0000:
        raise RuntimeError(f"the query to {called} ended with status {final!r}")
    return seconds, matches


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of a process so far (Linux's /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(ae: AE, direct_port: int, router_port: int, patient: str, expected: int, runs: int,
            router_pid: int | None = None) -> Row:
    query = study_query(patient)
    times: dict[str, list[float]] = {"direct": [], "router": []}
    cpu_before = None
    for run in range(WARM_UP + runs):
        if run == WARM_UP and router_pid is not None:
            cpu_before = cpu_seconds(router_pid)
        for path, port, called in (("direct", direct_port, "ORTHANC"), ("router", router_port, "ROUTER")):
            seconds, matches = round_trip(ae, port, called, query)
            if matches != expected:
                raise RuntimeError(f"{path}: {matches} matches for {patient}, expected {expected}")
            if run >= WARM_UP:
                times[path].append(seconds * 1000)
    cpu_after = cpu_seconds(router_pid) if router_pid is not None else None
    cpu_ms = (cpu_after - cpu_before) * 1000 / runs if cpu_before is not None and cpu_after is not None else None
    return Row(expected, statistics.median(times["direct"]), statistics.median(times["router"]),
               _quartiles(times["direct"]), _quartiles(times["router"]), cpu_ms)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    first, _, third = statistics.quantiles(values, n=4)
    return first, third


# ---- the report --------------------------------------------------------------------------------------


def run(runs: int = RUNS) -> int:
    if shutil.which("Orthanc") is None:
        print("Orthanc is missing: `make bench` installs it (apt-get install orthanc)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="query-bench-"))
    processes: list[subprocess.Popen] = []
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        with open(work / "peers.log", "ab") as log:
            orthanc, orthanc_port, http_port = start_orthanc(work, log)
            processes.append(orthanc)
            uploaded = fill_orthanc(http_port)
            router, router_port = start_router(work, orthanc_port, log)
            processes.append(router)
            ae = AE(ae_title="BENCH")
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
            rows = [measure(ae, orthanc_port, router_port, patient, matches, runs, router.pid)
                    for patient, matches in (("FEW", MATCHES_FEW), ("MANY", MATCHES_MANY))]
        report(rows, uploaded, runs)
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(rows: list[Row], uploaded: int, runs: int) -> None:
    print()
    print(f"Query round trip: pynetdicom client in-process, STUDY-level Study Root C-FIND by Patient ID "
          f"(association + query + all responses + release), median of {runs}; Orthanc holds {uploaded} instances")
    print("  (quartiles in brackets: the spread; router CPU: the router process's CPU time per round trip)")
    print(f"  {'matches':>7}  {'direct to Orthanc ms':>22}  {'through the router ms':>22}  {'router added':>17}  "
          f"{'router CPU ms':>13}")
    for row in rows:
        added = row.router_ms - row.direct_ms
        cpu = f"{row.router_cpu_ms:.1f}" if row.router_cpu_ms is not None else "-"
        (d1, d3), (r1, r3) = row.direct_quartiles, row.router_quartiles
        print(f"  {row.matches:>7}  {row.direct_ms:>7.1f} [{d1:5.1f}-{d3:5.1f}]  "
              f"{row.router_ms:>7.1f} [{r1:5.1f}-{r3:5.1f}]  "
              f"{added:>+8.1f} ms ({row.router_ms / row.direct_ms - 1:+.0%})  {cpu:>13}")
    print("  C-MOVE: see the table of the C-MOVE of a study below")
    print()
    print("Targets:")
    for row in rows:
        limit = TARGET_RATIO * row.direct_ms + TARGET_EXTRA_MS
        print(f"  {'PASS' if row.passed else 'MISS'}  C-FIND, {row.matches} match{'es' if row.matches != 1 else ''}: "
              f"router <= {TARGET_RATIO:g} x direct + {TARGET_EXTRA_MS:g} ms: {row.router_ms:.1f} ms "
              f"(limit {limit:.1f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queries",
                                     description="C-FIND round trip, directly to Orthanc and through the router.")
    parser.add_argument("--runs", type=int, default=RUNS, help="round trips per path and query (median)")
    options = parser.parse_args(argv)
    return run(options.runs)


if __name__ == "__main__":
    sys.exit(main())
