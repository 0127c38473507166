"""A real browser for the console's tests: Debian's chromium, headless, driven by Selenium through
Debian's chromedriver (never a downloaded one). Screenshots go to test-results/console/."""

from __future__ import annotations

import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from helpers.files import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "test-results" / "console"


class Browser:
    """One headless chromium with a profile of its own (no cookies shared between two of them)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self._profile = tempfile.TemporaryDirectory(prefix="console-browser-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1280,900", f"--user-data-dir={self._profile.name}"):
            options.add_argument(argument)
        # The page's console messages (a script error, a style or script the CSP refused) for `problems`.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base_url)

    @property
    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def fill(self, name: str, value: str) -> None:
        field = self.driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    def click(self, xpath: str) -> None:
        self.driver.find_element(By.XPATH, xpath).click()

    def buttons(self, label: str) -> list:
        return self.driver.find_elements(By.XPATH, f"//button[normalize-space()='{label}']")

    def wait_for(self, predicate, timeout: float = 20) -> None:
        # a page replaced while the predicate reads it: read the new one at the next poll
        WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                      ignored_exceptions=(StaleElementReferenceException,)).until(lambda _driver: predicate())

    def login(self, name: str, password: str) -> None:
        self.open("/login")
        self.fill("name", name)
        self.fill("password", password)
        self.click("//button[@type='submit']")
        self.wait_for(lambda: not self.path.startswith("/login"))

    def problems(self) -> list[str]:
        """What the pages logged as errors since the last call: script errors, refused resources."""
        return [entry["message"] for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        self.driver.quit()
        self._profile.cleanup()
