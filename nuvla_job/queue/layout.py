"""The queue's fixed layout under `/job`: paths, the entry-name grammar, `Entry`, job ids.

`/job/entries/entry-PPP-SSSSSSSSSS` holds one job id per queued job (PPP = priority, lower is
taken first; S = ZooKeeper's sequence), and `/job/taken/<entry name>` is the ephemeral lock of
the consumer working on it. The layout is shared with kazoo's `LockingQueue`, the Nuvla API
server and the upstream executor, so names and data must stay exactly as they are. Everyone
here (producer, consumer, restore, the operator CLI, the dashboard) reads it through this
module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

ROOT = "/job"
ENTRIES = f"{ROOT}/entries"
TAKEN = f"{ROOT}/taken"
ENTRY_PREFIX = "entry-"

MIN_PRIORITY = 0
MAX_PRIORITY = 999
DEFAULT_PRIORITY = 999

# ZooKeeper formats the sequence with %010d, so past 2**31 changes of /job/entries it is
# negative: a sign and 9 or 10 digits ("-000000005", "-2147483648").
_ENTRY_NAME = re.compile(rf"{ENTRY_PREFIX}(\d{{3}})-(\d{{10}}|-\d{{9,10}})")
# `job/` and URL-safe characters, as the job API makes them. Anything else is garbage: asked
# of the job API, an id with a control character, "?", "#" or "%" could fail like an
# unreachable API and be retried for ever.
_JOB_ID = re.compile(r"job/[A-Za-z0-9._~:-]+")


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


def entry_path(name: str) -> str:
    return f"{ENTRIES}/{name}"


def taken_path(name: str) -> str:
    return f"{TAKEN}/{name}"


@dataclass(frozen=True)
class EntryName:
    """A well-formed entry name, parsed: `entry-PPP-SSSSSSSSSS`."""

    priority: int
    sequence: int  # as ZooKeeper wrote it: negative once the counter passed 2**31

    @property
    def arrival(self) -> int:
        """The place in arrival order: the sequence read as the unsigned 32-bit counter."""
        return self.sequence if self.sequence >= 0 else self.sequence + 2**32


def parse_entry_name(name: str) -> EntryName | None:
    """The parts of a well-formed entry name, else None (entries can be made by anyone)."""
    match = _ENTRY_NAME.fullmatch(name)
    if match is None:
        return None
    return EntryName(int(match.group(1)), int(match.group(2)))


def is_job_id(text: str) -> bool:
    """Whether `text` is a job id as the job API makes them (`job/` and URL-safe characters)."""
    return _JOB_ID.fullmatch(text) is not None


def encode_job_id(job_id: str) -> bytes:
    """An entry's data for `job_id`; a TypeError or ValueError for anything but a job id."""
    if not isinstance(job_id, str):
        raise TypeError(f"job id must be a str, not {type(job_id).__name__}")
    if not is_job_id(job_id):
        # Queued, it would only be dropped as garbage by every consumer.
        raise ValueError(f"not a job id (job/ and URL-safe characters): {job_id[:100]!r}")
    return job_id.encode("utf-8")


@dataclass(frozen=True)
class Entry:
    """A queue entry as taken: its node name under `/job/entries` and its data."""

    name: str
    data: bytes
    # When the take was sent (time.monotonic()): the session was alive then.
    taken_at: float = field(default=0.0, compare=False)

    @property
    def path(self) -> str:
        return f"{ENTRIES}/{self.name}"

    @property
    def taken_path(self) -> str:
        return f"{TAKEN}/{self.name}"

    @property
    def priority(self) -> int | None:
        """The priority from a well-formed name (`entry-PPP-SSSSSSSSSS`), else None."""
        parsed = parse_entry_name(self.name)
        return parsed.priority if parsed else None

    @property
    def job_id(self) -> str | None:
        """The job id if the data is one (`job/<id>`, URL-safe, in UTF-8), else None."""
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return text if is_job_id(text) else None
