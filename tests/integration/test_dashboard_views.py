"""The dashboard's views (find jobs, one job, actions, fleet) in headless Chromium against a
real job API, ZooKeeper and executor: one browser and one stack for the whole module.

Includes the "three clicks" path: from the per-action table showing an action's failure
rate to the traceback of one of its failed jobs.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nuvla_job.localstack.processes import executor_process
from nuvla_job.timeutil import format_time
from tests.support.browser import WAIT, chromium, css, log_in, read_png
from tests.support.browser import waiting as wait
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for


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
    with chromium(tmp_path_factory.mktemp("views-browser")) as driver:
        yield driver


@pytest.fixture(scope="module")
def page(browser, stack):
    """The browser logged in as the admin on the stack's dashboard."""
    api = stack[0]
    creds = api.credentials()
    log_in(browser, api.endpoint, creds["key"], creds["secret"])
    return browser


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
    later = format_time(datetime.now(UTC) + timedelta(days=1))
    parent = admin.add("job", {"action": "bulk_test", "not-before": later}).data["resource-id"]
    children = [
        # Delayed: no executor takes them before the edit below.
        admin.add("job", {"action": "child_test", "parent-job": parent, "not-before": later}).data[
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


@pytest.fixture
def user_page(tmp_path) -> Iterator[Any]:
    """A second browser of its own, for a user who is not an administrator."""
    with chromium(tmp_path) as driver:
        yield driver


def test_a_user_sees_only_their_jobs_and_only_the_actions_their_rights_allow(
    user_page, stack
) -> None:
    api, admin, _, _ = stack
    viewer = api.user_api("viewer")
    uid = viewer.user_id
    # Delayed a day: they stay QUEUED, the stack's executor never takes them.
    tomorrow = format_time(datetime.now(UTC) + timedelta(days=1))
    later = {"not-before": tomorrow, "action": "viewer_action"}

    def add(acl: dict[str, list[str]], **change: Any) -> str:
        job = admin.add("job", {**later, "acl": acl}).data["resource-id"]
        if change:
            admin.edit(job, change)
        return job

    may_view = add({"view-data": [uid]})
    may_cancel = add({"manage": [uid]})
    failed = add({"view-data": [uid]}, state="FAILED", **{"status-message": "theirs broke"})
    others = [
        add({}, state="FAILED", **{"status-message": "Traceback: someone else's"}),
        add({}, state="SUCCESS"),
    ]
    mine = {may_view, may_cancel, failed}
    log_in(user_page, api.endpoint, "viewer", "pw-Secret-1", kind="password")

    # The search lists their jobs and nobody else's.
    rows = "#search-results tr[data-id]"
    user_page.get(f"{api.endpoint}/dashboard#/jobs")
    wait(user_page).until(
        lambda d: (
            {r.get_attribute("data-id") for r in d.find_elements("css selector", rows)} == mine
        )
    )
    assert css(user_page, "#search-count").text == "(3)"

    # Their job's page: no Cancel where they may only view; then someone else's job is
    # refused, and nothing of the page before stays.
    user_page.get(f"{api.endpoint}/dashboard#/{may_view}")
    wait(user_page).until(lambda d: may_view in css(d, "#job-title").text)
    assert user_page.find_elements("css selector", "#job-actions button.cancel") == []
    user_page.get(f"{api.endpoint}/dashboard#/{others[0]}")
    wait(user_page).until(lambda d: "may not see this job" in css(d, "#job-load-error").text)
    assert not css(user_page, "#job-body").is_displayed()
    assert css(user_page, "#job-title").text == others[0]
    assert "someone else" not in user_page.find_element("tag name", "body").text
    # Where they may manage the job, Cancel is offered.
    user_page.get(f"{api.endpoint}/dashboard#/{may_cancel}")
    wait(user_page).until(lambda d: css(d, "#job-actions button.cancel").is_displayed())
    assert css(user_page, "#job-load-error").text == ""

    # The per-action table counts their jobs only: three of the action's five.
    user_page.get(f"{api.endpoint}/dashboard#/actions")
    cell = '#actions-table tr[data-action="viewer_action"] td:nth-child(2)'
    wait(user_page).until(lambda d: css(d, cell).text == "3")
    assert admin.search("job", filter="action='viewer_action'", last=0).count == 5
    states = css(user_page, '#actions-table tr[data-action="viewer_action"]').text
    assert "FAILED 1" in states and "SUCCESS" not in states

    # The overview's latest jobs: theirs, with Cancel only on the one they may cancel.
    user_page.get(f"{api.endpoint}/dashboard#/")
    recent = "#jobs tr[data-id]"
    wait(user_page).until(
        lambda d: (
            {r.get_attribute("data-id") for r in d.find_elements("css selector", recent)} == mine
        )
    )
    cancels = {
        r.get_attribute("data-id")
        for r in user_page.find_elements("css selector", recent)
        if r.find_elements("css selector", "button.cancel")
    }
    assert cancels == {may_cancel}


# One screenshot per view, from this module's real run. Saved to the folder named by
# DASHBOARD_SCREENSHOTS (docs/img for the README and docs/dashboard.md), else checked only:
#   DASHBOARD_SCREENSHOTS=docs/img .venv/bin/pytest -q tests/integration/test_dashboard_views.py
SCREENSHOTS = ("jobs", "job", "actions", "fleet", "executor")


def _looks_drawn(path: Path) -> None:
    width, height, bpp, pixels = read_png(path.read_bytes())
    colours = {tuple(pixels[i : i + 3]) for i in range(0, len(pixels), bpp * 97)}
    assert width > 800 and height > 500 and len(colours) > 20, (path, len(colours))


def test_a_screenshot_of_each_view(page, stack, tmp_path) -> None:
    api, admin, failed, _ = stack
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    # An executor with two jobs in flight, for the executor's page and the running chart
    # (the stack's own executor is stopped after the module's first test, as every engine
    # process a test starts).
    executor = executor_process(
        api.zk_hosts, api.endpoint, str(api.credentials_path), "--name", "views-exec"
    ).start()
    executor.wait_for_log("running up to")
    running = [
        admin.add(
            "job",
            {"action": "test_progress", "priority": 10, "payload": '{"steps": 20, "step": 1}'},
        ).data["resource-id"]
        for _ in range(2)
    ]
    wait_for(
        lambda: all(admin.get(j).data.get("progress", 0) > 0 for j in running),
        "the two jobs to run",
        timeout=WAIT,
    )
    body = "tag name", "body"
    shots = {
        "jobs": (
            "#/jobs?state=FAILED",
            lambda d: len(d.find_elements("css selector", "#search-results tr[data-id]")) >= 3,
        ),
        "job": (f"#/{failed[0]}", lambda d: "Traceback" in css(d, "#job-message").text),
        "actions": ("#/actions", lambda d: css(d, '#actions-table tr[data-action="test_raises"]')),
        "fleet": (
            "#/fleet?window=300",
            lambda d: int(d.find_element(*body).get_attribute("data-fleet-points") or 0) > 5,
        ),
        "executor": (
            "#/executor/views-exec",
            lambda d: len(d.find_elements("css selector", "#executor-in-flight li")) == 2,
        ),
    }
    for name in SCREENSHOTS:
        hash_path, drawn = shots[name]
        page.get(f"{api.endpoint}/dashboard{hash_path}")
        wait(page).until(
            lambda d, name=name: d.find_element(*body).get_attribute("data-drawn") == name
        )
        wait(page).until(drawn)
        # Whole pages: the window as tall as the view's content.
        height = page.execute_script("return document.documentElement.scrollHeight")
        page.set_window_size(1400, min(max(700, height + 20), 2400))
        path = folder / f"dashboard-{name}.png"
        assert page.save_screenshot(str(path))
        _looks_drawn(path)
    page.set_window_size(1400, 1000)
    for job in running:
        admin.operation(admin.get(job), "cancel")
    executor.signal(signal.SIGTERM)
    executor.stop()
