"""The action the fault-injection suite (tests/faults) loads its executors with."""

import os
import time

from nuvla_job.registry import action


def _record(path, what, job_id):
    # One write on an O_APPEND descriptor: lines of concurrent processes never interleave.
    line = f"{what} {job_id} {os.getpid()} {time.time():.3f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@action("fault_work")
class FaultWork:
    """Sleeps payload["seconds"] and succeeds; records every execution ("start"/"end", job
    id, pid, time) in the file payload["record"], so re-runs of a job can be counted."""

    def __init__(self, job):
        self.job = job

    def do_work(self):
        payload = self.job.payload
        record = payload.get("record")
        if record:
            _record(record, "start", self.job.id)
        time.sleep(float(payload.get("seconds", 0)))
        if record:
            _record(record, "end", self.job.id)
        return 0
