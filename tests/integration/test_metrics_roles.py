"""More of the metrics, scraped from real executors: the `pull_mode` outcome, the address
`--metrics-host` / JOB_METRICS_HOST choose, and the leadership gauge of an executor that
also runs the distributions (`job-executor --distributions`)."""

from __future__ import annotations

import pytest
import requests
from nuvla.api import Api

from tests.integration.test_executor import add, wait_state
from tests.integration.test_metrics import scrape, value, wait_for

JOBS = "nuvla_job_jobs_processed_total"


def test_a_mixed_job_handed_to_pull_mode_counts_as_pull_mode(
    admin_api: Api, start_executor
) -> None:
    process = start_executor(metrics=True)
    url = f"http://127.0.0.1:{process.port}/metrics"
    job_id = add(admin_api, "test_raises", **{"execution-mode": "mixed"})
    wait_for(
        url, lambda s: value(s, JOBS, action="test_raises", outcome="pull_mode") == 1, "pull_mode"
    )
    job = wait_state(admin_api, job_id, ("QUEUED",))
    assert job["execution-mode"] == "pull"
    samples = scrape(url)
    assert value(samples, JOBS, action="test_raises", outcome="failed") is None
    assert value(samples, JOBS, action="test_raises", outcome="dropped") is None


@pytest.mark.parametrize("how", ["option", "environment"])
def test_metrics_host_is_the_address_served(start_executor, how: str) -> None:
    # Another loopback address than the default 127.0.0.1.
    host = "127.0.0.2"
    if how == "option":
        process = start_executor("--metrics-host", host, metrics=True)
    else:
        process = start_executor(env={"JOB_METRICS_HOST": host}, metrics=True)
    assert f"Prometheus metrics on http://{host}:{process.port}/metrics" in process.log()
    assert value(scrape(f"http://{host}:{process.port}/metrics"), "nuvla_job_zookeeper_connected")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{process.port}/metrics", timeout=5)


def test_an_executor_running_the_distributions_publishes_its_leadership(start_executor) -> None:
    process = start_executor(
        "--distributions",
        "--distribution-include",
        "tick",
        "--distribution-interval",
        "tick:3600",
        metrics=True,
    )
    url = f"http://127.0.0.1:{process.port}/metrics"
    samples = wait_for(
        url, lambda s: value(s, "nuvla_job_leader", distribution="tick") == 1, "its leadership"
    )
    # Only the distributions it runs, and its executor metrics beside them.
    assert {
        dict(labels).get("distribution") for name, labels in samples if name == "nuvla_job_leader"
    } == {"tick"}
    assert value(samples, "nuvla_job_jobs_in_flight") is not None
