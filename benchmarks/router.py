"""Routing throughput and memory, against DCMTK directly and against pynetdicom baselines.

Every path ends at DCMTK's storescp (or, for the baseline that only receives, at
the minimal SCP itself), is fed by DCMTK's storescu on one association (or by
several storescu processes at once, each on its own), and is timed from the start
of storescu until the last instance is on the receiving side. The CPU time of each
process measured (user and system, from /proc) is read before the first instance
is sent and once the last has arrived. All processes run on 127.0.0.1 and are
stopped by their PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# pynetdicom installs tools of DCMTK's names beside this Python: with the virtual environment
# activated they would come first on the PATH.
_SCRIPTS = {os.path.realpath(sysconfig.get_path("scripts")), os.path.realpath(os.path.dirname(sys.executable))}
DCMTK_PATH = os.pathsep.join(folder for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
                             if os.path.realpath(folder) not in _SCRIPTS)
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1", "PATH": DCMTK_PATH}  # DCMTK leaves Nagle on unless told

SMALL_COUNT = 200
SMALL_SIDE = 512  # 512 x 512 x 16 bit: 0.5 MB of pixel data
LARGE_COUNT = 3
LARGE_BYTES = 200 * 1024 * 1024
HUGE_BYTES = 1024 * 1024 * 1024

RULES = """\
rule "mark" {
  when DataSet.Modality == "CT"
  then set DataSet.InstitutionName = "ROUTED"
}

rule "deliver" {
  then route to SCP
}
"""


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


# ---- instances --------------------------------------------------------------------------------


def _header(rows: int, columns: int, index: int) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False), stop_before_pixels=True)
    ds.Rows, ds.Columns = rows, columns
    ds.SOPInstanceUID = f"2.25.{10 ** 20 + index}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = index + 1
    return ds


def write_instance(path: Path, index: int, pixel_bytes: int) -> None:
    """A CT instance whose pixel data is streamed to disk, so a 1 GB one needs no 1 GB of memory."""
    side = int((pixel_bytes // 2) ** 0.5)
    frames = max(1, pixel_bytes // (side * side * 2))
    ds = _header(side, side, index)
    ds.NumberOfFrames = frames
    length = side * side * 2 * frames
    with open(path, "wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        chunk = os.urandom(1 << 20)
        left = length
        while left:
            piece = chunk[:min(left, len(chunk))]
            fh.write(piece)
            left -= len(piece)


def split_set(folder: Path, senders: int) -> None:
    """folder/by-N/K: the folder's instances dealt to N senders (hard links, no copies)."""
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    for index, path in enumerate(paths):
        part = folder / f"by-{senders}" / f"{index % senders}"
        part.mkdir(parents=True, exist_ok=True)
        os.link(path, part / path.name)


def make_set(folder: Path, count: int, pixel_bytes: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"i{index:04d}.dcm"
        write_instance(path, index, pixel_bytes)
        paths.append(path)
    return paths


# ---- the paths measured ---------------------------------------------------------------------------


@dataclass
class Measurement:
    seconds: float
    count: int
    total_bytes: int
    peak_rss_mb: float | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # by process: "receiving", "worker", ...

    @property
    def cpu_ms_per_instance(self) -> dict[str, float]:
        return {name: seconds * 1000 / self.count for name, seconds in self.cpu_seconds.items()}

    @property
    def total_cpu_ms_per_instance(self) -> float:
        return sum(self.cpu_ms_per_instance.values())

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.total_bytes / self.seconds / 1e6


@dataclass
class Bench:
    work: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, args: list[str], env=None, name: str = "proc") -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")
        process = subprocess.Popen(args, env=env or os.environ, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.work)
        self.processes.append(process)
        return process

    def storescp(self, folder: Path) -> tuple[subprocess.Popen, int]:
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        process = self.spawn(["storescp", "-aet", "STORESCP", "+xa", "-od", str(folder), str(port)], DCMTK_ENV,
                             "storescp")
        wait_for_port(port, process)
        return process, port

    def send(self, port: int | list[int], called: str, folder: Path, senders: int = 1) -> float:
        """`senders` storescu processes at once, each on its own association with its share of
        the folder's instances (the subfolders made by split_set); several ports: the senders
        are dealt over them, round-robin."""
        ports = port if isinstance(port, list) else [port]
        folders = [folder] if senders == 1 else sorted(p for p in (folder / f"by-{senders}").iterdir())
        started = time.perf_counter()
        running = [subprocess.Popen(["storescu", "-aet", f"CT{index + 1}", "-aec", called, "+sd", "127.0.0.1",
                                     str(ports[index % len(ports)]), str(part)], env=DCMTK_ENV,
                                    stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
                   for index, part in enumerate(folders)]
        for process in running:
            _, errors = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"storescu failed: {errors[-2000:]}")
        return started

    def stop_all(self) -> None:
        for process in self.processes:
            stop(process)
        self.processes.clear()


def _wait_count(folder: Path, count: int, timeout: float = 900) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(1 for p in folder.iterdir() if p.is_file()) >= count:
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(f"{folder}: fewer than {count} files after {timeout} s")


def _children(pid: int) -> list[int]:
    """A process's children, started by any of its threads (the router's worker is started by
    a thread of its own: /proc/PID/task/PID/children alone would miss it)."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _role(pid: int, main: int) -> str:
    if pid == main:
        return "receiving"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return str(pid)
    if "resource_tracker" in command:
        return "resource tracker"
    if "multiprocessing" not in command:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    # an extra receiving process (processes: N) has a worker process of its own; a worker has none
    return "receiving" if _children(pid) else "worker"


def _descendants(pid: int) -> list[int]:
    """The router's processes below the main one: its worker and extra receiving processes, and theirs."""
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(process: subprocess.Popen) -> dict[str, float]:
    """User + system CPU seconds of a process and of each of its children, by role."""
    found: dict[str, float] = {}
    for pid in [process.pid, *_descendants(process.pid)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = _role(pid, process.pid)
        found[role] = found.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return found


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before.get(role, 0.0) for role in after}


def _peak_rss_mb(process: subprocess.Popen) -> float | None:
    """VmHWM of a process and of its children (the router's worker), in MB."""
    total = 0
    pids = [process.pid, *_descendants(process.pid)]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024 if total else None


def measure_direct(bench: Bench, inputs: Path, count: int, size: int) -> Measurement:
    out = bench.work / f"direct-{time.time_ns()}"
    _, port = bench.storescp(out)
    started = bench.send(port, "STORESCP", inputs)
    finished = _wait_count(out, count)
    bench.stop_all()
    shutil.rmtree(out)
    return Measurement(finished - started, count, size)


SETTLE_SECONDS = 0.3  # after the last instance arrived: its last journal updates are made


def measure_minimal(bench: Bench, inputs: Path, count: int, size: int, senders: int = 1) -> Measurement:
    out = bench.work / f"minimal-{time.time_ns()}"
    out.mkdir()
    port = free_port()
    process = bench.spawn([sys.executable, str(HERE / "peers" / "minimal_scp.py"), str(port), str(out)],
                          name="minimal")
    wait_for_port(port, process)
    warm_up(bench, port, "MINIMAL", out)
    before = cpu_seconds(process)
    started = bench.send(port, "MINIMAL", inputs, senders)
    finished = _wait_count(out, count + 1)
    time.sleep(SETTLE_SECONDS)  # the same idle time as the router's, counted alike
    used = cpu_used(before, cpu_seconds(process))
    peak = _peak_rss_mb(process)
    bench.stop_all()
    shutil.rmtree(out)
    return Measurement(finished - started, count, size, peak, used)


def measure_minimal_scu(bench: Bench, inputs: Path, count: int, size: int, senders: int = 1) -> Measurement:
    """The minimal pynetdicom SCU (sends only) to storescp: its own CPU, from its association's
    request to its release (its start-up left out)."""
    out = bench.work / f"minimal-scu-{time.time_ns()}"
    _, port = bench.storescp(out)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(HERE / "peers" / "minimal_scu.py"), "127.0.0.1", str(port),
                             "STORESCP", str(inputs)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"minimal SCU failed: {result.stderr[-2000:]}")
    finished = _wait_count(out, count)
    cpu = float(result.stdout.split("cpu ")[-1])
    bench.stop_all()
    shutil.rmtree(out)
    return Measurement(finished - started, count, size, None, {"sending": cpu})


def measure_naive(bench: Bench, inputs: Path, count: int, size: int) -> Measurement:
    out = bench.work / f"naive-{time.time_ns()}"
    _, scp_port = bench.storescp(out)
    port = free_port()
    process = bench.spawn([sys.executable, str(HERE / "peers" / "naive_forwarder.py"), str(port), "127.0.0.1",
                           str(scp_port), "STORESCP"], name="naive")
    wait_for_port(port, process)
    started = bench.send(port, "FORWARDER", inputs)
    finished = _wait_count(out, count)
    peak = _peak_rss_mb(process)
    bench.stop_all()
    shutil.rmtree(out)
    return Measurement(finished - started, count, size, peak)


def measure_router(bench: Bench, inputs: Path, count: int, size: int, mode: str,
                   storage: Path | None = None, senders: int = 1, processes: int = 1) -> Measurement:
    """`storage`: the router's storage folder (its journal), else a new one; `processes`: its
    receiving processes (each with its worker process)."""
    out = bench.work / f"router-{mode}-{time.time_ns()}"
    _, scp_port = bench.storescp(out)
    port = free_port()
    folder = bench.work / f"router-{time.time_ns()}"
    folder.mkdir()
    (folder / "bench.rules").write_text(RULES)
    (folder / "router.yaml").write_text(
        f"storage: {storage or 'storage'}\nrules: bench.rules\nlog: {{level: warning}}\nprocesses: {processes}\n"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}, mode: {mode}}}\n"
        f"destinations:\n  SCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {scp_port}}}\n")
    process = bench.spawn([sys.executable, "-m", "rulesengine", "run", str(folder / "router.yaml")],
                          {**os.environ, "PYTHONPATH": str(ROOT)}, name="router")
    wait_for_port(port, process)
    _wait_for_worker(process, processes)
    warm_up(bench, port, "ROUTER", out)
    before = cpu_seconds(process)
    started = bench.send(port, "ROUTER", inputs, senders)
    finished = _wait_count(out, count + 1)
    time.sleep(SETTLE_SECONDS)
    used = cpu_used(before, cpu_seconds(process))
    peak = _peak_rss_mb(process)
    bench.stop_all()
    shutil.rmtree(out)
    shutil.rmtree(folder)
    return Measurement(finished - started, count, size, peak, used)


def warm_up(bench: Bench, port: int, called: str, out: Path) -> None:
    """One instance through the path before it is measured: what a process does once (imports,
    the path parser built on first use) is not counted per instance."""
    warm = bench.work / "warm-up"
    if not warm.exists():
        write_instance(warm / "w.dcm" if warm.mkdir() is None else warm, 10 ** 6, SMALL_SIDE * SMALL_SIDE * 2)
    bench.send(port, called, warm)
    _wait_count(out, 1)
    time.sleep(SETTLE_SECONDS)


def _wait_for_worker(process: subprocess.Popen, processes: int = 1, timeout: float = 30) -> None:
    """Until the router's worker processes (one per receiving process) have started and imported
    what they run."""
    deadline = time.time() + timeout
    while time.time() < deadline and sum(_role(pid, process.pid) == "worker"
                                         for pid in _descendants(process.pid)) < processes:
        time.sleep(0.05)
    time.sleep(0.5 + processes * 0.5)


def median_of(runs: int, measure, *args, **options) -> Measurement:
    """The median run's time; the median CPU of each process; the highest peak."""
    results = [measure(*args, **options) for _ in range(runs)]
    results.sort(key=lambda m: m.seconds)
    middle = results[len(results) // 2]
    peaks = [m.peak_rss_mb for m in results if m.peak_rss_mb]
    cpu = {role: sorted(m.cpu_seconds.get(role, 0.0) for m in results)[len(results) // 2]
           for role in middle.cpu_seconds}
    return Measurement(middle.seconds, middle.count, middle.total_bytes, max(peaks) if peaks else None, cpu)


# ---- the report ------------------------------------------------------------------------------------


SENDERS = (1, 4, 8)
COST_PATHS = {
    "minimal pynetdicom SCP (receives only)": (measure_minimal, ()),
    "minimal pynetdicom SCU (sends only)": (measure_minimal_scu, ()),
    "router async": (measure_router, ("async",)),
    "router sync": (measure_router, ("sync",)),
}


def _dcmtk_missing() -> bool:
    for program in ("storescu", "storescp"):
        if shutil.which(program, path=DCMTK_PATH) is None:
            print(f"{program} is missing: `make bench` installs DCMTK (apt-get install dcmtk)", file=sys.stderr)
            return True
    return False


def default_processes() -> tuple[int, ...]:
    """1, and the cores this machine gives the router (what processes: auto runs)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return tuple(sorted({1, cores}))


def run(runs: int = 3, quick: bool = False, cost_only: bool = False, count: int = SMALL_COUNT,
        processes: tuple[int, ...] = ()) -> int:
    """`cost_only`: only the table of CPU per instance and concurrent senders, and the table of
    the router's receiving processes (`processes`: how many, each a row) with 8 senders."""
    if _dcmtk_missing():
        return 1
    work = Path(tempfile.mkdtemp(prefix="router-bench-"))
    bench = Bench(work)
    try:
        small = make_set(work / "small", count, SMALL_SIDE * SMALL_SIDE * 2)
        small_bytes = sum(p.stat().st_size for p in small)
        for senders in SENDERS[1:]:
            split_set(work / "small", senders)
        if not cost_only:
            throughput_table(bench, work, small, runs, quick)
        cost = {}
        for name, (measure, extra) in COST_PATHS.items():
            counts = SENDERS if measure is not measure_minimal_scu else (1,)  # it sends on one association
            for senders in counts:
                cost[name, senders] = median_of(runs, measure, bench, work / "small", len(small), small_bytes,
                                                *extra, senders=senders)
            print(f"  measured: {name}, {', '.join(map(str, counts))} sender(s)", file=sys.stderr)
        report_cost(cost, small_bytes / len(small), runs)
        scaling = {}
        for number in processes or default_processes():
            scaling[number] = median_of(runs, measure_router, bench, work / "small", len(small), small_bytes,
                                        "async", senders=SENDERS[-1], processes=number)
            print(f"  measured: router async, {SENDERS[-1]} senders, {number} receiving process(es)",
                  file=sys.stderr)
        report_processes(scaling, runs)
    finally:
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def throughput_table(bench: Bench, work: Path, small: list[Path], runs: int, quick: bool) -> None:
    large = make_set(work / "large", 1 if quick else LARGE_COUNT, LARGE_BYTES)
    small_bytes = sum(p.stat().st_size for p in small)
    large_bytes = sum(p.stat().st_size for p in large)
    rows = {}
    paths = [
        ("storescu -> storescp (direct)", measure_direct, ()),
        ("storescu -> minimal pynetdicom SCP", measure_minimal, ()),
        ("storescu -> naive forwarder -> storescp", measure_naive, ()),
        ("storescu -> router async -> storescp", measure_router, ("async",)),
        ("storescu -> router sync -> storescp", measure_router, ("sync",)),
    ]
    for name, measure, extra in paths:
        small_m = median_of(runs, measure, bench, work / "small", len(small), small_bytes, *extra)
        large_m = None
        if measure is not measure_naive:  # the naive forwarder holds each instance in memory
            large_m = median_of(1, measure, bench, work / "large", len(large), large_bytes, *extra)
        rows[name] = (small_m, large_m)
        print(f"  measured: {name}", file=sys.stderr)
    shutil.rmtree(work / "large")
    huge = make_set(work / "huge", 1, HUGE_BYTES)
    huge_m = measure_router(bench, work / "huge", 1, huge[0].stat().st_size, "async")
    shutil.rmtree(work / "huge")
    report(rows, small_bytes / len(small), large_bytes / len(large), huge_m, runs, len(small))


def report_cost(cost: dict, size: float, runs: int) -> None:
    """CPU per instance of each process, and the rate, by number of concurrent senders."""
    count = next(iter(cost.values())).count
    print()
    print(f"CPU per instance and concurrent senders: {count} instances of {size / 1e6:.2f} MB, dealt to 1, 4 "
          f"or 8 storescu processes (each on its own association); median of {runs}; CPU time of each process "
          f"(user + system, /proc) in ms per instance")
    print(f"  {'path':<40} {'senders':>7} {'inst/s':>8} {'receiving':>10} {'worker':>8} {'total CPU':>10}")
    for (name, senders), m in cost.items():
        per = m.cpu_ms_per_instance
        receiving = f"{per['receiving']:>10.2f}" if "receiving" in per else f"{'-':>10}"
        worker = f"{per['worker']:>8.2f}" if "worker" in per else f"{'-':>8}"
        print(f"  {name:<40} {senders:>7} {m.per_second:>8.1f} {receiving} {worker} "
              f"{m.total_cpu_ms_per_instance:>10.2f}")
    minimal = cost["minimal pynetdicom SCP (receives only)", 1]
    floor = minimal.total_cpu_ms_per_instance + cost["minimal pynetdicom SCU (sends only)", 1].total_cpu_ms_per_instance
    print(f"  pynetdicom's floor for relaying (minimal SCP's receiving + minimal SCU's sending): {floor:.2f} ms "
          f"per instance")
    relay = cost["router async", 1]
    sync = cost["router sync", 1]
    checks = [
        (f"router async CPU per instance <= 2x the minimal SCP's: {relay.total_cpu_ms_per_instance:.2f} ms = "
         f"{relay.total_cpu_ms_per_instance / minimal.total_cpu_ms_per_instance:.1f}x "
         f"{minimal.total_cpu_ms_per_instance:.2f} ms",
         relay.total_cpu_ms_per_instance <= 2 * minimal.total_cpu_ms_per_instance),
        (f"router sync CPU per instance <= 2x the minimal SCP's: {sync.total_cpu_ms_per_instance:.2f} ms = "
         f"{sync.total_cpu_ms_per_instance / minimal.total_cpu_ms_per_instance:.1f}x",
         sync.total_cpu_ms_per_instance <= 2 * minimal.total_cpu_ms_per_instance),
        (f"async on one association >= 80% of the minimal SCP's rate: {relay.per_second / minimal.per_second:.0%}",
         relay.per_second >= 0.8 * minimal.per_second),
        (f"sync >= 70% of async: {sync.per_second / relay.per_second:.0%}", sync.per_second >= 0.7 * relay.per_second),
    ]
    print("Targets:")
    for text, passed in checks:
        print(f"  {'PASS' if passed else 'MISS'}  {text}")


def report_processes(scaling: dict[int, Measurement], runs: int) -> None:
    """Throughput and CPU per instance by the router's receiving processes, with 8 senders."""
    count = next(iter(scaling.values())).count
    print()
    print(f"Receiving processes (processes:): router async, {count} instances dealt to {SENDERS[-1]} storescu "
          f"processes; median of {runs}; CPU of all the router's receiving and worker processes together, in ms "
          f"per instance; {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} "
          f"cores here")
    print(f"  {'processes':>9} {'inst/s':>8} {'receiving':>10} {'worker':>8} {'total CPU':>10}")
    for number, m in scaling.items():
        per = m.cpu_ms_per_instance
        print(f"  {number:>9} {m.per_second:>8.1f} {per.get('receiving', 0.0):>10.2f} {per.get('worker', 0.0):>8.2f} "
              f"{m.total_cpu_ms_per_instance:>10.2f}")


def report(rows, small_size: float, large_size: float, huge: Measurement, runs: int, count: int) -> None:
    print()
    large_count = next((large.count for _, large in rows.values() if large), 0)
    print(f"Routing throughput: storescu on one association; {count} instances of "
          f"{small_size / 1e6:.2f} MB (median of {runs}), {large_count} of {large_size / 1e6:.0f} MB")
    print(f"  {'path':<42} {'small inst/s':>12} {'small MB/s':>11} {'large MB/s':>11} {'peak RSS MB':>12}")
    for name, (small, large) in rows.items():
        large_text = f"{large.mb_per_second:>11.1f}" if large else f"{'-':>11}"
        peak = max([m.peak_rss_mb for m in (small, large) if m and m.peak_rss_mb] or [0])
        peak_text = f"{peak:>12.0f}" if peak else f"{'-':>12}"
        print(f"  {name:<42} {small.per_second:>12.1f} {small.mb_per_second:>11.1f} {large_text} {peak_text}")
    print()
    minimal = rows["storescu -> minimal pynetdicom SCP"][0].per_second
    naive = rows["storescu -> naive forwarder -> storescp"][0].per_second
    async_rate = rows["storescu -> router async -> storescp"][0].per_second
    sync_rate = rows["storescu -> router sync -> storescp"][0].per_second
    checks = [
        (f"async >= 80% of the minimal SCP: {async_rate / minimal:.0%}", async_rate >= 0.8 * minimal),
        (f"async >= 5x the naive forwarder: {async_rate / naive:.1f}x", async_rate >= 5 * naive),
        (f"sync >= half of async: {sync_rate / async_rate:.0%}", sync_rate >= 0.5 * async_rate),
        (f"peak RSS relaying a {huge.total_bytes / 1e9:.1f} GB instance < 200 MB: {huge.peak_rss_mb or 0:.0f} MB "
         f"({huge.mb_per_second:.0f} MB/s)", (huge.peak_rss_mb or 0) < 200),
    ]
    print("Targets:")
    for text, passed in checks:
        print(f"  {'PASS' if passed else 'MISS'}  {text}")
