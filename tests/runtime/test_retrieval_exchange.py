"""Instances a source stores for another receiving process's C-MOVE (retrieval_exchange.py):
two receiving processes' retrieve services, each answering on its real Unix socket, the
retrievals they wait on stood in for. A C-STORE that reaches the wrong process is handed,
by the Message ID of its C-MOVE, to the one that asked; one that names no originator goes
to the one C-MOVE waiting on its source in the whole node, or to none; a modality's
instances cost no question; a process that is gone, a hostile request and a retrieval that
ended each get an answer, never an exception."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from rulesengine.arrival import Arrival
from rulesengine.config import MAX_PROCESSES
from rulesengine.runtime.retrieval_exchange import (RetrievalExchange, exchange_folder, message_ids, process_of,
                                                    remove_exchange_folder, socket_path)
from rulesengine.runtime.retrieve_service import RetrieveService
from rulesengine.runtime.statuses import StoreStatus


@dataclass
class WaitingMove:
    """What the retrieve service reads of a SourceRetrieval."""

    source_ae: str
    message_id: int
    move_destination: str = "ROUTER"
    ended: bool = False
    taken: list[str] = field(default_factory=list)

    @property
    def destination(self):
        return SimpleNamespace(ae_title=self.source_ae)

    def hand_over(self, path: str) -> bool:
        if self.ended:
            os.unlink(path)
            return False
        self.taken.append(path)
        return True


class Process:
    """One receiving process's retrieve service and its exchange, on a spool shared with the others."""

    def __init__(self, folder: str, spool, number: int, processes: int):
        self.number = number
        self.asked: list[str] = []  # the AE titles the others asked this one to count moves of
        counter = iter(range(10**6))
        storage = SimpleNamespace(temp_path=lambda: str(spool / f"{number}-{next(counter)}.dcm"))
        config = SimpleNamespace(destinations={"PACS": SimpleNamespace(ae_title="PACS", retrieve="c-move"),
                                               "GETTING": SimpleNamespace(ae_title="GETTER", retrieve="c-get")})
        self.exchange = RetrievalExchange(folder, number, processes, str(spool))
        self.service = RetrieveService(journal=None, rules=SimpleNamespace(config=config),
                                       pipeline=SimpleNamespace(storage=storage), delivery=None)
        waiting_on = self.service.waiting_on

        def counted(calling: str) -> int:
            self.asked.append(calling)
            return waiting_on(calling)

        self.service.waiting_on = counted  # what the others ask is counted (and answered as it was)
        self.service.share(self.exchange)

    def wait(self, source_ae: str = "PACS") -> WaitingMove:
        move = WaitingMove(source_ae, self.service.next_message_id())
        self.service.expect(move)
        return move


@pytest.fixture
def node(tmp_path):
    folder = exchange_folder()
    spool = tmp_path / "tmp"
    spool.mkdir()
    processes = [Process(folder, spool, number, 3) for number in range(3)]
    yield SimpleNamespace(processes=processes, spool=spool, folder=folder)
    for process in processes:
        process.exchange.stop()
    remove_exchange_folder(folder)


def store(node, calling: str, originator: str | None, message_id: int | None, name: str = "received.dcm"):
    """What a listener hands claim(): the request, the arrival, and the received file in the spool."""
    path = node.spool / name
    path.write_bytes(b"instance")
    request = SimpleNamespace(MoveOriginatorApplicationEntityTitle=originator, MoveOriginatorMessageID=message_id)
    arrival = Arrival(calling_aet=calling, called_aet="ROUTER", peer_address="127.0.0.1", peer_port=104,
                      source_name="main", source_kind="listener")
    return request, arrival, str(path)


# ---- Message IDs say which process made the C-MOVE ----------------------------------------------


@pytest.mark.parametrize("number", [0, 1, 2, MAX_PROCESSES - 1])
def test_each_process_has_message_ids_of_its_own_within_an_unsigned_short(number):
    ids = message_ids(number)
    first_round = [next(ids) for _ in range(65535 // MAX_PROCESSES)]
    assert all(1 <= value <= 65535 for value in first_round)
    assert {process_of(value) for value in first_round} == {number}
    assert len(set(first_round)) == len(first_round)
    while True:  # the turn ends below 65536 and starts again
        value = next(ids)
        assert 1 <= value <= 65535
        if value == number + 1:
            break


@pytest.mark.parametrize("value", [None, "", "x", 0, 65536, -1])
def test_what_is_not_a_message_id_belongs_to_no_process(value):
    assert process_of(value) is None


# ---- a C-STORE that names its C-MOVE ------------------------------------------------------------


def test_an_instance_for_another_process_s_move_is_handed_to_that_process(node):
    receiving, _, asking = node.processes
    move = asking.wait()
    answer = receiving.service.claim(*store(node, "PACS", "ROUTER", move.message_id))
    assert answer == StoreStatus.SUCCESS
    [taken] = move.taken
    assert os.path.basename(taken).startswith("2-")  # a link of the asking process's own
    assert open(taken, "rb").read() == b"instance"
    assert node.processes[1].asked == [] and asking.asked == []  # no counting: its Message ID said whose


def test_an_instance_for_this_process_s_own_move_asks_no_other(node):
    receiving, other, _ = node.processes
    move = receiving.wait()
    assert receiving.service.claim(*store(node, "PACS", "ROUTER", move.message_id)) == StoreStatus.SUCCESS
    assert len(move.taken) == 1 and other.asked == []


def test_a_source_that_names_itself_the_originator_is_matched_by_message_id_in_the_process_that_asked(node):
    receiving, asking, _ = node.processes
    first, second = asking.wait(), asking.wait()
    assert receiving.service.claim(*store(node, "PACS", "PACS", second.message_id)) == StoreStatus.SUCCESS
    assert (len(first.taken), len(second.taken)) == (0, 1)


def test_a_message_id_no_move_waits_on_is_an_ordinary_instance(node):
    receiving, asking, _ = node.processes
    move = asking.wait()
    stale = move.message_id + MAX_PROCESSES  # the same process's, but no C-MOVE of that ID waits
    assert receiving.service.claim(*store(node, "PACS", "ROUTER", stale)) is None
    assert move.taken == []


def test_an_instance_for_a_retrieval_that_ended_is_refused_with_the_reason(node):
    receiving, asking, _ = node.processes
    move = asking.wait()
    move.ended = True
    answer = receiving.service.claim(*store(node, "PACS", "ROUTER", move.message_id))
    assert answer.Status == StoreStatus.OUT_OF_RESOURCES
    assert answer.ErrorComment == "the retrieval this instance is for has ended"
    assert sorted(os.listdir(node.spool)) == ["received.dcm"]  # the asking process's link is gone


def test_an_instance_for_a_process_that_is_gone_is_an_ordinary_instance(node):
    receiving, asking, _ = node.processes
    move = asking.wait()
    asking.exchange.stop()  # it died, or restarts: its retrievals ended with it
    assert not os.path.exists(socket_path(node.folder, asking.number))
    assert receiving.service.claim(*store(node, "PACS", "ROUTER", move.message_id)) is None


# ---- a C-STORE that names no originator ------------------------------------------------------------


def test_a_source_naming_no_originator_goes_to_the_one_move_waiting_on_it_in_the_node(node):
    receiving, asking, third = node.processes
    move = asking.wait()
    assert receiving.service.claim(*store(node, "PACS", None, None)) == StoreStatus.SUCCESS
    assert len(move.taken) == 1
    assert asking.asked == ["PACS"] and third.asked == ["PACS"]


@pytest.mark.parametrize("where", [(1, 2), (0, 1), (1, 1)])
def test_a_source_naming_no_originator_with_two_moves_waiting_in_the_node_is_an_ordinary_instance(node, where):
    moves = [node.processes[number].wait() for number in where]
    assert node.processes[0].service.claim(*store(node, "PACS", None, None)) is None
    assert all(move.taken == [] for move in moves)


def test_a_modality_s_instances_ask_no_other_process(node):
    receiving, asking, third = node.processes
    asking.wait("PACS")
    asking.wait("GETTER")  # a source retrieved by C-GET gets its instances on its own association
    for calling in ("CT1", "GETTER"):
        assert receiving.service.claim(*store(node, calling, None, None)) is None
    assert asking.asked == [] and third.asked == []


# ---- what a hostile or broken peer on the socket gets ---------------------------------------------


def ask_raw(node, number: int, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(10)
        connection.connect(socket_path(node.folder, number))
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        return json.loads(connection.makefile("rb").readline())


@pytest.mark.parametrize("data", [b"not json\n", b"[1, 2]\n", b'{"op": "delete"}\n', b'{"op": "claim"}\n',
                                  b"\n", b'{"op": "claim", "calling": "PACS", "originator": "ROUTER", '
                                         b'"message_id": "seven", "path": "x"}\n'])
def test_a_malformed_request_gets_an_error_and_the_process_goes_on_answering(node, data):
    asking = node.processes[1]
    move = asking.wait()
    assert "error" in ask_raw(node, 1, data)
    assert node.processes[0].service.claim(*store(node, "PACS", "ROUTER", move.message_id)) == StoreStatus.SUCCESS


def test_an_instance_outside_the_spool_is_refused(node, tmp_path):
    asking = node.processes[1]
    move = asking.wait()
    secret = tmp_path / "elsewhere.dcm"
    secret.write_bytes(b"not the router's")
    for path in (str(secret), str(node.spool / ".." / "elsewhere.dcm")):
        request = {"op": "claim", "calling": "PACS", "originator": "ROUTER", "message_id": move.message_id,
                   "path": path}
        assert ask_raw(node, 1, json.dumps(request).encode() + b"\n") == {"error": "bad request: an instance "
                                                                                   "outside the spool"}
    assert move.taken == []


def test_the_sockets_are_private_to_the_router_s_user(node):
    assert os.stat(node.folder).st_mode & 0o777 == 0o700
    for process in node.processes:
        assert os.stat(socket_path(node.folder, process.number)).st_mode & 0o777 == 0o600
