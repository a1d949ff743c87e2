"""The dashboard driven in headless Chromium (tests/support/browser.py) against a real job
API, ZooKeeper and executor.

Set ``DASHBOARD_SCREENSHOT=docs/dashboard.png`` to also save the screenshot for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job.presence import ROOT
from tests.conftest import wipe
from tests.support.browser import HEIGHT, WAIT, WIDTH, chromium, log_in, read_png
from tests.support.jobapi import JobApiProcess

ENTRIES_RGB = (0x2F, 0x6F, 0xDE)  # the chart's entries line (style.css --entries)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path, (WIDTH, HEIGHT)) as driver:
        yield driver


def check_screenshot(path: Path, size: tuple[int, int]) -> None:
    data = path.read_bytes()
    width, height, bpp, pixels = read_png(data)
    assert (width, height) == size
    colours: dict[tuple[int, ...], int] = {}
    for i in range(0, len(pixels), bpp):
        rgb = tuple(pixels[i : i + 3])
        colours[rgb] = colours.get(rgb, 0) + 1
    background, most = max(colours.items(), key=lambda item: item[1])
    total = width * height
    assert len(colours) > 20, f"only {len(colours)} colours: a blank page?"
    assert total - most > total // 20, f"{total - most} of {total} pixels off the background"
    # The queue chart's line was drawn (the legend's key alone is far smaller).
    assert colours.get(ENTRIES_RGB, 0) > 300, colours.get(ENTRIES_RGB, 0)


# -- the test -------------------------------------------------------------------------------


def add(api: Api, action: str, priority: int, payload: dict[str, Any]) -> str:
    body = {"action": action, "priority": priority, "payload": json.dumps(payload)}
    return api.add("job", body).data["resource-id"]


@pytest.fixture
def leader(zk: KazooClient, zk_factory) -> Iterator[None]:
    """One contender, so one leader, in the election of a distribution "dash-dist" (joined
    after `zk` cleaned the tree)."""
    election = zk_factory().Election("/election/dash-dist", "leader-one")
    leave = threading.Event()
    thread = threading.Thread(target=election.run, args=(leave.wait,), daemon=True)
    thread.start()
    yield
    election.cancel()
    leave.set()
    thread.join(10)


def test_dashboard_end_to_end(
    browser,
    job_api: JobApiProcess,
    admin_api: Api,
    zk: KazooClient,
    start_executor,
    leader,
    tmp_path: Path,
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wipe(zk, ROOT)
    # Two long jobs with progress (taken first: lower priority value), three queued behind.
    running = [add(admin_api, "test_progress", 10, {"steps": 60, "step": 0.5}) for _ in range(2)]
    for _ in range(3):
        add(admin_api, "test_sleep", 500, {"seconds": 1})
    executor = start_executor("--concurrency", "2", "--name", "dash-exec", "--grace-period", "1")
    wait = WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )

    def text(selector: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, selector).text

    try:
        creds = job_api.credentials()
        log_in(browser, job_api.endpoint, creds["key"], creds["secret"])
        wait.until(EC.visibility_of_element_located((By.ID, "board")))

        # Queue depth: five entries, two of them taken; the chart has its lines.
        wait.until(lambda d: (text("#queue-entries"), text("#queue-taken")) == ("5", "2"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#queue-chart polyline")) == 2
        # The executor with its in-flight jobs, and the distribution's leader.
        executor_row = '#executors tr[data-name="dash-exec"]'
        wait.until(lambda d: all(job in text(executor_row) for job in running))
        assert text(f"{executor_row} td:nth-child(2)") == "2"  # its concurrency
        wait.until(lambda d: "leader-one" in text('#leaders tr[data-distribution="dash-dist"]'))

        # Recent jobs update live: the progress of a running job grows on the page.
        target = f'#jobs tr[data-id="{running[0]}"]'

        def progress() -> int:
            row = browser.find_element(By.CSS_SELECTOR, target)
            if row.get_attribute("data-state") != "RUNNING":
                return -1
            return int(row.find_element(By.TAG_NAME, "progress").get_attribute("value"))

        first = wait.until(lambda d: (p := progress()) > 0 and p)
        wait.until(lambda d: progress() > first)

        # Cancel from the page (it asks for confirmation first).
        def click_cancel(driver) -> bool:
            driver.find_element(By.CSS_SELECTOR, f"{target} button.cancel").click()
            return True

        wait.until(click_cancel)
        wait.until(EC.alert_is_present()).accept()
        wait.until(
            lambda d: (
                browser.find_element(By.CSS_SELECTOR, target).get_attribute("data-state")
                == "CANCELED"
            )
        )
        assert admin_api.get(running[0]).data["state"] == "CANCELED"
        assert admin_api.get(running[1]).data["state"] == "RUNNING"

        # Let one more poll land after the cancel, then take the screenshot.
        polls = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-polls"))
        wait.until(
            lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-polls")) > polls
        )
        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        size = browser.execute_script("return [window.innerWidth, window.innerHeight]")
        check_screenshot(shot, tuple(size))
        if os.environ.get("DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["DASHBOARD_SCREENSHOT"])
    finally:
        # Twice: the second request releases running jobs at once instead of waiting.
        executor.signal(signal.SIGTERM)
        executor.wait_for_log("stopping")
        executor.signal(signal.SIGTERM)


def test_dashboard_shows_the_failed_jobs_and_retries_one(browser, fresh_api: JobApiProcess) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = fresh_api.admin_api()
    queued = add(api, "test_ok", 500, {})
    failed = add(api, "test_ok", 500, {})
    api.edit(failed, {"state": "FAILED", "status-message": "RuntimeError: it broke"})
    wait = WebDriverWait(
        browser, WAIT, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
    )

    def rows() -> dict[str, Any]:
        found = browser.find_elements(By.CSS_SELECTOR, "#jobs tr[data-id]")
        return {row.get_attribute("data-id"): row for row in found}

    creds = fresh_api.credentials()
    log_in(browser, fresh_api.endpoint, creds["key"], creds["secret"])
    wait.until(lambda d: set(rows()) == {queued, failed})
    # A Retry button on the FAILED job only.
    assert rows()[queued].find_elements(By.CSS_SELECTOR, "button.retry") == []
    assert len(rows()[failed].find_elements(By.CSS_SELECTOR, "button.retry")) == 1

    browser.find_element(By.ID, "jobs-failed").click()  # the dead letters only
    wait.until(lambda d: set(rows()) == {failed})
    assert "RuntimeError: it broke" in rows()[failed].text

    def click_retry(driver) -> bool:
        rows()[failed].find_element(By.CSS_SELECTOR, "button.retry").click()
        return True

    wait.until(click_retry)
    wait.until(lambda d: set(rows()) == set())  # queued again: no longer FAILED
    job = api.get(failed).data
    assert job["state"] == "QUEUED" and "not-before" in job  # the scheduler's to queue
    browser.find_element(By.ID, "jobs-failed").click()
    wait.until(lambda d: set(rows()) == {queued, failed})
