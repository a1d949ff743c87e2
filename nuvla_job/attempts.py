"""A job's attempts: how many times its action has started, counted in the job document.

The executor raises the count in the same edit that sets the job ``RUNNING``, so a crash or
``kill -9`` during the action neither loses nor resets it; the retry policy
(middleware/retries.py) reads it to decide whether a failure gets another attempt.

Where the count lives depends on the job API, told apart by the document itself:

- this project's job API gives every job an ``attempts`` attribute (0 when added), and keeps
  the errors of the failed attempts in ``attempt-errors`` (one line each); a retry waits in
  the job store, ``QUEUED`` with a ``not-before`` time, until the scheduler queues it;
- a Nuvla server's job schema is fixed, so nothing unknown is sent to it: the count is the
  tag ``attempt:N`` (``tags`` are free-form strings), written only for actions whose policy
  retries at all, and a retry waits with the executor holding its entry (a Nuvla server has
  no ``not-before``), which it then releases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ATTEMPTS = "attempts"
ATTEMPT_ERRORS = "attempt-errors"
NOT_BEFORE = "not-before"
RETRY = "retry"  # a job's own retry policy: {"retries", "backoff", "max-backoff"}
TAG_PREFIX = "attempt:"
# The errors kept per job, and the length of each line: a job retried for days must not
# grow its document without bound.
MAX_ERRORS = 50
MAX_ERROR_LINE = 500


def own_api(job: Mapping[str, Any]) -> bool:
    """Whether the job comes from this project's job API (which adds ``attempts`` to every
    job); otherwise it comes from a Nuvla server, whose schema is fixed."""
    return isinstance(job.get(ATTEMPTS), int)


def _tagged_count(tags: Any) -> int:
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, str) and tag.startswith(TAG_PREFIX):
            number = tag[len(TAG_PREFIX) :]
            if number.isdigit():
                return int(number)
    return 0


def count(job: Mapping[str, Any]) -> int:
    """The attempts started so far (the running one included, once it is ``RUNNING``)."""
    if own_api(job):
        return max(0, job[ATTEMPTS])
    return _tagged_count(job.get("tags"))


def errors(job: Mapping[str, Any]) -> list[str]:
    """The lines of the failed attempts so far (always empty from a Nuvla server)."""
    kept = job.get(ATTEMPT_ERRORS)
    return [e for e in kept if isinstance(e, str)] if isinstance(kept, list) else []


def with_error(job: Mapping[str, Any], line: str) -> list[str]:
    """``attempt-errors`` with one more line, bounded (the oldest go first)."""
    if len(line) > MAX_ERROR_LINE:
        line = line[: MAX_ERROR_LINE - 1] + "…"
    return [*errors(job), line][-MAX_ERRORS:]


def start(job: Mapping[str, Any], retried: bool) -> dict[str, Any]:
    """The attributes that count a new attempt, to send with ``state: RUNNING``.

    On this project's job API every attempt is counted; on a Nuvla server only when the
    action's policy retries (``retried``), so that other jobs' tags stay as they were.
    """
    number = count(job) + 1
    if own_api(job):
        return {ATTEMPTS: number}
    if not retried:
        return {}
    tags = job.get("tags")
    kept = (
        [t for t in tags if not (isinstance(t, str) and t.startswith(TAG_PREFIX))]
        if (isinstance(tags, list))
        else []
    )
    return {"tags": [*kept, f"{TAG_PREFIX}{number}"]}
