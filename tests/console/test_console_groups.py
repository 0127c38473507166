"""The Queues page's pending groups (group rules): each open group with its rule, its instances
and when its timer fires, on a real journal; names escaped; a fired group no longer listed; the
same in a real browser (screenshot under test-results/console/)."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from helpers.console import PASSWORD, ConsoleUnderTest, served_to_browsers
from rulesengine.arrival import Arrival
from rulesengine.runtime.journal import DONE, Outcome

HOSTILE_RULE = 'AI <script>alert("x")</script>'


def hold(console: ConsoleUnderTest, rule: str, study: str, series: str | None, count: int, quiet: float) -> int:
    """`count` instances held in the group of `rule` for this study (series); returns the group's number."""
    now = console.clock()
    group = None
    for number in range(count):
        instance_id = console.journal.record(
            Arrival(source_kind="listener", source_name="main", calling_aet="MR1",
                    sop_instance_uid=f"{study}.{number}", received_at=now),
            f"/spool/in/{study}.{number}.dcm", Outcome("v1", "held", "held for its group", (), ()), DONE)
        group = console.journal.join_group(rule, "v1", "series" if series else "study", study, series, instance_id,
                                           quiet, now=now).group
    return group.id


def test_the_queues_page_lists_pending_groups_with_their_instances_and_timers(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    big = hold(console, HOSTILE_RULE, "1.2.826.0.1.1", None, 25, 600)
    small = hold(console, "series to the lab", "1.2.826.0.1.2", "1.2.826.0.1.2.7", 2, 60)
    fired = hold(console, "fired one", "1.2.826.0.1.3", None, 1, 60)
    console.journal.claim_group(fired, now=console.clock())
    console.journal.fire_group(fired, [], now=console.clock())
    console.clock.advance(30)

    client, _ = console.api_client("vera")  # a viewer may look
    groups = client.get("/api/queues").json()["groups"]
    assert [group["id"] for group in groups] == [small, big]  # the next to fire first
    lab, study = groups
    assert (lab["rule"], lab["level"], lab["series_uid"], lab["instances"], lab["due_in"]) == (
        "series to the lab", "series", "1.2.826.0.1.2.7", 2, 30)
    assert (study["rule"], study["level"], study["series_uid"], study["instances"], study["due_in"]) == (
        HOSTILE_RULE, "study", None, 25, 570)
    assert len(study["members"]) == 20 and study["members"][0]["sop_instance_uid"] == "1.2.826.0.1.1.0"

    page = console.client("vera").get("/queues").text
    assert "Pending groups" in page and "fired one" not in page
    assert "<script>alert" not in page and "AI &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "in 30 s" in page and "in 570 s" in page and "and 5 more" in page
    assert 'href="/messages/' in page

    console.clock.advance(40)
    assert "due now" in console.client("vera").get("/queues").text


def test_a_browser_shows_the_pending_groups(tmp_path):
    console = ConsoleUnderTest(tmp_path)
    hold(console, "AI: brain MR", "1.2.826.0.1.9", None, 3, 300)
    with served_to_browsers(console.app) as new_browser:
        browser = new_browser()
        browser.open("/login")
        browser.login("vera", PASSWORD)
        browser.open("/queues#groups")
        rows = browser.driver.find_elements(By.XPATH, "//table[@class='groups']/tbody/tr[not(@class='members')]")
        assert len(rows) == 1
        cells = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "td")]
        assert cells[1:5] == ["AI: brain MR", "study", "1.2.826.0.1.9", "3"]
        assert cells[7].startswith("in 300 s")
        links = browser.driver.find_elements(By.XPATH, "//tr[@class='members']//a")
        assert [link.text for link in links] == ["1.2.826.0.1.9.0", "1.2.826.0.1.9.1", "1.2.826.0.1.9.2"]
        assert browser.problems() == []
        browser.screenshot("queues-groups")
