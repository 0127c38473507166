"""A study-level rule against an instance-level rule, on the same traffic.

`--instances` instances of 0.5 MB sent by storescu on one association to a router in async
mode that delivers every instance to storescp, in two traffics: *studies of 20* (each of
`SERIES` series of 5 instances, one study after the other), and *one study* of them all (in
`SERIES` series). Two rule files, the same but for the rule that routes:

- *instance rule*: `rule "deliver" { then { set DataSet.InstitutionName = "ROUTED"  route to SCP } }`:
  each instance is delivered (an edited copy) as it is processed;
- *study rule*: the same actions in `rule "deliver" per study { complete when count() >= N ... }`
  (N: the instances of a study): every instance is held in its study's group, which fires
  when its last instance has joined, and the whole study is delivered then.

The rate is measured from the start of storescu to the last file at storescp, so that the
study rule's holding shows as much as it costs: what is held is delivered at the end rather
than along the way. The table also gives the tail: from storescu's end (its last instance
answered) to the last file at storescp. The CPU per instance is the router's processes' (user + system, /proc, as
the cost table reads it), from before the first instance to 0.3 s after the last arrived.
Each router gets one warm-up instance first, of a study of its own (its own PatientID, which
completes its group at once: `complete when` also holds for a study whose first instance
says "warm-up"). The two rules' runs alternate, so that the load of the machine moves both
alike; the median of each. The target: the study rule's rate at least 90% of the instance rule's on
studies of 20. On one study, the whole study is delivered after its last instance arrived,
where the instance rule delivers along the way: the tail is the price of holding, which the
rate of the study rule shows against the instance rule's (not a target).

    .venv/bin/python -m benchmarks --only groups [--instances N] [--runs N]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .router import (DCMTK_ENV, SETTLE_SECONDS, SMALL_SIDE, Bench, Measurement, _dcmtk_missing, _header, _wait_count,
                     _wait_for_worker, cpu_seconds, cpu_used, free_port, wait_for_port)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SERIES = 4
STUDY_SIZE = 20  # the instances of a study, in the traffic of studies
TARGET = 0.90
WARM_UP_PATIENT = "WARM-UP"

INSTANCE_RULE = """\
rule "deliver" {
  then {
    set DataSet.InstitutionName = "ROUTED"
    route to SCP
  }
}
"""
STUDY_RULE = """\
rule "deliver" per study {
  complete when count() >= {size} or DataSet.PatientID == "{warm}"
  then {
    set DataSet.InstitutionName = "ROUTED"
    route to SCP
  }
}
"""
RULES = {"instance rule": INSTANCE_RULE, "study rule": STUDY_RULE}


@dataclass
class GroupMeasurement(Measurement):
    tail_seconds: float = 0.0  # from storescu's end to the last file at storescp


def write_studies(folder: Path, count: int, study_size: int, series: int = SERIES, first: int = 0,
                  patient: str = "BENCH") -> list[Path]:
    """`count` instances in studies of `study_size` (one after the other, as storescu sends a
    folder in name order), each dealt over `series` series (each numbered, its instances too),
    0.5 MB of pixel data each."""
    folder.mkdir(parents=True, exist_ok=True)
    pixel_bytes = SMALL_SIDE * SMALL_SIDE * 2
    paths = []
    for index in range(count):
        ds = _header(SMALL_SIDE, SMALL_SIDE, first + index)
        study = f"2.25.{4242 + first // study_size + index // study_size}"
        position = index % study_size
        number = position % series
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = f"{study}.{number + 1}"
        ds.SeriesNumber = number + 1
        ds.InstanceNumber = position // series + 1
        ds.PatientID = patient
        path = folder / f"i{index:05d}.dcm"
        with open(path, "wb") as fh:
            ds.save_as(fh, enforce_file_format=True)
            fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + pixel_bytes.to_bytes(4, "little"))
            fh.write(os.urandom(pixel_bytes))
        paths.append(path)
    return paths


def send_in_order(port: int, folder: Path) -> float:
    """storescu on one association, the folder's files in name order (a folder given to storescu
    is read in the file system's order, which would interleave the studies)."""
    started = time.perf_counter()
    result = subprocess.run(["storescu", "-aet", "CT1", "-aec", "ROUTER", "127.0.0.1", str(port),
                             *map(str, sorted(folder.iterdir()))], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-2000:]}")
    return started


def measure(bench: Bench, inputs: Path, count: int, size: int, rule: str, study_size: int) -> GroupMeasurement:
    out = bench.work / f"groups-{time.time_ns()}"
    _, scp_port = bench.storescp(out)
    port = free_port()
    folder = bench.work / f"router-{time.time_ns()}"
    folder.mkdir()
    (folder / "bench.rules").write_text(RULES[rule].replace("{size}", str(study_size)).replace("{warm}", WARM_UP_PATIENT))
    (folder / "router.yaml").write_text(
        "storage: storage\nrules: bench.rules\nlog: {level: warning}\nprocesses: 1\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}, mode: async}}\n"
        f"destinations:\n  SCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {scp_port}}}\n")
    process = bench.spawn([sys.executable, "-m", "rulesengine", "run", str(folder / "router.yaml")],
                          {**os.environ, "PYTHONPATH": str(ROOT)}, name="router")
    wait_for_port(port, process)
    _wait_for_worker(process)
    bench.send(port, "ROUTER", bench.work / "warm-up-study")
    _wait_count(out, 1)
    time.sleep(SETTLE_SECONDS)
    before = cpu_seconds(process)
    started = send_in_order(port, inputs)
    sent = time.perf_counter()
    finished = _wait_count(out, count + 1)
    time.sleep(SETTLE_SECONDS)
    used = cpu_used(before, cpu_seconds(process))
    bench.stop_all()
    shutil.rmtree(out)
    shutil.rmtree(folder)
    return GroupMeasurement(finished - started, count, size, None, used, finished - sent)


def run(runs: int = 3, count: int = 200) -> int:
    if _dcmtk_missing():
        return 1
    work = Path(tempfile.mkdtemp(prefix="groups-bench-"))
    bench = Bench(work)
    try:
        traffics = {f"studies of {STUDY_SIZE}": STUDY_SIZE, "one study": count}
        for name, study_size in traffics.items():
            write_studies(work / name, count, study_size)
        write_studies(work / "warm-up-study", 1, 1, series=1, first=10 ** 6, patient=WARM_UP_PATIENT)
        size = sum(p.stat().st_size for p in (work / "one study").iterdir())
        results = {}
        for name, study_size in traffics.items():
            measured: dict[str, list[GroupMeasurement]] = {rule: [] for rule in RULES}
            for _ in range(runs):  # the rules alternate: the machine's load moves both alike
                for rule in RULES:
                    measured[rule].append(measure(bench, work / name, count, size, rule, study_size))
            for rule, runs_of_rule in measured.items():
                results[name, rule] = sorted(runs_of_rule, key=lambda one: one.seconds)[len(runs_of_rule) // 2]
            print(f"  measured: {name}", file=sys.stderr)
        report(results, count, size / count, runs)
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, str], GroupMeasurement], count: int, size: float, runs: int) -> None:
    print()
    print(f"Group rules: {count} instances of {size / 1e6:.2f} MB in studies of {SERIES} series, storescu on one "
          f"association to the router (async) to storescp; median of {runs}; tail: from storescu's end to the last "
          "instance at storescp; CPU in ms per instance of the router's processes (user + system, /proc)")
    print(f"  {'traffic':<16} {'rule':<14} {'inst/s':>8} {'tail s':>7} {'receiving':>10} {'worker':>8} {'total':>8}")
    for (traffic, name), result in results.items():
        cpu = result.cpu_ms_per_instance
        print(f"  {traffic:<16} {name:<14} {result.per_second:>8.1f} {result.tail_seconds:>7.2f} "
              f"{cpu.get('receiving', 0.0):>10.2f} {cpu.get('worker', 0.0):>8.2f} {result.total_cpu_ms_per_instance:>8.2f}")
    for traffic in dict.fromkeys(traffic for traffic, _ in results):
        study, instance = results[traffic, "study rule"], results[traffic, "instance rule"]
        ratio = study.per_second / instance.per_second
        cpu = study.total_cpu_ms_per_instance / instance.total_cpu_ms_per_instance
        if traffic.startswith("studies"):
            verdict = f" (target: at least {TARGET:.0%}): {'PASS' if ratio >= TARGET else 'MISS'}"
        else:
            verdict = " (all of it delivered after the last arrival: not a target)"
        print(f"  {traffic}: the study rule's rate {ratio:.0%} of the instance rule's, its CPU {cpu:.0%}{verdict}")


if __name__ == "__main__":
    sys.exit(run())
