"""Actions the retry and delay tests run (tests/integration/test_retries_and_delays.py).

Each appends one line per attempt to the file payload["record"] ("start JOB ATTEMPT PID
TIME", one O_APPEND write), so a test can count and time the runs of its jobs.
"""

import os
import time

from nuvla_job.registry import action


def record(job):
    path = job.payload.get("record")
    if path:
        line = f"start {job.id} {job.get('attempts')} {os.getpid()} {time.time():.3f}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


@action("test_flaky", retries=3, backoff=0.2, max_backoff=0.5, retry_on=ConnectionError)
class Flaky:
    """Raises ConnectionError in its first payload["fails"] attempts, then succeeds."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        record(self.job)
        if self.job["attempts"] <= self.job.payload.get("fails", 0):
            raise ConnectionError(f"flaky attempt {self.job['attempts']}")
        return 0


@action("test_fails_then_hangs", retries=3, backoff=0.2, max_backoff=0.5)
class FailsThenHangs:
    """Attempt 1 raises; attempt 2 sleeps payload["seconds"] (a test kills its executor
    meanwhile); any later attempt succeeds."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        record(self.job)
        attempt = self.job["attempts"]
        if attempt == 1:
            raise RuntimeError("attempt 1 breaks")
        if attempt == 2:
            time.sleep(float(self.job.payload.get("seconds", 60)))
        return 0


@action("test_recorded")
class Recorded:
    """Records its start and succeeds (delayed jobs measure their lateness with it)."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        record(self.job)
        return 0
