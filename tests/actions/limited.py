"""Actions with concurrency limits (tests/integration/test_limits.py).

Each appends "start JOB PID" and "end JOB PID" to payload["log"]: lines appended by several
processes land in the order they were written, so the file gives the exact number of jobs
running at any moment, across executors."""

import os
import time

from nuvla_job.registry import action


class _Marked:
    def __init__(self, job):
        self.job = job

    def mark(self, what):
        with open(self.job.payload["log"], "a") as handle:
            handle.write(f"{what} {self.job.id} {os.getpid()}\n")


@action("test_limited", max_concurrent=3)
class Limited(_Marked):
    """At most 3 at once in the fleet: sleeps payload["seconds"] between its marks."""

    def do_work(self):
        self.mark("start")
        time.sleep(float(self.job.payload.get("seconds", 0.1)))
        self.mark("end")
        return 0


@action("test_limited_gated", max_concurrent=1)
class LimitedGated(_Marked):
    """One at a time in the fleet: runs until the file payload["gate"] exists."""

    def do_work(self):
        self.mark("start")
        while not os.path.exists(self.job.payload["gate"]):
            time.sleep(0.02)
        self.mark("end")
        return 0
