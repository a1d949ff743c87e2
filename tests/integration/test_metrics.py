"""Prometheus metrics, scraped from real processes during a run: an executor and two
distributors with --metrics-port, the job API's /metrics, a real ZooKeeper."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from kazoo.client import KazooClient
from nuvla.api import Api, NuvlaError
from prometheus_client.parser import text_string_to_metric_families

from nuvla_job import queue
from nuvla_job.localstack.processes import REPO, TEST_ACTIONS
from tests.support.jobapi import JobApiProcess
from tests.support.processes import EngineProcess, serving_on_free_port
from tests.support.zookeeper import ZooKeeperServer

Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    """Every sample at ``url``, keyed by (sample name, its labels)."""
    response = requests.get(url, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def wait_for(
    url: str, condition: Callable[[Samples], bool], what: str, timeout: float = 30.0
) -> Samples:
    """Scrape until ``condition`` holds; fail naming ``what`` with the last nuvla_job samples."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            ours = {k: v for k, v in samples.items() if k[0].startswith("nuvla_job_")}
            raise AssertionError(f"{what} not seen within {timeout} s; last scrape: {ours}")
        time.sleep(0.1)


def add(api: Api, action: str, **attrs) -> str:
    return api.add("job", {"action": action, **attrs}).data["resource-id"]


# -- executor --------------------------------------------------------------------------------


def test_executor_metrics_follow_a_run(
    admin_api: Api, zk: KazooClient, start_executor, tmp_path: Path
) -> None:
    process = start_executor("--concurrency", "2", metrics=True)
    url = f"http://127.0.0.1:{process.port}/metrics"
    jobs = "nuvla_job_jobs_processed_total"

    assert value(scrape(url), "nuvla_job_zookeeper_connected") == 1
    # Two jobs that run until the gate file exists fill both slots.
    gate = tmp_path / "gate"
    payload = json.dumps({"gate": str(gate)})
    for _ in range(2):
        add(admin_api, "test_gated", payload=payload)
    wait_for(url, lambda s: value(s, "nuvla_job_jobs_in_flight") == 2, "2 jobs in flight")

    # With no free slot, whatever is queued now stays available: the depth counts it.
    for action in ("test_ok",) * 3 + ("test_fail_code",) * 2 + ("test_raises", "no_such_action"):
        add(admin_api, action)
    queue.put(zk, f"job/{uuid.uuid4()}")  # a job the job API does not know: dropped
    wait_for(url, lambda s: value(s, "nuvla_job_queue_depth") == 8, "a queue depth of 8")

    gate.touch()
    expected = {
        ("test_gated", "success"): 2,
        ("test_ok", "success"): 3,
        ("test_fail_code", "failed"): 2,
        ("test_raises", "failed"): 1,
        ("unknown", "failed"): 1,  # no_such_action: not a label, not registered
        ("unknown", "dropped"): 1,
    }
    samples = wait_for(
        url,
        lambda s: all(value(s, jobs, action=a, outcome=o) == n for (a, o), n in expected.items()),
        "every outcome counted",
    )
    assert value(samples, "nuvla_job_queue_takes_total") == 10
    assert value(samples, "nuvla_job_queue_releases_total") == 0
    assert value(samples, "nuvla_job_job_duration_seconds_count", action="test_ok") == 3
    assert value(samples, "nuvla_job_job_duration_seconds_bucket", action="test_ok", le="+Inf") == 3
    assert value(samples, "nuvla_job_jobs_in_flight") == 0
    assert value(samples, "nuvla_job_queue_depth") == 0
    assert not any(k[0] == jobs and ("action", "no_such_action") in k[1] for k in samples)

    # A job for a newer engine is held, then released back to the queue.
    job_id = add(admin_api, "test_ok", version=99)
    wait_for(
        url,
        lambda s: (
            (value(s, "nuvla_job_queue_releases_total") or 0) >= 1
            and (value(s, jobs, action="test_ok", outcome="released") or 0) >= 1
        ),
        "a release",
        timeout=20,
    )
    admin_api.delete(job_id)


def test_metrics_endpoint_answers_only_metrics(start_executor) -> None:
    port = start_executor(metrics=True).port
    assert requests.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200


def test_metrics_port_in_use_is_a_one_line_error(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "nuvla_job.cli.executor",
                "--zk-hosts",
                zookeeper.hosts,
                "--api-url",
                job_api.endpoint,
                "--api-credentials-file",
                str(job_api.credentials_path),
                "--metrics-port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert result.returncode != 0
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


# -- distributor -----------------------------------------------------------------------------


@pytest.fixture
def start_distributor(
    zookeeper: ZooKeeperServer, job_api: JobApiProcess, zk: KazooClient
) -> Iterator[Callable[..., EngineProcess]]:
    started: list[EngineProcess] = []

    def start(name: str) -> EngineProcess:
        """A distributor serving its metrics on a free port (its ``port``)."""
        # One tick an hour: elected, but creating no jobs during the test.
        args = [
            "--zk-hosts",
            zookeeper.hosts,
            "--zk-timeout",
            "4",
            "--api-url",
            job_api.endpoint,
            "--api-credentials-file",
            str(job_api.credentials_path),
            "--actions-path",
            str(TEST_ACTIONS),
            "--name",
            name,
            "--distribution-include",
            "tick",
            "--distribution-interval",
            "tick:3600",
        ]

        def make(port: int) -> EngineProcess:
            process = EngineProcess(
                "nuvla_job.cli.distributor", args, env={"JOB_METRICS_PORT": str(port)}
            )
            started.append(process.start())
            return process

        return serving_on_free_port(make, "Prometheus metrics on")

    yield start
    for process in started:
        process.stop()


def test_leadership_per_distribution(start_distributor) -> None:
    processes = {name: start_distributor(name) for name in ("metrics-a", "metrics-b")}
    urls = {name: f"http://127.0.0.1:{p.port}/metrics" for name, p in processes.items()}

    def leader(name: str) -> float | None:
        try:
            return value(scrape(urls[name]), "nuvla_job_leader", distribution="tick")
        except requests.ConnectionError:
            return None  # not serving yet

    deadline = time.monotonic() + 30
    while sorted(map(str, (leader(n) for n in urls))) != ["0.0", "1.0"]:
        assert time.monotonic() < deadline, {n: leader(n) for n in urls}
        time.sleep(0.1)
    first = next(n for n in urls if leader(n) == 1)
    other = next(n for n in urls if n != first)
    for name in urls:
        assert value(scrape(urls[name]), "nuvla_job_zookeeper_connected") == 1

    # The leader stops: the other one takes over, and its gauge says so.
    processes[first].stop()
    wait_for(
        urls[other],
        lambda s: value(s, "nuvla_job_leader", distribution="tick") == 1,
        "the take-over",
    )


# -- job API -----------------------------------------------------------------------------------


def test_job_api_counts_requests_by_route_template(fresh_api: JobApiProcess) -> None:
    api = fresh_api.admin_api()  # POST /api/session
    job_id = add(api, "test_ok")
    for _ in range(2):
        api.get(job_id)
    missing = f"job/{uuid.uuid4()}"
    with pytest.raises(NuvlaError):
        api.get(missing)
    assert requests.get(f"{fresh_api.endpoint}/no/such/path", timeout=5).status_code == 404

    url = f"{fresh_api.endpoint}/metrics"
    samples = scrape(url)
    requests_total = "nuvla_job_http_requests_total"
    item = "/api/job/{uuid}"
    assert value(samples, requests_total, method="GET", route=item, status="200") == 2
    assert value(samples, requests_total, method="GET", route=item, status="404") == 1
    assert value(samples, requests_total, method="POST", route="/api/job", status="201") == 1
    assert value(samples, requests_total, method="POST", route="/api/session", status="201") == 1
    assert value(samples, requests_total, method="GET", route="unmatched", status="404") == 1
    assert (
        value(samples, "nuvla_job_http_request_duration_seconds_count", method="GET", route=item)
        == 3
    )
    assert value(samples, "nuvla_job_zookeeper_connected") == 1
    # Raw paths never become labels: the number of series stays bounded.
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not any(job_id.split("/")[1] in label or "no/such" in label for label in labels)
    # The scrape itself is counted once the next one asks.
    assert value(scrape(url), requests_total, method="GET", route="/metrics", status="200") >= 1


def test_job_api_metrics_can_be_turned_off(zookeeper: ZooKeeperServer) -> None:
    with JobApiProcess(zookeeper.hosts, "--no-metrics") as server:
        assert requests.get(f"{server.endpoint}/metrics", timeout=5).status_code == 404
