"""No request stalls the job API, against real `job-api serve` processes: the heaviest
searches the API allows run off its event loop, each within its time budget, while
`/api/health` and plain gets keep answering; lists and documents are bounded, and a terms
aggregation costs what it scans."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nuvla_job.api.filters import MAX_COMPARISONS
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.validation import MAX_DOCUMENT_BYTES, MAX_LIST_LENGTH
from tests.support.jobapi import JobApiProcess
from tests.support.zookeeper import ZooKeeperServer

BUDGET = 3.0
JOBS, TAGS = 2_000, 1_000
# 500 prefix comparisons on a list of 1,000 tags, for each of 2,000 jobs: about a minute of
# SQLite without a budget.
HEAVIEST = " or ".join(f"tags^='x{i}'" for i in range(MAX_COMPARISONS))
RESPONSIVE = 0.1  # seconds


def _doc(i: int) -> dict:
    return {
        "id": f"job/{i:08d}-0000-4000-8000-000000000000",
        "resource-type": "job",
        "state": "QUEUED",
        "action": "heavy",
        "progress": 0,
        "execution-mode": "pull",
        "version": 2,
        "created": "2026-01-01T00:00:00.000Z",
        "updated": "2026-01-01T00:00:00.000Z",
        "name": f"n{i}",
        "tags": [f"tag-{j}" for j in range(TAGS)],
        "acl": {"owners": ["group/nuvla-admin"], "view-data": ["group/nuvla-user"]},
    }


@pytest.fixture(scope="module")
def server(zookeeper: ZooKeeperServer) -> Iterator[JobApiProcess]:
    # Through the environment, as a container would configure it.
    process = JobApiProcess(zookeeper.hosts, env={"JOB_API_QUERY_TIMEOUT": str(BUDGET)})
    store = SqliteStore(process.db)
    store.jobs.insert_many(_doc(i) for i in range(JOBS))
    # 65 jobs of almost the largest size: together more than one page may hold.
    big = {"action": "big-page", "payload": "x" * (MAX_DOCUMENT_BYTES - 1000), "tags": []}
    store.jobs.insert_many({**_doc(JOBS + i), **big} for i in range(65))
    store.close()
    with process:
        yield process


def _timed(session: requests.Session, url: str) -> float:
    start = time.perf_counter()
    response = session.get(url, timeout=10)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text[:300]
    return elapsed


def test_health_and_a_get_answer_while_the_heaviest_searches_run(server: JobApiProcess) -> None:
    user = server.user_api("heavy-user", "heavy-Pass-1")
    admin = server.admin_api()
    job_url = f"{server.endpoint}/api/{_doc(7)['id']}"
    health_url = f"{server.endpoint}/api/health"
    # Warm: the connection is open and the session known, as for any client at work.
    _timed(admin.session, job_url)
    _timed(admin.session, health_url)
    start = server.log_path.stat().st_size

    def heaviest(_: int) -> requests.Response:
        return user.session.put(
            f"{server.endpoint}/api/job",
            data={"filter": HEAVIEST, "aggregation": "terms:tags", "last": "10000"},
            timeout=60,
        )

    # More of them at once than the database threads (four by default) have room for.
    with ThreadPoolExecutor(5) as pool:
        began = time.monotonic()
        running = [pool.submit(heaviest, n) for n in range(5)]
        health, gets = [], []
        while not all(f.done() for f in running):
            health.append(_timed(admin.session, health_url))
            gets.append(_timed(admin.session, job_url))
            time.sleep(0.02)
        answers = [f.result() for f in running]
        took = time.monotonic() - began
    assert len(gets) > 20, "the searches ended too soon to show anything"
    assert max(health) < RESPONSIVE, sorted(health)[-5:]
    assert max(gets) < RESPONSIVE, sorted(gets)[-5:]
    for answer in answers:
        assert answer.status_code == 503, answer.text[:300]
        assert answer.json()["message"].startswith(
            f"the query ran longer than its {BUDGET:g} s budget and was stopped"
        )
    # Each stopped within its budget (the fifth waited for a thread first).
    assert took < 3 * BUDGET + 5, took
    log = server.log_path.read_text("utf-8", "replace")[start:]
    assert "stopped after 3 s" in log
    assert "ERROR" not in log and "Traceback" not in log, log[-2000:]
    # The ZooKeeper session lived through it.
    assert requests.get(health_url, timeout=10).json()["zookeeper"] == "CONNECTED"


def test_a_terms_aggregation_on_the_longest_list_is_quick(server: JobApiProcess) -> None:
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "long-list", "execution-mode": "pull"}).data["resource-id"]
    # The finding: 10,000 tags made this take 2 s (each element re-read the document).
    admin.edit(job_id, {"tags": [f"t{i}" for i in range(MAX_LIST_LENGTH)]})
    start = time.perf_counter()
    answer = admin.search("job", filter=f"id='{job_id}'", aggregation="terms:tags", last=0)
    assert time.perf_counter() - start < 1.0
    assert len(answer.data["aggregations"]["terms:tags"]["buckets"]) == MAX_LIST_LENGTH


def test_lists_and_documents_have_a_size_limit(server: JobApiProcess) -> None:
    admin = server.admin_api()
    job_id = admin.add("job", {"action": "limits", "execution-mode": "pull"}).data["resource-id"]
    url = f"{server.endpoint}/api/{job_id}"
    too_long = admin.session.put(
        url, json={"tags": [f"t{i}" for i in range(MAX_LIST_LENGTH + 1)]}, timeout=30
    )
    assert too_long.status_code == 400
    assert too_long.json()["message"] == f"'tags' holds more than {MAX_LIST_LENGTH} elements"
    # Under --max-body, but a document larger than a job may be.
    big = admin.session.put(url, json={"output": "x" * (MAX_DOCUMENT_BYTES + 1)}, timeout=30)
    assert big.status_code == 413
    assert "more than the 1048576 a job may hold" in big.json()["message"]
    added = admin.session.post(
        f"{server.endpoint}/api/job",
        json={"action": "limits", "payload": "x" * (MAX_DOCUMENT_BYTES + 1)},
        timeout=30,
    )
    assert added.status_code == 413
    assert admin.get(job_id).data.get("output") is None


def test_a_page_larger_than_an_answer_may_be_is_a_400(server: JobApiProcess) -> None:
    admin = server.admin_api()
    response = admin.session.put(
        f"{server.endpoint}/api/job", data={"filter": "action='big-page'"}, timeout=60
    )
    assert response.status_code == 400
    assert response.json()["message"] == (
        "the page of documents would be larger than 64 MiB; ask for fewer (first/last)"
    )
    page = admin.search("job", filter="action='big-page'", last=60)
    assert (page.count, len(page.resources)) == (65, 60)
