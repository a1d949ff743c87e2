"""The ZooKeeper job queue under `/job` (the layout is fixed by the ZooKeeper layout spec).

`/job/entries/entry-PPP-SSSSSSSSSS` holds one job id per queued job (PPP = priority, lower is
taken first; S = ZooKeeper's sequence), and `/job/taken/<entry name>` is the ephemeral lock of
the consumer working on it. The layout is shared with kazoo's `LockingQueue`, the Nuvla API
server and the upstream executor, so names and data must stay exactly as they are.

This module has the producer side (`put`, `put_many`); the consumer side belongs here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from kazoo.client import KazooClient
from kazoo.exceptions import RolledBackError

# -- layout ------------------------------------------------------------------------------------

ROOT = "/job"
ENTRIES = f"{ROOT}/entries"
TAKEN = f"{ROOT}/taken"
ENTRY_PREFIX = "entry-"

MIN_PRIORITY = 0
MAX_PRIORITY = 999
DEFAULT_PRIORITY = 999

# A multi-op request must fit in the server's jute.maxbuffer (1 MiB by default); each create
# costs roughly its path, its data and ~60 bytes of framing and ACL.
DEFAULT_CHUNK_SIZE = 1000
MAX_CHUNK_BYTES = 512 * 1024
_OP_OVERHEAD = 64


def check_priority(priority: int) -> int:
    """Return `priority` if it is a valid queue priority (an int in 0..999)."""
    # bool is an int subclass; True as a priority is a bug, not priority 1.
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be in {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}")
    return priority


def entry_prefix(priority: int) -> str:
    """The path prefix for a sequential entry: `/job/entries/entry-PPP-`."""
    return f"{ENTRIES}/{ENTRY_PREFIX}{check_priority(priority):03d}-"


def _encode_job_id(job_id: str) -> bytes:
    if not isinstance(job_id, str):
        raise TypeError(f"job id must be a str, not {type(job_id).__name__}")
    if not job_id:
        raise ValueError("job id must not be empty")
    return job_id.encode("utf-8")


# -- producer ----------------------------------------------------------------------------------


def put(client: KazooClient, job_id: str, priority: int = DEFAULT_PRIORITY) -> str:
    """Queue `job_id`; return the created entry path.

    Not retried on connection loss: a sequential create may have succeeded before the
    connection dropped, and a blind retry would queue the job twice. Callers decide.
    """
    path = entry_prefix(priority)
    data = _encode_job_id(job_id)
    return client.create(path, data, sequence=True, makepath=True)


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
        prefix, data = entry_prefix(priority), _encode_job_id(job_id)
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
