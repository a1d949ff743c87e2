"""JobFetcher (nuvla_job/fetcher.py) on the in-memory job API: concurrent fetches share one
search on this project's job API, and everything a search cannot answer is a GET as before.
The same path runs against the real job API in tests/integration/test_fetch_batching.py."""

from __future__ import annotations

import gevent
import pytest
import requests

from nuvla_job.fetcher import MAX_IDS_PER_SEARCH, JobFetcher
from nuvla_job.job import ApiUnavailable, Job, JobMalformed, JobNotFound
from tests.support.executor_doubles import FakeApi


def _own_api_jobs(api: FakeApi, count: int) -> list[str]:
    # `attempts` is what this project's job API adds to every job.
    return [api.add_job("ok", attempts=0) for _ in range(count)]


def _fetch_all(fetcher: JobFetcher, job_ids: list[str]) -> list[Job]:
    greenlets = [gevent.spawn(fetcher.fetch, job_id) for job_id in job_ids]
    gevent.joinall(greenlets, raise_error=True)
    return [g.value for g in greenlets]


def _primed(api: FakeApi) -> JobFetcher:
    """A fetcher that has read one job of this project's job API (so it batches)."""
    fetcher = JobFetcher(api, executor_name="x")
    fetcher.fetch(_own_api_jobs(api, 1)[0])
    assert fetcher.batching
    api.gets.clear()
    return fetcher


def test_concurrent_fetches_share_one_search_and_give_what_a_get_gives() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    ids = _own_api_jobs(api, 10)
    jobs = _fetch_all(fetcher, ids)
    assert api.gets == []
    # One search left alone at once, the rest together behind it: never one per job.
    assert sorted(i for ids_ in api.searches for i in ids_) == sorted(ids)
    assert len(api.searches) <= 2
    for job_id, job in zip(ids, jobs, strict=True):
        assert isinstance(job, Job) and job == api.get(job_id).data
        assert job.executor_name == "x"


def test_a_search_asks_for_at_most_its_share_of_ids() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    ids = _own_api_jobs(api, MAX_IDS_PER_SEARCH * 3 + 1)
    _fetch_all(fetcher, ids)
    assert max(len(s) for s in api.searches) <= MAX_IDS_PER_SEARCH
    assert sorted(i for s in api.searches for i in s) == sorted(ids)


def test_fetches_arriving_before_any_job_was_read_wait_for_the_first_get() -> None:
    # An executor's start: all its takes fetch at once. One GET tells which API it is; the
    # others wait for its answer and then share searches.
    api = FakeApi()
    api.latency = 0.01
    ids = _own_api_jobs(api, 30)
    jobs = _fetch_all(JobFetcher(api), ids)
    assert len(api.gets) == 1
    assert sorted(i for s in api.searches for i in s) == sorted(set(ids) - set(api.gets))
    assert [job.id for job in jobs] == ids


def test_a_failed_first_get_leaves_the_next_fetch_to_ask() -> None:
    api = FakeApi()
    api.latency = 0.01
    ids = _own_api_jobs(api, 3)
    api.fail("get", ApiUnavailable("down"))
    fetcher = JobFetcher(api)
    greenlets = [gevent.spawn(fetcher.fetch, job_id) for job_id in ids]
    gevent.joinall(greenlets)
    assert isinstance(greenlets[0].exception, ApiUnavailable)
    assert [g.value.id for g in greenlets[1:]] == ids[1:]
    assert fetcher.batching and len(api.gets) == 2


def test_jobs_of_a_nuvla_server_are_always_fetched_with_a_get() -> None:
    # A Nuvla server's search reads an index refreshed about once a second: never used.
    api = FakeApi()
    ids = [api.add_job("ok") for _ in range(5)]
    fetcher = JobFetcher(api)
    _fetch_all(fetcher, ids)
    _fetch_all(fetcher, ids)
    assert not fetcher.batching and api.searches == []
    assert sorted(api.gets) == sorted(ids * 2)


def test_batch_false_keeps_every_fetch_a_get() -> None:
    api = FakeApi()
    ids = _own_api_jobs(api, 3)
    fetcher = JobFetcher(api, batch=False)
    _fetch_all(fetcher, ids)
    _fetch_all(fetcher, ids)
    assert api.searches == [] and len(api.gets) == 6


def test_a_job_the_search_does_not_return_is_asked_with_a_get() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    hidden, shown = _own_api_jobs(api, 2)
    api.unsearchable.add(hidden)
    jobs = _fetch_all(fetcher, [hidden, shown])
    assert api.gets == [hidden]
    assert [job.id for job in jobs] == [hidden, shown]


def test_a_job_found_nowhere_is_not_found_after_the_gets_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("nuvla_job.job.NOT_FOUND_RETRY_DELAY", 0.01)
    api = FakeApi()
    fetcher = _primed(api)
    with pytest.raises(JobNotFound):
        fetcher.fetch("job/missing")
    assert api.gets == ["job/missing", "job/missing"]  # the GET's own retry, as before


def test_a_search_failing_as_a_get_would_fails_each_fetch_alike() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    ids = _own_api_jobs(api, 3)
    api.fail("search", 503)
    greenlets = [gevent.spawn(fetcher.fetch, job_id) for job_id in ids]
    gevent.joinall(greenlets)
    assert all(isinstance(g.exception, ApiUnavailable) for g in greenlets)
    assert api.gets == [] and fetcher.batching
    api.fail("search", requests.ConnectionError("refused"))
    with pytest.raises(ApiUnavailable):
        fetcher.fetch(ids[0])


def test_a_search_the_job_api_refuses_turns_batching_off() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    ids = _own_api_jobs(api, 3)
    api.fail("search", 400)
    jobs = _fetch_all(fetcher, ids)
    assert [job.id for job in jobs] == ids
    assert sorted(api.gets) == sorted(ids) and not fetcher.batching
    searches = len(api.searches)
    fetcher.fetch(ids[0])
    assert len(api.searches) == searches


def test_a_malformed_document_from_a_search_is_malformed() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    job_id = api.add_job("ok", attempts=0)
    api.jobs[job_id]["state"] = 7
    with pytest.raises(JobMalformed):
        fetcher.fetch(job_id)


def test_two_entries_of_one_job_in_one_search_get_their_own_documents() -> None:
    api = FakeApi()
    fetcher = _primed(api)
    job_id = api.add_job("ok", attempts=0, tags=["a"])
    first, second = _fetch_all(fetcher, [job_id, job_id])
    assert first == second and first["tags"] is not second["tags"]
