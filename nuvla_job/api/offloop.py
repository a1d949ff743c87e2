"""Blocking work off the event loop: the job API's database calls and the heavy part of a
search run in a bounded pool of OS threads, so that no request can stall the others.

The server serves every request on gevent greenlets in one thread. A database call never
yields to another greenlet: one slow search used to freeze every client, ``/api/health``
included, and the ZooKeeper session with them. :class:`OffLoop` runs such calls in a
thread of its pool while the calling greenlet waits and the loop goes on serving. SQLite
releases Python's lock while it works, so the loop keeps running at full speed; pure
Python work in a thread (parsing a long filter, encoding a large answer) shares the
interpreter with the loop, which still gets its turn every few milliseconds.

Sizing: ``threads`` (``--db-threads``) bounds the calls running at once, and so the reader
connections of the store (one per busy thread; writes share one writer, one at a time).
Searches, aggregations and bulk deletes (the calls whose cost depends on what they scan)
use at most ``threads - 1`` of them, so that gets, edits, adds and logins always find a
free thread, whatever the searches. Each call is bounded in time by the store itself
(store.StoreLimits.query_timeout).

:class:`OffLoopStore` wraps any store.Store so that each of its calls runs in the pool; a
second database reuses it as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import gevent.lock
from gevent.monkey import get_original
from gevent.threadpool import ThreadPool

from .query import Query
from .store import Doc, IdentityStore, JobStore, Principal, SessionRecord, Store

T = TypeVar("T")

DEFAULT_THREADS = 4
_thread_id = get_original("_thread", "get_ident")


class OffLoop:
    """A pool of ``threads`` OS threads for blocking calls, with a lane for heavy ones."""

    def __init__(self, threads: int = DEFAULT_THREADS) -> None:
        if threads < 2:
            raise ValueError("an off-loop pool needs at least 2 threads (one for light calls)")
        self.threads = threads
        self._pool = ThreadPool(threads)
        self._heavy = gevent.lock.BoundedSemaphore(threads - 1)
        self._loop_thread = _thread_id()

    def run(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` in a thread of the pool; its result, or its exception."""
        if _thread_id() != self._loop_thread:
            return call(*args)  # already off the loop (a heavy call's own store calls)
        return self._apply(call, args)

    def run_heavy(self, call: Callable[..., T], *args: Any) -> T:
        """`run`, for a call whose cost depends on what it scans: at most threads - 1 of
        them at once, so light calls always find a thread."""
        if _thread_id() != self._loop_thread:
            return call(*args)
        with self._heavy:
            return self._apply(call, args)

    def _apply(self, call: Callable[..., T], args: tuple[Any, ...]) -> T:
        # The exception comes back as a value: gevent would print the traceback of one
        # raised in its worker (a 404 is an exception too) before handing it over.
        done, value = self._pool.apply(_outcome, (call, args))
        if done:
            return value
        raise value

    def close(self) -> None:
        self._pool.kill()


def _outcome(call: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, call(*args)
    except BaseException as exc:  # noqa: B036 - handed to the caller, which re-raises it
        return False, exc


class OffLoopJobStore:
    """store.JobStore whose calls run in an :class:`OffLoop`."""

    def __init__(self, store: JobStore, offloop: OffLoop) -> None:
        self.store = store
        self.offloop = offloop

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        self.offloop.run(self.store.insert, doc, enqueue_pending)

    def get(self, job_id: str) -> Doc | None:
        return self.offloop.run(self.store.get, job_id)

    def update(self, job_id: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        # `change` runs in the pool's thread too, inside the write transaction: it must be
        # pure (jobs.py's rules are), never wait for a greenlet.
        return self.offloop.run(self.store.update, job_id, change)

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        self.offloop.run(self.store.mark_enqueued, job_id, entry_path)

    def pending_enqueue(self, limit: int = 1000) -> list[Doc]:
        return self.offloop.run(self.store.pending_enqueue, limit)

    def claim_due(self, now: str, limit: int) -> list[Doc]:
        return self.offloop.run(self.store.claim_due, now, limit)

    def unclaim(self, job_ids: Iterable[str], due: str) -> None:
        self.offloop.run(self.store.unclaim, list(job_ids), due)

    def delete(self, job_id: str) -> bool:
        return self.offloop.run(self.store.delete, job_id)

    def search(self, query: Query, principals: frozenset[str] | None) -> tuple[int, list[Doc]]:
        return self.offloop.run_heavy(self.store.search, query, principals)

    def aggregate(self, query: Query, principals: frozenset[str] | None) -> dict[str, Any]:
        return self.offloop.run_heavy(self.store.aggregate, query, principals)

    def updated_counts(
        self,
        since: str,
        until: str,
        principals: frozenset[str] | None,
        states: Iterable[str] | None = None,
    ) -> list[tuple[str | None, str | None, int | None, int]]:
        wanted = None if states is None else list(states)
        return self.offloop.run_heavy(self.store.updated_counts, since, until, principals, wanted)

    def delete_matching(self, query: Query, principals: frozenset[str] | None) -> int:
        return self.offloop.run_heavy(self.store.delete_matching, query, principals)

    def insert_many(self, docs: Iterable[Doc]) -> int:
        return self.offloop.run_heavy(self.store.insert_many, list(docs))


class OffLoopIdentityStore:
    """store.IdentityStore whose calls run in an :class:`OffLoop`."""

    def __init__(self, store: IdentityStore, offloop: OffLoop) -> None:
        self.store = store
        self.offloop = offloop

    def add_principal(self, principal: Principal) -> None:
        self.offloop.run(self.store.add_principal, principal)

    def principal(self, kind: str, name: str) -> Principal | None:
        return self.offloop.run(self.store.principal, kind, name)

    def has_api_key_with(self, claim: str) -> bool:
        return self.offloop.run(self.store.has_api_key_with, claim)

    def add_session(self, session: SessionRecord) -> None:
        self.offloop.run(self.store.add_session, session)

    def session_by_token(self, token_hash: str) -> SessionRecord | None:
        return self.offloop.run(self.store.session_by_token, token_hash)

    def session(self, session_id: str) -> SessionRecord | None:
        return self.offloop.run(self.store.session, session_id)

    def delete_session(self, session_id: str) -> bool:
        return self.offloop.run(self.store.delete_session, session_id)

    def principals(self) -> list[Principal]:
        return self.offloop.run(self.store.principals)

    def sessions(self) -> list[SessionRecord]:
        return self.offloop.run(self.store.sessions)


class OffLoopStore:
    """A store.Store whose every call runs in ``offloop``'s threads."""

    def __init__(self, store: Store, offloop: OffLoop) -> None:
        self.store = store
        self.offloop = offloop
        self._jobs = OffLoopJobStore(store.jobs, offloop)
        self._identities = OffLoopIdentityStore(store.identities, offloop)

    @property
    def jobs(self) -> JobStore:
        return self._jobs

    @property
    def identities(self) -> IdentityStore:
        return self._identities

    def close(self) -> None:
        self.store.close()
        self.offloop.close()
