"""Delivery windows: when a window is open (hours that wrap midnight, days of the week, time
zones), and a delivery worker that, on the clock it is given, leaves a queue waiting while its
window is closed and sends it once the window opens. Real peers (DCMTK's storescp); the clock is
moved, never waited for."""

from __future__ import annotations

import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pydicom
import pytest
from helpers.clock import StoppedClock
from helpers.deliveries import FAST, another_ct
from helpers.peers import StoreSCP

from rulesengine.arrival import Arrival
from rulesengine.config import DicomDestination, load_config
from rulesengine.runtime.delivery import DeliveryManager, DestinationWorker
from rulesengine.runtime.journal import ACCEPTED, DELIVERED, QUEUED, URGENT, NewDelivery, Outcome, SQLiteJournal
from rulesengine.runtime.pynetdicom_setup import configure_pynetdicom
from rulesengine.runtime.router_status import StatusReporter
from rulesengine.runtime.service import Router
from rulesengine.runtime.storage import Storage
from rulesengine.windows import DeliveryWindow, WindowError, closed_windows, parse_days, parse_hours

UTC = ZoneInfo("UTC")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def at(text: str, zone=UTC) -> float:
    """A moment given as `YYYY-MM-DD HH:MM` in `zone` (None: this machine's local time)."""
    moment = datetime.fromisoformat(text)
    return (moment.replace(tzinfo=zone) if zone is not None else moment).timestamp()


# 2026-12-04 is a Friday, 2026-12-05 a Saturday, 2026-12-07 a Monday.
WEEKNIGHTS = DeliveryWindow.parse("night", "22:00-06:00", ["mon", "tue", "wed", "thu", "fri"], "UTC")


@pytest.mark.parametrize("moment, expected", [
    ("2026-12-04 21:59", False),  # Friday, before it opens
    ("2026-12-04 22:00", True),  # Friday night opens
    ("2026-12-04 23:59", True),
    ("2026-12-05 00:00", True),  # past midnight: still Friday's night, on a Saturday
    ("2026-12-05 05:59", True),
    ("2026-12-05 06:00", False),  # the end is not in the window
    ("2026-12-05 22:30", False),  # Saturday night: not one of its days
    ("2026-12-06 03:00", False),  # Sunday morning: Saturday's night, closed
    ("2026-12-07 03:00", False),  # Monday morning belongs to Sunday's night: closed
    ("2026-12-07 22:00", True),  # Monday night opens
    ("2026-12-08 05:00", True),  # Tuesday morning: Monday's night
])
def test_a_window_that_wraps_midnight_belongs_to_the_day_it_starts_on(moment, expected):
    assert WEEKNIGHTS.is_open(at(moment)) is expected


def test_a_daytime_window_and_one_that_ends_at_midnight():
    office = DeliveryWindow.parse("office", "08:30-17:00", ["sat"], "UTC")
    assert not office.is_open(at("2026-12-05 08:29"))
    assert office.is_open(at("2026-12-05 08:30")) and office.is_open(at("2026-12-05 16:59"))
    assert not office.is_open(at("2026-12-05 17:00"))
    assert not office.is_open(at("2026-12-04 12:00"))  # Friday
    evening = DeliveryWindow.parse("evening", "18:00-24:00", None, "UTC")
    assert evening.is_open(at("2026-12-04 23:59")) and not evening.is_open(at("2026-12-05 00:00"))


def test_a_window_in_a_time_zone_and_one_in_local_time():
    paris = DeliveryWindow.parse("night", "22:00-06:00", None, "Europe/Paris")
    assert paris.is_open(at("2026-12-04 21:30"))  # 22:30 in Paris (UTC+1 in December)
    assert not paris.is_open(at("2026-12-04 20:30"))
    local = DeliveryWindow.parse("night", "22:00-06:00")
    assert local.is_open(at("2026-12-04 22:30", None)) and not local.is_open(at("2026-12-04 12:00", None))


def test_when_a_window_opens_next_and_which_are_closed():
    assert WEEKNIGHTS.opens_after(at("2026-12-05 12:00")) == at("2026-12-07 22:00")  # over the weekend
    assert WEEKNIGHTS.opens_after(at("2026-12-04 23:00")) == at("2026-12-04 23:00")  # open: now
    office = DeliveryWindow.parse("office", "08:00-17:00", None, "UTC")
    assert closed_windows({"night": WEEKNIGHTS, "office": office}, at("2026-12-04 12:00")) == {"night"}
    assert closed_windows({"night": WEEKNIGHTS, "office": office}, at("2026-12-04 23:00")) == {"office"}


def test_when_a_window_closes_next():
    assert WEEKNIGHTS.closes_after(at("2026-12-04 23:00")) == at("2026-12-05 06:00")  # Friday night into Saturday
    assert WEEKNIGHTS.closes_after(at("2026-12-05 12:00")) == at("2026-12-05 12:00")  # closed: now
    office = DeliveryWindow.parse("office", "08:00-17:00", ["mon"], "UTC")
    assert office.closes_after(at("2026-12-07 16:59:30")) == at("2026-12-07 17:00")


def test_a_whole_day_window_holds_every_minute_of_its_days_and_none_of_the_others():
    weekend = DeliveryWindow.parse("weekend", "00:00-24:00", ["sat", "sun"], "UTC")
    assert not weekend.is_open(at("2026-12-04 23:59"))  # Friday
    assert weekend.is_open(at("2026-12-05 00:00")) and weekend.is_open(at("2026-12-06 23:59"))
    assert not weekend.is_open(at("2026-12-07 00:00"))  # Monday
    assert weekend.opens_after(at("2026-12-03 12:00")) == at("2026-12-05 00:00")
    assert weekend.closes_after(at("2026-12-06 12:00")) == at("2026-12-07 00:00")


@pytest.mark.parametrize("hours, words", [
    ("25:00-06:00", "25:00 is not a time of the day"),
    ("22:00-06:60", "06:60 is not a time of the day"),
    ("24:00-06:00", "24:00 is not a time of the day"),
    ("22:00", "is not hours of the day"),
    ("22-06", "is not hours of the day"),
    ("", "is not hours of the day"),
    ("10:00-10:00", "starts where it ends"),
    ("24:00-24:00", "24:00 is not a time of the day"),
    ("'; DROP TABLE deliveries; --", "is not hours of the day"),
])
def test_bad_hours_are_refused_in_words(hours, words):
    with pytest.raises(WindowError, match=words):
        parse_hours(hours)


def test_bad_days_and_time_zones_are_refused_in_words():
    with pytest.raises(WindowError, match="days is empty"):
        parse_days([])
    with pytest.raises(WindowError, match="'funday' is not a day"):
        parse_days(["mon", "funday"])
    with pytest.raises(WindowError, match="not a time zone"):
        DeliveryWindow.parse("w", "22:00-06:00", None, "Mars/Olympus_Mons")
    with pytest.raises(WindowError, match="not a time zone"):
        DeliveryWindow.parse("w", "22:00-06:00", None, "../../etc/passwd")


# ---- a worker on a given clock --------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def queue(journal, tmp_path, number: int, priority: int = 0, window: str | None = None) -> int:
    path = str(another_ct(tmp_path, number))
    header = pydicom.dcmread(path, stop_before_pixels=True)
    instance = journal.record(Arrival(source_kind="listener", sop_instance_uid=str(number)), path,
                              Outcome("v1", "route", None, (), ("PEER",)), ACCEPTED)
    [delivery_id] = journal.add_deliveries(instance, [NewDelivery(
        "PEER", path, CT_IMAGE, str(header.SOPInstanceUID), str(header.file_meta.TransferSyntaxUID), priority,
        window)])
    return delivery_id


@pytest.fixture
def peer(tmp_path):
    configure_pynetdicom()
    scp = StoreSCP(tmp_path / "peer").start()
    yield scp
    scp.stop()


def one_round(worker: DestinationWorker) -> None:
    """One claim and send of the worker, in this thread; set beforehand, its wake-up never waits."""
    worker.wake.set()
    worker._claim_and_send()


def test_a_destination_window_holds_the_whole_queue_until_it_opens(tmp_path, peer):
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    clock = Clock(at("2026-12-04 12:00"))  # Friday noon: the night is closed
    destination = DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST, window="night")
    worker = DestinationWorker(destination, journal, Storage(str(tmp_path / "storage")), threading.Event(),
                               clock=clock, windows=lambda: {"night": WEEKNIGHTS})
    ids = [queue(journal, tmp_path, 1), queue(journal, tmp_path, 2, priority=URGENT)]
    try:
        one_round(worker)
        assert [(journal.delivery(i).state, journal.delivery(i).attempts) for i in ids] == [(QUEUED, 0)] * 2
        assert peer.files() == []
        clock.now = at("2026-12-04 22:00")
        one_round(worker)
        assert [journal.delivery(i).state for i in ids] == [DELIVERED] * 2
        assert [len(journal.attempts(i)) for i in ids] == [1, 1]
        assert len(peer.files()) == 2
    finally:
        worker.sender.close()
        worker._let_go()
        journal.close()


def test_a_route_window_holds_its_deliveries_while_the_others_go_on(tmp_path, peer):
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    clock = Clock(at("2026-12-05 06:00"))  # Saturday 06:00: Friday's night just closed
    windows = {"night": WEEKNIGHTS}
    destination = DicomDestination("PEER", peer.ae_title, "127.0.0.1", peer.port, timeouts=FAST)
    worker = DestinationWorker(destination, journal, Storage(str(tmp_path / "storage")), threading.Event(),
                               clock=clock, windows=lambda: windows)
    waiting = queue(journal, tmp_path, 1, window="night")
    now = queue(journal, tmp_path, 2)
    try:
        one_round(worker)
        assert journal.delivery(now).state == DELIVERED
        assert (journal.delivery(waiting).state, journal.delivery(waiting).attempts) == (QUEUED, 0)
        assert journal.attempts(waiting) == []
        clock.now = at("2026-12-06 23:00")  # Sunday night: not one of its days
        one_round(worker)
        assert journal.delivery(waiting).state == QUEUED
        clock.now = at("2026-12-07 22:01")  # Monday night
        one_round(worker)
        assert journal.delivery(waiting).state == DELIVERED
        assert len(peer.files()) == 2
    finally:
        worker.sender.close()
        worker._let_go()
        journal.close()


def test_the_manager_gives_its_workers_the_windows_of_the_last_configuration(tmp_path):
    journal = SQLiteJournal(str(tmp_path / "journal.sqlite"))
    manager = DeliveryManager(journal, Storage(str(tmp_path / "storage")), clock=Clock(at("2026-12-04 12:00")))
    try:
        manager.apply({}, {"night": WEEKNIGHTS})
        assert manager.windows() == {"night": WEEKNIGHTS}
        manager.apply({})  # destinations alone: the windows stay
        assert manager.windows() == {"night": WEEKNIGHTS}
        manager.apply({}, {})
        assert manager.windows() == {}
    finally:
        manager.stop(timeout=5)
        journal.close()


def test_the_status_row_says_which_windows_are_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "main.rules").write_text('rule "all" {\n  then route to PACS during night\n}\n', encoding="utf-8")
    (tmp_path / "router.yaml").write_text(
        "storage: var\nprocesses: 1\nrules: main.rules\n"
        "windows:\n  night: {hours: \"22:00-06:00\", days: [mon, tue, wed, thu, fri], timezone: UTC}\n"
        "  office: {hours: \"08:00-17:00\", timezone: UTC}\n"
        "destinations:\n  PACS: {type: folder, path: out, window: office}\n", encoding="utf-8")
    router = Router(load_config(tmp_path / "router.yaml"))
    try:
        StatusReporter(router, node="a", clock=StoppedClock(at("2026-12-04 23:00"))).write()
        [(_, _, status)] = router.journal.statuses()
        assert status["windows"] == {"night": {"open": True, "hours": "22:00-06:00 mon, tue, wed, thu, fri (UTC)"},
                                     "office": {"open": False, "hours": "08:00-17:00 every day (UTC)"}}
    finally:
        router.journal.close()
