"""WorkerProcess.reload() returns once the worker process follows the reload (it answers on a
pipe of its own), not once the byte is written: everything received after it returns is
delivered with the new configuration, also while the worker is in the middle of a long pass
over a backlog. A worker that does not answer in time is said; one that dies ends the wait at
once; a late answer is not taken for the next reload's. Real worker processes, a real journal
and a folder destination; the instances are received by a Pipeline here, as a receiving
process receives them."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import termios
import threading
from pathlib import Path

import pydicom
import pytest
from helpers.peers import wait_until
from pydicom.data import get_testdata_file

from rulesengine.arrival import Arrival
from rulesengine.config import load_config
from rulesengine.runtime.journal import DELIVERED
from rulesengine.runtime.pipeline import Pipeline
from rulesengine.runtime.rules import RulesHolder
from rulesengine.runtime.storage import Storage
from rulesengine.runtime.worker import WorkerProcess

UID_ROOT = "1.2.826.0.1.3680043.8.498.78"
# an instance changed, as most rules do: processing writes it again, and takes as long as delivering
RULES = 'rule "all" {\n  then {\n    set DataSet.InstitutionName = "CHANGED"\n    route to STORE\n  }\n}\n'


def write_config(folder: Path, destination: str) -> Path:
    path = folder / "router.yaml"
    path.write_text(f"storage: {folder / 'var'}\nrules: main.rules\n"
                    f"destinations:\n  STORE: {{type: folder, path: {destination}}}\n", encoding="utf-8")
    return path


class Node:
    """A journal, the rules recorded in it, a Pipeline receiving here and a worker process."""

    def __init__(self, folder: Path, config_path: Path):
        (folder / "main.rules").write_text(RULES, encoding="utf-8")
        self.folder = folder
        self.config = load_config(str(config_path))
        self.storage = Storage.of(self.config)
        self.journal = self.storage.journal()
        self.rules = RulesHolder(self.config)
        self.rules.record_in(self.journal)
        self.worker = WorkerProcess(str(folder / "router.yaml"), 0, self.journal)
        self.receiving = Pipeline(self.storage, self.journal, self.rules, lambda _names: None,
                                  on_accepted=self.worker.wake)
        self.template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        self.made = 0
        self.worker.start(self.rules)

    def receive(self, count: int) -> list[str]:
        uids = []
        for _ in range(count):
            self.made += 1
            uid = f"{UID_ROOT}.{self.made}"
            self.template.SOPInstanceUID = uid
            path = self.storage.temp_path()
            self.template.save_as(path, enforce_file_format=True)
            self.receiving.receive(path, Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main",
                                                 source_kind="listener"))
            uids.append(uid)
        return uids

    def delivered(self) -> int:
        return self.journal.counts().get("STORE", {}).get(DELIVERED, 0)

    def change_destination(self, destination: str) -> None:
        """As Router.swap_rules does with a changed configuration: put it in place, then the worker."""
        self.config = load_config(str(write_config(self.folder, destination)))
        assert self.rules.reload(self.config)

    def stop(self) -> None:
        self.worker.stop(timeout=60)
        self.journal.close()


def uids_in(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in folder.rglob("*.dcm")}


@pytest.fixture
def node(tmp_path):
    started = Node(tmp_path, write_config(tmp_path, "old"))
    yield started
    started.stop()


class Stream(threading.Thread):
    """Instances received one after the other, without a pause, until stopped: the worker's
    pass over them does not end by itself (it goes on while there is more)."""

    def __init__(self, node: Node):
        super().__init__(daemon=True)
        self.node = node
        self.uids: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.uids.extend(self.node.receive(1))


def test_what_is_received_after_a_reload_returns_goes_to_the_new_destination_even_in_a_long_pass(node, tmp_path):
    folders = ["old", "new1", "new2", "new3"]
    for round_, destination in enumerate(folders[1:], start=1):
        stream = Stream(node)
        stream.start()
        try:
            wait_until(lambda: len(stream.uids) >= 30, timeout=60, what="the stream under way")
            node.change_destination(destination)
            assert node.worker.reload() is True
            returned = len(stream.uids)  # the one being received as it returned may be journaled before
            wait_until(lambda: len(stream.uids) >= returned + 40, timeout=60, what="instances after the reload")
        finally:
            stream.halt.set()
            stream.join(30)
        after = set(stream.uids[returned + 1:])
        wait_until(lambda: after <= set().union(*(uids_in(tmp_path / folder) for folder in folders)), timeout=120,
                   what=f"round {round_}: what was received after the reload delivered")
        elsewhere = set().union(*(uids_in(tmp_path / other) for other in folders if other != destination))
        assert not after & elsewhere, f"round {round_}: delivered with the configuration before the reload"
        assert after <= uids_in(tmp_path / destination)
    wait_until(lambda: node.delivered() == node.made, timeout=240, what="everything delivered")


def test_a_worker_that_does_not_answer_in_time_is_said_and_its_late_answer_is_not_taken_for_the_next(
        node, tmp_path, caplog):
    worker = node.worker.pid
    node.worker.ack_timeout = 1.0
    os.kill(worker, signal.SIGSTOP)  # it cannot answer
    try:
        with caplog.at_level(logging.WARNING, logger="rulesengine.worker"):
            assert node.worker.reload() is False
        assert f"worker process {worker} did not follow the reload within 1 s" in caplog.text
    finally:
        os.kill(worker, signal.SIGCONT)  # it answers that reload now, late
    acks = node.worker.channel().acks
    wait_until(lambda: acks.poll(0), timeout=30, what="the late answer")
    node.worker.ack_timeout = 60.0
    node.change_destination("new")
    os.kill(worker, signal.SIGSTOP)
    answered = []
    reloading = threading.Thread(target=lambda: answered.append(node.worker.reload()))
    reloading.start()
    # the late answer read and left aside, this reload written: the worker, stopped, cannot answer it
    wait_until(lambda: not _pipe_empty(node.worker) and not acks.poll(0), timeout=10,
               what="this reload written to the worker, the late answer put aside")
    assert answered == []
    os.kill(worker, signal.SIGCONT)
    reloading.join(60)
    assert answered == [True]
    after = node.receive(5)
    wait_until(lambda: set(after) <= uids_in(tmp_path / "new"), timeout=60, what="the instances in the new folder")


def _pipe_empty(worker: WorkerProcess) -> bool:
    """Whether the worker has read everything written to it (FIONREAD on the writing end's pipe)."""
    pipes = worker.channel()
    return struct.unpack("i", fcntl.ioctl(pipes.wake_fd, termios.FIONREAD, b"\0\0\0\0"))[0] == 0


def test_a_worker_that_dies_while_a_reload_waits_ends_the_wait_and_a_new_one_runs_the_new_configuration(
        node, tmp_path):
    worker = node.worker.pid
    node.change_destination("new")
    os.kill(worker, signal.SIGSTOP)
    answered = []
    reloading = threading.Thread(target=lambda: answered.append(node.worker.reload()))
    reloading.start()
    wait_until(lambda: not _pipe_empty(node.worker), timeout=10, what="the reload written to the worker")
    os.kill(worker, signal.SIGKILL)
    reloading.join(30)  # not the 60 s of the timeout: its end is the end of the wait
    assert answered == [False]
    wait_until(lambda: node.worker.pid != worker, timeout=30, what="a new worker process")
    after = node.receive(3)
    wait_until(lambda: set(after) <= uids_in(tmp_path / "new"), timeout=60, what="the instances in the new folder")


def test_a_worker_waiting_for_a_usable_configuration_answers_the_reload_that_brings_one(tmp_path):
    (tmp_path / "router.yaml").write_text("storage: var\nrules: main.rules\ndestinations: [\n", encoding="utf-8")
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to STORE\n}\n', encoding="utf-8")
    worker = WorkerProcess(str(tmp_path / "router.yaml"), 0)
    worker.ack_timeout = 60.0
    worker.start()  # no rules handed over: it reads the file, which cannot be used
    try:
        assert worker.reload() is True  # still unusable: answered all the same (it waits on)
        config_path = write_config(tmp_path, "new")
        config = load_config(str(config_path))
        storage = Storage.of(config)
        journal = storage.journal()
        rules = RulesHolder(config)
        rules.record_in(journal)
        assert worker.reload() is True
        receiving = Pipeline(storage, journal, rules, lambda _names: None, on_accepted=worker.wake)
        template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        template.SOPInstanceUID = f"{UID_ROOT}.9999"
        path = storage.temp_path()
        template.save_as(path, enforce_file_format=True)
        receiving.receive(path, Arrival(calling_aet="CT1", called_aet="ROUTER", source_name="main",
                                        source_kind="listener"))
        worker.wake()
        wait_until(lambda: uids_in(tmp_path / "new") == {f"{UID_ROOT}.9999"}, timeout=60,
                   what="the instance delivered by the worker that waited")
        journal.close()
    finally:
        worker.stop(timeout=60)
