"""The job API's real stores for unit tests: built with their own schema, SQLite in a
temporary folder, PostgreSQL in a database of the test server (tests/conftest.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.store import Store

Docs = Iterable[dict[str, Any]]
# Makes a store holding the documents given (for one test or one example).
StoreWith = Callable[[Docs], AbstractContextManager[Store]]
STORE_KINDS = ("sqlite", "postgresql")
# How the job API of a module is deployed (tests/conftest.py, job_api_each_store): one
# process on each store, then two replicas on PostgreSQL behind a balancer.
API_DEPLOYMENTS = (*STORE_KINDS, "replicas")


@contextmanager
def sqlite_store_with(docs: Docs) -> Iterator[SqliteStore]:
    """A fresh SQLite store holding `docs` (bulk-loaded as the store writes them), removed
    with its folder afterwards."""
    with tempfile.TemporaryDirectory(prefix="store-test-") as folder:
        store = SqliteStore(Path(folder) / "jobs.sqlite")
        try:
            store.jobs.insert_many(docs)
            yield store
        finally:
            store.close()


def emptied(store: Any) -> Any:
    """A PostgreSQL store with no jobs again (cheaper than a new database per example)."""
    with store.db.transaction() as conn:
        conn.execute(b"TRUNCATE job")
        conn.execute(b"UPDATE job_total SET n = 0")
    return store


@contextmanager
def postgres_store_factory(url: str) -> Iterator[StoreWith]:
    """Stores on the database at `url`: each use empties it and loads the documents."""
    from nuvla_job.api.postgres import PostgresStore

    store = PostgresStore(url)

    @contextmanager
    def store_with(docs: Docs) -> Iterator[Store]:
        emptied(store).jobs.insert_many(docs)
        yield store

    try:
        yield store_with
    finally:
        store.close()


class ApiStore:
    """Which store the job APIs of a module run on: ``db()`` is a new ``--db`` value (None:
    the launcher's own SQLite file; a new PostgreSQL database otherwise, also for the
    ``replicas`` deployment), dropped by ``drop_all()``."""

    def __init__(self, kind: str, server: Callable[[], Any], name: Callable[[], str]) -> None:
        self.kind = kind
        self.server = server  # the session's PostgresServer, started on first use
        self.name = name
        self.databases: list[str] = []

    def db(self) -> str | None:
        if self.kind == "sqlite":
            return None
        name = self.name()
        self.databases.append(name)
        return str(self.server().create_database(name))

    def drop_all(self) -> None:
        for name in self.databases:
            self.server().drop_database(name)
