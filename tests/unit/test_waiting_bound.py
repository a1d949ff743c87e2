"""The executor's bound on jobs waiting for a limit (executor.py: "runs up to N jobs and
holds at most N more waiting"), on the in-memory doubles: fetches take time, so several
takes are decided before any of their jobs reaches its limit."""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event

from nuvla_job.executor import Executor
from nuvla_job.limits import Limits
from nuvla_job.registry import ActionRegistry, ActionSpec
from tests.support.executor_doubles import FakeApi, FakeConsumer
from tests.support.waiting import wait_for

GATE = gevent.event.Event()


class Gated:
    def __init__(self, job: Any) -> None:
        self.job = job

    def do_work(self) -> int:
        GATE.wait()
        return 0


def test_jobs_waiting_for_a_limit_never_exceed_the_concurrency() -> None:
    GATE.clear()
    actions = ActionRegistry(lite=False)
    actions.add(ActionSpec("gated", Gated))
    api, consumer = FakeApi(), FakeConsumer()
    api.latency = 0.05  # each fetch yields: the take loops run meanwhile
    executor = Executor(api, consumer, actions, limits=Limits(local={"gated": 1}), concurrency=3)
    jobs = [api.add_job("gated", **{"execution-mode": "push"}) for _ in range(10)]
    for job in jobs:
        consumer.put(job)
    peak = 0

    def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, executor.waiting())
            gevent.sleep(0.001)

    watcher = gevent.spawn(watch)
    runner = gevent.spawn(executor.run)
    try:
        # One runs, three wait: the bound is reached and the other six stay in the queue.
        wait_for(lambda: executor.waiting() == 3, "3 jobs waiting", pause=gevent.sleep)
        gevent.sleep(0.5)  # ten fetch latencies in which a take past the bound would happen
        assert (peak, consumer.depth, len(consumer.held)) == (3, 6, 4)
        GATE.set()  # then every job runs, one at a time
        wait_for(lambda: len(consumer.consumed) == 10, "every job run", pause=gevent.sleep)
        assert peak == 3
        assert all(api.jobs[job]["state"] == "SUCCESS" for job in jobs)
    finally:
        GATE.set()
        executor.stop()
        runner.join(timeout=10)
        watcher.kill()
