"""`job-api migrate SOURCE DESTINATION`: copy jobs and identities from one store to another
(SQLite to PostgreSQL, or back), resumable, with a check of the counts at the end.

Jobs are read from the source in id order, a batch at a time; of each batch, only the ids
the destination lacks are written (a rerun after an interruption goes on where it stopped,
and never writes a job twice). A job still marked as owed its queue entry keeps the mark,
so the destination's job API finishes that add at its start. Principals and sessions are
copied when the destination lacks them (so logins and API keys work on it at once).

Run it with the source's job API stopped: jobs added or changed during the copy may be
missed (the counts at the end say so).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .filters import Comparison
from .query import Query
from .store import Conflict, Doc, Store, StoreUrl, Unstorable

BATCH = 1000


@dataclass
class MigrationReport:
    """What a migration did, and the counts it checked."""

    jobs_copied: int = 0
    jobs_present: int = 0  # already in the destination (an earlier, interrupted run)
    principals_copied: int = 0
    sessions_copied: int = 0
    source_jobs: int = 0
    destination_jobs: int = 0
    unstorable: list[str] = field(default_factory=list)  # ids the destination cannot hold

    @property
    def complete(self) -> bool:
        """The destination holds exactly the source's jobs (more: it held jobs of its own,
        or a job API added some during the copy; fewer: some are missing)."""
        return not self.unstorable and self.destination_jobs == self.source_jobs


def same_database(a: StoreUrl, b: StoreUrl) -> bool:
    """Whether two --db values name one database: a SQLite file by its real path (however
    spelled: relative, sqlite:///, a symbolic link), a server database by host, port and name
    (libpq options aside)."""
    if a.scheme != b.scheme:
        return False
    if a.scheme == "sqlite":
        return os.path.realpath(a.path) == os.path.realpath(b.path)

    def where(url: str) -> tuple[str, int, str]:
        parts = urlsplit(url)
        return (parts.hostname or "").lower(), parts.port or 5432, unquote(parts.path.lstrip("/"))

    return where(a.url) == where(b.url)


def _count(store: Store) -> int:
    return store.jobs.search(Query(last=0), None)[0]


def _batch_after(store: Store, last_id: str | None, size: int) -> list[Doc]:
    where = None if last_id is None else Comparison("id", ">", last_id)
    query = Query(filter=where, orderby=[("id", False)], last=size)
    return store.jobs.search(query, None)[1]


def _present(store: Store, ids: list[str]) -> set[str]:
    query = Query(filter=Comparison("id", "=", tuple(ids)), select=["id"], last=len(ids))
    return {doc["id"] for doc in store.jobs.search(query, None)[1]}


def migrate(
    source: Store,
    destination: Store,
    batch: int = BATCH,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> MigrationReport:
    """Copy what `destination` lacks of `source`; `progress(done, total)` after each batch."""
    report = MigrationReport(source_jobs=_count(source))
    for principal in source.identities.principals():
        try:
            destination.identities.add_principal(principal)
            report.principals_copied += 1
        except Conflict:
            pass  # there already (a rerun)
    for session in source.identities.sessions():
        if destination.identities.session(session.id) is None:
            destination.identities.add_session(session)
            report.sessions_copied += 1
    pending = {doc["id"] for doc in source.jobs.pending_enqueue(limit=1_000_000)}
    last_id: str | None = None
    done = 0
    while docs := _batch_after(source, last_id, batch):
        last_id = docs[-1]["id"]
        present = _present(destination, [doc["id"] for doc in docs])
        report.jobs_present += len(present)
        missing = [doc for doc in docs if doc["id"] not in present]
        plain = [doc for doc in missing if doc["id"] not in pending]
        try:
            report.jobs_copied += destination.jobs.insert_many(plain)
        except Unstorable:
            for doc in plain:  # find which: the others are copied one by one
                report.jobs_copied += _insert_one(destination, doc, False, report)
        for doc in missing:
            if doc["id"] in pending:
                report.jobs_copied += _insert_one(destination, doc, True, report)
        done += len(docs)
        progress(done, report.source_jobs)
    report.destination_jobs = _count(destination)
    return report


def _insert_one(destination: Store, doc: Doc, pending: bool, report: MigrationReport) -> int:
    try:
        destination.jobs.insert(doc, enqueue_pending=pending)
    except Unstorable:
        report.unstorable.append(doc["id"])
        return 0
    return 1
