"""The Messages page and a trace in a real browser (chromium, headless, through Selenium), served
over a real socket, on a journal the router's pipeline filled: an operator searches by
Patient ID, opens the trace, and sees the rule-file lines and the edits' values; a viewer
sees the same trace with the patient's values masked. Screenshots go to test-results/console/."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from helpers.console import PASSWORD, USERS, served_to_browsers
from helpers.peers import free_port
from helpers.traffic import RULES, fill
from rulesengine.config import load_config
from rulesengine.console import masking
from rulesengine.console.app import create_app


@pytest.fixture
def site(tmp_path):
    traffic = fill(tmp_path, free_port())
    app = create_app(load_config(traffic.config_path, secrets=False), users=USERS)
    with served_to_browsers(app) as new_browser:
        yield traffic, new_browser


def test_an_operator_finds_an_instance_by_patient_id_and_reads_its_trace(site):
    traffic, new_browser = site
    browser = new_browser()
    browser.login("otto", PASSWORD)
    browser.open("/messages")
    assert browser.driver.find_elements(By.LINK_TEXT, "Messages")  # in the navigation bar
    browser.fill("patient_id", "123456")
    browser.click("//button[normalize-space()='Search']")
    browser.wait_for(lambda: "patient_id=123456" in browser.path)
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "table.messages tbody tr")
    assert len(rows) == 1 and "DOE^JOHN" in rows[0].text and "route" in rows[0].text
    browser.screenshot("messages")

    number = traffic.ids["ct_chest.dcm"]
    browser.click(f"//table[@class='messages']//a[normalize-space()='{number}']")
    browser.wait_for(lambda: browser.path == f"/messages/{number}")
    line = RULES.splitlines().index('    set DataSet.PatientName = "ANON^ANON"') + 1
    place = f"{traffic.folder / 'main.rules'}:{line}"
    links = [a.get_attribute("href") for a in browser.driver.find_elements(By.CSS_SELECTOR, "a.rule-line")
             if a.text == place]
    assert links and links[0].endswith(f"/rules#main.rules:{line}")  # named as the Rules page names it
    edit = browser.driver.find_element(By.XPATH, "//table[@class='edits']//tr[td[normalize-space()='DataSet.PatientName']]")
    assert [cell.text for cell in edit.find_elements(By.TAG_NAME, "td")][:3] == [
        "DataSet.PatientName", "DOE^JOHN", "ANON^ANON"]
    assert "The copy for RESEARCH" in browser.text and "PACS: delivered" in browser.text
    browser.driver.set_window_size(1280, 2000)  # the whole trace in the picture
    browser.screenshot("trace")


def test_a_viewer_reads_the_same_trace_with_the_patient_masked(site):
    traffic, new_browser = site
    viewer = new_browser()
    viewer.login("vera", PASSWORD)
    viewer.open(f"/messages/{traffic.ids['ct_chest.dcm']}")
    text = viewer.text
    assert "DOE^JOHN" not in text and "123456" not in text and "ANON^ANON" not in text
    assert masking.MASK in text and "GENERAL HOSPITAL" in text and "masked for your role" in text
    viewer.screenshot("trace-viewer")
