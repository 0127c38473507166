"""Which C-STOREs a listener hands to a C-MOVE the router is waiting on (RetrieveService.claim),
without a network: by Move Originator AE title and Message ID; from a source that names
itself the originator, by Message ID; from one that names none, when one C-MOVE alone waits
on it; one for a C-MOVE of the router's that ended is refused; anything else is an ordinary
instance. The retrievals are stood in for."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from rulesengine.arrival import Arrival
from rulesengine.runtime.retrieve_service import RetrieveService
from rulesengine.runtime.statuses import StoreStatus


@dataclass
class WaitingMove:
    """What claim reads of a SourceRetrieval."""

    source_ae: str
    message_id: int
    move_destination: str = "ROUTER"
    taken: list[str] = field(default_factory=list)

    @property
    def destination(self):
        return SimpleNamespace(ae_title=self.source_ae)

    def hand_over(self, path: str) -> bool:
        self.taken.append(path)
        return True


@pytest.fixture
def service(tmp_path):
    storage = SimpleNamespace(temp_path=lambda: str(tmp_path / f"claimed-{len(os.listdir(tmp_path))}.dcm"))
    # PACS: a source the router retrieves from by C-MOVE, calling it as ROUTER (its Move Originator)
    pacs = SimpleNamespace(retrieve="c-move", ae_title="PACS", calling_ae_title="ROUTER")
    rules = SimpleNamespace(config=SimpleNamespace(destinations={"PACS": pacs}))
    return RetrieveService(journal=None, rules=rules, pipeline=SimpleNamespace(storage=storage), delivery=None)


def store(tmp_path, calling: str, originator: str | None, message_id: int | None):
    path = tmp_path / "received.dcm"
    path.write_bytes(b"instance")
    request = SimpleNamespace(MoveOriginatorApplicationEntityTitle=originator, MoveOriginatorMessageID=message_id)
    arrival = Arrival(calling_aet=calling, called_aet="ROUTER", peer_address="127.0.0.1", peer_port=104,
                      source_name="main", source_kind="listener")
    return request, arrival, str(path)


def test_the_originator_ae_title_and_message_id_name_the_move(service, tmp_path):
    first, second = WaitingMove("PACS", 1), WaitingMove("PACS", 2)
    service.expect(first)
    service.expect(second)
    assert service.claim(*store(tmp_path, "PACS", "ROUTER", 2)) == StoreStatus.SUCCESS
    assert (len(first.taken), len(second.taken)) == (0, 1)


def test_a_source_that_names_itself_the_originator_is_matched_by_message_id(service, tmp_path):
    first, second = WaitingMove("PACS", 1), WaitingMove("PACS", 2)
    service.expect(first)
    service.expect(second)
    assert service.claim(*store(tmp_path, "PACS", "PACS", 1)) == StoreStatus.SUCCESS
    assert (len(first.taken), len(second.taken)) == (1, 0)


def test_a_store_for_a_message_id_no_move_waits_on_is_an_ordinary_instance(service, tmp_path):
    waiting = WaitingMove("PACS", 1)
    service.expect(waiting)
    assert service.claim(*store(tmp_path, "PACS", "PACS", 9)) is None  # another requester's C-MOVE
    assert service.claim(*store(tmp_path, "MODALITY", "MODALITY", 1)) is None  # another sender altogether
    assert waiting.taken == []


@pytest.mark.parametrize("waiting_moves, claimed", [(1, True), (2, False)])
def test_a_source_that_names_no_originator_is_claimed_only_when_one_move_waits_on_it(service, tmp_path,
                                                                                      waiting_moves, claimed):
    moves = [WaitingMove("PACS", number) for number in range(1, waiting_moves + 1)]
    for move in moves:
        service.expect(move)
    status = service.claim(*store(tmp_path, "PACS", None, None))
    assert (status == StoreStatus.SUCCESS) is claimed
    assert sum(len(move.taken) for move in moves) == int(claimed)


def test_a_store_for_a_move_of_ours_that_ended_is_refused_not_taken_as_an_ordinary_instance(service, tmp_path):
    waiting = WaitingMove("PACS", 1)
    service.expect(waiting)
    service.forget(waiting)
    refused = service.claim(*store(tmp_path, "PACS", "ROUTER", 1))  # the router's C-MOVE 1, ended
    assert refused.Status == StoreStatus.OUT_OF_RESOURCES and "has ended" in refused.ErrorComment
    assert waiting.taken == []
    assert service.claim(*store(tmp_path, "PACS", "VIEWER", 1)) is None  # a viewer's C-MOVE: an ordinary instance
    assert service.claim(*store(tmp_path, "MODALITY", "ROUTER", 1)) is None  # not a source the router moves from
