"""The page at / in a real headless browser: Debian's Chromium, driven by Selenium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from darec.serve import Recommender

from .conftest import served

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "the browser test needs Chromium and its driver: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them (.ci/run): missing there is a failure, not a skip
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # a given driver: nothing is downloaded
    yield driver
    driver.quit()


def test_the_page_builds_a_history_and_shows_recommendations(browser, recommender: Recommender, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    item, title = recommender.item_ids[5], recommender.titles[5]
    name = f"{title} ({item})"
    with served(recommender.run_dir) as (url, _):
        browser.get(url)
        wait.until(lambda d: f"{recommender.n_items} items" in d.find_element(By.ID, "about").text)
        browser.find_element(By.ID, "query").send_keys(title)

        def pick(driver) -> bool:  # the list is redrawn as the search answers: retry on a stale element
            try:
                found = [li for li in driver.find_elements(By.CSS_SELECTOR, "#found li") if li.text == name]
                return bool(found) and found[0].click() is None
            except StaleElementReferenceException:
                return False

        wait.until(pick)
        expected = [f"{r['title']} ({r['item']})" for r in recommender.top_k([item], k=10)]
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recs li .name")) == 10)
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#recs li .name")] == expected
        assert browser.find_element(By.CSS_SELECTOR, "#history li").text.startswith(name)
        screenshot = tmp_path / "page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 5000
        print(f"screenshot: {screenshot}")
