"""`JobFetcher`: the executor's job fetches, those of many greenlets in one search.

The executor reads each taken entry's job before its decision table runs. At hundreds of
jobs a second that GET is a third of its calls to the job API; fetches that arrive while
one search is on its way go out together as the next search by id list (``id='a' or
id='b' ...``, which the job API runs as one indexed ``IN``), as the queue's reads share one
ZooKeeper request (:mod:`nuvla_job.queue.batching`).

Only on this project's job API, whose search reads the same committed rows a GET reads and
presents each document as a GET does. A Nuvla server searches an index refreshed about once
a second, whose answer may be older than the job's last write: there every fetch stays a
GET. Which API it is is told by the jobs themselves (:func:`nuvla_job.attempts.own_api`):
fetches are GETs until a job carrying ``attempts`` has been read. Until a first job has been
read at all, one fetch at a time asks: the takes of an executor's start all arrive at once, and
they would otherwise all be GETs before the first answer tells which API this is.

The GET still decides whatever the search cannot answer: a job the search does not return
(not found yet, not visible to these credentials, ...) is fetched with a GET, whose answer
(a 404 retried once, a 403, ...) the executor handles as before; a search the job API
refuses (4xx) turns batching off for good and its fetches into GETs; a search that fails as a GET
would (5xx, unreachable) fails each of its fetches with the same error a GET would raise.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import gevent
import gevent.event
import gevent.lock
import requests
from nuvla.api import Api, NuvlaError

from . import attempts
from .job import ApiUnavailable, Job, JobError, classify_error
from .queue.batching import Batcher

log = logging.getLogger(__name__)

# Ids per search: the filter stays about a kilobyte, which the job API parses inline.
MAX_IDS_PER_SEARCH = 20


class _GeventHandler:
    """The three methods of a kazoo handler that `Batcher` uses, on gevent."""

    @staticmethod
    def lock_object() -> Any:
        return gevent.lock.Semaphore()

    @staticmethod
    def async_result() -> Any:
        return gevent.event.AsyncResult()

    @staticmethod
    def spawn(func: Any, *args: Any) -> Any:
        return gevent.spawn(func, *args)


class JobFetcher:
    """Fetches jobs for many greenlets at once: ``fetcher.fetch(job_id)`` returns the
    :class:`~nuvla_job.job.Job` or raises what :meth:`Job.fetch` raises.

    ``job_options`` are passed to every Job (``nuvlaedge_fs``, ``executor_name``, ...).
    """

    def __init__(self, api: Api, batch: bool = True, **job_options: Any) -> None:
        self.api = api
        self.job_options = job_options
        self._allowed = batch
        self.batching = False  # on once a job shows this project's job API
        self._probed = False  # a first job has been read
        self._probe = gevent.lock.Semaphore()
        self._searches = Batcher(_GeventHandler(), self._search, MAX_IDS_PER_SEARCH)

    def fetch(self, job_id: str) -> Job:
        if self._allowed and not self._probed:
            with self._probe:
                if not self._probed:
                    job = self._get(job_id)  # an error leaves the next fetch to ask
                    self._probed = True
                    return job
        if self.batching:
            found = self._searches.submit(job_id).get()
            if isinstance(found, JobError):
                raise found
            if found is not None:
                return Job.from_document(self.api, job_id, found, **self.job_options)
        return self._get(job_id)

    def _get(self, job_id: str) -> Job:
        job = Job.fetch(self.api, job_id, **self.job_options)
        if self._allowed and not self.batching and attempts.own_api(job):
            self.batching = True
        return job

    def _search(self, job_ids: list[str]) -> list[Any]:
        """Flush of the batcher: each id's document, None (ask with a GET) or the error."""
        unique = list(dict.fromkeys(job_ids))
        query = " or ".join(f"id='{job_id}'" for job_id in unique)
        try:
            answer = self.api.search("job", filter=query, last=len(unique))
        except (NuvlaError, requests.RequestException, OSError) as exc:
            error = classify_error(exc, "job")
            if isinstance(error, ApiUnavailable):
                return [error] * len(job_ids)
            log.warning("job API refused a search by ids (%s): jobs are fetched one by one", error)
            self.batching = self._allowed = False
            return [None] * len(job_ids)
        found: dict[str, Any] = {}
        for resource in answer.resources:
            data = resource.data
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                found[data["id"]] = data
        documents: list[Any] = []
        handed: set[str] = set()
        for job_id in job_ids:
            data = found.get(job_id)
            # Two entries of one job in one search: each Job gets its own document.
            documents.append(copy.deepcopy(data) if job_id in handed else data)
            handed.add(job_id)
        return documents
