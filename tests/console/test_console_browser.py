"""The console in a real browser (chromium, headless, through Selenium), served over a real socket
beside a running router (`dicom-rules run`) with DCMTK's storescu and storescp as the peers: log
in; retry a dead delivery and see it arrive; release a quarantined instance; a viewer has no
buttons that change anything; a form whose CSRF token was taken out is refused. Each page's
screenshot is saved under test-results/console/."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from helpers.console import PASSWORD, USERS, router_folder, served_to_browsers
from helpers.files import SAMPLES
from helpers.peers import RouterProcess, StoreSCP, storescu, wait_until
from rulesengine.config import load_config
from rulesengine.console.app import NAVIGATION, create_app


@pytest.fixture
def site(tmp_path):
    config_path, listener_port, store_port = router_folder(tmp_path)
    router = RouterProcess(config_path, listener_port).start()
    peer = StoreSCP(tmp_path / "received", port=store_port)
    app = create_app(load_config(config_path, secrets=False), users=USERS)
    try:
        with served_to_browsers(app) as new_browser:
            yield router, peer, listener_port, new_browser
    finally:
        peer.stop()
        router.stop()


def test_an_operator_retries_a_dead_delivery_and_releases_a_quarantined_instance(site):
    router, peer, listener_port, new_browser = site
    assert storescu(listener_port, [SAMPLES / "ct_head.dcm"]).returncode == 0  # STORE is down: dies
    assert storescu(listener_port, [SAMPLES / "mr_knee.dcm"]).returncode == 0  # no rule routes an MR
    browser = new_browser()
    browser.open("/queues")
    assert browser.path.startswith("/login")  # no page without a session
    browser.screenshot("login")
    browser.login("otto", PASSWORD)
    assert browser.path == "/overview"  # the login page opened on its own starts on the overview

    def dead_listed() -> bool:
        browser.open("/queues?state=dead")
        return bool(browser.buttons("Retry"))

    browser.wait_for(dead_listed, timeout=30)
    browser.screenshot("queues")
    peer.start()
    browser.buttons("Retry")[0].click()
    wait_until(lambda: len(peer.files()) == 1, timeout=30, what="the retried delivery arrived at storescp")

    def delivered_shown() -> bool:
        browser.open("/queues?state=delivered")
        return bool(browser.driver.find_elements(By.XPATH, "//tbody//td[normalize-space()='delivered']"))

    browser.wait_for(delivered_shown)

    browser.wait_for(lambda: (browser.open("/quarantine"), bool(browser.buttons("Release")))[1], timeout=30)
    browser.screenshot("quarantine")
    browser.buttons("Release")[0].click()
    wait_until(lambda: router.output().count("quarantine: no rule routed this document") == 2, timeout=30,
               what="the router ran the rules on the released MR again")
    browser.open("/configuration")
    browser.screenshot("configuration")
    assert "STORESCP" in browser.text


def test_a_viewer_sees_no_action_and_a_form_without_its_csrf_token_is_refused(site):
    router, peer, listener_port, new_browser = site
    assert storescu(listener_port, [SAMPLES / "ct_head.dcm"]).returncode == 0
    viewer = new_browser()
    viewer.login("vera", PASSWORD)
    dead_row = "//tbody//td[normalize-space()='dead']"
    viewer.wait_for(lambda: (viewer.open("/queues?state=dead"), viewer.driver.find_elements(By.XPATH, dead_row))[1],
                    timeout=30)
    assert viewer.buttons("Retry") == [] and viewer.buttons("Retry dead") == [] and viewer.buttons("Pause") == []
    viewer.open("/quarantine")
    assert viewer.buttons("Release") == []

    operator = new_browser()
    operator.login("otto", PASSWORD)
    operator.wait_for(lambda: (operator.open("/queues?state=dead"), bool(operator.buttons("Retry")))[1], timeout=30)
    # The token taken out of the form the page served: the console refuses it and changes nothing.
    operator.driver.execute_script(
        "for (const f of document.querySelectorAll('input[name=csrf_token]')) f.remove();")
    operator.buttons("Retry")[0].click()
    operator.wait_for(lambda: operator.driver.title.startswith("Refused"))
    assert operator.driver.find_element(By.TAG_NAME, "h1").text == "403"
    operator.screenshot("csrf-refused")
    operator.open("/queues?state=dead")
    assert operator.buttons("Retry")  # still dead: nothing was retried


def test_an_admin_sees_every_page_of_the_navigation_without_an_error(site):
    """Every page the navigation links, as an admin sees it (a screenshot each), with nothing
    the browser refused (a style or script against the CSP) or failed to run."""
    router, peer, listener_port, new_browser = site
    peer.start()
    assert storescu(listener_port, [SAMPLES / "ct_head.dcm", SAMPLES / "mr_knee.dcm"]).returncode == 0
    admin = new_browser()
    admin.login("ada", PASSWORD)
    for path, title, _role in NAVIGATION:
        admin.open(path)
        assert admin.path.startswith(path), f"{path} went to {admin.path}"
        assert not admin.driver.title.startswith(("Refused", "Error")), (path, admin.text[:300])
        assert admin.driver.find_elements(By.CSS_SELECTOR, "nav a"), path
        admin.screenshot("page-" + path.strip("/").replace("/", "-"))
        assert admin.problems() == [], path
