"""The ZooKeeper job queue under `/job` (the layout is fixed by the ZooKeeper layout spec).

- `layout`: paths, the entry-name grammar, `Entry`, the job-id check, priorities;
- `producer`: `put` and `put_many`, the only way entries are made;
- `consumer`: `QueueConsumer`, which hands out `Entry` objects to many greenlets of one
  process, over
- `view`: `QueueView`, the pure model of entries, taken nodes and our own takes,
- `batching`: `Slots` and `Batcher`, sharing the client's requests among the greenlets,
- `zkext`: the ZooKeeper requests and watches kazoo has no API for (its internals, checked).

The names used across the engine are importable from here.
"""

from .consumer import DEFAULT_MAX_IN_FLIGHT, FinishOutcome, QueueConsumer
from .layout import (
    DEFAULT_PRIORITY,
    ENTRIES,
    ENTRY_PREFIX,
    MAX_PRIORITY,
    MIN_PRIORITY,
    ROOT,
    TAKEN,
    Entry,
    EntryName,
    check_priority,
    encode_job_id,
    entry_path,
    entry_prefix,
    is_job_id,
    parse_entry_name,
    taken_path,
)
from .producer import DEFAULT_CHUNK_SIZE, MAX_CHUNK_BYTES, PutManyError, put, put_async, put_many
from .view import QueueView, TakeOutcome

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_PRIORITY",
    "ENTRIES",
    "ENTRY_PREFIX",
    "MAX_CHUNK_BYTES",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "ROOT",
    "TAKEN",
    "Entry",
    "EntryName",
    "FinishOutcome",
    "PutManyError",
    "QueueConsumer",
    "QueueView",
    "TakeOutcome",
    "check_priority",
    "encode_job_id",
    "entry_path",
    "entry_prefix",
    "is_job_id",
    "parse_entry_name",
    "put",
    "put_async",
    "put_many",
    "taken_path",
]
