"""Unique jobs through the real job API: concurrent submits of one key, through two job API
processes on one database, add one job; the others are answered that job (200, its id)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import requests
from kazoo.client import KazooClient
from nuvla.api import Api

from nuvla_job import queue
from nuvla_job.client import Client
from tests.support.jobapi import JobApiProcess
from tests.support.stores import ApiStore
from tests.support.zookeeper import ZooKeeperServer


# Every test here runs on each store: SQLite, then PostgreSQL (tests/conftest.py); the
# races go through two job APIs of their own (`two_apis`).
@pytest.fixture(scope="module")
def job_api(zookeeper: ZooKeeperServer, api_store: ApiStore) -> Iterator[JobApiProcess]:
    with JobApiProcess(zookeeper.hosts, db=api_store.db()) as server:
        yield server


@pytest.fixture
def two_apis(
    zookeeper: ZooKeeperServer, api_store: ApiStore
) -> Iterator[tuple[JobApiProcess, JobApiProcess]]:
    """Two job API processes serving one database (a SQLite file, or a PostgreSQL one)."""
    with JobApiProcess(zookeeper.hosts, db=api_store.db()) as first:
        second = JobApiProcess(zookeeper.hosts)
        second.db, second.credentials_path = first.db, first.credentials_path
        with second:
            yield first, second


def logged_in(api: JobApiProcess) -> requests.cookies.RequestsCookieJar:
    """The cookies of one admin session (logins of one key in parallel are throttled)."""
    creds = api.credentials()
    template = {"href": "session-template/api-key", "key": creds["key"], "secret": creds["secret"]}
    answer = requests.post(f"{api.endpoint}/api/session", json={"template": template}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.cookies


def race(apis: list[JobApiProcess], key: str, submitters: int) -> list[tuple[int, str]]:
    """`submitters` threads add a job of `key` at once, alternately through each job API;
    (status, resource-id) of each answer."""
    start = threading.Barrier(submitters, timeout=60)
    answers: list[tuple[int, str]] = []
    cookies = {api.endpoint: logged_in(api) for api in apis}

    def submit(api: JobApiProcess) -> None:
        http = requests.Session()
        http.cookies.update(cookies[api.endpoint])
        start.wait()
        answer = http.post(
            f"{api.endpoint}/api/job",
            json={"action": "test_ok", "unique-key": key, "tags": [key]},
            timeout=30,
        )
        answers.append((answer.status_code, answer.json()["resource-id"]))

    threads = [
        threading.Thread(target=submit, args=(apis[i % len(apis)],)) for i in range(submitters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_concurrent_submits_of_one_key_through_two_job_apis_add_one_job(
    two_apis: tuple[JobApiProcess, JobApiProcess], zk: KazooClient
) -> None:
    api = two_apis[0].admin_api()
    for round_ in range(5):
        key = f"race-{round_}-{uuid.uuid4().hex[:6]}"
        answers = race(list(two_apis), key, 16)
        assert sorted(status for status, _ in answers) == [200] * 15 + [201], answers
        [job_id] = {job_id for _, job_id in answers}
        # One job stored, one entry queued.
        assert api.search("job", filter=f"tags='{key}'", last=0).data["count"] == 1
        entries = [zk.get(f"{queue.ENTRIES}/{n}")[0] for n in zk.get_children(queue.ENTRIES)]
        assert entries.count(job_id.encode()) == 1


def test_the_client_and_nuvla_api_get_the_holder(job_api: JobApiProcess, admin_api: Api) -> None:
    key = f"client-{uuid.uuid4().hex[:6]}"
    with Client.from_credentials_file(job_api.credentials_path) as client:
        first = client.submit("test_ok", mode="pull", unique_key=key)
        second = client.submit("test_ok", mode="pull", unique_key=key)
        assert first.created and not second.created
        assert second.id == first.id
        assert client.job(first.id).created is None  # not known for a handle by id
        # nuvla.api's add (what distributions call) reads the holder's id from the answer.
        answer = admin_api.add("job", {"action": "test_ok", "unique-key": key})
        assert answer.data["status"] == 200 and answer.data["resource-id"] == first.id
        assert "with this unique-key: no job added" in answer.data["message"]
        first.cancel()
        third = client.submit("test_ok", mode="pull", unique_key=key)
        assert third.created and third.id != first.id
        assert third.refresh().doc["unique-key"] == key
