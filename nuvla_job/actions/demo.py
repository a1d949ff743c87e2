"""Actions for demos and benchmarks: `sleep` and upstream's `dummy_test_action`."""

import time

from nuvla_job.job import Job
from nuvla_job.registry import action


@action("sleep", pull_mode_support=True)
class SleepJob:
    """Sleeps `seconds` from the payload (default 1) and succeeds; fails when the payload
    says `"fail": true` (for demos of failed jobs). It reports no progress: benchmarks run
    it, and each report would be one more call to the job API."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def do_work(self) -> int:
        payload = self.job.payload if isinstance(self.job.payload, dict) else {}
        seconds = float(payload.get("seconds", 1))
        time.sleep(seconds)
        if payload.get("fail"):
            self.job.set_status_message(f"slept {seconds} s, then failed as asked")
            return 1
        return 0


@action("dummy_test_action", pull_mode_support=True)
class DummyTestAction:
    """Does nothing and succeeds (upstream's test action)."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def do_work(self) -> int:
        return 0
