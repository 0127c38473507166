"""What the console shows of delivery windows, urgent deliveries, replays and the notification
outbox, on one real journal (a stopped clock at a Thursday noon, UTC windows): each destination's
window open or closed and until when; the deliveries that wait for a closed window (their route's
or their destination's) and the urgent ones marked, as `dicom-rules queue` says them; the replays
with how far each got, a page at a time; the outbox by state with why a notification failed, and
patient data only of a notifier with `patient_data: true` (masked for a viewer). Bad parameters get
400 naming them; hostile names and reasons render as text in a real browser (screenshots under
test-results/console/)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest
from selenium.webdriver.common.by import By

from helpers.console import PASSWORD, ConsoleUnderTest, served_to_browsers
from rulesengine.arrival import Arrival
from rulesengine.console.actions import when
from rulesengine.runtime.journal import ACCEPTED, URGENT, NewDelivery, Outcome
from rulesengine.runtime.journal.records import NewReplay, ReplayedInstance

NOON = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc).timestamp()  # a Thursday
AT_22 = datetime(2026, 12, 3, 22, 0, tzinfo=timezone.utc).timestamp()
AT_18 = datetime(2026, 12, 3, 18, 0, tzinfo=timezone.utc).timestamp()
HOSTILE_AET = '<img src=x onerror="document.title=1">'
HOSTILE_DESTINATION = "GONE<script>document.title='owned'</script>"
HOSTILE_REQUESTER = '<script>alert("replay")</script>@host'
HOSTILE_REASON = 'HTTP 400: <b onmouseover=alert(1)>bad</b><script>alert("reason")</script>'
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

DESTINATIONS = """\
  PACS: {type: folder, path: out/pacs, window: day}
  ARCHIVE: {type: folder, path: out/archive, window: night}
  LAB: {type: folder, path: out/lab}
"""
EXTRA = """\
windows:
  night: {hours: "22:00-06:00", timezone: UTC}
  day: {hours: "08:00-18:00", days: [mon, tue, wed, thu, fri], timezone: UTC}
notifiers:
  ops-hook: {type: webhook, url: "http://127.0.0.1:9/hook"}
  records: {type: webhook, url: "http://127.0.0.1:9/records", patient_data: true}
"""


class Scene:
    """The console and the journal's content every test of this module reads (none changes it)."""

    def __init__(self, console: ConsoleUnderTest):
        self.console = console
        journal = console.journal
        self.next_uid = 0

        def delivery(destination: str, priority: int = 0, window: str | None = None, aet: str = "CT1") -> int:
            self.next_uid += 1
            uid = f"1.2.826.0.1.77.{self.next_uid}"
            arrival = Arrival(calling_aet=aet, source_name="main", source_kind="listener", sop_instance_uid=uid,
                              received_at=NOON)
            instance = journal.record(arrival, f"/spool/in/{uid}.dcm", None, ACCEPTED)
            [number] = journal.add_deliveries(instance, [NewDelivery(destination, f"/spool/out/{uid}.dcm", CT_IMAGE,
                                                                     uid, None, priority, window)])
            return number

        self.urgent_archive = delivery("ARCHIVE", priority=URGENT, aet=HOSTILE_AET)  # its destination's window
        self.pacs_during_night = delivery("PACS", window="night")  # its route's window, though PACS's is open
        self.pacs_plain = delivery("PACS")
        self.lab_urgent = delivery("LAB", priority=URGENT)  # no window: urgent only
        self.gone = delivery(HOSTILE_DESTINATION)

        # three replays: one finished, one half way, one with nothing processed yet
        originals = []
        for number in range(4):
            uid = f"1.2.826.0.1.88.{number}"
            instance = journal.record(Arrival(calling_aet="CT1", source_name="main", source_kind="listener",
                                              sop_instance_uid=uid, received_at=NOON - 86400 + number),
                                      f"/spool/in/{uid}.dcm", None, ACCEPTED, "v1")
            journal.add_deliveries(instance, [NewDelivery("LAB", f"/spool/in/{uid}.dcm", CT_IMAGE, uid, None)],
                                   Outcome("v1", "route", None, ("all",), ("LAB",)))
            journal.retain(instance, 1e12)
            originals.append(journal.instance(instance))

        def replay(by: str, rules_file: str | None, chosen: list) -> tuple[int, list[int]]:
            replay_id = journal.record_replay(
                NewReplay(by, "v2", rules_file, NOON - 86400, NOON, missing=1),
                [ReplayedInstance(original, f"/spool/in/replay-{by[:3]}-{original.id}.dcm") for original in chosen],
                now=NOON)
            return replay_id, [instance.id for _, instance in journal.replayed_instances(replay_id)]

        self.finished, [a, b] = replay("alice@host", None, originals[:2])
        journal.settle(a, Outcome("v2", "drop", "not wanted", ("x",), ()), None)
        journal.settle(b, Outcome("v2", "drop", "not wanted", ("x",), ()), None)
        self.half_way, [c, _d] = replay(HOSTILE_REQUESTER, "<i>other</i>.rules", originals[:2])
        journal.add_deliveries(c, [NewDelivery("ARCHIVE", "/spool/out/c.dcm", CT_IMAGE, "1.2.826.0.1.88.0", None)],
                               Outcome("v2", "route", None, ("x",), ("ARCHIVE",)))
        self.untouched, _ = replay("bob@host", None, originals[2:])

        # the outbox: one waiting, one sent, two dead (one with a hostile reason), one of each notifier
        context = {"destination": "PACS", "reason": "connection refused", "SOPInstanceUID": "1.2.3.4",
                   "event": "delivery-dead", "node": "router-1", "time": "2026-12-03T12:00:00Z",
                   "notifier": "ops-hook"}
        patient = {"PatientName": "DOE^JANE", "PatientID": "PID-12345", "AccessionNumber": "ACC-9"}
        self.waiting = journal.add_notification("ops-hook", "delivery-dead", context, NOON)
        self.sent = journal.add_notification("ops-hook", "instance-quarantined", {**context, "reason": "no rule"}, NOON)
        journal.notification_sent(self.sent, NOON + 1)
        # a row of ops-hook holding patient data (written while it had patient_data: true): never shown
        self.dead = journal.add_notification("ops-hook", "delivery-dead", {
            **context, **patient, "reason": HOSTILE_REASON,
            "Association": {"CallingAET": "CT1", "CalledAET": None, "PatientName": "DOE^JANE"}}, NOON)
        journal.notification_failed(self.dead, HOSTILE_REASON, None, NOON + 2)
        self.with_patient = journal.add_notification("records", "instance-quarantined",
                                                     {**context, **patient, "notifier": "records"}, NOON)
        journal.notification_failed(self.with_patient, "HTTP 503", NOON + 60, NOON + 3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Scene:
    return Scene(ConsoleUnderTest(tmp_path_factory.mktemp("console"), config_extra=EXTRA,
                                  destinations=DESTINATIONS, now=NOON))


# ---- windows and urgency -------------------------------------------------------------------------


def test_the_queues_say_each_window_and_what_waits_for_one(scene):
    client, _ = scene.console.api_client("vera")
    answer = client.get("/api/queues").json()
    windows = {d["name"]: d["window"] for d in answer["destinations"]}
    assert windows["ARCHIVE"] == {"name": "night", "hours": "22:00-06:00 every day (UTC)", "open": False,
                                  "until": AT_22}
    assert windows["PACS"] == {"name": "day", "hours": "08:00-18:00 mon, tue, wed, thu, fri (UTC)", "open": True,
                               "until": AT_18}
    assert windows["LAB"] is None and windows[HOSTILE_DESTINATION] is None

    items = {item["id"]: item for item in answer["items"]}
    night = {"name": "night", "hours": "22:00-06:00 every day (UTC)", "open": False, "until": AT_22}
    assert (items[scene.urgent_archive]["urgent"], items[scene.urgent_archive]["waiting_for_window"]) == (True, night)
    assert (items[scene.pacs_during_night]["delivery_window"],
            items[scene.pacs_during_night]["waiting_for_window"]) == ("night", night)  # the route's, PACS's open
    assert (items[scene.pacs_plain]["urgent"], items[scene.pacs_plain]["waiting_for_window"]) == (False, None)
    assert (items[scene.lab_urgent]["urgent"], items[scene.lab_urgent]["waiting_for_window"]) == (True, None)

    page = scene.console.client("vera").get("/queues").text
    assert f"night <span class=\"closed\">closed</span> until {when(AT_22)}" in page
    assert f"day <span class=\"open\">open</span> until {when(AT_18)}" in page
    # two to ARCHIVE (one of them a replay's), one to PACS by its route's window
    assert page.count(f"waiting for window night until {when(AT_22)}") == 3
    assert page.count('<span class="urgent">urgent</span>') == 2
    assert "<script>document.title" not in page and "GONE&lt;script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page

    # the destination's own page: only its items, the same words
    archive = scene.console.client("vera").get("/queues", params={"destination": "ARCHIVE"}).text
    assert archive.count(f"waiting for window night until {when(AT_22)}") == 2
    assert "PACS" not in archive.split("<h2>Items")[1].split("Pending groups")[0]


def test_dicom_rules_queue_says_the_same_of_each_delivery(scene):
    from rulesengine.cli.router import _waiting
    rows = {row["id"]: row for row in scene.console.journal.deliveries(("queued",), None, 100)}
    until = time.strftime("%Y-%m-%d %H:%M", time.localtime(AT_22))
    config, now = scene.console.config, scene.console.clock()
    assert _waiting(rows[scene.urgent_archive], config, now) == f"  urgent  waiting for window night until {until}"
    assert _waiting(rows[scene.pacs_during_night], config, now) == f"  waiting for window night until {until}"
    assert _waiting(rows[scene.lab_urgent], config, now) == "  urgent"
    assert _waiting(rows[scene.pacs_plain], config, now) == ""


def test_a_window_that_opens_lets_its_deliveries_go_and_says_when_it_closes(tmp_path):
    console = ConsoleUnderTest(tmp_path, config_extra=EXTRA, destinations=DESTINATIONS, now=AT_22 - 60)
    arrival = Arrival(calling_aet="CT1", source_name="main", source_kind="listener", sop_instance_uid="1.2.9",
                      received_at=AT_22 - 60)
    instance = console.journal.record(arrival, "/spool/in/1.2.9.dcm", None, ACCEPTED)
    console.journal.add_deliveries(instance, [NewDelivery("ARCHIVE", "/spool/out/1.2.9.dcm", CT_IMAGE, "1.2.9", None)])
    client, _ = console.api_client("vera")
    [item] = client.get("/api/queues").json()["items"]
    assert item["waiting_for_window"]["until"] == AT_22
    console.clock.advance(60)
    answer = client.get("/api/queues").json()
    assert answer["items"][0]["waiting_for_window"] is None
    archive = {d["name"]: d for d in answer["destinations"]}["ARCHIVE"]
    assert archive["window"]["open"] and archive["window"]["until"] == AT_22 + 8 * 3600  # 06:00


# ---- replays -------------------------------------------------------------------------------------


def test_the_replays_page_lists_each_replay_and_how_far_it_got(scene):
    client, _ = scene.console.api_client("vera")
    answer = client.get("/api/replays").json()
    replays = {r["id"]: r for r in answer["replays"]}
    assert [r["id"] for r in answer["replays"]] == [scene.untouched, scene.half_way, scene.finished]
    assert answer["next_before"] is None
    finished = replays[scene.finished]
    assert (finished["instances"], finished["missing"], finished["waiting"], finished["processed"],
            finished["outcomes"], finished["finished"]) == (2, 1, 0, 2, {"drop": 2}, True)
    half = replays[scene.half_way]
    assert (half["requested_by"], half["rules_file"], half["waiting"], half["processed"], half["outcomes"],
            half["deliveries"], half["finished"]) == (HOSTILE_REQUESTER, "<i>other</i>.rules", 1, 1, {"route": 1},
                                                      {"queued": 1}, False)
    assert (replays[scene.untouched]["waiting"], replays[scene.untouched]["processed"]) == (2, 0)

    first = client.get("/api/replays", params={"limit": 2}).json()
    assert [r["id"] for r in first["replays"]] == [scene.untouched, scene.half_way]
    rest = client.get("/api/replays", params={"limit": 2, "before": first["next_before"]}).json()
    assert [r["id"] for r in rest["replays"]] == [scene.finished] and rest["next_before"] is None

    page = scene.console.client("vera").get("/replays").text
    assert "1 of 2 processed" in page and "0 of 2 processed" in page and "finished" in page
    assert "2 drop" in page and "1 queued" in page and "none yet" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#34;replay&#34;)&lt;/script&gt;@host" in page
    assert "<i>other" not in page and "&lt;i&gt;other&lt;/i&gt;.rules" in page
    older = scene.console.client("vera").get("/replays", params={"limit": 1}).text
    assert f"/replays?limit=1&amp;before={scene.untouched}" in older


# ---- notifications -------------------------------------------------------------------------------


def test_the_outbox_by_state_with_reasons_and_patient_data_only_where_opted_in(scene):
    viewer, _ = scene.console.api_client("vera")
    answer = viewer.get("/api/notifications").json()
    assert answer["counts"] == {"queued": 1, "retrying": 1, "sent": 1, "dead": 1}
    rows = {row["id"]: row for row in answer["notifications"]}
    assert list(rows) == [scene.with_patient, scene.dead, scene.sent, scene.waiting]  # newest first
    dead = rows[scene.dead]
    assert (dead["state"], dead["attempts"], dead["last_error"], dead["patient"]) == ("dead", 1, HOSTILE_REASON, None)
    assert dead["details"] == {"destination": "PACS", "reason": HOSTILE_REASON, "SOPInstanceUID": "1.2.3.4",
                               "Association.CallingAET": "CT1"}  # by its path; a null left out
    assert (rows[scene.sent]["state"], rows[scene.sent]["sent_at"]) == ("sent", NOON + 1)
    assert rows[scene.waiting]["next_attempt_at"] is not None and rows[scene.sent]["next_attempt_at"] is None
    retrying = rows[scene.with_patient]
    assert (retrying["state"], retrying["last_error"], retrying["next_attempt_at"]) == ("retrying", "HTTP 503",
                                                                                      NOON + 60)
    assert retrying["patient"] == {"PatientName": "********", "PatientID": "********", "AccessionNumber": "********"}
    text = viewer.get("/api/notifications").text + scene.console.client("vera").get("/notifications").text
    assert "DOE^JANE" not in text and "PID-12345" not in text and "ACC-9" not in text

    operator, _ = scene.console.api_client("otto")
    rows = {row["id"]: row for row in operator.get("/api/notifications").json()["notifications"]}
    assert rows[scene.with_patient]["patient"] == {"PatientName": "DOE^JANE", "PatientID": "PID-12345",
                                                   "AccessionNumber": "ACC-9"}
    assert rows[scene.dead]["patient"] is None  # ops-hook has no patient_data: its row's values stay hidden
    page = scene.console.client("otto").get("/notifications").text
    assert page.count("DOE^JANE") == 1 and page.count("PID-12345") == 1

    only_dead = operator.get("/api/notifications", params={"state": "dead"}).json()["notifications"]
    assert [row["id"] for row in only_dead] == [scene.dead]
    two = operator.get("/api/notifications", params=[("state", "sent"), ("state", "queued")]).json()
    assert [row["id"] for row in two["notifications"]] == [scene.sent, scene.waiting]
    assert len(operator.get("/api/notifications", params={"limit": 1}).json()["notifications"]) == 1
    page = scene.console.client("vera").get("/notifications").text
    assert "<script>alert" not in page and "<b onmouseover" not in page
    assert "&lt;b onmouseover=alert(1)&gt;bad&lt;/b&gt;&lt;script&gt;" in page


# ---- bad parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("path, params, says", [
    ("/replays", {"limit": "0"}, "limit must be a whole number from 1 to 500, not 0"),
    ("/replays", {"limit": "lots"}, "limit must be a whole number from 1 to 500, not 'lots'"),
    ("/replays", {"before": "-3"}, "before must be a whole number from 1 to 9223372036854775807, not -3"),
    ("/replays", {"before": "9" * 400}, "before must be a whole number from 1 to 9223372036854775807"),
    ("/queues", {"before": str(2 ** 63)}, "before must be a whole number from 1 to 9223372036854775807"),
    ("/replays", {"limit": ["1", "2"]}, "limit is given 2 times"),
    ("/replays", {"replay": "1"}, "unknown parameter 'replay'"),
    ("/notifications", {"state": "<script>lost</script>"}, "state must be one of queued, retrying, sent, dead"),
    ("/notifications", {"limit": "501"}, "limit must be a whole number from 1 to 500, not 501"),
    ("/notifications", {"notifier": "x"}, "unknown parameter 'notifier'"),
    ("/queues", {"state": "urgent"}, "state must be one of"),
])
def test_bad_parameters_get_400_naming_them(scene, path, params, says):
    api, _ = scene.console.api_client("vera")
    answer = api.get("/api" + path, params=params)
    assert answer.status_code == 400 and says in answer.json()["error"]
    page = scene.console.client("vera").get(path, params=params)
    assert page.status_code == 400 and "<script>lost" not in page.text
    assert "Traceback" not in page.text


def test_the_pages_need_a_login_and_are_in_the_navigation(scene):
    anonymous = scene.console.client()
    assert anonymous.get("/replays").status_code == 303 and anonymous.get("/api/notifications").status_code == 401
    page = scene.console.client("vera").get("/overview").text
    assert '<a href="/replays">Replays</a>' in page and '<a href="/notifications">Notifications</a>' in page
    paths = scene.console.api_client("vera")[0].get("/api/openapi.json").json()["paths"]
    assert "/api/replays" in paths and "/api/notifications" in paths


# ---- a real browser ------------------------------------------------------------------------------


def test_a_browser_shows_windows_replays_and_notifications_with_hostile_text_as_text(scene):
    with served_to_browsers(scene.console.app) as new_browser:
        browser = new_browser()
        browser.login("otto", PASSWORD)
        browser.open("/queues")
        title = browser.driver.title
        rows = browser.driver.find_elements(By.XPATH, "//h2[starts-with(., 'Items')]/following::table[1]/tbody/tr")
        waits = {row.find_elements(By.TAG_NAME, "td")[0].text: row.find_elements(By.TAG_NAME, "td")[7].text
                 for row in rows}
        assert waits[str(scene.urgent_archive)] == f"urgent waiting for window night until {when(AT_22)}"
        assert waits[str(scene.pacs_during_night)] == f"waiting for window night until {when(AT_22)}"
        assert waits[str(scene.lab_urgent)] == "urgent" and waits[str(scene.pacs_plain)] == ""
        sources = [row.find_elements(By.TAG_NAME, "td")[6].text for row in rows]
        assert f"main ({HOSTILE_AET})" in sources
        assert HOSTILE_DESTINATION in browser.text
        window_cells = browser.driver.find_elements(By.XPATH, "//td[@class='window']")
        assert any(cell.text.startswith(f"night closed until {when(AT_22)}") for cell in window_cells)
        browser.screenshot("queues-windows")

        browser.open("/replays")
        replay_rows = browser.driver.find_elements(By.XPATH, "//table[@class='replays']/tbody/tr")
        cells = {row.find_elements(By.TAG_NAME, "td")[0].text: [c.text for c in row.find_elements(By.TAG_NAME, "td")]
                 for row in replay_rows}
        assert cells[str(scene.half_way)][2] == HOSTILE_REQUESTER
        assert cells[str(scene.half_way)][3] == "v2 (<i>other</i>.rules)"
        assert cells[str(scene.half_way)][10] == "1 of 2 processed"
        assert cells[str(scene.finished)][10] == "finished"
        browser.screenshot("replays")

        browser.open("/notifications")
        notes = browser.driver.find_elements(By.XPATH, "//table[@class='notifications']/tbody/tr")
        by_id = {row.find_elements(By.TAG_NAME, "td")[0].text: [c.text for c in row.find_elements(By.TAG_NAME, "td")]
                 for row in notes}
        assert by_id[str(scene.dead)][6] == HOSTILE_REASON
        assert "PatientName" not in by_id[str(scene.dead)][7]
        assert "PatientName: DOE^JANE" in by_id[str(scene.with_patient)][7]
        browser.screenshot("notifications")
        # nothing hostile ran: no alert opened, the title is the page's own, no script error
        assert browser.driver.title == "Notifications · rulesengine console" and title.startswith("Queues")
        assert browser.problems() == []
