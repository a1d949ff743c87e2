"""The dashboard's JSON endpoints and page, against the real job API and ZooKeeper (no
browser: see test_dashboard_browser.py for the page driven in Chromium)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from kazoo.client import KazooClient

from nuvla_job import queue
from nuvla_job.api.dashboard import STATIC_DIR
from nuvla_job.presence import ROOT, ExecutorPresence
from tests.conftest import wipe
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for

WAIT = 15.0
TIMEOUT = 10.0  # each request's
ENDPOINTS = ("queue", "executors", "leaders", "fleet")


def login_key(api: JobApiProcess) -> requests.Session:
    creds = api.credentials()
    session = requests.Session()
    response = session.post(
        f"{api.endpoint}/api/session",
        json={
            "template": {
                "href": "session-template/api-key",
                "key": creds["key"],
                "secret": creds["secret"],
            }
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return session


@pytest.fixture
def admin(job_api: JobApiProcess, zk: KazooClient) -> requests.Session:
    """An admin's HTTP session (cookie from an API-key login) on a clean ZooKeeper tree."""
    wipe(zk, ROOT)
    job_api.wait_queue_connected()
    return login_key(job_api)


def get(session: requests.Session, api: JobApiProcess, name: str) -> dict[str, Any]:
    response = session.get(f"{api.endpoint}/api/dashboard/{name}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENDPOINTS)
def test_anonymous_gets_401(job_api: JobApiProcess, name: str) -> None:
    response = requests.get(f"{job_api.endpoint}/api/dashboard/{name}", timeout=TIMEOUT)
    assert response.status_code == 401
    assert "POST /api/session" in response.json()["message"]


def login_user(api: JobApiProcess, name: str) -> requests.Session:
    """A new user's HTTP session (password login); the user is added first."""
    result = api.cli("add-user", name, "--password", "pw-Secret-1")
    assert result.returncode == 0, result.stderr
    user = requests.Session()
    response = user.post(
        f"{api.endpoint}/api/session",
        json={
            "template": {
                "href": "session-template/password",
                "username": name,
                "password": "pw-Secret-1",
            }
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 201, response.text
    return user


def test_other_users_get_403_and_admins_200(job_api: JobApiProcess, admin) -> None:
    user = login_user(job_api, "dash-user")
    for name in ENDPOINTS:
        response = user.get(f"{job_api.endpoint}/api/dashboard/{name}", timeout=TIMEOUT)
        assert response.status_code == 403, (name, response.text)
        assert "administrators" in response.json()["message"]
        get(admin, job_api, name)


# -- the views ------------------------------------------------------------------------------


def test_queue_depth_is_sampled_over_time(job_api: JobApiProcess, admin, zk: KazooClient) -> None:
    for _ in range(3):
        response = admin.post(f"{job_api.endpoint}/api/job", json={"action": "test_ok"})
        assert response.status_code == 201, response.text
    entries = zk.get_children(queue.ENTRIES)
    zk.create(f"{queue.TAKEN}/{entries[0]}", ephemeral=True, makepath=True)
    started = time.time()

    def fresh() -> list[dict[str, Any]]:
        samples = get(admin, job_api, "queue")["samples"]
        return [s for s in samples if s["time"] >= started]

    sample = wait_for(fresh, "a sample after the adds")[-1]
    assert (sample["entries"], sample["taken"]) == (3, 1)
    body = get(admin, job_api, "queue")
    assert body["interval"] > 0
    times = [s["time"] for s in body["samples"]]
    assert times == sorted(times)
    # A ring buffer: a second sample comes within about one interval.
    wait_for(lambda: len(fresh()) >= 2, "a second sample", timeout=3 * body["interval"] + 5)


def test_executors_lists_presence_nodes(
    job_api: JobApiProcess, admin, zk: KazooClient, zk_factory
) -> None:
    assert get(admin, job_api, "executors") == {"count": 0, "executors": []}
    presence = ExecutorPresence()
    presence.start(
        zk_factory(),
        {
            "name": "exec-1",
            "host": "h1",
            "pid": 10,
            "concurrency": 4,
            "started": "2026-01-01T00:00:00Z",
        },
    )
    zk.create(f"{ROOT}/garbage-1", b"not json", makepath=True)
    try:
        presence.set_in_flight(["job/1", "job/2"])

        def listed() -> list[dict[str, Any]]:
            body = get(admin, job_api, "executors")
            return [e for e in body["executors"] if e.get("in-flight") == ["job/1", "job/2"]]

        executor = wait_for(listed, "the executor with its jobs")[0]
        assert executor["name"] == "exec-1" and executor["concurrency"] == 4
        assert executor["in-flight-count"] == 2
        assert executor["node"] == presence.path.rsplit("/", 1)[1]
        body = get(admin, job_api, "executors")
        assert body["count"] == 2
        assert {"node": "garbage-1", "error": "unreadable presence data"} in body["executors"]
    finally:
        presence.stop()
    assert [e["node"] for e in get(admin, job_api, "executors")["executors"]] == ["garbage-1"]


@pytest.fixture
def contenders(zk_factory) -> Iterator[Callable[[str, str], threading.Event]]:
    """Join kazoo elections (one client each, as distributors do); all leave after the test."""
    started: list[tuple[threading.Event, threading.Thread, Any]] = []

    def join(path: str, identifier: str) -> threading.Event:
        election = zk_factory().Election(path, identifier)
        leave = threading.Event()
        thread = threading.Thread(target=election.run, args=(leave.wait,), daemon=True)
        thread.start()
        started.append((leave, thread, election))
        return leave

    yield join
    for leave, thread, election in started:
        election.cancel()
        leave.set()
        thread.join(10)


def test_leaders_read_kazoo_elections(
    job_api: JobApiProcess, admin, zk: KazooClient, contenders
) -> None:
    assert get(admin, job_api, "leaders") == {"distributions": []}
    assert zk.exists("/election") is None  # reading created nothing
    first = contenders("/election/alpha", "node-one")
    wait_for(
        lambda: zk.exists("/election/alpha") and zk.get_children("/election/alpha"),
        "the first contender",
    )
    contenders("/election/alpha", "node-two")
    contenders("/election/beta", "node-two")

    def both() -> list[dict[str, Any]]:
        found = get(admin, job_api, "leaders")["distributions"]
        counts = [len(d["contenders"]) for d in found]
        return found if counts == [2, 1] else []

    alpha, beta = wait_for(both, "both elections")
    assert alpha == {
        "distribution": "alpha",
        "leader": "node-one",
        "contenders": ["node-one", "node-two"],
    }
    assert beta == {"distribution": "beta", "leader": "node-two", "contenders": ["node-two"]}
    first.set()  # the leader returns from its leadership: the next contender leads

    def alpha_leader() -> str | None:
        return get(admin, job_api, "leaders")["distributions"][0]["leader"]

    wait_for(lambda: alpha_leader() == "node-two", "node-two leading alpha")


# -- the page --------------------------------------------------------------------------------


def test_page_and_its_files_come_from_this_server(job_api: JobApiProcess) -> None:
    page = requests.get(f"{job_api.endpoint}/dashboard", timeout=TIMEOUT)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    # Files of this server, a data: icon, and the views' in-page (#/...) links only.
    assert links and all(link.startswith(("/", "data:", "#/")) for link in links), links
    for link in (x for x in links if x.startswith("/")):
        response = requests.get(f"{job_api.endpoint}{link}", timeout=TIMEOUT)
        assert response.status_code == 200, link
        assert (
            response.content == (STATIC_DIR / link.removeprefix("/dashboard/static/")).read_bytes()
        )
    # Nothing in the page's code loads from another host (the SVG namespace is no URL).
    for path in (p for p in STATIC_DIR.glob("*.*") if p.is_file()):
        urls = re.findall(r"https?://[^\s\"'`)]+", path.read_text())
        assert urls in ([], ["http://www.w3.org/2000/svg"]), (path.name, urls)
    missing = requests.get(f"{job_api.endpoint}/dashboard/static/nope.js", timeout=TIMEOUT)
    assert missing.status_code == 404


def test_zookeeper_views_answer_503_while_it_is_away(
    job_api: JobApiProcess, admin, zookeeper
) -> None:
    health = f"{job_api.endpoint}/api/health"
    zookeeper.stop()
    try:
        wait_for(
            lambda: requests.get(health, timeout=5).status_code == 503, "the job API to notice"
        )
        for name in ("executors", "leaders"):
            response = admin.get(f"{job_api.endpoint}/api/dashboard/{name}")
            assert response.status_code == 503, response.text
            assert "ZooKeeper" in response.json()["message"]
        assert get(admin, job_api, "queue")["interval"] > 0  # the samples taken so far
        # Recent jobs do not depend on ZooKeeper.
        assert admin.get(f"{job_api.endpoint}/api/job?last=1").status_code == 200
    finally:
        zookeeper.start()
    job_api.wait_queue_connected()


# -- the per-action table and the fleet ----------------------------------------------------


def test_actions_table_counts_what_each_caller_may_see(job_api: JobApiProcess, admin) -> None:
    user = login_user(job_api, "dash-table-user")
    user_id = user.get(f"{job_api.endpoint}/api/session", timeout=TIMEOUT).json()["resources"][0][
        "identifier"
    ]
    action = f"dash_table_{time.time_ns()}"
    shared = {"owners": ["group/nuvla-admin"], "view-data": [user_id], "manage": [user_id]}
    made = []
    for n in range(4):
        body: dict[str, Any] = {"action": action}
        if n < 2:
            body["acl"] = shared
        response = admin.post(f"{job_api.endpoint}/api/job", json=body, timeout=TIMEOUT)
        assert response.status_code == 201, response.text
        made.append(response.json()["resource-id"])
    # One of the user's jobs and one of the admin's fail, one of the admin's succeeds.
    for job_id, state in ((made[0], "FAILED"), (made[2], "FAILED"), (made[3], "SUCCESS")):
        response = admin.put(
            f"{job_api.endpoint}/api/{job_id}", json={"state": state}, timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text

    def row(session: requests.Session) -> dict[str, Any]:
        response = session.get(
            f"{job_api.endpoint}/api/dashboard/actions?period=600", timeout=TIMEOUT
        )
        assert response.status_code == 200, response.text
        return next(r for r in response.json()["actions"] if r["action"] == action)

    everything = row(admin)
    assert everything["states"] == {"FAILED": 2, "SUCCESS": 1, "QUEUED": 1}
    assert everything["failure-rate"] == pytest.approx(2 / 3)
    mine = row(user)
    assert mine["states"] == {"FAILED": 1, "QUEUED": 1}
    assert mine["failure-rate"] == 1.0
    anonymous = requests.get(f"{job_api.endpoint}/api/dashboard/actions", timeout=TIMEOUT)
    assert anonymous.status_code == 401
    for bad in ("period=abc", "period=5", "period=nan", "since=-1"):
        response = admin.get(f"{job_api.endpoint}/api/dashboard/actions?{bad}", timeout=TIMEOUT)
        assert response.status_code == 400, (bad, response.text)
        assert "seconds" in response.json()["message"]


def test_an_admins_table_of_a_day_or_more_is_kept_for_a_minute(
    job_api: JobApiProcess, admin
) -> None:
    action = f"dash_kept_{time.time_ns()}"

    def table(query: str) -> dict[str, Any]:
        response = admin.get(f"{job_api.endpoint}/api/dashboard/actions?{query}", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        return response.json()

    def counted(answer: dict[str, Any]) -> int:
        return sum(r["count"] for r in answer["actions"] if r["action"] == action)

    first = table("period=86400")
    assert counted(first) == 0
    response = admin.post(f"{job_api.endpoint}/api/job", json={"action": action}, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    # The same day's table again: the one made a moment ago, saying so by its `until`.
    again = table("period=86400")
    assert again == first
    # An hour is read afresh, and so is any explicit span, however long.
    assert counted(table("period=3600")) == 1
    now = time.time()
    assert counted(table(f"since={now - 86400}&until={now + 1}")) == 1


def test_fleet_samples_count_the_jobs_that_ended(job_api: JobApiProcess, admin) -> None:
    action = f"dash_fleet_{time.time_ns()}"
    started = time.time()
    for _ in range(3):
        response = admin.post(f"{job_api.endpoint}/api/job", json={"action": action})
        job_id = response.json()["resource-id"]
        admin.put(f"{job_api.endpoint}/api/{job_id}", json={"state": "RUNNING"})
        admin.put(f"{job_api.endpoint}/api/{job_id}", json={"state": "FAILED"})

    def ended() -> int | None:
        body = get(admin, job_api, "fleet")
        if action not in body["actions"]:
            return None
        return sum(b["ended"]["FAILED"] for b in body["buckets"] if b["time"] >= started)

    assert wait_for(ended, "the failures in a fleet sample", timeout=30) >= 3
    body = get(admin, job_api, "fleet")
    bucket = next(b for b in body["buckets"] if action in b["durations"])
    assert bucket["durations"][action]["p50"] == 0  # whole seconds
    assert bucket["rate"]["FAILED"] > 0 and bucket["running"] is not None
    response = admin.get(f"{job_api.endpoint}/api/dashboard/fleet?window=1", timeout=TIMEOUT)
    assert response.status_code == 400
