"""What handling one queue entry ended in: the queue's decision and the job state written.

Every row of engine-behaviour.md's executor table ends in one :class:`Outcome`; the executor
carries out its :class:`Decision` on the queue, and the metrics label it.

An action ends its run leaving its job RUNNING for a monitor to finish by raising
:class:`LeaveRunning` (upstream's bulk actions raise their ``UnfinishedBulkActionToMonitor``,
recognised by :func:`leaves_running` too): the entry is consumed and no state is written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .states import JOB_RUNNING


class Decision(enum.Enum):
    """What becomes of a taken entry."""

    CONSUME = "consume"  # done with: deleted from the queue
    RELEASE = "release"  # back to the queue, for any executor to take
    LOST = "lost"  # the session that took it has ended: no longer ours to touch


@dataclass(frozen=True)
class Outcome:
    """The decision for one entry and the job state this executor wrote, if any."""

    decision: Decision
    # SUCCESS or FAILED, or QUEUED when a mixed-mode job goes to pull mode, or RUNNING when
    # the action left its job to a monitor; None: no state written (dropped, released, lost).
    state: str | None = None
    # Seconds the entry is kept before its release, so that neither this executor nor
    # another one takes it straight back (job API down, job for a newer engine, a retry's
    # back-off against a Nuvla server).
    release_after: float = 0.0
    # The job failed and was put back to QUEUED for another attempt (state "QUEUED").
    retried: bool = False

    @classmethod
    def consume(cls, state: str | None = None) -> Outcome:
        return cls(Decision.CONSUME, state)

    @classmethod
    def release(cls, after: float = 0.0) -> Outcome:
        return cls(Decision.RELEASE, release_after=after)

    @classmethod
    def retry(cls, hold: float | None = None) -> Outcome:
        """Another attempt is due: the job waits in the job store for the scheduler (the
        entry is consumed), or, with ``hold``, the entry is released after that long."""
        if hold is None:
            return cls(Decision.CONSUME, "QUEUED", retried=True)
        return cls(Decision.RELEASE, "QUEUED", release_after=hold, retried=True)

    @classmethod
    def lost(cls) -> Outcome:
        return cls(Decision.LOST)

    @classmethod
    def left_running(cls) -> Outcome:
        """The action handed its RUNNING job to a monitor: consumed, nothing more written."""
        return cls(Decision.CONSUME, JOB_RUNNING)


class LeaveRunning(Exception):  # noqa: N818 - named for what the action asks, as upstream's
    """Raised by an action whose job stays RUNNING after its run, for a monitor to finish
    (e.g. a bulk job whose children run on): the executor frees the slot and writes nothing.

    The action tags its job first (``monitor``, see nuvla_job/actions/bulk_jobs.py), so that
    the monitor distribution finds it.
    """


# Upstream's exception of the same meaning, named rather than imported: the package is an
# optional extra, and its modules must not be imported by an engine that does not load it.
UPSTREAM_LEAVE_RUNNING = (
    "nuvla.job_engine.job.actions.utils.bulk_action",
    "UnfinishedBulkActionToMonitor",
)


def leaves_running(exc: BaseException) -> bool:
    """Whether an action raising ``exc`` leaves its job RUNNING for a monitor."""
    if isinstance(exc, LeaveRunning):
        return True
    return any((c.__module__, c.__qualname__) == UPSTREAM_LEAVE_RUNNING for c in type(exc).__mro__)
