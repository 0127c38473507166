"""Watched folders with the real file notifications (watchdog), the real pipeline and journal,
and real bad files: a file is taken once, whatever becomes of it, and folders dropped in
are taken whole.

The watcher runs without its thread: each test calls `poll()` itself and moves an injected
clock past `settle_seconds`, so nothing here sleeps to see whether something happens.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.bad_instances import bad_meta_group_length, bundled, cd_tree, deeply_nested, garbage, truncated
from helpers.clock import StoppedClock
from helpers.files import ROOT, SAMPLES, write
from helpers.peers import wait_until

from rulesengine.config import load_config
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage
from rulesengine.runtime.watcher import RESCAN_SECONDS, FolderWatcher

SETTLE = 1.0

CONFIG = f"""
storage: storage
rules: main.rules
watch:
  - {{name: inbox, path: inbox, settle_seconds: {SETTLE}}}
destinations:
  OUT: {{type: folder, path: out}}
"""

RULES = """
rule "no secondary captures" {
  when DataSet.Modality == "OT"
  then reject "secondary captures are not accepted"
}

rule "all" {
  then route to OUT
}
"""


@dataclass
class Watched:
    folder: Path
    inbox: Path
    storage: Storage
    watcher: FolderWatcher
    clock: StoppedClock
    attempts: Counter  # relative path -> how many times the watcher began to take it
    markers: int = 0

    def drop(self, name: str, data: bytes) -> Path:
        """A file as a careful writer puts it: written aside, renamed in (one event)."""
        staged = self.folder / "staging" / name
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(data)
        target = self.inbox / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)
        return target

    def flush(self) -> str:
        """Wait until the watcher has handled every file event so far: events come in order, so
        once a marker renamed in now is waiting, everything before it was handled."""
        self.markers += 1
        name = f"marker-{self.markers}.dcm"
        self.drop(name, (SAMPLES / "ct_head.dcm").read_bytes())
        wait_until(lambda: name in self.watcher.waiting(), timeout=20, what=f"{name} noticed")
        return name

    def take(self) -> int:
        """Two looks a settle time apart: the first notes each file, the second takes those unchanged."""
        self.watcher.poll()
        self.clock.now += SETTLE + 0.1
        return self.watcher.poll()

    def failed(self) -> dict[str, str]:
        """relative path in failed/ -> its reason"""
        folder = self.inbox / "failed"
        return {str(p.relative_to(folder))[:-len(".reason.txt")]: p.read_text(encoding="utf-8").strip()
                for p in folder.rglob("*.reason.txt")}

    def done(self) -> list[str]:
        folder = self.inbox / "done"
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                      and not p.name.startswith("marker-"))


@pytest.fixture
def watched(tmp_path):
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    storage = Storage(config.storage)
    journal = storage.journal()
    pipeline = Pipeline(storage, journal, RulesHolder(config), lambda names: None, on_accepted=lambda _id: None)
    attempts: Counter = Counter()
    copy_in = storage.copy_in
    inbox = Path(config.watch[0].path)

    def counted_copy_in(source: str) -> str:  # every attempt to take a file starts here
        attempts[os.path.relpath(source, inbox)] += 1
        return copy_in(source)

    storage.copy_in = counted_copy_in
    clock = StoppedClock(1000.0)
    watcher = FolderWatcher(config.watch[0], pipeline, clock=clock)
    watcher.observe()
    yield Watched(tmp_path, inbox, storage, watcher, clock, attempts)
    watcher.stop()
    journal.close()


def watch_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rulesengine.watch" and r.levelno >= logging.WARNING]


def secondary_capture() -> bytes:
    return (SAMPLES / "ot_secondary.dcm").read_bytes()


FAILURES = {
    # name: (contents, what the reason says)
    "deep.dcm": (deeply_nested, "sequences nested too deeply"),
    "bad-meta.dcm": (bad_meta_group_length, "cannot read"),
    "garbage.dcm": (lambda: garbage(4000, seed=1), "not a DICOM file"),
    "truncated.dcm": (lambda: truncated(bundled("MR_small.dcm")), "truncated"),
    "empty.dcm": (lambda: b"", "not a DICOM file"),
    "rejected.dcm": (secondary_capture, "rejected by the rules: secondary captures are not accepted"),
}


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_a_file_that_fails_is_taken_once_and_failed_with_its_reason_in_one_warning(watched, caplog, name):
    make, why = FAILURES[name]
    data = make()
    caplog.set_level(logging.DEBUG, logger="rulesengine")
    watched.drop(name, data)
    wait_until(lambda: name in watched.watcher.waiting(), timeout=20, what=f"{name} noticed")
    assert watched.take() == 1

    assert watched.attempts[name] == 1
    assert not (watched.inbox / name).exists()
    assert (watched.inbox / "failed" / name).read_bytes() == data
    reason = watched.failed()[name]
    # The reason beside the file is the reason alone, as dry-run gives it; the log line names the file once.
    assert why in reason and name not in reason and watched.storage.tmp not in reason, reason
    [record] = watch_records(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert f"{name} -> " in record.getMessage() and record.getMessage().endswith(f": {reason}")
    assert record.getMessage().count(name) == 1

    # Whatever events the router's own reads caused, the file is not looked at again.
    marker = watched.flush()
    assert name not in watched.watcher.waiting()
    watched.take()
    assert (watched.inbox / "done" / marker).exists()
    assert watched.attempts[name] == 1
    assert len(watch_records(caplog)) == 1
    assert list(Path(watched.storage.tmp).iterdir()) == []  # no copy left in the spool


def test_an_internal_error_fails_the_file_once_with_its_traceback_shown_once(watched, caplog):
    """A spool that cannot take the file (its in/ folder replaced by a file) is the router's
    fault, not the file's: the file still goes to failed/ once, the traceback is logged, and
    the same error again shows no second traceback."""
    spool_in = Path(watched.storage.incoming)
    shutil.rmtree(spool_in)
    spool_in.write_text("not a folder")
    caplog.set_level(logging.INFO, logger="rulesengine")
    for name in ("first.dcm", "second.dcm"):
        watched.drop(name, (SAMPLES / "ct_head.dcm").read_bytes())
    wait_until(lambda: {"first.dcm", "second.dcm"} <= set(watched.watcher.waiting()), timeout=20,
               what="both noticed")
    assert watched.take() == 2

    failed = watched.failed()
    assert sorted(failed) == ["first.dcm", "second.dcm"]
    assert all(reason.startswith("internal error: ") and "spool/in" in reason for reason in failed.values()), failed
    first, second = watch_records(caplog)
    assert first.levelno == second.levelno == logging.ERROR
    assert first.exc_info is not None and second.exc_info is None
    assert "traceback logged earlier" in second.getMessage()
    assert list(Path(watched.storage.tmp).iterdir()) == []
    assert dict(watched.attempts) == {"first.dcm": 1, "second.dcm": 1}


def test_a_file_that_cannot_be_moved_out_stays_and_is_not_taken_again_until_it_changes(watched, caplog):
    """failed/ replaced by a file: the failed file cannot leave the folder. Reading it (the
    router's own copy into the spool) must not make it a new file to take."""
    failed = watched.inbox / "failed"
    shutil.rmtree(failed)
    failed.write_text("not a folder")
    caplog.set_level(logging.INFO, logger="rulesengine")
    stuck = watched.drop("stuck.dcm", garbage(3000, seed=2))
    wait_until(lambda: "stuck.dcm" in watched.watcher.waiting(), timeout=20, what="stuck.dcm noticed")
    watched.take()
    assert stuck.exists() and watched.attempts["stuck.dcm"] == 1
    [record] = watch_records(caplog)
    assert "stuck.dcm failed (not a DICOM file" in record.getMessage()
    assert "it stays until it changes" in record.getMessage()

    watched.flush()
    watched.take()
    watched.clock.now += 3600
    watched.take()
    assert watched.attempts["stuck.dcm"] == 1
    assert len(watch_records(caplog)) == 1

    failed.unlink()  # mended; and the file written again
    failed.mkdir()
    with open(stuck, "ab") as fh:
        fh.write(b"more")
    wait_until(lambda: "stuck.dcm" in watched.watcher.waiting(), timeout=20, what="the change noticed")
    watched.take()
    assert watched.attempts["stuck.dcm"] == 2
    assert not stuck.exists() and "stuck.dcm" in watched.failed()


def test_a_cd_dropped_in_is_taken_whole_and_its_dicomdir_is_not_routed(watched):
    staged = watched.folder / "staging" / "CD"
    instances = cd_tree(staged)
    os.rename(staged, watched.inbox / "CD")  # one event, for the folder only
    expected = ["CD/DICOMDIR"] + [f"CD/{path}" for path in instances]
    wait_until(lambda: set(expected) <= set(watched.watcher.waiting()), timeout=20, what="the CD's files noticed")
    watched.flush()
    watched.take()

    assert watched.done() == [f"CD/{path}" for path in instances]
    medium = bundled("DICOMDIR").parent / "TINY_ALPHA"
    for path in instances:
        assert (watched.inbox / "done" / "CD" / path).read_bytes() == (medium / path).read_bytes()
    failed = watched.failed()
    assert list(failed) == ["CD/DICOMDIR"]
    assert "DICOMDIR" in failed["CD/DICOMDIR"] and "not an instance" in failed["CD/DICOMDIR"]
    assert not (watched.inbox / "CD").exists()  # emptied folders are removed
    assert set(watched.attempts) == set(expected) | {"marker-1.dcm"}
    assert set(watched.attempts.values()) == {1}
    rows = watched.watcher.pipeline.journal.accepted_instances()
    assert len(rows) == len(instances) + 1  # and the marker


def test_a_folder_copied_in_file_by_file_is_taken_whole(watched):
    """`cp -r`: the folder is created, then its files written in it one by one."""
    source = watched.folder / "source"
    instances = cd_tree(source)
    shutil.copytree(source, watched.inbox / "copy")
    expected = ["copy/DICOMDIR"] + [f"copy/{path}" for path in instances]
    wait_until(lambda: set(expected) <= set(watched.watcher.waiting()), timeout=20, what="the copy's files noticed")
    watched.flush()
    watched.take()
    assert watched.done() == [f"copy/{path}" for path in instances]
    for path in instances:
        assert (watched.inbox / "done" / "copy" / path).read_bytes() == (source / path).read_bytes()
    assert list(watched.failed()) == ["copy/DICOMDIR"]
    assert sorted(p.name for p in watched.inbox.iterdir()) == ["done", "failed"]


def test_a_file_whose_notification_was_lost_is_found_when_the_folder_is_listed_again(watched):
    """The kernel drops events when its queue overflows, and a network file system written by
    another machine sends none: here the notifications stop altogether."""
    watched.watcher._observer.stop()
    watched.watcher._observer.join()
    watched.drop("unnoticed.dcm", (SAMPLES / "ct_head.dcm").read_bytes())
    watched.take()
    assert watched.watcher.waiting() == [] and watched.done() == []
    watched.clock.now += RESCAN_SECONDS
    watched.take()
    assert watched.done() == ["unnoticed.dcm"]
    assert watched.attempts["unnoticed.dcm"] == 1


def test_done_failed_and_hidden_files_are_never_taken(watched):
    for relative in ("done/old.dcm", "failed/old.dcm", "done/sub/deeper.dcm", ".hidden.dcm", ".partial/x.dcm",
                     "sub/.writing.dcm"):
        watched.drop(relative, (SAMPLES / "ct_head.dcm").read_bytes())
    marker = watched.flush()
    assert watched.watcher.waiting() == [marker]


def test_a_file_with_the_name_of_one_done_already_keeps_both(watched):
    for _ in range(2):
        watched.drop("same.dcm", (SAMPLES / "ct_head.dcm").read_bytes())
        wait_until(lambda: "same.dcm" in watched.watcher.waiting(), timeout=20, what="same.dcm noticed")
        watched.take()
    done = watched.done()
    assert len(done) == 2 and "same.dcm" in done
    assert all(name.startswith("same") and name.endswith(".dcm") for name in done)


def test_done_or_failed_holding_the_watched_folder_is_refused(tmp_path):
    write(tmp_path / "router.yaml", CONFIG.replace("settle_seconds", "done: ., settle_seconds"))
    write(tmp_path / "main.rules", RULES)
    config = load_config(tmp_path / "router.yaml")
    watcher = FolderWatcher(config.watch[0], None)
    with pytest.raises(OSError, match="is the watched folder or holds it"):
        watcher.observe()


SPOOL_FULL = """
import json, resource, signal, sys
from pathlib import Path
from rulesengine.config import load_config
from rulesengine.runtime import watcher as watching
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage
import logging
records = []
logging.getLogger("rulesengine.watch").addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: records.append(r.getMessage())})())
config = load_config(sys.argv[1])
storage = Storage(config.storage)
journal = storage.journal()
pipeline = Pipeline(storage, journal, RulesHolder(config), lambda names: None, on_accepted=lambda _id: None)
now = [1000.0]
watcher = watching.FolderWatcher(config.watch[0], pipeline, clock=lambda: now[0])
watcher.scan(config.watch[0].path)  # the file is there before the start
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # the spool takes no file larger than 4 kB
report = {}
for step in ("full", "again"):
    watcher.poll(); now[0] += 2; watcher.poll()
    report[step] = sorted(p.name for p in Path(config.watch[0].path).iterdir())
now[0] += watching.FULL_WAIT_SECONDS
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
watcher.poll(); now[0] += 2; watcher.poll()
report["room"] = sorted(p.name for p in Path(config.watch[0].path, "done").iterdir())
report["spool tmp"] = sorted(Path(storage.tmp).iterdir())
report["log"] = records
print(json.dumps(report, default=str))
"""


def test_a_file_the_spool_has_no_room_for_waits_in_the_folder(tmp_path):
    """The spool's file system refusing the copy (a file size limit stands in for a full
    disk: both are the router's storage, not the file) leaves the file where it is, says so
    once, and takes it when there is room."""
    write(tmp_path / "router.yaml", CONFIG)
    write(tmp_path / "main.rules", RULES)
    (tmp_path / "inbox").mkdir()
    shutil.copyfile(SAMPLES / "ct_head.dcm", tmp_path / "inbox" / "big.dcm")
    result = subprocess.run([sys.executable, "-c", SPOOL_FULL, str(tmp_path / "router.yaml")], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["full"] == report["again"] == ["big.dcm"]
    assert report["room"] == ["big.dcm"]
    assert report["spool tmp"] == []
    [line] = report["log"]
    assert "the spool has no room (File too large); files wait in the folder" in line
