"""The storage interface of the job API: what any database behind it must provide.

The job API's rules (jobs.py) speak only to this interface, so another database can be
added beside the SQLite one (sqlite.py) without touching them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .query import Query

Doc = dict[str, Any]


class StoreError(Exception):
    """The database failed (disk full, read-only, locked): the request cannot be served."""


class Conflict(Exception):
    """The document changed in a way that forbids the write (e.g. a duplicate id)."""


class JobStore(Protocol):
    """Job documents, searchable with the CIMI query language.

    ``principals`` narrows reads and deletes to the documents whose ACL grants a view right
    to one of them; ``None`` means no narrowing (an administrator).
    """

    def insert(self, doc: Doc, enqueue_pending: bool = False) -> None:
        """Store a new document. ``enqueue_pending`` marks it as still owed a queue entry."""

    def get(self, job_id: str) -> Doc | None: ...

    def update(self, job_id: str, change: Callable[[Doc], Doc | None]) -> Doc | None:
        """Atomically read, change and write one document.

        ``change`` gets the current document and returns the new one (or None to leave it
        as it is). Returns the stored result, or None when there is no such document.
        """

    def mark_enqueued(self, job_id: str, entry_path: str | None) -> None:
        """Record the queue entry of a job: add it to ``tags`` and clear the pending mark."""

    def pending_enqueue(self, limit: int = 1000) -> list[Doc]:
        """Documents still marked as owed a queue entry (an add interrupted by a crash)."""

    def delete(self, job_id: str) -> bool: ...

    def search(self, query: Query, principals: frozenset[str] | None) -> tuple[int, list[Doc]]:
        """(count of all matches, the page of documents the query asks for)."""

    def aggregate(self, query: Query, principals: frozenset[str] | None) -> dict[str, Any]: ...

    def delete_matching(self, query: Query, principals: frozenset[str] | None) -> int:
        """Delete every document the query's filter matches; return how many."""

    def insert_many(self, docs: Iterable[Doc]) -> int:
        """Bulk load (benchmarks, imports): no queue entries are made."""

    def close(self) -> None: ...
