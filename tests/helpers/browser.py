"""Debian's headless Chromium through its chromedriver, for the pages' browser tests (nothing is downloaded: no
Selenium Manager, no network), and the A/B annotation page as an annotator uses it."""

import os
import socket
from typing import Optional

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def browser_missing() -> Optional[str]:
    """Why no browser test can run here (None when Chromium, its driver and selenium are installed)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_driver(user_data_dir, width: int = 1200, height: int = 1400):
    """A headless Chromium with its own empty profile and no background networking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    return driver


class AnnotationPage:
    """The page as an annotator uses it: key presses and clicks, reading what it shows."""

    def __init__(self, driver, url):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.By = driver, By
        self.wait = lambda condition, timeout=60: WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
        driver.get(url)
        self.wait(lambda d: "pair " in self.text("#progress"))

    def text(self, css):
        found = self.driver.find_elements(self.By.CSS_SELECTOR, css)
        return found[0].text if found else ""

    def response(self, n):
        return self.driver.find_element(self.By.CSS_SELECTOR, f"#response-{n} textarea").get_attribute("value")

    def checked(self, aspect):
        found = self.driver.find_elements(self.By.CSS_SELECTOR, f"#aspect-{aspect} input:checked")
        return found[0].get_attribute("value") if found else None

    def keys(self, *keys):
        from selenium.webdriver.common.action_chains import ActionChains

        for key in keys:
            ActionChains(self.driver).send_keys(key).perform()

    def click(self, css):
        self.driver.find_element(self.By.CSS_SELECTOR, css).click()

    def saved(self, position, total):
        """Wait until the page says pair `position` is saved (it then shows the next pair)."""
        self.wait(lambda d: f"Saved pair {position}." in self.text("#status"))
        self.wait(lambda d: f"pair {position + 1} of {total}" in self.text("#progress"))
