"""The disk watermark (storage_min_free): below it new instances are refused, the log says so
once a minute, and the change is announced to its listeners (where a notification is raised);
when space is back, instances are taken again. The file system's answer (statvfs) and the
clock are injected; one test reads the real file system."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.clock import StoppedClock
from helpers.files import SAMPLES, write

from rulesengine.config import FreeSpaceFloor, load_config, parse_free_space
from rulesengine.runtime.disk_space import CHECK_SECONDS, DISK_LOW_COMMENT, DiskSpace
from rulesengine.runtime.logs import REPEAT_SECONDS
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage
from rulesengine.runtime.watcher import FolderWatcher

GB = 10 ** 9


class FakeDisk:
    """statvfs of a 100 GB file system whose free space the test sets; counts the calls."""

    def __init__(self, free: int, total: int = 100 * GB):
        self.free, self.total, self.calls = free, total, 0

    def __call__(self, folder: str):
        self.calls += 1
        return SimpleNamespace(f_bavail=self.free, f_frsize=1, f_blocks=self.total)


def disk_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rulesengine.router" and "disk" in r.getMessage()]


def test_below_the_floor_instances_are_refused_and_taken_again_when_space_is_back(caplog):
    disk, clock = FakeDisk(free=5 * GB), StoppedClock(100.0)
    space = DiskSpace("/storage", parse_free_space("2GB"), statvfs=disk, clock=clock)
    changes = []
    space.on_change.append(lambda low, reason: changes.append((low, reason)))
    caplog.set_level(logging.INFO, logger="rulesengine.router")

    assert space.low() is None
    disk.free = 1 * GB
    assert space.low() is None  # asked less than a second ago: the cached answer
    assert disk.calls == 1
    clock.advance(CHECK_SECONDS)
    reason = space.low()
    assert reason == "the disk of the router's storage is low: 1.0 GB free, storage_min_free is 2GB"
    assert changes == [(True, reason)]
    assert disk_records(caplog) == [reason + "; new instances are refused until space is back"]

    for _ in range(10):  # refused for a while: said once a minute, announced once
        clock.advance(CHECK_SECONDS)
        assert space.low() == reason
    assert len(disk_records(caplog)) == 1 and len(changes) == 1
    clock.advance(REPEAT_SECONDS)
    assert space.low() == reason
    assert len(disk_records(caplog)) == 2

    disk.free = 3 * GB
    clock.advance(CHECK_SECONDS)
    assert space.low() is None
    assert changes[-1] == (False, None)
    assert "instances are taken again" in disk_records(caplog)[-1]
    assert disk.calls == 14


def test_a_percentage_is_of_the_file_system_and_100_percent_refuses_everything():
    disk = FakeDisk(free=6 * GB)
    assert DiskSpace("/s", parse_free_space("5%"), statvfs=disk).low() is None
    disk.free = 4 * GB
    assert "4.0 GB free, storage_min_free is 5%" in DiskSpace("/s", parse_free_space("5%"), statvfs=disk).low()
    disk.free = disk.total
    assert DiskSpace("/s", parse_free_space("100%"), statvfs=disk).low() is not None


def test_without_a_floor_the_file_system_is_never_asked():
    disk = FakeDisk(free=0)
    assert DiskSpace("/s", None, statvfs=disk).low() is None and disk.calls == 0


def test_a_file_system_that_cannot_be_read_refuses_nothing():
    def broken(folder):
        raise OSError(5, "Input/output error")
    assert DiskSpace("/s", FreeSpaceFloor("2GB", bytes=2 * GB), statvfs=broken).low() is None


def test_a_listener_that_fails_does_not_stop_the_watermark(caplog):
    disk = FakeDisk(free=0)
    space = DiskSpace("/s", parse_free_space("1GB"), statvfs=disk)
    space.on_change.append(lambda low, reason: 1 / 0)
    assert space.low() is not None
    assert any("listener of the change failed" in r.getMessage() for r in caplog.records)


def test_the_real_file_system_is_read(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    assert DiskSpace(str(tmp_path), parse_free_space("1B")).low() is None
    reason = DiskSpace(str(tmp_path), FreeSpaceFloor("huge", bytes=free * 10)).low()
    assert reason is not None and reason.endswith("storage_min_free is huge")


def test_the_comment_a_refused_store_gets_fits_an_error_comment():
    assert len(DISK_LOW_COMMENT) <= 64 and "disk is low" in DISK_LOW_COMMENT


@pytest.mark.parametrize("value, problem", [
    ("7 GB!", "is not valid"), (-5, "is not valid"), ("101%", "a percentage is 0% to 100%"), ("2", "is not valid"),
    (3, "is not valid"), ("9" * 15 + "TB", "larger than any disk"), ("nan%", "is not valid"), ([], "is not valid"),
])
def test_a_bad_storage_min_free_is_refused_naming_the_key(tmp_path, value, problem):
    write(tmp_path / "router.yaml", f"storage: var\nrules: main.rules\nstorage_min_free: {value!r}\n"
          .replace("'", '"'))
    with pytest.raises(Exception) as caught:
        load_config(tmp_path / "router.yaml")
    assert "router.yaml:3: storage_min_free" in str(caught.value) and problem in str(caught.value)


@pytest.mark.parametrize("value, expected", [
    ("2GB", 2 * GB), ("500MB", 500 * 10 ** 6), ("1.5GiB", int(1.5 * 2 ** 30)), ("1 TB", 10 ** 12), (0, None),
    ("0%", None),
])
def test_storage_min_free_sizes(tmp_path, value, expected):
    write(tmp_path / "router.yaml", f"storage: var\nrules: main.rules\nstorage_min_free: {value}\n")
    floor = load_config(tmp_path / "router.yaml").storage_min_free
    assert (floor.bytes if floor else None) == expected


# ---- a watched folder leaves its files where they are ------------------------------------------------


def test_a_watched_folder_leaves_its_files_while_the_disk_is_low(tmp_path, caplog):
    write(tmp_path / "router.yaml", "storage: storage\nrules: main.rules\nstorage_min_free: 2GB\n"
          "watch:\n  - {name: inbox, path: inbox, settle_seconds: 0}\ndestinations:\n  OUT: {type: folder, path: out}\n")
    write(tmp_path / "main.rules", 'rule "all" {\n  then route to OUT\n}\n')
    config = load_config(tmp_path / "router.yaml")
    storage = Storage.of(config)
    disk, clock = FakeDisk(free=1 * GB), StoppedClock(100.0)
    storage.disk = DiskSpace(storage.root, config.storage_min_free, statvfs=disk, clock=clock)
    journal = storage.journal()
    pipeline = Pipeline(storage, journal, RulesHolder(config), lambda names: None, on_accepted=lambda _id: None)
    watcher = FolderWatcher(config.watch[0], pipeline, clock=clock)
    inbox = Path(config.watch[0].path)
    try:
        write(inbox / "a.dcm", "")
        shutil.copyfile(SAMPLES / "ct_head.dcm", inbox / "a.dcm")
        with caplog.at_level(logging.WARNING):
            watcher._take(str(inbox / "a.dcm"))
            watcher._take(str(inbox / "a.dcm"))
        assert (inbox / "a.dcm").exists()
        assert not (inbox / "done").exists() and not (inbox / "failed").exists()
        assert os.listdir(storage.incoming) == [] and os.listdir(storage.tmp) == []
        waits = [r.getMessage() for r in caplog.records if r.name == "rulesengine.watch"]
        assert waits == ["watched folder inbox: the spool has no room (the disk of the router's storage is low: "
                         "1.0 GB free, storage_min_free is 2GB); files wait in the folder"]

        disk.free = 50 * GB
        clock.advance(CHECK_SECONDS)
        watcher._take(str(inbox / "a.dcm"))
        assert not (inbox / "a.dcm").exists() and (inbox / "done" / "a.dcm").exists()
        assert len(os.listdir(storage.incoming)) == 1
    finally:
        journal.close()
