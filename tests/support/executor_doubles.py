"""In-memory doubles of what the executor talks to, for unit tests of its decision table.

:class:`FakeApi` answers ``get``, ``edit`` and a ``search`` by id list as ``nuvla.api.Api``
does (documents under ``.data``; errors as ``NuvlaError`` with a response, or as requests'
connection errors), records every call, and fails on demand. :class:`FakeConsumer` is a
queue that hands out entries, records consumes and releases, and can lose its "session".
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.queue
import requests
from nuvla.api import NuvlaError

from nuvla_job.queue import Entry


@dataclass
class Answer:
    """What ``nuvla.api.Api`` returns: the document under ``.data``."""

    data: Any


def api_error(status: int) -> NuvlaError:
    """The error ``nuvla.api`` raises for an HTTP ``status`` answer."""
    response = requests.Response()
    response.status_code = status
    return NuvlaError(f"answered {status}", response)


@dataclass
class Page:
    """What ``nuvla.api.Api.search`` returns: ``count`` and the ``resources``."""

    count: int
    resources: list[Answer]


@dataclass
class _Failure:
    error: BaseException
    times: int
    state: str | None  # edits only: fail only those that write this state


class FakeApi:
    """Job documents in memory, with the job API's ``get`` and ``edit``."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.gets: list[str] = []
        self.edits: list[tuple[str, dict[str, Any]]] = []
        self.searches: list[list[str]] = []  # the ids each search asked for
        self.unsearchable: set[str] = set()  # jobs a search does not return (GET does)
        self.latency = 0.0  # seconds each get and search takes (yielding to other greenlets)
        self._failures: dict[str, list[_Failure]] = {"get": [], "edit": [], "search": []}

    def add_job(self, action: str = "ok", **attrs: Any) -> str:
        job_id = f"job/{uuid.uuid4()}"
        self.jobs[job_id] = {"id": job_id, "action": action, "state": "QUEUED", **attrs}
        return job_id

    def fail(
        self, call: str, error: int | BaseException, *, times: int = 1, state: str | None = None
    ) -> None:
        """Make the next ``times`` calls of ``call`` ("get", "edit", "search") fail with ``error``
        (an HTTP status or an exception); ``state``: only edits that write that state."""
        failure = api_error(error) if isinstance(error, int) else error
        self._failures[call].append(_Failure(failure, times, state))

    def _maybe_fail(self, call: str, data: dict[str, Any] | None = None) -> None:
        for failure in self._failures[call]:
            if failure.times and (
                failure.state is None or (data or {}).get("state") == failure.state
            ):
                failure.times -= 1
                raise failure.error

    def get(self, job_id: str) -> Answer:
        self.gets.append(job_id)
        if self.latency:
            gevent.sleep(self.latency)
        self._maybe_fail("get")
        if job_id not in self.jobs:
            raise api_error(404)
        return Answer(copy.deepcopy(self.jobs[job_id]))

    def search(self, resource_type: str, filter: str = "", last: int = 20, **_: Any) -> Page:
        """The job API's search for a filter ``id='a' or id='b' ...`` (the fetcher's)."""
        ids = re.findall(r"id='([^']*)'", filter)
        self.searches.append(ids)
        if self.latency:
            gevent.sleep(self.latency)
        self._maybe_fail("search")
        found = [
            Answer(copy.deepcopy(self.jobs[job_id]))
            for job_id in ids
            if job_id in self.jobs and job_id not in self.unsearchable
        ]
        return Page(len(found), found[:last])

    def edit(self, job_id: str, data: dict[str, Any], select: str | None = None) -> Answer:
        self._maybe_fail("edit", data)
        self.edits.append((job_id, dict(data)))
        if job_id not in self.jobs:
            raise api_error(404)
        self.jobs[job_id].update(data)
        return Answer(copy.deepcopy(self.jobs[job_id]))

    def states_written(self, job_id: str) -> list[str]:
        return [
            data["state"] for edited, data in self.edits if edited == job_id and "state" in data
        ]


class FakeConsumer:
    """A queue of entries in memory with the consumer's calls; ``lose_session`` makes every
    held entry no longer ours, as an expired ZooKeeper session does."""

    def __init__(self) -> None:
        self._available: gevent.queue.Queue[Entry] = gevent.queue.Queue()
        self._sequence = itertools.count()
        self.held: set[Entry] = set()
        self.consumed: list[Entry] = []
        self.released: list[Entry] = []
        self.started = self.stopped = self.paused = False

    def put(self, data: str | bytes) -> Entry:
        raw = data.encode() if isinstance(data, str) else data
        entry = Entry(f"entry-{next(self._sequence):010d}", raw)
        self._available.put(entry)
        return entry

    def take_now(self, data: str | bytes) -> Entry:
        """Put an entry and take it at once (for tests that call ``handle`` directly)."""
        self.put(data)
        entry = self.take(timeout=0)
        assert entry is not None
        return entry

    @property
    def depth(self) -> int:
        return self._available.qsize()

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def pause(self) -> None:
        self.paused = True

    def take(self, timeout: float | None = None) -> Entry | None:
        if self.stopped:
            return None
        if self.paused:
            gevent.sleep(timeout or 0)
            return None
        try:
            entry = self._available.get(timeout=timeout)
        except gevent.queue.Empty:
            return None
        self.held.add(entry)
        return entry

    def consume(self, entry: Entry) -> bool:
        if entry not in self.held:
            return False
        self.held.discard(entry)
        self.consumed.append(entry)
        return True

    def release(self, entry: Entry) -> bool:
        if entry not in self.held:
            return False
        self.held.discard(entry)
        self.released.append(entry)
        return True

    def holds(self, entry: Entry) -> bool:
        return entry in self.held

    def lose_session(self) -> None:
        self.held.clear()
