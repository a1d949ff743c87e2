"""The public Python client (nuvla_job/client.py) against the real job API, ZooKeeper and
executor processes: submit, wait, progress, cancel, batches, and what waiting costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from nuvla.api import Api

from nuvla_job.client import (
    BatchError,
    Client,
    ClientError,
    JobFailed,
    JobNotFound,
    WaitTimeout,
)
from nuvla_job.localstack.processes import REPO
from nuvla_job.timeutil import format_time, parse_time
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for


@pytest.fixture
def client(job_api: JobApiProcess, admin_api: Api) -> Iterator[Client]:
    with Client.from_credentials_file(job_api.credentials_path) as client:
        yield client


def wait_requests(job_api: JobApiProcess) -> float:
    """POST /api/job/wait requests the job API has answered so far (its own counter)."""
    text = requests.get(f"{job_api.endpoint}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("nuvla_job_http_requests_total{") and 'route="/api/job/wait"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_submit_and_wait_for_the_result(client: Client, start_executor) -> None:
    start_executor()
    job = client.submit("test_sleep", payload={"seconds": 1}, priority=10, tags=["mine"])
    result = job.wait(timeout=30)
    assert result.succeeded and result.state == "SUCCESS"
    assert result.id == job.id and result.return_code == 0
    assert result.duration is not None and 0 <= result.duration <= 5
    assert result.job["priority"] == 10 and "mine" in result.job["tags"]
    assert json.loads(result.job["payload"]) == {"seconds": 1}
    assert job.state == "SUCCESS"  # the handle saw it
    # Waiting again on a final job answers at once.
    started = time.monotonic()
    assert job.wait(timeout=5) == result
    assert time.monotonic() - started < 2


def test_a_delayed_job_runs_after_its_delay(client: Client, start_executor) -> None:
    start_executor("--distributions")  # the scheduler, which queues delayed jobs
    submitted = datetime.now(UTC)
    job = client.submit("test_ok", delay=1.5)
    not_before = parse_time(job.refresh().doc["not-before"])
    assert 1.4 <= (not_before - submitted).total_seconds() <= 3
    result = job.wait(timeout=30)
    assert result.succeeded
    assert parse_time(result.job["started"]) >= not_before
    at = datetime.now(UTC) + timedelta(hours=1)
    later = client.submit("test_ok", at=at).refresh()
    assert later.doc["not-before"] == format_time(at) and later.state == "QUEUED"
    with pytest.raises(ValueError, match="delay= or at="):
        client.submit("test_ok", delay=1, at=at)
    with pytest.raises(ValueError, match="delay must be a number of seconds"):
        client.submit("test_ok", delay=-1)


def test_a_failed_job_is_returned_or_raised_when_asked(client: Client, start_executor) -> None:
    start_executor()
    job = client.submit("test_fail_code")
    result = job.wait(timeout=30)
    assert (result.state, result.return_code, result.succeeded) == ("FAILED", 3, False)
    with pytest.raises(JobFailed) as failed:
        job.wait(timeout=5, raise_on_failure=True)
    assert failed.value.result == result
    assert str(failed.value) == f"{job.id} FAILED (return code 3)"
    raising = client.submit("test_raises")
    with pytest.raises(JobFailed, match="RuntimeError: boom from the action"):
        raising.wait(timeout=30, raise_on_failure=True)


def test_progress_reports_each_change_until_the_end(client: Client, start_executor) -> None:
    start_executor()
    job = client.submit("test_progress", payload={"steps": 5, "step": 0.3})
    steps = list(job.progress(timeout=30))
    assert steps[-1].state == "SUCCESS" and steps[-1].final and steps[-1].progress == 100
    assert {s.state for s in steps} <= {"QUEUED", "RUNNING", "SUCCESS"}
    seen = [s.progress for s in steps if s.state == "RUNNING"]
    assert {20, 40, 60, 80} <= set(seen), steps
    assert seen == sorted(seen)
    assert len(steps) == len(set(steps))  # one report per change


def test_cancel_a_queued_job_and_wait_for_it(client: Client) -> None:
    job = client.submit("test_ok", mode="pull")  # no executor runs pull jobs
    assert job.refresh().state == "QUEUED"
    waiter = threading.Thread(target=lambda: results.append(job.wait(timeout=30)))
    results: list = []
    waiter.start()
    time.sleep(0.3)  # let the wait be held by the job API
    job.cancel()
    waiter.join(30)
    assert [r.state for r in results] == ["CANCELED"]
    assert results[0].status_message == "cancelled by user"
    with pytest.raises(ClientError) as again:
        job.cancel()
    assert again.value.status == 409


def test_timeouts_and_unknown_jobs_are_clear_errors(client: Client) -> None:
    job = client.submit("test_ok", mode="pull")
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as timed_out:
        job.wait(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert str(timed_out.value) == f"{job.id} still QUEUED after 0.5 s (waiting for a final state)"
    assert isinstance(timed_out.value, TimeoutError)
    with pytest.raises(WaitTimeout, match="still QUEUED"):
        next(iter(job.progress(timeout=0.3)))  # the first step comes at once...
        list(job.progress(timeout=0.3))  # ...the next one never
    missing = client.job("job/00000000-0000-4000-8000-000000000000")
    with pytest.raises(JobNotFound, match="not found"):
        missing.wait(timeout=5)
    with pytest.raises(JobNotFound):
        missing.refresh()
    with pytest.raises(ClientError, match="job API answered 400: 'action' is required"):
        client.submit("")


def test_a_write_wakes_the_waiter_at_once(client: Client, admin_api: Api) -> None:
    """The job API wakes a held wait when it writes the job, not at its next re-read."""
    job = client.submit("test_ok", mode="pull")
    job.refresh()
    woken: list[float] = []

    def follow() -> None:
        for step in job.progress(timeout=30):
            if step.progress == 42:
                woken.append(time.monotonic())
                return

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    written = time.monotonic()
    admin_api.edit(job.id, {"progress": 42})
    follower.join(30)
    assert woken and woken[0] - written < 1.0  # the re-read is every 2 s


def test_many_waiters_share_one_long_poll(client: Client, job_api: JobApiProcess) -> None:
    """200 threads each waiting for a job that does not finish: the client sends at most
    two requests per new waiter (a first look, and the long poll that then follows it
    too), and while they wait, one long poll for all of them, not one request per waiter
    per interval."""
    handles = client.submit_many([{"action": "test_ok", "execution-mode": "pull"}] * 200)
    before = wait_requests(job_api)
    timed_out: list[str] = []

    def wait(handle) -> None:
        try:
            handle.wait(timeout=8)
        except WaitTimeout:
            timed_out.append(handle.id)

    threads = [threading.Thread(target=wait, args=(h,)) for h in handles]
    for thread in threads:
        thread.start()
    watcher = client._watcher
    wait_for(
        lambda: watcher._in_flight is not None and len(watcher._in_flight) == 200,
        "one long poll following all 200 jobs",
    )
    settled = wait_requests(job_api)
    assert settled - before <= 2 * 200, settled - before
    time.sleep(3)
    # Three quiet seconds: polling each job every 100 ms would have been 6,000 requests.
    assert wait_requests(job_api) - settled <= 1  # the last superseded one, answering late
    for thread in threads:
        thread.join(30)
    assert len(timed_out) == 200


def test_submit_many_reports_the_bodies_it_could_not_add(client: Client) -> None:
    bodies = [
        {"action": "test_ok", "execution-mode": "pull", "payload": {"n": 1}},
        {"action": "test_ok", "colour": "red"},
        {"action": "test_ok", "execution-mode": "pull"},
    ]
    with pytest.raises(BatchError) as caught:
        client.submit_many(bodies)
    error = caught.value
    assert [h.refresh().doc["payload"] for h in error.created[:1]] == ['{"n": 1}']
    assert len(error.created) == 2
    assert [(i, e.status) for i, e in error.errors] == [(1, 400)]
    assert "unknown attribute" in str(error)


def test_from_environment_and_clear_credential_errors(
    job_api: JobApiProcess, tmp_path: Path
) -> None:
    creds = job_api.credentials()
    env = {"JOB_API_URL": job_api.endpoint, "JOB_API_CREDENTIALS": str(job_api.credentials_path)}
    with Client.from_environment(env) as client:
        assert client.endpoint == job_api.endpoint
        assert client.submit("test_ok", mode="pull").refresh().state == "QUEUED"
    secret_file = tmp_path / "secret"
    secret_file.write_text(creds["secret"] + "\n")
    env = {
        "JOB_API_URL": job_api.endpoint,
        "JOB_API_KEY": creds["key"],
        "JOB_API_SECRET_FILE": str(secret_file),
    }
    with Client.from_environment(env) as client:
        assert client.submit("test_ok", mode="pull").id.startswith("job/")
    with pytest.raises(ClientError, match=r"login to the job API at .* failed \(403\)"):
        Client(job_api.endpoint, key=creds["key"], secret="wrong")
    with pytest.raises(ClientError, match="needs both key= and secret="):
        Client(job_api.endpoint, key=creds["key"])
    with pytest.raises(ClientError, match="no job API credentials"):
        Client.from_environment({"XDG_DATA_HOME": str(tmp_path)})
    with pytest.raises(ClientError, match="cannot reach the job API"):
        Client("http://127.0.0.1:9", key="k", secret="s")


def test_a_wait_outlives_a_job_api_restart(fresh_api: JobApiProcess) -> None:
    """A held wait is answered when its job API stops; the client asks again until the
    restarted job API answers, and the waiter sees the job finish."""
    with Client.from_credentials_file(fresh_api.credentials_path) as client:
        job = client.submit("test_ok", mode="pull")
        results: list = []
        waiter = threading.Thread(target=lambda: results.append(job.wait(timeout=60)))
        waiter.start()
        time.sleep(0.5)
        stopped = time.monotonic()
        assert fresh_api.stop() == 0
        assert time.monotonic() - stopped < 5  # the held request did not delay the stop
        fresh_api.start()
        fresh_api.admin_api().edit(job.id, {"state": "SUCCESS"})
        waiter.join(60)
        assert [r.state for r in results] == ["SUCCESS"]


def test_the_wait_request_answers_bad_input_in_its_own_words(
    job_api: JobApiProcess, admin_api: Api
) -> None:
    url = f"{job_api.endpoint}/api/job/wait"
    cases = [
        ([], "a wait request is a JSON object"),
        ({"jobs": {}}, "'jobs' must be a non-empty map"),
        ({"jobs": {"x/1": None}}, "'x/1' is not a job id"),
        ({"jobs": {"job/1": 5}}, "the etag of job/1 must be a string or null"),
        ({"jobs": {"job/1": None}, "timeout": 61}, "'timeout' must be between 0 and 60"),
        ({"jobs": {"job/1": None}, "timeout": "1"}, "'timeout' must be a number"),
        ({"jobs": {"job/1": None}, "seq": -1}, "'seq' must be a non-negative integer"),
        ({"jobs": {"job/1": None}, "watch": ""}, "'watch' must be a non-empty string"),
        ({"jobs": {"job/1": None}, "colour": 1}, "unknown key(s) in the wait request: colour"),
        ({"jobs": {f"job/{i}": None for i in range(10_001)}}, "at most 10000 jobs"),
    ]
    for body, message in cases:
        answer = admin_api.session.post(url, json=body, timeout=10)
        assert answer.status_code == 400, (body, answer.text)
        assert message in answer.json()["message"], answer.json()
    anonymous = requests.post(url, json={"jobs": {"job/1": None}}, timeout=10)
    assert anonymous.status_code == 403


def test_a_user_follows_only_the_jobs_it_may_see(job_api: JobApiProcess, client: Client) -> None:
    job = client.submit("test_ok", mode="pull")
    user = job_api.user_api(f"u-{os.getpid()}-{time.monotonic_ns()}")
    answer = user.session.post(
        f"{job_api.endpoint}/api/job/wait", json={"jobs": {job.id: None}}, timeout=10
    ).json()
    assert answer == {"jobs": [], "missing": [job.id], "superseded": False}


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
from nuvla_job.client import Client

client = Client.from_credentials_file(sys.argv[1])
jobs = client.submit_many([{"action": "test_ok", "execution-mode": "pull"}] * 20)
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(20)])
waits = [gevent.spawn(job.wait, 10) for job in jobs]
gevent.sleep(0.5)
for job in jobs:
    client.api.edit(job.id, {"state": "SUCCESS"})
gevent.joinall(waits, raise_error=True)
ticker.join()
print(json.dumps({"states": sorted({w.value.state for w in waits}), "ticks": len(ticks)}))
"""


def test_waits_under_gevent_are_greenlets(job_api: JobApiProcess, admin_api: Api) -> None:
    """Under gevent's monkey patching, 20 waits run as greenlets beside other work (the
    ticker keeps running while they wait)."""
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, str(job_api.credentials_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"states": ["SUCCESS"], "ticks": 20}
