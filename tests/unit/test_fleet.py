"""The fleet sampler and the per-action table (api/fleet.py) on a real SQLite store and a
small double of the ZooKeeper view."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nuvla_job.api.errors import ApiError
from nuvla_job.api.fleet import FleetSampler, action_table, iso, percentile
from nuvla_job.api.sqlite import SqliteStore


class Counts:
    """The two ZooKeeper reads the sampler makes; `away` makes them fail as ZooKeeper does."""

    def __init__(self) -> None:
        self.away = False
        self.depth = {"entries": 3, "taken": 1}
        self.nodes: list[dict[str, Any]] = [{"name": "ex-1", "in-flight-count": 1}]

    def queue_depth(self) -> dict[str, int]:
        if self.away:
            raise ApiError(503, "not connected to ZooKeeper")
        return self.depth

    def executors(self) -> list[dict[str, Any]]:
        return self.nodes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    sqlite = SqliteStore(tmp_path / "jobs.sqlite")
    yield sqlite
    sqlite.close()


T0 = 1_800_000_000.0


def job(n: int, state: str, at: float, duration: int | None = None, action: str = "a") -> dict:
    doc: dict[str, Any] = {
        "id": f"job/{n}",
        "action": action,
        "state": state,
        "created": iso(at - 100),
        "updated": iso(at),
    }
    if duration is not None:
        doc["duration"] = duration
    return doc


def test_percentile_is_nearest_rank_over_a_histogram() -> None:
    assert percentile({}, 50) is None
    assert percentile({1: 1}, 99) == 1
    histogram = {1: 50, 2: 49, 30: 1}
    assert (percentile(histogram, 50), percentile(histogram, 99), percentile(histogram, 100)) == (
        1,
        2,
        30,
    )


def test_each_ended_job_is_counted_in_exactly_one_sample(store: SqliteStore) -> None:
    counts = Counts()
    sampler = FleetSampler(store.jobs, counts, interval=5)
    store.jobs.insert_many(
        [
            job(1, "SUCCESS", T0 - 3, 2),
            job(2, "FAILED", T0 - 2, 4, action="b"),
            job(3, "RUNNING", T0 - 2),
            job(4, "SUCCESS", T0 - 0.5, 1),  # after the first cut (T0 - LAG)
        ]
    )
    first = sampler.sample(now=T0)
    assert (first.entries, first.taken, first.running) == (3, 1, 1)
    assert first.ended == {"SUCCESS": 1, "FAILED": 1}
    assert first.durations == {"a": {2: 1}, "b": {4: 1}}
    assert first.executors == {"ex-1": 1}
    second = sampler.sample(now=T0 + 5)
    assert second.ended == {"SUCCESS": 1}  # job 4, once
    counts.away = True
    third = sampler.sample(now=T0 + 10)
    assert (third.entries, third.taken, third.ended) == (None, None, {})


def test_series_merges_samples_into_buckets_with_exact_percentiles(store: SqliteStore) -> None:
    sampler = FleetSampler(store.jobs, Counts(), interval=5)
    docs = [job(n, "SUCCESS", T0 - 2, 1) for n in range(98)]
    docs += [job(100, "SUCCESS", T0 + 3, 50), job(101, "FAILED", T0 + 3, 60)]
    store.jobs.insert_many(docs)
    sampler.sample(now=T0)
    sampler.sample(now=T0 + 5)
    series = sampler.series(window=60, buckets=2, now=T0 + 6)
    assert series["actions"] == ["a"]
    [bucket] = series["buckets"]  # both samples fall in the second half of the window
    assert bucket["ended"] == {"SUCCESS": 99, "FAILED": 1, "CANCELED": 0}
    assert bucket["rate"]["SUCCESS"] == pytest.approx(99 / 10)
    assert bucket["durations"]["a"] == {"p50": 1, "p99": 50, "count": 100}
    assert series["executor-load"] == {"ex-1": 2}
    # Older samples leave the window.
    assert sampler.series(window=60, now=T0 + 120)["buckets"] == []


def test_the_ring_is_bounded(store: SqliteStore) -> None:
    sampler = FleetSampler(store.jobs, Counts(), interval=5, window=20)
    for i in range(10):
        sampler.sample(now=T0 + 5 * i)
    assert len(sampler.samples) == 4


def test_action_table_counts_states_failure_rate_and_percentiles() -> None:
    rows = [
        ("a", "SUCCESS", 2, 8),
        ("a", "FAILED", 10, 2),
        ("a", "CANCELED", None, 5),
        ("a", "QUEUED", None, 1),
        ("b", "QUEUED", None, 3),
    ]
    a, b = action_table(rows)
    assert a["action"] == "a" and a["count"] == 16
    assert a["states"] == {"SUCCESS": 8, "FAILED": 2, "CANCELED": 5, "QUEUED": 1}
    assert a["failure-rate"] == pytest.approx(0.2)
    assert a["duration"] == {"p50": 2, "p90": 10, "p99": 10, "max": 10}
    assert b["failure-rate"] is None and b["duration"]["p50"] is None
