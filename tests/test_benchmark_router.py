"""How the routing benchmark reads the CPU of each process and deals instances to senders.

The router's worker is started by a thread of the main process, not by its main thread:
these tests keep the benchmark finding such a child, and counting its CPU apart.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks.router import _children, _descendants, _role, cpu_seconds, cpu_used, split_set

# A parent that starts, from a thread of its own, a child that burns CPU until it is stopped
# (as the router's worker is started from its "worker-monitor" thread); the child's name on
# its command line is what the benchmark recognises a worker by.
PARENT = textwrap.dedent("""
    import subprocess, sys, threading, time
    def start():
        child = subprocess.Popen([sys.executable, "-c",
                                  "import time\\nwhile True: sum(range(10000))", "multiprocessing-fork"])
        child.wait()
    threading.Thread(target=start, daemon=True).start()
    time.sleep(60)
""")


@pytest.fixture
def parent():
    process = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        yield process
    finally:
        for pid in _children(process.pid):
            subprocess.run(["kill", str(pid)], check=False)
        process.kill()
        process.wait()


def test_a_child_started_by_a_thread_is_found_and_its_cpu_counted_apart(parent):
    deadline = time.monotonic() + 20
    while not _children(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    children = _children(parent.pid)
    assert len(children) == 1
    # the main thread alone does not know it: why every task's list is read
    main_thread_children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    assert str(children[0]) not in main_thread_children

    before = cpu_seconds(parent)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        used = cpu_used(before, cpu_seconds(parent))
        if used.get("worker", 0) >= 0.2:
            break
        time.sleep(0.05)
    assert set(used) == {"receiving", "worker"}
    assert used["worker"] >= 0.2  # the child's CPU, counted as it burns
    assert used["receiving"] < used["worker"]  # the parent only sleeps


def test_instances_are_dealt_to_senders_without_copies(tmp_path):
    for index in range(10):
        (tmp_path / f"i{index:04d}.dcm").write_bytes(bytes([index]) * 10)
    split_set(tmp_path, 4)
    parts = sorted((tmp_path / "by-4").iterdir())
    assert [len(list(part.iterdir())) for part in parts] == [3, 3, 2, 2]
    dealt = sorted(path.name for part in parts for path in part.iterdir())
    assert dealt == sorted(f"i{index:04d}.dcm" for index in range(10))
    first = tmp_path / "by-4" / "0" / "i0000.dcm"
    assert first.stat().st_ino == (tmp_path / "i0000.dcm").stat().st_ino  # a hard link


# A router of two receiving processes: the main one starts, from a thread, an extra receiving
# process that starts a worker of its own (a grandchild), and a worker of its own.
GRANDPARENT = textwrap.dedent("""
    import subprocess, sys, threading, time
    BURN = "import time\\nwhile True: sum(range(10000))"
    RECEIVER = ("import subprocess, sys, time\\n"
                f"subprocess.Popen([sys.executable, '-c', {BURN!r}, 'multiprocessing-fork'])\\n"
                "time.sleep(60)")
    def start(code):
        subprocess.Popen([sys.executable, "-c", code, "multiprocessing-fork"]).wait()
    threading.Thread(target=start, args=(BURN,), daemon=True).start()
    threading.Thread(target=start, args=(RECEIVER,), daemon=True).start()
    time.sleep(60)
""")


def test_an_extra_receiving_process_and_its_worker_are_counted_with_their_kinds():
    process = subprocess.Popen([sys.executable, "-c", GRANDPARENT])
    try:
        deadline = time.monotonic() + 20
        while len(_descendants(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        descendants = _descendants(process.pid)
        assert len(descendants) == 3
        roles = sorted(_role(pid, process.pid) for pid in descendants)
        assert roles == ["receiving", "worker", "worker"]
        before = cpu_seconds(process)
        time.sleep(0.5)
        used = cpu_used(before, cpu_seconds(process))
        assert set(used) == {"receiving", "worker"}
        assert used["worker"] >= 0.2  # both workers burn; the receiving processes sleep
        assert used["receiving"] < used["worker"]
    finally:
        for pid in reversed(_descendants(process.pid)):
            subprocess.run(["kill", str(pid)], check=False)
        process.kill()
        process.wait()
