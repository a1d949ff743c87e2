"""An action that runs until the test lets it finish (the metrics tests' in-flight jobs)."""

import os
import time

from nuvla_job.registry import action


@action("test_gated")
class Gated:
    """Waits until the file payload["gate"] exists (at most payload["timeout"] s), then
    succeeds; fails with 1 when the gate never opened. Appends "start ID" / "end ID" to
    payload["log"] if given."""

    def __init__(self, job):
        self.job = job

    def _mark(self, what):
        path = self.job.payload.get("log")
        if path:
            with open(path, "a") as handle:
                handle.write(f"{what} {self.job.id}\n")

    def do_work(self):
        self._mark("start")
        gate = self.job.payload["gate"]
        deadline = time.monotonic() + float(self.job.payload.get("timeout", 60))
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                return 1
            time.sleep(0.02)
        self._mark("end")
        return 0
