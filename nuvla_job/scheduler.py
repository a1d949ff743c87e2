"""Scheduler: the elected loop that queues delayed jobs, and retries, when they are due.

A job with a ``not-before`` time (``job submit --delay 30s``, or a failed attempt waiting out
its back-off) is stored ``QUEUED`` with no queue entry, so no consumer, ours or upstream's,
sees it early. Every tick, the scheduler asks the job API to queue the due ones
(``POST job/queue-due``), earliest first, in batches, until none is left; the job API claims
each batch in one database transaction and queues it in ZooKeeper transactions
(nuvla_job/api/jobs.py, ``JobService.queue_due``), so a job is queued once even when two
schedulers overlap.

The scheduler rides on the distributor (nuvla_job/distributor.py): it is one more elected
loop, a :class:`~nuvla_job.registry.Distribution` named ``scheduler`` whose tick creates no
job. So it runs wherever the distributions run (``job-distributor``, ``job-executor
--distributions``), one leader at a time through ``/election/scheduler``, on the shared tick
grid; when its leader dies, another process leads within the session timeout and its next
tick queues whatever came due meanwhile. ``--distribution-interval scheduler:N`` sets the
tick (default 1 s), ``--distribution-exclude scheduler`` leaves it out.

Against a Nuvla server, which has no delayed jobs, the call is refused (404): the scheduler
says so once and stays idle.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from nuvla.api import Api, NuvlaError

from .registry import Distribution, DistributionRegistry, JobBody

log = logging.getLogger(__name__)

NAME = "scheduler"
INTERVAL = 1.0
# Jobs queued per call: one database transaction and one ZooKeeper transaction each.
BATCH = 1000
# Calls per tick at most, so that a tick with a huge backlog still ends (the next one
# continues where it stopped).
MAX_CALLS = 50
DUE_PATH = "job/queue-due"


class Scheduler:
    """Queues the due jobs at each tick; see the module's documentation."""

    def __init__(self, batch: int = BATCH) -> None:
        self.batch = batch
        self._unsupported = False  # told once that the job API has no delayed jobs

    def distribution(self, interval: float = INTERVAL) -> Distribution:
        return Distribution(NAME, interval, self.tick)

    def tick(self, api: Api) -> list[JobBody]:
        """Queue every due job (up to MAX_CALLS batches); creates no job itself."""
        queued = 0
        for _ in range(MAX_CALLS):
            answer = self._call(api)
            if answer is None:
                break
            queued += int(answer.get("queued", 0))
            if not answer.get("more"):
                break
        if queued:
            log.info("queued %d due job(s)", queued)
        return []

    def _call(self, api: Api) -> dict[str, Any] | None:
        try:
            # nuvla.api has no call for a collection action of a server's own: its generic
            # POST, which logs in again on 401/403 as every call does.
            answer = api._cimi_post(resource_id=DUE_PATH, json={"limit": self.batch})
        except NuvlaError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (404, 405):
                if not self._unsupported:
                    self._unsupported = True
                    log.warning(
                        "the job API has no delayed jobs (a Nuvla server?): the scheduler "
                        "stays idle"
                    )
                return None
            log.warning("scheduler: the job API answered %s: %s", status, exc.reason)
            return None
        except (requests.RequestException, OSError) as exc:
            log.warning("scheduler: the job API is unreachable (%s)", type(exc).__name__)
            return None
        self._unsupported = False
        return answer if isinstance(answer, dict) else None


def register(registry: DistributionRegistry, interval: float = INTERVAL) -> None:
    """Add the scheduler to the distributions a process may run (once)."""
    if NAME not in registry:
        registry.register(Scheduler().distribution(interval))
