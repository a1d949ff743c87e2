"""What handling one queue entry ended in: the queue's decision and the job state written.

Every row of engine-behaviour.md's executor table ends in one :class:`Outcome`; the executor
carries out its :class:`Decision` on the queue, and the metrics label it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    """What becomes of a taken entry."""

    CONSUME = "consume"  # done with: deleted from the queue
    RELEASE = "release"  # back to the queue, for any executor to take
    LOST = "lost"  # the session that took it has ended: no longer ours to touch


@dataclass(frozen=True)
class Outcome:
    """The decision for one entry and the job state this executor wrote, if any."""

    decision: Decision
    # SUCCESS or FAILED, or QUEUED when a mixed-mode job goes to pull mode; None: no state
    # written (dropped, released, lost).
    state: str | None = None
    # Seconds the entry is kept before its release, so that neither this executor nor
    # another one takes it straight back (job API down, job for a newer engine).
    release_after: float = 0.0

    @classmethod
    def consume(cls, state: str | None = None) -> Outcome:
        return cls(Decision.CONSUME, state)

    @classmethod
    def release(cls, after: float = 0.0) -> Outcome:
        return cls(Decision.RELEASE, release_after=after)

    @classmethod
    def lost(cls) -> Outcome:
        return cls(Decision.LOST)
