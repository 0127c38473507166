"""The Rules page in a real browser (chromium, headless, through Selenium) beside a running router
(`dicom-rules run`): the rules it runs, highlighted, a line reached by its anchor; an operator
uploads a DICOM file through the page's file input and reads the dry-run's report, and the router
receives nothing; a viewer has no upload form. Screenshots go to test-results/console/."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from helpers.console import PASSWORD, USERS, router_folder, served_to_browsers
from helpers.files import bundled
from helpers.peers import RouterProcess
from rulesengine.config import load_config
from rulesengine.console.app import create_app


@pytest.fixture
def site(tmp_path):
    config_path, listener_port, store_port = router_folder(tmp_path)
    router = RouterProcess(config_path, listener_port).start()
    config = load_config(config_path, secrets=False)
    app = create_app(config, users=USERS)
    try:
        with served_to_browsers(app) as new_browser:
            yield app, new_browser
    finally:
        router.stop()


def test_an_operator_dry_runs_an_uploaded_file_against_the_rules_the_router_runs(site):
    app, new_browser = site
    journal = app.state.console.journal
    browser = new_browser()
    browser.login("otto", PASSWORD)
    browser.open("/rules")
    # The router's own version, as its status row names it.
    browser.wait_for(lambda: (browser.open("/rules"), "the version the router on" in browser.text)[1], timeout=30)
    version = journal.statuses()[0].status["ruleset_version"]
    assert version in browser.text
    line = browser.driver.find_element(By.ID, "main.rules:2")
    assert line.find_element(By.CSS_SELECTOR, ".tok-keyword").text == "when"
    assert line.find_element(By.CSS_SELECTOR, ".tok-string").text == '"CT"'
    # The highlighting comes from the style sheet (the CSP allows no inline style).
    colour = line.find_element(By.CSS_SELECTOR, ".tok-keyword").value_of_css_property("color")
    assert colour not in ("rgba(29, 31, 33, 1)", "rgb(29, 31, 33)")  # not the text's own colour
    browser.screenshot("rules")

    before = (journal.counts(), journal.search_instances())
    browser.driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(bundled("CT_small.dcm"))
    browser.buttons("Dry-run")[0].click()
    browser.wait_for(lambda: "Dry-run of CT_small.dcm" in browser.text)
    report = browser.driver.find_element(By.ID, "dry-run-report")
    assert report.find_element(By.CSS_SELECTOR, ".outcome").text == "route"
    fired = report.find_element(By.LINK_TEXT, "CT to the store")
    assert fired.get_attribute("href").endswith("#main.rules:1")
    assert "rule 'CT to the store' (line 1): fired" in report.text
    browser.screenshot("rules-dry-run")
    fired.click()  # the rule's line, marked by :target
    assert browser.path.endswith("#main.rules:1")
    target = browser.driver.find_element(By.ID, "main.rules:1")
    assert target.value_of_css_property("background-color") == "rgba(255, 244, 194, 1)"
    assert (journal.counts(), journal.search_instances()) == before  # the router got nothing

    viewer = new_browser()
    viewer.login("vera", PASSWORD)
    viewer.open("/rules")
    assert viewer.driver.find_elements(By.CSS_SELECTOR, "input[type=file]") == []
    assert viewer.driver.find_elements(By.ID, "main.rules:1")
