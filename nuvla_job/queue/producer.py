"""Queueing jobs: `put` and `put_many`, the only code that creates entries.

The job API (on add), `restore` and the tests all queue through here, so every entry is made
the same way: a persistent sequential node under the priority's prefix, holding a checked
job id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import RolledBackError

from .layout import DEFAULT_PRIORITY, ENTRIES, encode_job_id, entry_prefix

# A multi-op request must fit in the server's jute.maxbuffer (1 MiB by default); each create
# costs roughly its path, its data and ~60 bytes of framing and ACL.
DEFAULT_CHUNK_SIZE = 1000
MAX_CHUNK_BYTES = 512 * 1024
_OP_OVERHEAD = 64


def put_async(client: KazooClient, job_id: str, priority: int = DEFAULT_PRIORITY) -> Any:
    """Queue `job_id`: the async result of the create (the entry path). A bad job id or
    priority raises here, before anything is sent."""
    path = entry_prefix(priority)
    data = encode_job_id(job_id)
    return client.create_async(path, data, sequence=True, makepath=True)


def put(
    client: KazooClient,
    job_id: str,
    priority: int = DEFAULT_PRIORITY,
    timeout: float | None = None,
) -> str:
    """Queue `job_id`; return the created entry path (waiting up to `timeout` seconds).

    Not retried on connection loss: a sequential create may have succeeded before the
    connection dropped, and a blind retry would queue the job twice. Callers decide.
    """
    return put_async(client, job_id, priority).get(timeout=timeout)


class PutManyError(Exception):
    """A chunk of `put_many` failed; `created` lists the entries committed before it.

    Each chunk is atomic: the failed chunk created nothing, except that on a connection loss
    during its commit ZooKeeper may or may not have applied it.
    """

    def __init__(self, message: str, created: list[str]) -> None:
        super().__init__(f"{message} ({len(created)} entries were created before)")
        self.created = created


def _chunks(
    items: Iterable[str | tuple[str, int]], chunk_size: int
) -> Iterator[list[tuple[str, bytes]]]:
    """Validated (prefix, data) chunks, bounded by count and by approximate request size."""
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for item in items:
        job_id, priority = (item, DEFAULT_PRIORITY) if isinstance(item, str) else item
        prefix, data = entry_prefix(priority), encode_job_id(job_id)
        op_size = len(prefix) + len(data) + _OP_OVERHEAD
        if chunk and (len(chunk) >= chunk_size or size + op_size > MAX_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((prefix, data))
        size += op_size
    if chunk:
        yield chunk


def put_many(
    client: KazooClient,
    items: Iterable[str | tuple[str, int]],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[str]:
    """Queue many jobs, one ZooKeeper transaction per chunk; return the paths in input order.

    `items` are job ids (queued with the default priority) or `(job_id, priority)` pairs.
    Items are consumed lazily, so a generator of a million ids is fine. On any failure (a bad
    item or a ZooKeeper error) `PutManyError` is raised, chained to the cause.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    created: list[str] = []
    chunks = _chunks(items, chunk_size)
    ensured = False
    while True:
        try:
            chunk = next(chunks, None)
            if chunk is None:
                return created
            if not ensured:
                # Transactions cannot create parents (no makepath).
                client.ensure_path(ENTRIES)
                ensured = True
            transaction = client.transaction()
            for prefix, data in chunk:
                transaction.create(prefix, data, sequence=True)
            results = transaction.commit()
        except Exception as exc:
            raise PutManyError(f"put_many failed: {exc!r}", created) from exc
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            # The op that failed is the one that is not a RolledBackError.
            cause = next((f for f in failures if not isinstance(f, RolledBackError)), failures[0])
            raise PutManyError(f"put_many transaction failed: {cause!r}", created) from cause
        created.extend(results)
