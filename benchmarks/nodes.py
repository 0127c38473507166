"""One node against three, on one PostgreSQL journal and one storage folder.

Eight storescu processes send the small set (split_set's by-8), dealt round-robin over the nodes'
listeners; every node (one receiving process and its worker: `processes: 1`) delivers to the
same storescp. For each layout: the rate from the first association to the last instance at
storescp, the CPU per instance of every router process
together (all nodes, receiving and worker), and of PostgreSQL's server processes. One node on
SQLite is the reference. On a machine with few cores, three nodes share them: the figure that
matters there is the CPU per instance (what a node costs), not the rate.

    .venv/bin/python -m benchmarks --only nodes [--instances N] [--runs N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .router import (RULES, SETTLE_SECONDS, SMALL_SIDE, Bench, _dcmtk_missing, _wait_count,
                     cpu_seconds, cpu_used, free_port, make_set, split_set, wait_for_port, warm_up)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SENDERS = 8
LAYOUTS = (("1 node, SQLite", 1, False), ("1 node, PostgreSQL", 1, True), ("3 nodes, PostgreSQL", 3, True))


@dataclass
class NodesRun:
    seconds: float
    count: int
    router_cpu: float  # seconds, every process of every node
    database_cpu: float  # seconds, the PostgreSQL server's processes

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def _postgres():
    """The tests' PostgreSQL server (Debian's, in a temporary folder, on a free port)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers.postgres import start_postgres  # noqa: E402 - the tests' own helper, not a package of ours
    return start_postgres()


def _node_config(folder: Path, name: str, port: int, scp_port: int, journal: str | None) -> Path:
    path = folder / f"{name}.yaml"
    journal_line = f"journal: {journal}\nnode: {name}\n" if journal else ""
    path.write_text(
        f"storage: storage\nprocesses: 1\nrules: bench.rules\nlog: {{level: warning}}\n{journal_line}"
        f"listeners:\n  - {{name: main, ae_title: ROUTER, port: {port}, mode: async}}\n"
        f"destinations:\n  SCP: {{type: dicom, ae_title: STORESCP, host: 127.0.0.1, port: {scp_port}}}\n")
    return path


def _server_cpu(server) -> float:
    class _Pid:  # cpu_seconds reads a process and its children by pid
        pid = server.process.pid
    return sum(cpu_seconds(_Pid).values())


def measure(bench: Bench, inputs: Path, count: int, nodes: int, database) -> NodesRun:
    out = bench.work / f"nodes-{time.time_ns()}"
    _, scp_port = bench.storescp(out)
    folder = bench.work / f"layout-{time.time_ns()}"
    folder.mkdir()
    (folder / "bench.rules").write_text(RULES)
    journal = database.new_database() if database is not None else None
    ports = [free_port() for _ in range(nodes)]
    routers = []
    for index, port in enumerate(ports):
        config = _node_config(folder, f"node{index + 1}", port, scp_port, journal)
        process = bench.spawn([sys.executable, "-m", "rulesengine", "run", str(config)],
                              {**os.environ, "PYTHONPATH": str(ROOT)}, name=f"node{index + 1}")
        wait_for_port(port, process, timeout=60)
        routers.append(process)
    for port in ports:  # each node's first instance (one file at storescp): first-use work is not counted
        warm_up(bench, port, "ROUTER", out)
    time.sleep(SETTLE_SECONDS * 3)
    before = [cpu_seconds(process) for process in routers]
    database_before = _server_cpu(database) if database is not None else 0.0
    started = bench.send(ports, "ROUTER", inputs, SENDERS)
    finished = _wait_count(out, count + 1)
    time.sleep(SETTLE_SECONDS)
    router_cpu = sum(sum(cpu_used(b, cpu_seconds(process)).values()) for b, process in zip(before, routers))
    database_cpu = _server_cpu(database) - database_before if database is not None else 0.0
    bench.stop_all()
    shutil.rmtree(out)
    shutil.rmtree(folder)
    return NodesRun(finished - started, count, router_cpu, database_cpu)


def run(runs: int = 1, count: int = 200) -> int:
    if _dcmtk_missing():
        return 1
    work = Path(tempfile.mkdtemp(prefix="nodes-bench-"))
    os.chmod(work, 0o755)
    bench = Bench(work)
    database = _postgres()
    try:
        small = make_set(work / "small", count, SMALL_SIDE * SMALL_SIDE * 2)
        size = sum(p.stat().st_size for p in small) / len(small)
        split_set(work / "small", SENDERS)
        results = {}
        for name, nodes, on_postgres in LAYOUTS:
            measured = sorted((measure(bench, work / "small", len(small), nodes, database if on_postgres else None)
                               for _ in range(runs)), key=lambda r: r.seconds)
            results[name] = measured[len(measured) // 2]
            print(f"  measured: {name}", file=sys.stderr)
        report(results, len(small), size, runs)
    finally:
        bench.stop_all()
        database.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[str, NodesRun], count: int, size: float, runs: int) -> None:
    print()
    print(f"Nodes: {count} instances of {size / 1e6:.2f} MB from {SENDERS} storescu processes dealt over the "
          f"nodes' listeners, one storescp; median of {runs}; CPU in ms per instance (user + system, /proc), "
          f"on {os.cpu_count()} cores")
    print(f"  {'layout':<24} {'inst/s':>8} {'router CPU':>11} {'database CPU':>13}")
    for name, result in results.items():
        database = f"{result.database_cpu * 1000 / result.count:>13.2f}" if "PostgreSQL" in name else f"{'-':>13}"
        print(f"  {name:<24} {result.per_second:>8.1f} {result.router_cpu * 1000 / result.count:>11.2f} {database}")


if __name__ == "__main__":
    sys.exit(run())
