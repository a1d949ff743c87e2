"""The fleet over time, for the dashboard: a bounded ring of samples the job API takes of
itself, and the per-action table of a period.

Every ``interval`` seconds (``--dashboard-interval``) the sampler records:

- the queue depth (children of ``/job/entries`` and ``/job/taken``: two stat reads);
- the RUNNING jobs (a count on the store's state index);
- the jobs that ended (SUCCESS, FAILED, CANCELED) since the previous sample, by action, with
  their durations: one ``JobStore.updated_counts`` over that slice of time (a final job is
  never edited again: its ``updated`` is when it ended), answered from a covering index, so
  its cost follows the jobs that ended in a few seconds, not the table;
- each announced executor's in-flight count (its presence node, see nuvla_job.presence).

A slice ends ``LAG`` seconds before the sample is taken: an edit stamped just before the cut
may still be committing, and one second later it is in the store. Slices follow each
other with no gap or overlap, so every ended job is counted once.

The ring keeps ``size`` samples (3 hours at 5 s, a few MiB at most): history starts when the
job API does, and each job API process keeps its own. ``series`` merges the samples of a
window into at most ``buckets`` buckets, with exact percentiles per bucket: durations are
whole seconds, so each sample keeps a small histogram per action rather than a list.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..states import FINAL_STATES, JOB_CANCELED, JOB_FAILED, JOB_RUNNING, JOB_SUCCESS
from ..timeutil import format_time
from .errors import ApiError
from .filters import Comparison
from .periodic import Periodic
from .query import Query
from .store import JobStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
WINDOW = 3 * 3600.0  # what the ring holds
LAG = 1.0
MAX_BUCKETS = 240
# The periods the per-action table offers (seconds), and the longest one it accepts.
PERIODS = (300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_PERIOD = 366 * 86400
PERCENTILES = (50, 90, 99)

Row = tuple[str | None, str | None, int | None, int]


class QueueCounts(Protocol):
    def queue_depth(self) -> dict[str, int]: ...

    def executors(self) -> list[dict[str, Any]]: ...


def iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, UTC))


def percentile(histogram: Mapping[int, int], pct: float) -> int | None:
    """The nearest-rank percentile of the values a {value: count} histogram holds."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(pct / 100 * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)  # not reached: the ranks add up to total


@dataclass
class Sample:
    time: float
    entries: int | None  # None while ZooKeeper is away
    taken: int | None
    running: int | None  # None when the store did not answer
    ended: dict[str, int] = field(default_factory=dict)  # by final state
    durations: dict[str, Counter[int]] = field(default_factory=dict)  # action -> histogram
    executors: dict[str, int] = field(default_factory=dict)  # name -> in-flight count


def _ended(rows: Iterable[Row]) -> tuple[dict[str, int], dict[str, Counter[int]]]:
    ended: Counter[str] = Counter()
    durations: dict[str, Counter[int]] = {}
    for action, state, duration, count in rows:
        if state is None:
            continue
        ended[state] += count
        # The time runs took: of the jobs that ran to an end (a cancelled one may not have).
        if state in (JOB_SUCCESS, JOB_FAILED) and duration is not None:
            durations.setdefault(action or "", Counter())[duration] += count
    return dict(ended), durations


class FleetSampler(Periodic):
    """Samples the fleet every ``interval`` seconds into a ring (a greenlet)."""

    def __init__(
        self,
        store: JobStore,
        zookeeper: QueueCounts,
        interval: float = DEFAULT_INTERVAL,
        window: float = WINDOW,
    ) -> None:
        super().__init__(interval)
        self.store = store
        self.zookeeper = zookeeper
        self.samples: deque[Sample] = deque(maxlen=max(1, int(window / interval)))
        self._cut: float | None = None  # where the last slice of ended jobs stopped

    def sample(self, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        cut = now - LAG
        entries = taken = running = None
        executors: dict[str, int] = {}
        try:
            depth = self.zookeeper.queue_depth()
            entries, taken = depth["entries"], depth["taken"]
            for doc in self.zookeeper.executors():
                count = doc.get("in-flight-count")
                if isinstance(count, int):
                    name = str(doc.get("name") or doc.get("node"))
                    executors[name] = executors.get(name, 0) + count
        except ApiError:
            pass  # ZooKeeper is away: the sample says so with None
        ended: dict[str, int] = {}
        durations: dict[str, Counter[int]] = {}
        try:
            running_query = Query(filter=Comparison("state", "=", JOB_RUNNING), last=0)
            running = self.store.search(running_query, None)[0]
            since = self._cut if self._cut is not None else cut - self.interval
            rows = self.store.updated_counts(iso(since), iso(cut), None, FINAL_STATES)
            ended, durations = _ended(rows)
            self._cut = cut
        except StoreError as exc:
            # The slice is read again, whole, at the next sample.
            log.warning("fleet sample without the store: %s", exc)
        sample = Sample(now, entries, taken, running, ended, durations, executors)
        self.samples.append(sample)
        return sample

    def series(self, window: float, buckets: int = MAX_BUCKETS, now: float | None = None) -> dict:
        """The samples of the last ``window`` seconds merged into at most ``buckets``."""
        now = time.time() if now is None else now
        start = now - window
        recent = [s for s in self.samples if s.time > start]
        width = max(self.interval, window / buckets)
        grouped: dict[int, list[Sample]] = {}
        for s in recent:
            grouped.setdefault(int((s.time - start) // width), []).append(s)
        points = [
            _bucket(group, len(group) * self.interval) for _, group in sorted(grouped.items())
        ]
        actions = sorted({a for p in points for a in p["durations"]})
        executors = Counter[str]()
        for s in recent:
            executors.update(s.executors)
        return {
            "interval": self.interval,
            "window": window,
            "bucket": width,
            "buckets": points,
            "actions": actions,
            # Each executor's share of the in-flight job-seconds of the window.
            "executor-load": dict(executors),
        }


def _last(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return known[-1] if known else None


def _bucket(group: list[Sample], seconds: float) -> dict[str, Any]:
    ended: Counter[str] = Counter()
    durations: dict[str, Counter[int]] = {}
    executors: Counter[str] = Counter()
    for s in group:
        ended.update(s.ended)
        for action, histogram in s.durations.items():
            durations.setdefault(action, Counter()).update(histogram)
        executors.update(s.executors)
    return {
        "time": round(group[-1].time, 3),
        "entries": _last([s.entries for s in group]),
        "taken": _last([s.taken for s in group]),
        "running": _last([s.running for s in group]),
        # Jobs ended per second over the bucket, by outcome.
        "rate": {state: ended.get(state, 0) / seconds for state in FINAL_STATES},
        "ended": {state: ended.get(state, 0) for state in FINAL_STATES},
        "durations": {
            action: {"p50": percentile(h, 50), "p99": percentile(h, 99), "count": h.total()}
            for action, h in durations.items()
        },
        "executors": {name: round(count / len(group), 2) for name, count in executors.items()},
    }


# -- the per-action table ---------------------------------------------------------------------


def action_table(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Per action: the jobs by state, the failure rate (FAILED among the jobs that ended
    SUCCESS or FAILED) and duration percentiles of those, from updated_counts rows."""
    states: dict[str, Counter[str]] = {}
    durations: dict[str, Counter[int]] = {}
    for action, state, duration, count in rows:
        name = action or ""
        states.setdefault(name, Counter())[state or ""] += count
        if state in (JOB_SUCCESS, JOB_FAILED) and duration is not None:
            durations.setdefault(name, Counter())[duration] += count
    table = []
    for name in sorted(states):
        by_state = states[name]
        ran = by_state[JOB_SUCCESS] + by_state[JOB_FAILED]
        histogram = durations.get(name, Counter())
        table.append(
            {
                "action": name,
                "count": by_state.total(),
                "states": dict(by_state),
                "failure-rate": by_state[JOB_FAILED] / ran if ran else None,
                "canceled": by_state[JOB_CANCELED],
                "duration": {f"p{p}": percentile(histogram, p) for p in PERCENTILES}
                | {"max": max(histogram) if histogram else None},
            }
        )
    return table
