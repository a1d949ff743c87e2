"""How long each job meant for a newer engine has been going back to the queue.

The executor leaves a job whose ``version`` is newer than it supports for a newer engine:
it releases the entry after a short delay, and the next executor takes it again. With no
such engine that goes on forever, every few seconds: a user who can edit a job's data used
to be able to set ``version: 99`` and have it so. :class:`NewerVersionWaits` counts, per
job, the releases this executor made and the time since its first; past either bound the
executor fails the job with a message saying that no engine took it.

Each executor keeps its own count (in memory: a restart starts again); with several of
them the time bound is the one that tells, since each sees the job only now and then.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A job released this many times, or first released this long ago (seconds), is failed.
MAX_RELEASES = 60
MAX_WAIT = 600.0
# Jobs remembered at most (the longest-known forgotten first): bounded memory.
_REMEMBERED = 10_000


@dataclass
class Wait:
    """One job's releases so far (this one included) and when the first happened."""

    releases: int
    since: float


class NewerVersionWaits:
    """Releases for a newer engine, per job id, with the bounds they may reach."""

    def __init__(
        self,
        max_releases: int = MAX_RELEASES,
        max_wait: float = MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_releases = max_releases
        self.max_wait = max_wait
        self.clock = clock
        self._waits: OrderedDict[str, Wait] = OrderedDict()

    def release(self, job_id: str) -> Wait:
        """Count one more release of `job_id`; its wait so far."""
        wait = self._waits.get(job_id)
        if wait is None:
            wait = self._waits[job_id] = Wait(0, self.clock())
            while len(self._waits) > _REMEMBERED:
                self._waits.popitem(last=False)
        wait.releases += 1
        return wait

    def exceeded(self, wait: Wait) -> bool:
        """Whether `wait` is past a bound: the job is to be failed, not released again."""
        return wait.releases > self.max_releases or self.seconds(wait) > self.max_wait

    def seconds(self, wait: Wait) -> float:
        return self.clock() - wait.since

    def forget(self, job_id: str) -> None:
        self._waits.pop(job_id, None)
