"""The dashboard's views (find jobs, one job, actions, fleet) in headless Chromium against a
real job API, ZooKeeper and executor: one browser and one stack for the whole module.

Includes the "three clicks" path: from the per-action table showing an action's failure
rate to the traceback of one of its failed jobs.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from nuvla_job.localstack.processes import executor_process
from tests.support.jobapi import JobApiProcess
from tests.support.needs import require
from tests.support.waiting import wait_for

WAIT = 30.0


@pytest.fixture(scope="module")
def stack(zookeeper) -> Iterator[tuple[JobApiProcess, Any, list[str], list[str]]]:
    """A job API sampling every second, an executor, and jobs it has run: (api, admin
    client, failed ids, succeeded ids)."""
    with JobApiProcess(zookeeper.hosts, "--dashboard-interval", "1") as api:
        api.wait_queue_connected()
        admin = api.admin_api()
        failed = [admin.add("job", {"action": "test_raises"}).data["resource-id"] for _ in range(3)]
        ok = [admin.add("job", {"action": "test_ok"}).data["resource-id"] for _ in range(4)]
        executor = executor_process(
            zookeeper.hosts, api.endpoint, str(api.credentials_path), "--name", "views-exec"
        ).start()
        try:
            executor.wait_for_log("running up to")
            wait_for(
                lambda: all(
                    admin.get(j).data["state"] in ("FAILED", "SUCCESS") for j in failed + ok
                ),
                "the jobs to run",
                timeout=WAIT,
            )
            yield api, admin, failed, ok
        finally:
            executor.signal(signal.SIGTERM)
            executor.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    require(webdriver is not None, "selenium is not installed (pip install -e '.[test]')")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    require(bool(chromium and driver_path), "Debian's chromium and chromium-driver are missing")
    tmp = tmp_path_factory.mktemp("views-browser")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp / 'profile'}",
    ):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(
            service=Service(driver_path, log_output=str(tmp / "driver.log")), options=options
        )
    except WebDriverException as exc:
        require(False, f"headless chromium cannot start here: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, stack):
    """The browser logged in as the admin on the stack's dashboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    api = stack[0]
    browser.get(f"{api.endpoint}/dashboard")
    wait(browser).until(EC.visibility_of_element_located((By.ID, "login-form")))
    creds = api.credentials()
    browser.find_element(By.ID, "login-name").send_keys(creds["key"])
    browser.find_element(By.ID, "login-secret").send_keys(creds["secret"])
    browser.find_element(By.ID, "login-submit").click()
    wait(browser).until(EC.visibility_of_element_located((By.ID, "nav")))
    return browser


def wait(browser) -> Any:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        browser,
        WAIT,
        poll_frequency=0.1,
        ignored_exceptions=[StaleElementReferenceException, NoSuchElementException],
    )


def css(browser, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, selector)


def test_three_clicks_from_a_failure_rate_to_a_traceback(page, stack) -> None:
    api, admin, failed, _ = stack
    page.get(f"{api.endpoint}/dashboard#/")
    wait(page).until(
        lambda d: d.find_element("tag name", "body").get_attribute("data-view") == "overview"
    )
    css(page, "#nav-actions").click()  # 1
    rate = '#actions-table tr[data-action="test_raises"] a.failure-rate'
    wait(page).until(lambda d: css(d, rate).text == "100.0%")
    css(page, rate).click()  # 2
    first = "#search-results tr[data-state=FAILED] a.id"
    wait(page).until(lambda d: len(d.find_elements("css selector", first)) == 3)
    job_id = css(page, first).text
    assert job_id in failed
    css(page, first).click()  # 3
    wait(page).until(lambda d: "Traceback" in css(d, "#job-message").text)
    message = css(page, "#job-message")
    assert "boom from the action" in message.text and "RuntimeError" in message.text
    assert "monospace" in message.value_of_css_property("font-family")
    assert message.value_of_css_property("white-space") == "pre-wrap"
    assert job_id in css(page, "#job-title").text
    assert css(page, "#job-actions button.retry").is_displayed()  # the rights allow it


def test_search_is_held_in_the_url_and_shared(page, stack) -> None:
    api, _, _, ok = stack
    page.get(f"{api.endpoint}/dashboard#/jobs")
    form = css(page, "#search-form")
    form.find_element("name", "action").send_keys("test_ok")
    from selenium.webdriver.support.ui import Select

    Select(form.find_element("name", "state")).select_by_visible_text("SUCCESS")
    css(page, "#search-submit").click()
    rows = "#search-results tr[data-id]"
    wait(page).until(
        lambda d: (
            {r.get_attribute("data-id") for r in d.find_elements("css selector", rows)} == set(ok)
        )
    )
    shared = page.current_url
    assert "action=test_ok" in shared and "state=SUCCESS" in shared
    # The same URL opened afresh shows the same jobs, its form filled in.
    page.get("about:blank")
    page.get(shared)
    wait(page).until(lambda d: len(d.find_elements("css selector", rows)) == len(ok))
    assert css(page, "#search-form [name=action]").get_attribute("value") == "test_ok"
    assert css(page, "#search-count").text == f"({len(ok)})"
    # A quote in a field is a value, not filter syntax.
    page.get(f"{api.endpoint}/dashboard#/jobs?action=x'%20or%20action!%3D'y")
    wait(page).until(lambda d: css(d, "#search-count").text == "(0)")
    assert css(page, "#search-error").text == ""


def test_a_bulk_parent_leads_to_its_children(page, stack) -> None:
    api, admin, _, _ = stack
    parent = admin.add("job", {"action": "bulk_test", "priority": 999}).data["resource-id"]
    children = [
        admin.add("job", {"action": "child_test", "parent-job": parent, "priority": 999}).data[
            "resource-id"
        ]
        for _ in range(2)
    ]
    admin.edit(children[0], {"state": "FAILED", "status-message": "child broke"})
    page.get(f"{api.endpoint}/dashboard#/{parent}")
    wait(page).until(lambda d: css(d, "#job-children-count").text == "(2)")
    states = css(page, "#job-children-states").text
    assert "FAILED: 1" in states and "QUEUED: 1" in states
    css(page, f'#job-children li[data-id="{children[0]}"] a').click()
    wait(page).until(lambda d: children[0] in css(d, "#job-title").text)
    assert css(page, "#job-message").text == "child broke"
    css(page, "#job-parent a").click()  # and back up
    wait(page).until(lambda d: parent in css(d, "#job-title").text)


def test_fleet_charts_draw_the_run(page, stack) -> None:
    api = stack[0]
    page.get(f"{api.endpoint}/dashboard#/fleet")
    wait(page).until(
        lambda d: (
            int(d.find_element("tag name", "body").get_attribute("data-fleet-points") or 0) > 0
        )
    )
    for chart in ("#chart-rate", "#chart-queue", "#chart-duration"):
        assert css(page, f"{chart} canvas").size["height"] > 50
    # The jobs the executor ran are in the data the charts draw.
    ended = page.execute_script(
        "return charts.rate.data.slice(1).flat().reduce((a, v) => a + (v || 0), 0)"
    )
    assert ended > 0
    labels = page.execute_script("return charts.rate.series.map((s) => s.label)")
    assert labels[1:] == ["SUCCESS", "FAILED", "CANCELED"]
    durations = page.execute_script(
        "return Object.keys(charts).filter((k) => k.startsWith('duration-'))"
    )
    assert any("test_raises" in k for k in durations)
