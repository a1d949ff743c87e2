"""The client's long poll wakes only the waits of the jobs an answer carries (found by
bench.waiters: with one condition for all, every answer woke a thousand waits)."""

from __future__ import annotations

import threading
from typing import Any

from nuvla_job.client import _Watcher


class CountingCondition(threading.Condition):
    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_an_answer_wakes_only_the_waits_of_its_jobs() -> None:
    watcher = _Watcher(client=None)  # type: ignore[arg-type]  # _apply sends nothing
    conds = {}
    for job_id in ("job/a", "job/b", "job/c"):
        conds[job_id] = watcher._job_conds[job_id] = CountingCondition(watcher._lock)
        watcher._interest[job_id] += 1
    watcher._apply(
        {
            "jobs": [{"etag": "1", "job": {"id": "job/a", "updated": "2026-12-02T10:00:00Z"}}],
            "missing": ["job/c", "job/unfollowed"],
        }
    )
    assert {job_id: cond.notified for job_id, cond in conds.items()} == {
        "job/a": 1,
        "job/b": 0,
        "job/c": 1,
    }
    assert watcher._versions["job/a"][0] == "1"
    assert watcher._missing == {"job/c"}
    # An older answer arriving last changes nothing and wakes no one.
    watcher._apply(
        {"jobs": [{"etag": "0", "job": {"id": "job/a", "updated": "2026-12-02T09:00:00Z"}}]}
    )
    assert conds["job/a"].notified == 1
    assert watcher._versions["job/a"][0] == "1"
