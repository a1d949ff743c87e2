"""An executor on this project's job API fetches the jobs of concurrent takes with shared
searches (nuvla_job/fetcher.py), counted by the job API itself; every job still runs once.
The rules of each fetch are in tests/unit/test_fetcher.py."""

from __future__ import annotations

import json

import requests
from kazoo.client import KazooClient
from nuvla.api import Api

from tests.integration.test_executor import queue_empty
from tests.support.jobapi import JobApiProcess
from tests.support.waiting import wait_for

JOBS = 60


def answered(job_api: JobApiProcess, method: str, route: str) -> float:
    """Requests of `method` on `route` the job API has answered so far (its own counter)."""
    text = requests.get(f"{job_api.endpoint}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("nuvla_job_http_requests_total{")
            and f'method="{method}"' in line
            and f'route="{route}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_concurrent_fetches_are_searches_not_one_get_each(
    admin_api: Api, job_api: JobApiProcess, zk: KazooClient, start_executor
) -> None:
    tag = "fetch-batching"
    body = {"action": "test_sleep", "payload": json.dumps({"seconds": 0.3}), "tags": [tag]}
    ids = [admin_api.add("job", dict(body)).data["resource-id"] for _ in range(JOBS)]
    gets = answered(job_api, "GET", "/api/job/{uuid}")
    searches = answered(job_api, "PUT", "/api/job")
    start_executor("--concurrency", str(JOBS))
    polls = 0

    def all_succeeded() -> bool:
        nonlocal polls
        polls += 1
        query = f"tags='{tag}' and state='SUCCESS'"
        return admin_api.search("job", filter=query, last=0).count == JOBS

    wait_for(all_succeeded, f"{JOBS} jobs SUCCESS", timeout=60)
    queue_empty(zk)
    fetched_by_get = answered(job_api, "GET", "/api/job/{uuid}") - gets
    fetched_by_search = answered(job_api, "PUT", "/api/job") - searches - polls
    # The first fetch is a GET (it tells this job API from a Nuvla server; the takes of the
    # start wait for its answer); the takes that come while a search is on its way share the
    # next one.
    assert fetched_by_get == 1
    assert 1 <= fetched_by_search < JOBS / 2
    for job_id in ids:
        job = admin_api.get(job_id).data
        assert job["state"] == "SUCCESS" and job["attempts"] == 1
