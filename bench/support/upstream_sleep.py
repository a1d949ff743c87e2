# The benchmarks' `sleep` action in upstream's own shape and decorator, for the package's
# executor (nuvla-job-engine): sleeps the payload's `seconds` and succeeds, as this engine's
# built-in `sleep` does.
import json
import time

from nuvla.job_engine.job.actions import action


@action("sleep")
class SleepJob:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        payload = json.loads(self.job.get("payload") or "{}")
        time.sleep(float(payload.get("seconds", 1)))
        return 0
