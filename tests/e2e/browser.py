"""Headless Chromium for the dashboard's tests, and what they check on every page."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import services

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextmanager
def headless_chromium(*args: str, network_log: bool = False) -> Iterator[Any]:
    """A Selenium driver of Debian's Chromium (``make browser``), with ``args`` added to its command line; its
    console log is kept, and with ``network_log`` its network log too (``driver.get_log("performance")``)."""
    services.require(CHROMIUM.is_file() and CHROMEDRIVER.is_file(), f"{CHROMIUM} and {CHROMEDRIVER} are not "
                     "installed (Debian: apt install chromium chromium-driver; `make browser`)")
    services.require(importlib.util.find_spec("selenium") is not None, "selenium (pip install -e .[dev]) is not "
                     "installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--disable-extensions", "--no-first-run", *args):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", **({"performance": "ALL"} if network_log else {})})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 15) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException as e:
        raise AssertionError(f"{what}: not within {timeout} s at {driver.current_url}") from e


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[no-any-return]


def check_page(driver: Any) -> None:
    """No error in the console, and everything the page loaded came from this server."""
    logs = driver.get_log("browser")  # test_the_console_check_sees_errors: this endpoint works here
    severe = [entry["message"] for entry in logs if entry.get("level") == "SEVERE"]
    assert not severe, f"{driver.current_url}: errors in the console: {severe}"
    foreign = driver.execute_script("""
        const urls = [...document.querySelectorAll('script[src], img[src]')].map(e => e.src)
          .concat([...document.querySelectorAll('link[href]')].map(e => e.href))
          .concat(performance.getEntriesByType('resource').map(e => e.name));
        return urls.filter(u => new URL(u, location.href).origin !== location.origin);""")
    assert foreign == [], f"{driver.current_url} loads from elsewhere: {foreign}"
