"""The Overview page and its /api twin: its numbers are the journal's and the quarantine's; the
router shows as not running when its heartbeat is stale or it said it stopped; a refused
reload lists its findings with file:line, linked to the rules page; the chart is inline SVG;
nothing a destination or a listener is named is rendered as markup; the page has no inline
script (the CSP forbids it) and refreshes from static/live.js."""

from __future__ import annotations

import re
import time

import pytest

from helpers.console import ConsoleUnderTest
from rulesengine.console.pages.overview import CHART_BUCKETS
from rulesengine.runtime.router_status import STALE_SECONDS

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
def console(tmp_path):
    return ConsoleUnderTest(tmp_path)


def running_status(console, age: float = 1.0, state: str = "running", **extra) -> None:
    status = {"state": state, "heartbeat": console.clock.now - age, "pid": 4242, "started_at": console.clock.now - 600,
              "ruleset_version": "v-abc123", "last_reload": None,
              "listeners": [{"name": "main", "port": 11112, "associations": 2}], **extra}
    console.journal.write_status("node-a", status, now=status["heartbeat"])


def test_the_numbers_are_the_journals(console):
    for state in ("dead", "dead", "delivered", "queued"):  # (the helper claims all that waits)
        console.delivery("PACS", state)
    console.delivery("ARCHIVE", "queued")
    console.quarantined()
    console.quarantined("mr_knee.dcm")
    running_status(console)
    console.clock.now = time.time() + 1  # what was just journaled is within the last minute
    data = console.client("vera").get("/api/overview").json()
    destinations = {d["name"]: d for d in data["destinations"]}
    assert destinations["PACS"] == {"name": "PACS", "configured": True, "queued": 1, "sending": 0, "retrying": 0,
                                    "dead": 2, "depth": 1}
    assert destinations["ARCHIVE"]["depth"] == 1 and destinations["ARCHIVE"]["dead"] == 0
    assert data["received_per_minute"] == 5 and data["delivered_per_minute"] == 1
    assert data["quarantined"] == 2
    assert data["router"]["state"] == "running" and data["router"]["ruleset_version"] == "v-abc123"
    assert data["router"]["listeners"] == [{"name": "main", "port": 11112, "associations": 2}]
    # the chart's last bar holds them; 3 hours of 10 minutes
    assert len(data["chart"]["buckets"]) == CHART_BUCKETS
    assert data["chart"]["buckets"][-1]["received"] == 5 and data["chart"]["buckets"][-1]["delivered"] == 1
    assert sum(bucket["received"] for bucket in data["chart"]["buckets"][:-1]) == 0

    page = console.client("vera").get("/overview").text
    assert re.search(r'id="received-per-minute"[^>]*>5<', page) and re.search(r'id="quarantined"[^>]*>2<', page)
    assert "running" in page and "v-abc123" in page
    # an hour later, the last minute is quiet and the traffic is in an older bar
    console.clock.advance(3600)
    later = console.client("vera").get("/api/overview").json()
    assert later["received_per_minute"] == 0 and later["delivered_per_minute"] == 0
    assert sum(bucket["received"] for bucket in later["chart"]["buckets"]) == 5


@pytest.mark.parametrize("age, state", [(STALE_SECONDS + 1, "running"), (1.0, "stopped")])
def test_a_stale_heartbeat_or_a_stop_shows_the_router_not_running(console, age, state):
    running_status(console, age=age, state=state)
    data = console.client("vera").get("/api/overview").json()
    assert data["router"]["state"] == "not running" and data["router"]["running"] is False
    assert data["router"]["heartbeat_age"] == pytest.approx(age, abs=0.1)
    page = console.client("vera").get("/overview").text
    assert '<strong data-live=\'["router", "state"]\'>not running</strong>' in page


def test_without_any_status_the_router_is_not_running(console):
    page = console.client("vera").get("/overview").text
    assert ">not running<" in page and "never wrote its status" in page


def test_a_refused_reload_lists_its_findings_with_file_and_line(console):
    findings = [{"file": "rules/main.rules", "line": 7, "column": 3, "code": "E_UNKNOWN_DESTINATION",
                 "message": "route to NOWHERE: no such destination"},
                {"file": None, "line": None, "column": None, "code": "config", "message": "port: must be a number"}]
    running_status(console, last_reload={"time": console.clock.now - 5, "ok": False, "findings": findings})
    page = console.client("vera").get("/overview").text
    # linked to the line of the file on disk, which the Rules page shows beside the version in use
    assert '<a href="/rules#disk:rules/main.rules:7">rules/main.rules:7</a>' in page
    assert "E_UNKNOWN_DESTINATION" in page and "route to NOWHERE: no such destination" in page
    assert "port: must be a number" in page and "refused" in page
    assert console.client("vera").get("/api/overview").json()["router"]["last_reload"]["findings"] == [
        {**findings[0], "link": "/rules#disk:rules/main.rules:7"}, {**findings[1], "link": None}]
    running_status(console, last_reload={"time": console.clock.now, "ok": True, "findings": []})
    assert "in place" in console.client("vera").get("/overview").text


def test_the_chart_is_inline_svg_and_nothing_hostile_is_markup(console):
    console.delivery(HOSTILE, "queued")
    console.delivery(HOSTILE, "queued")
    running_status(console, listeners=[{"name": HOSTILE, "port": 104, "associations": 1}],
                   ruleset_version='"><img src=x onerror=alert(1)>',
                   last_reload={"time": 1.0, "ok": False, "findings": [
                       {"file": '"><script>x</script>', "line": 1, "column": 1, "code": "<b>", "message": HOSTILE}]})
    console.clock.now = time.time() + 1
    page = console.client("vera").get("/overview").text
    [svg] = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(re.findall(r'<rect class="bar-in"', svg)) == len(re.findall(r'<rect class="bar-out"', svg)) == CHART_BUCKETS
    tallest = re.findall(r'<rect class="bar-in" x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"', svg)[-1]
    assert float(tallest) > 0  # the bar of the two instances just received
    assert "<script>" not in page.replace('<script src="/static/live.js" defer></script>', "")
    assert "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # the data-live paths name the destination as JSON, escaped for the attribute
    assert "\\u003cscript\\u003e" in page
    # every script is the same-origin file: nothing inline
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/live.js" defer>']


def test_the_console_starts_on_the_overview_and_its_api_takes_no_parameters(console):
    client = console.client("vera")
    assert client.get("/").headers["location"] == "/overview"
    assert 'href="/overview"' in client.get("/queues").text  # first in the navigation
    answer = client.get("/api/overview", params={"hours": "1"})
    assert answer.status_code == 400 and "unknown parameter 'hours'" in answer.json()["error"]
    assert client.get("/static/live.js").status_code == 200
    assert console.client().get("/api/overview").status_code == 401


def test_in_a_browser_the_overview_refreshes_its_numbers_as_instances_arrive(tmp_path):
    """chromium beside a running router: the page, once loaded, shows an instance sent after it
    (static/live.js reads /api/overview), without being loaded again."""
    from selenium.webdriver.common.by import By

    from helpers.browser import Browser
    from helpers.console import PASSWORD, USERS, ServerThread, router_folder
    from helpers.files import SAMPLES
    from helpers.peers import RouterProcess, free_port, storescu
    from rulesengine.config import load_config
    from rulesengine.console.app import create_app

    config_path, listener_port, store_port = router_folder(tmp_path)
    console_port = free_port()
    router = RouterProcess(config_path, listener_port).start()
    browser = None
    try:
        with ServerThread(create_app(load_config(config_path, secrets=False), users=USERS), console_port):
            browser = Browser(f"http://127.0.0.1:{console_port}")
            browser.login("vera", PASSWORD)
            assert browser.path == "/overview"

            def figure(element_id: str) -> str:
                return browser.driver.find_element(By.ID, element_id).text

            browser.wait_for(lambda: "running" == browser.driver.find_element(
                By.CSS_SELECTOR, ".router strong").text, timeout=30)
            assert figure("received-per-minute") == "0"
            loaded = browser.driver.execute_script("return performance.timeOrigin")
            assert storescu(listener_port, [SAMPLES / "ct_head.dcm"]).returncode == 0
            browser.wait_for(lambda: figure("received-per-minute") == "1", timeout=30)
            # no store answers: the delivery dies, and the queue's dead count follows
            browser.wait_for(lambda: browser.driver.find_element(
                By.CSS_SELECTOR, "td[data-live='[\"destinations\", \"STORE\", \"dead\"]']").text == "1", timeout=30)
            assert browser.driver.execute_script("return performance.timeOrigin") == loaded  # the same page
            assert browser.driver.find_elements(By.CSS_SELECTOR, "figure.chart svg rect.bar-in")
            browser.screenshot("overview")
    finally:
        if browser is not None:
            browser.close()
        router.stop()


def test_several_routers_are_listed_and_a_difference_of_rules_is_shown(console):
    running_status(console)  # node-a, v-abc123
    now = console.clock.now
    for node, version, age in (("node-b", "v-def456", 1.0), ("node-c", "v-old", 3600.0)):
        console.journal.write_status(node, {"state": "running", "heartbeat": now - age, "ruleset_version": version},
                                     now=now - age)
    routers = console.client("vera").get("/api/overview").json()["routers"]
    assert {(n["node"], n["running"], n["ruleset_version"]) for n in routers["nodes"]} == {
        ("node-a", True, "v-abc123"), ("node-b", True, "v-def456"), ("node-c", False, "v-old")}
    assert routers["versions_differ"] is True
    page = console.client("vera").get("/overview").text
    assert "The running routers use different rule set versions." in page and "node-c" in page
    console.journal.write_status("node-b", {"state": "running", "heartbeat": now, "ruleset_version": "v-abc123"},
                                 now=now)
    assert console.client("vera").get("/api/overview").json()["routers"]["versions_differ"] is False
