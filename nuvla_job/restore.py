"""Restoring the queue: put back `QUEUED` push/mixed jobs that have no entry in /job/entries.

Entries can be lost (a ZooKeeper data loss, someone deleting nodes) while their jobs stay
`QUEUED` in the job API forever. `restore` finds them and queues them again with their
priority, without ever queueing a job twice:

1. every restorer holds one ZooKeeper lock (`LOCK_PATH`), so runs never overlap;
2. the job ids of all entries are read first (pipelined reads, `zk.read_nodes`);
3. the job API is paged through (a cursor on created/id, so millions of jobs are fine) for
   `QUEUED` push/mixed jobs older than `min_age` seconds, by the API's own clock: a younger
   job may be between "stored" and "entry created" of its add;
4. entries created while we paged are read too and their jobs dropped from the candidates;
5. the candidates are read again from the job API: those still `QUEUED` in push/mixed mode
   are put back, with their current priority.

A job with a ``not-before`` is not missing its entry: it waits in the job store for the
scheduler (nuvla_job/scheduler.py), which queues it when it is due. Such jobs are counted
(``waiting``), never queued here: that would run them early, and twice once they are due.

A candidate that gained an entry after step 4 could only have got it from another restorer
(excluded by the lock) or from the job API finishing an add it had interrupted (it looks for
an existing entry first, so it finds ours).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from kazoo.client import KazooClient
from nuvla.api import Api

from . import queue
from .attempts import NOT_BEFORE
from .jobsearch import DEFAULT_PAGE_SIZE, any_of, iter_jobs, quote
from .zk import children, read_nodes

log = logging.getLogger(__name__)

LOCK_PATH = "/locks/restore_queue"
LOCK_TIMEOUT = 30.0
DEFAULT_MIN_AGE = 60
QUEUED_MODES = ("push", "mixed")


class RestoreBusy(Exception):
    """Another restore holds the lock."""


@dataclass
class RestoreReport:
    """What a restore saw and did."""

    entries: int = 0  # entries in /job/entries when it started
    scanned: int = 0  # QUEUED push/mixed jobs read from the job API
    waiting: int = 0  # of those, delayed jobs waiting for the scheduler: not missing
    missing: list[tuple[str, int]] = field(default_factory=list)  # (job id, priority)
    queued: list[str] = field(default_factory=list)  # entry paths created
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would queue" if self.dry_run else "queued"
        waiting = f", {self.waiting} waiting for their time" if self.waiting else ""
        return (
            f"{verb} {len(self.missing)} job(s) that had no queue entry "
            f"({self.scanned} QUEUED push/mixed job(s) checked{waiting}, {self.entries} "
            f"entries in the queue)"
        )


# -- reading the queue --------------------------------------------------------------------------


def job_ids_of(zk: KazooClient, names: Iterable[str]) -> set[str]:
    """The job ids held by the entries `names` (entries gone meanwhile are skipped)."""
    ids = set()
    for _, data in read_nodes(zk, (queue.entry_path(name) for name in names)):
        if data:
            ids.add(data.decode("utf-8", "replace"))
    return ids


# -- restore ----------------------------------------------------------------------------------


def queued_filter(min_age: float) -> str:
    """QUEUED jobs that should have an entry, older than `min_age` seconds."""
    text = f"state='QUEUED' and execution-mode={any_of(QUEUED_MODES)}"
    if min_age > 0:
        text += f" and created<'now-{int(min_age)}s'"
    return text


def _still_queued(api: Api, candidates: dict[str, str], page_size: int) -> dict[str, int]:
    """Those of the candidates (id -> created) still QUEUED in push/mixed mode, with their
    current priority: one more pass over the created range they span (a search by a list of
    ids would scan the whole collection each time)."""
    oldest, newest = min(candidates.values()), max(candidates.values())
    filter = f"{queued_filter(0)} and created>={quote(oldest)} and created<={quote(newest)}"
    return {
        doc["id"]: _priority(doc)
        for doc in iter_jobs(api, filter, select=f"id,priority,{NOT_BEFORE}", page_size=page_size)
        if doc["id"] in candidates and not doc.get(NOT_BEFORE)
    }


def _priority(doc: dict) -> int:
    priority = doc.get("priority", queue.DEFAULT_PRIORITY)
    if isinstance(priority, int) and queue.MIN_PRIORITY <= priority <= queue.MAX_PRIORITY:
        return priority
    return queue.DEFAULT_PRIORITY


def restore(
    api: Api,
    zk: KazooClient,
    dry_run: bool = False,
    min_age: float = DEFAULT_MIN_AGE,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> RestoreReport:
    """Queue again every QUEUED push/mixed job without an entry (see the module doc)."""
    if dry_run:
        return _restore(api, zk, True, min_age, page_size)
    lock = zk.Lock(LOCK_PATH)
    if not lock.acquire(timeout=LOCK_TIMEOUT):
        raise RestoreBusy(f"another restore holds {LOCK_PATH}")
    try:
        return _restore(api, zk, False, min_age, page_size)
    finally:
        lock.release()


def _restore(
    api: Api, zk: KazooClient, dry_run: bool, min_age: float, page_size: int
) -> RestoreReport:
    report = RestoreReport(dry_run=dry_run)
    names = children(zk, queue.ENTRIES)
    report.entries = len(names)
    present = job_ids_of(zk, names)
    candidates: dict[str, str] = {}  # job id -> created
    for doc in iter_jobs(
        api, queued_filter(min_age), page_size=page_size, select=f"id,{NOT_BEFORE}"
    ):
        report.scanned += 1
        if doc.get(NOT_BEFORE):
            report.waiting += 1
        elif doc["id"] not in present:
            candidates[doc["id"]] = doc["created"]
    del present  # the biggest structure; not needed any more
    if candidates:
        # Entries made while we paged (new adds, or jobs released meanwhile) count as well.
        known = set(names)
        newer = [name for name in children(zk, queue.ENTRIES) if name not in known]
        for job_id in job_ids_of(zk, newer):
            candidates.pop(job_id, None)
    still = _still_queued(api, candidates, page_size) if candidates else {}
    report.missing = sorted(still.items(), key=lambda item: (item[1], item[0]))
    if report.missing and not dry_run:
        report.queued = queue.put_many(zk, report.missing)
        log.info(
            "restore: queued %d job(s) again, e.g. %s",
            len(report.queued),
            ", ".join(job_id for job_id, _ in report.missing[:5]),
        )
    return report
