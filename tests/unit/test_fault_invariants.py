"""The fault suite's checker (tests/faults/invariants.py) on small hand-made snapshots."""

from __future__ import annotations

from tests.faults.invariants import Execution, check

JOB = "job/00000000-0000-0000-0000-000000000001"


def run_twice() -> list[Execution]:
    return [
        Execution("start", JOB, 10, 1.0),
        Execution("end", JOB, 10, 2.0),
        Execution("start", JOB, 11, 3.0),
        Execution("end", JOB, 11, 4.0),
    ]


def verdict(duplicates_allowed: bool):
    jobs = {JOB: {"id": JOB, "state": "SUCCESS", "updated-by": "user/b"}}
    return check(
        {JOB},
        jobs,
        {},
        [],
        run_twice(),
        {10: "user/a", 11: "user/b"},
        duplicates_allowed=duplicates_allowed,
    )


def test_duplicate_executions_are_counted_where_they_are_allowed() -> None:
    found = verdict(duplicates_allowed=True)
    assert found.duplicate_executions == 1 and found.jobs_run_twice == [JOB]
    assert found.hard_failures() == []


def test_duplicate_executions_fail_a_scenario_that_allows_none() -> None:
    [problem] = verdict(duplicates_allowed=False).hard_failures()
    assert problem.startswith("duplicate executions: 1") and JOB in problem
