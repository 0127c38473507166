"""C-FIND as a client (runtime/queries.py) and forwarded to several destinations
(runtime/forwarded_find.py), against peers over real TCP: pynetdicom SCPs whose answers the
test chooses, a socket that accepts and never answers, a port where nothing listens."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from pydicom import Dataset

from helpers.clock import StoppedClock
from helpers.find_peer import FindPeer, study
from helpers.peers import free_port, wait_until
from helpers.strict_peer import StrictPeer
from rulesengine.config import DicomDestination, Timeouts
from rulesengine.runtime import queries
from rulesengine.runtime.forwarded_find import (FAILED, PARTIAL, SUCCESS, ForwardedFindSummary, forward_find,
                                                unique_key_paths, value_at, with_return_keys, without)
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.queries import FindResult, find

QUICK = Timeouts(connect=5, acse=10, dimse=30, network=30)


@pytest.fixture(autouse=True)
def pynetdicom_as_the_router_sets_it():
    configure_pynetdicom()


@pytest.fixture
def find_peer():
    peers: list[FindPeer] = []

    def start(**options) -> FindPeer:
        peers.append(FindPeer(**options))
        return peers[-1]

    yield start
    for peer in peers:
        peer.stop()


def study_query(**values) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = values.pop("PatientID", "*")
    query.StudyInstanceUID = ""
    for keyword, value in values.items():
        setattr(query, keyword, value)
    return query


def split(items) -> tuple[list[Dataset], FindResult]:
    items = list(items)
    assert all(isinstance(i, Dataset) for i in items[:-1])
    return items[:-1], items[-1]


# ---- find ------------------------------------------------------------------------------------


def test_each_match_then_the_final_status(find_peer):
    peer = find_peer(matches=[study("1.2.3", StudyDescription="CT HEAD"), study("1.2.4")])
    matches, result = split(find(peer.destination(), study_query(StudyDescription=""), "study", 10))
    assert [m.StudyInstanceUID for m in matches] == ["1.2.3", "1.2.4"]
    assert result == FindResult("PEER", 2, 0x0000)
    assert result.ok
    assert peer.requests[0].StudyDescription == ""
    assert wait_until(lambda: peer.endings, timeout=10) == ["released"]  # released, not aborted


def test_a_failure_status_ends_with_the_status_and_its_comment(find_peer):
    peer = find_peer(matches=[study("1.2.3")], final=0xC001, comment="index busy")
    matches, result = split(find(peer.destination(), study_query(), "study", 10))
    assert len(matches) == 1
    assert not result.ok and result.status == 0xC001 and result.comment == "index busy"
    assert result.failure == "PEER answered the C-FIND with 0xC001 (index busy)"
    assert result.brief == "status 0xC001 index busy"


def test_a_port_where_nothing_listens_is_connection_refused():
    port = free_port()
    destination = DicomDestination("GONE", "GONE", "127.0.0.1", port, timeouts=QUICK)
    _, result = split(find(destination, study_query(), "study", 10))
    assert result.failure == f"association with GONE@127.0.0.1:{port} not established: connection refused"
    assert result.brief == "connection refused"


def test_a_wrong_called_ae_title_is_the_peers_rejection(find_peer):
    peer = find_peer()
    _, result = split(find(peer.destination(ae_title="NOTME"), study_query(), "study", 10))
    assert result.failure == (f"association with NOTME@127.0.0.1:{peer.port} not established: rejected by the "
                              "peer's DICOM application (permanent): called AE title not recognised; it does not "
                              "answer to 'NOTME' (ae_title)")
    assert result.brief == "rejected: called AE title not recognised"


def test_a_peer_without_the_model_says_so():
    peer = StrictPeer()  # storage and C-ECHO only
    try:
        _, result = split(find(peer.destination(), study_query(), "study", 10))
    finally:
        peer.stop()
    assert result.failure == (f"association with PEER@127.0.0.1:{peer.port} not established: the peer accepted none "
                              "of the presentation contexts proposed: it does not offer Study Root Query/Retrieve "
                              "Information Model - FIND")
    assert result.brief == "C-FIND model not offered"


def test_a_peer_that_accepts_the_connection_and_never_answers_holds_the_caller_no_longer_than_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes connections; nobody reads
        port = silent.getsockname()[1]
        destination = DicomDestination("SILENT", "SILENT", "127.0.0.1", port, timeouts=QUICK)
        started = time.monotonic()
        _, result = split(find(destination, study_query(), "study", 1))
        assert time.monotonic() - started < 1.5
    assert result.failure == f"association with SILENT@127.0.0.1:{port} not established: no answer within 1 s"
    assert result.brief == "no answer within 1 s"


def test_a_peer_silent_after_the_request_holds_the_caller_no_longer_than_the_timeout(find_peer):
    peer = find_peer(silent=True)
    started = time.monotonic()
    _, result = split(find(peer.destination(), study_query(), "study", 1))
    assert time.monotonic() - started < 1.5
    assert result.failure == "PEER gave no final status within 1 s (0 matches received)"


def test_the_timeout_is_counted_by_the_clock_given(find_peer):
    """A stopped clock: the held query does not end until the test moves the clock past the timeout."""
    peer = find_peer(matches=[study("1.2.3")], hold=True)
    clock = StoppedClock()
    responses = find(peer.destination(), study_query(), "study", 30, clock=clock)
    assert next(responses).StudyInstanceUID == "1.2.3"
    result = next_in_background(responses, clock)
    clock.advance(30)
    assert result.wait().failure == "PEER gave no final status within 30 s (1 matches received)"
    assert result.value.matches == 1


def test_answers_that_came_in_time_are_taken_even_when_the_caller_comes_back_late(find_peer):
    """A caller held elsewhere past the timeout (its own requester reading slowly) still gets
    what the peer said in time: the peer is not reported late for it."""
    peer = find_peer(matches=[study("1.2.3"), study("1.2.4")])
    clock = StoppedClock()
    responses = find(peer.destination(), study_query(), "study", 30, clock=clock)
    assert next(responses).StudyInstanceUID == "1.2.3"
    wait_until(lambda: "released" in peer.endings, what="the peer's final status")
    clock.advance(60)
    matches, result = split(responses)
    assert [m.StudyInstanceUID for m in matches] == ["1.2.4"]
    assert result.ok and result.status == 0x0000 and result.matches == 2


def test_a_peer_that_never_stops_answering_holds_the_caller_no_longer_than_what_it_sent_in_time(find_peer):
    peer = find_peer(matches=[study("1.2.3")], endless=True)
    clock = StoppedClock()
    responses = find(peer.destination(), study_query(), "study", 30, clock=clock)
    next(responses)
    clock.advance(60)
    started = time.monotonic()
    for item in responses:
        if isinstance(item, FindResult):
            break
        assert time.monotonic() - started < 10, "held past the deadline by a peer that never stops"
        time.sleep(0.05)  # a caller slower than the peer: what it sends piles up
    assert item.failure.startswith("PEER gave no final status within 30 s (")
    assert peer.aborted.wait(10)


class Next:
    """next(iterator) on a thread of its own, once the iterator is seen waiting (reading the clock)."""

    def __init__(self, iterator, clock: StoppedClock):
        self.value = None
        self.done = threading.Event()
        reads = clock.reads
        threading.Thread(target=self._run, args=(iterator,), daemon=True).start()
        while clock.reads < reads + 3 and not self.done.is_set():  # it looked at the clock again and waits on
            time.sleep(0.01)
        assert not self.done.is_set(), f"ended before the clock moved: {self.value!r}"

    def _run(self, iterator) -> None:
        self.value = next(iterator)
        self.done.set()

    def wait(self):
        assert self.done.wait(10)
        return self.value


def next_in_background(iterator, clock: StoppedClock) -> Next:
    return Next(iterator, clock)


def test_cancel_sends_a_c_cancel_and_ends_with_the_peers_answer(find_peer):
    peer = find_peer(matches=[study("1.2.3")], hold=True)
    cancel = threading.Event()
    responses = find(peer.destination(), study_query(), "study", 30, cancel)
    assert next(responses).StudyInstanceUID == "1.2.3"
    started = time.monotonic()
    cancel.set()
    result = next(responses)
    assert time.monotonic() - started < 1
    assert peer.cancelled.is_set()
    assert result.cancelled and result.ok and result.status == 0xFE00 and result.matches == 1


def test_cancel_ends_within_the_grace_when_the_peer_ignores_it(find_peer):
    peer = find_peer(matches=[study("1.2.3")], hold=True, ignore_cancel=True)
    cancel = threading.Event()
    responses = find(peer.destination(), study_query(), "study", 30, cancel)
    next(responses)
    started = time.monotonic()
    cancel.set()
    result = next(responses)
    assert time.monotonic() - started < queries.CANCEL_GRACE_SECONDS + 0.5
    assert peer.cancelled.is_set()
    assert result.cancelled and result.status is None


def test_a_caller_that_stops_early_aborts_the_association(find_peer):
    peer = find_peer(matches=[study("1.2.3")], hold=True)
    responses = find(peer.destination(), study_query(), "study", 30)
    next(responses)
    responses.close()
    assert peer.aborted.wait(5)


def _asked(peer: FindPeer) -> bool:
    deadline = time.monotonic() + 5
    while not peer.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(peer.requests)


def test_an_unknown_model_is_a_programming_error():
    with pytest.raises(ValueError, match="no query model 'series'"):
        next(find(DicomDestination("X", "X", "127.0.0.1", 1), study_query(), "series", 1))


# ---- unique keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("level, key", [("PATIENT", "PatientID"), ("STUDY", "StudyInstanceUID"),
                                        ("SERIES", "SeriesInstanceUID"), ("IMAGE", "SOPInstanceUID")])
def test_the_unique_key_of_each_level(level, key):
    query = Dataset()
    query.QueryRetrieveLevel = level
    assert unique_key_paths(query, "study") == ((key,),)


def test_a_missing_unique_key_is_asked_for_and_taken_out_of_the_answers_again():
    query = Dataset()
    query.PatientName = "DOE*"
    sps = Dataset()
    sps.Modality = "CT"
    query.ScheduledProcedureStepSequence = [sps]
    asked, added = with_return_keys(query, unique_key_paths(query, "worklist"))
    assert "AccessionNumber" not in query and "ScheduledProcedureStepID" not in sps  # the caller's is kept
    assert asked.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == ""
    assert asked.AccessionNumber == ""
    answer = Dataset()
    answer.PatientName = "DOE^J"
    answer.AccessionNumber = "A1"
    item = Dataset()
    item.Modality = "CT"
    item.ScheduledProcedureStepID = "S1"
    answer.ScheduledProcedureStepSequence = [item]
    assert value_at(answer, ("ScheduledProcedureStepSequence", "ScheduledProcedureStepID")) == "S1"
    stripped = without(answer, added)
    assert "AccessionNumber" not in stripped
    assert "ScheduledProcedureStepID" not in stripped.ScheduledProcedureStepSequence[0]
    assert stripped.ScheduledProcedureStepSequence[0].Modality == "CT"


def test_an_identifier_asking_for_its_unique_key_is_used_as_it_is():
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    asked, added = with_return_keys(query, unique_key_paths(query, "study"))
    assert asked is query and added == []


def test_a_sequence_asked_empty_gets_nothing_added_into_it():
    query = Dataset()
    query.ScheduledProcedureStepSequence = []
    asked, added = with_return_keys(query, unique_key_paths(query, "worklist"))
    assert list(asked.ScheduledProcedureStepSequence) == [] and added == [("AccessionNumber",)]


# ---- forwarded to several destinations ------------------------------------------------------------


def test_overlapping_answers_are_merged_by_the_levels_unique_key(find_peer):
    one = find_peer(matches=[study("1.1"), study("1.2")])
    two = find_peer(matches=[study("1.2"), study("1.3")])
    items = list(forward_find([one.destination("ONE"), two.destination("TWO")], study_query(), "study", 10))
    summary = items[-1]
    assert sorted(m.StudyInstanceUID for m in items[:-1]) == ["1.1", "1.2", "1.3"]
    assert isinstance(summary, ForwardedFindSummary)
    assert summary.answered == {"ONE": 2, "TWO": 2} and summary.duplicates == 1 and summary.returned == 3
    assert summary.status == SUCCESS and summary.error_comment is None and not summary.partial
    assert summary.log_line == "C-FIND at ONE, TWO: 3 matches (ONE 2, TWO 2, 1 duplicate dropped)"


def test_a_key_the_query_did_not_ask_for_is_asked_and_not_returned(find_peer):
    one = find_peer(matches=[study("1.1", PatientName="A")])
    two = find_peer(matches=[study("1.1", PatientName="A")])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = "A"
    items = list(forward_find([one.destination("ONE"), two.destination("TWO")], query, "study", 10))
    assert one.requests[0].StudyInstanceUID == ""
    assert len(items) == 2 and "StudyInstanceUID" not in items[0] and items[-1].duplicates == 1


def test_answers_stream_while_a_slow_destination_is_still_asked(find_peer):
    """The fast destination's matches come while the other holds its query; the slow one
    times out only when the (stopped) clock passes its timeout: a partial result."""
    fast = find_peer(matches=[study("1.1"), study("1.2")])
    slow = find_peer(hold=True)
    clock = StoppedClock()
    responses = forward_find([slow.destination("SLOW"), fast.destination("FAST")], study_query(), "study", 30,
                             clock=clock)
    assert [next(responses).StudyInstanceUID, next(responses).StudyInstanceUID] == ["1.1", "1.2"]
    assert _asked(slow)  # asked, and still answering nothing
    pending = next_in_background(responses, clock)
    clock.advance(30)
    summary = pending.wait()
    assert summary.partial and summary.status == PARTIAL
    assert summary.answered == {"FAST": 2}
    assert summary.error_comment == "SLOW: no answer within 30 s"
    assert summary.log_line == ("C-FIND at SLOW, FAST: 2 matches (FAST 2); partial, failed: SLOW: SLOW gave no "
                                "final status within 30 s (0 matches received)")


def test_one_destination_down_is_a_partial_result_with_the_reason(find_peer):
    up = find_peer(matches=[study("1.1")])
    port = free_port()
    down = DicomDestination("DOWN", "DOWN", "127.0.0.1", port, timeouts=QUICK)
    items = list(forward_find([up.destination("UP"), down], study_query(), "study", 10))
    summary = items[-1]
    assert [m.StudyInstanceUID for m in items[:-1]] == ["1.1"]
    assert summary.partial and summary.status == PARTIAL
    assert summary.error_comment == "DOWN: connection refused"
    assert f"DOWN: association with DOWN@127.0.0.1:{port} not established: connection refused" in summary.log_line


def test_without_partial_results_a_failing_destination_fails_the_whole_query(find_peer):
    up = find_peer(matches=[study("1.1")])
    down = DicomDestination("DOWN", "DOWN", "127.0.0.1", free_port(), timeouts=QUICK)
    items = list(forward_find([up.destination("UP"), down], study_query(), "study", 10, partial_results=False))
    assert len(items) == 1  # no match: the summary alone
    summary = items[0]
    assert summary.is_failure and summary.status == FAILED and summary.error_comment == "DOWN: connection refused"


def test_without_partial_results_the_matches_come_once_every_destination_answered(find_peer):
    one = find_peer(matches=[study("1.1")])
    two = find_peer(matches=[study("1.2")])
    items = list(forward_find([one.destination("ONE"), two.destination("TWO")], study_query(), "study", 10,
                              partial_results=False))
    assert sorted(m.StudyInstanceUID for m in items[:-1]) == ["1.1", "1.2"]
    assert items[-1].status == SUCCESS and items[-1].returned == 2


def test_every_destination_failing_is_a_failure_even_with_partial_results():
    down = [DicomDestination(name, name, "127.0.0.1", free_port(), timeouts=QUICK) for name in ("A", "B")]
    (summary,) = list(forward_find(down, study_query(), "study", 10))
    assert summary.is_failure and summary.status == FAILED
    assert summary.error_comment == "A: connection refused; B: connection refused"


def test_the_error_comment_fits_an_lo():
    results = tuple(FindResult(f"DESTINATION{n}", 0, failure="x", brief="connection timed out after 10 s")
                    for n in range(4))
    comment = ForwardedFindSummary(results, 0, 0, True).error_comment
    assert len(comment) <= 64 and comment.endswith("...") and comment.startswith("DESTINATION0: connection timed")


def test_cancel_reaches_every_destination(find_peer):
    one = find_peer(matches=[study("1.1")], hold=True)
    two = find_peer(hold=True)
    cancel = threading.Event()
    responses = forward_find([one.destination("ONE"), two.destination("TWO")], study_query(), "study", 30,
                             cancel=cancel)
    assert next(responses).StudyInstanceUID == "1.1"
    assert _asked(two)
    cancel.set()
    summary = next(responses)
    assert summary.cancelled and summary.status == 0xFE00
    assert one.cancelled.is_set() and two.cancelled.is_set()


def test_cancel_reaches_a_single_destination_asked_from_the_callers_thread(find_peer):
    peer = find_peer(matches=[study("1.1")], hold=True)
    cancel = threading.Event()
    responses = forward_find([peer.destination("ONE")], study_query(), "study", 30, cancel=cancel)
    assert next(responses).StudyInstanceUID == "1.1"
    cancel.set()
    summary = next(responses)
    assert summary.cancelled and summary.status == 0xFE00 and summary.answered == {}
    assert peer.cancelled.is_set()


@pytest.mark.parametrize("count", [1, 2])
def test_a_caller_that_stops_a_forwarded_find_early_cancels_every_destination(find_peer, count):
    peers = [find_peer(matches=[study(f"1.{n}")], hold=True) for n in range(count)]
    responses = forward_find([p.destination(f"D{n}") for n, p in enumerate(peers)], study_query(), "study", 30)
    next(responses)
    assert all(_asked(p) for p in peers)
    responses.close()
    assert all(p.cancelled.wait(5) for p in peers)


def test_the_summary_line_is_debug_when_every_destination_answered_and_a_warning_when_one_failed(find_peer, caplog):
    """The listener logs each request in its own line: the summary only adds the full reasons."""
    up = find_peer(matches=[study("1.1")])
    down = DicomDestination("DOWN", "DOWN", "127.0.0.1", free_port(), timeouts=QUICK)
    with caplog.at_level(logging.DEBUG, logger="rulesengine.queries"):
        list(forward_find([up.destination("UP")], study_query(), "study", 10))
        list(forward_find([up.destination("UP"), down], study_query(), "study", 10))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("C-FIND at ")]
    assert [level for level, _ in lines] == [logging.DEBUG, logging.WARNING]
    assert "partial, failed: DOWN: association with DOWN@" in lines[1][1]
