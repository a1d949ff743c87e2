"""Unique keys in the job rules and the SQLite store: one unfinished job per key, kept by the
store's partial unique index (so also between threads racing through one store), the key
free again once its job is final, and the typed UniqueKeyTaken of the seam."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
import requests
from nuvla.api import NuvlaError

from nuvla_job.api.errors import ApiError
from nuvla_job.api.identity import Caller
from nuvla_job.api.jobs import JobQueue, JobService
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.store import UniqueKeyTaken
from nuvla_job.distributor import Distributor
from nuvla_job.registry import Distribution, action_and_target

ADMIN = Caller("user/admin", frozenset({"group/nuvla-admin"}))


class ListQueue(JobQueue):
    def __init__(self) -> None:
        self.entries: list[str] = []

    def put(self, job_id: str, priority: int) -> str:
        self.entries.append(job_id)
        return f"/job/entries/entry-{priority:03d}-{len(self.entries):010d}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


def test_a_held_key_answers_its_holder_and_adds_nothing(store: SqliteStore) -> None:
    queue = ListQueue()
    service = JobService(store.jobs, queue)
    first, created = service.add_or_find({"action": "a", "unique-key": "k"}, ADMIN)
    assert created
    again, created = service.add_or_find({"action": "b", "unique-key": "k"}, ADMIN)
    assert not created and again["id"] == first["id"] and again["action"] == "a"
    other, created = service.add_or_find({"action": "a", "unique-key": "other"}, ADMIN)
    assert created
    assert queue.entries == [first["id"], other["id"]]  # nothing queued for the second add
    # RUNNING still holds it; a final job frees it.
    service.edit(first["id"], {"state": "RUNNING"}, [], ADMIN)
    assert not service.add_or_find({"action": "a", "unique-key": "k"}, ADMIN)[1]
    service.edit(first["id"], {"state": "SUCCESS"}, [], ADMIN)
    fresh, created = service.add_or_find({"action": "a", "unique-key": "k"}, ADMIN)
    assert created and fresh["id"] != first["id"]
    # The key of a job cannot be edited away.
    edited = service.edit(fresh["id"], {"unique-key": "changed"}, [], ADMIN)
    assert edited["unique-key"] == "k"


def test_keys_are_checked(store: SqliteStore) -> None:
    service = JobService(store.jobs, ListQueue())
    for key, message in (("", "1 to 512 characters"), ("x" * 513, "1 to 512 characters")):
        with pytest.raises(ApiError, match=message):
            service.add({"action": "a", "unique-key": key}, ADMIN)
    with pytest.raises(ApiError, match="'unique-key' must be a string"):
        service.add({"action": "a", "unique-key": 5}, ADMIN)


def test_the_store_refuses_a_second_unfinished_holder(store: SqliteStore) -> None:
    base = {"resource-type": "job", "action": "a", "unique-key": "k", "acl": {}}
    store.jobs.insert({**base, "id": "job/1", "state": "QUEUED"})
    with pytest.raises(UniqueKeyTaken) as taken:
        store.jobs.insert({**base, "id": "job/2", "state": "RUNNING"})
    assert taken.value.key == "k"
    store.jobs.insert({**base, "id": "job/3", "state": "FAILED"})  # final: not held
    # An update that would make a second holder is refused too, and changes nothing.
    with pytest.raises(UniqueKeyTaken):
        store.jobs.update("job/3", lambda doc: {**doc, "state": "QUEUED"})
    assert store.jobs.get("job/3")["state"] == "FAILED"
    assert store.jobs.get("job/2") is None


def test_retrying_a_failed_job_whose_key_is_held_again_is_a_409(store: SqliteStore) -> None:
    service = JobService(store.jobs, ListQueue())
    failed = service.add({"action": "a", "unique-key": "k"}, ADMIN)
    service.edit(failed["id"], {"state": "FAILED"}, [], ADMIN)
    holder = service.add({"action": "a", "unique-key": "k"}, ADMIN)
    with pytest.raises(ApiError) as refused:
        service.operation(failed["id"], "retry", ADMIN)
    assert refused.value.status == 409
    assert refused.value.message == (
        f"{failed['id']} cannot be queued again: {holder['id']} holds its unique-key"
    )


def test_greenlets_adding_one_key_add_one_job(store: SqliteStore) -> None:
    """Twenty requests' greenlets add one key at once: one job, every caller told its id.
    (Between job API processes: tests/integration/test_unique_jobs.py.)"""
    service = JobService(store.jobs, ListQueue())
    answers: list[tuple[str, bool]] = []

    def add() -> None:
        doc, created = service.add_or_find({"action": "a", "unique-key": "race"}, ADMIN)
        answers.append((doc["id"], created))

    gevent.joinall([gevent.spawn(add) for _ in range(20)], raise_error=True)
    assert len(answers) == 20
    assert len({job_id for job_id, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1


def test_distribution_keys() -> None:
    target = {"action": "deploy", "target-resource": {"href": "deployment/1"}}
    assert action_and_target(target) == "deploy:deployment/1"
    assert action_and_target({"action": "cleanup"}) == "cleanup"
    fixed = Distribution("d", 1, lambda api: [], unique_key="only-one")
    assert fixed.key_of({"action": "x"}) == "only-one"
    assert fixed.key_of({"action": "x", "unique-key": "own"}) == "own"  # the body's wins
    computed = Distribution("d", 1, lambda api: [], unique_key=action_and_target)
    assert computed.key_of(target) == "deploy:deployment/1"
    assert Distribution("d", 1, lambda api: []).key_of(target) is None


class _Answer:
    def __init__(self, status: int, job_id: str) -> None:
        self.data = {"status": status, "resource-id": job_id}


class NuvlaLikeApi:
    """A job API that knows no unique-key, answering as Nuvla's does (a 400 naming it)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def add(self, resource: str, body: dict) -> _Answer:
        self.bodies.append(dict(body))
        if "unique-key" in body:
            response = requests.Response()
            response.status_code = 400
            raise NuvlaError("unknown attribute(s): unique-key", response)
        return _Answer(201, f"job/{len(self.bodies)}")


def test_a_job_api_without_unique_keys_gets_the_jobs_without_them() -> None:
    api = NuvlaLikeApi()
    distributor = Distributor(api, None, [], name="d")  # type: ignore[arg-type]
    keyed = Distribution("keyed", 1, lambda api: [], unique_key="k")
    assert distributor._add(distributor._tagged({"action": "a"}, keyed))
    assert distributor._add(distributor._tagged({"action": "a"}, keyed))
    # Refused once with the key, then sent without it from then on.
    assert ["unique-key" in body for body in api.bodies] == [True, False, False]
