"""The job API's real stores for unit tests: built with their own schema in a temporary folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nuvla_job.api.sqlite import SqliteStore


@contextmanager
def sqlite_store_with(docs: Iterable[dict[str, Any]]) -> Iterator[SqliteStore]:
    """A fresh SQLite store holding `docs` (bulk-loaded as the store writes them), removed
    with its folder afterwards."""
    with tempfile.TemporaryDirectory(prefix="store-test-") as folder:
        store = SqliteStore(Path(folder) / "jobs.sqlite")
        try:
            store.jobs.insert_many(docs)
            yield store
        finally:
            store.close()
