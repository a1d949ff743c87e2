"""`test_progress`: advances the job's progress in steps, so a watcher sees it move.

Payload: ``{"steps": 10, "step": 0.5}`` (progress 100/steps per step, step in seconds).
"""

import time

from nuvla_job.registry import action


@action("test_progress")
class Progress:
    def __init__(self, job):
        self.job = job

    def do_work(self):
        steps = int(self.job.payload.get("steps", 10))
        for index in range(1, steps):
            time.sleep(float(self.job.payload.get("step", 0.5)))
            self.job.set_progress(index * 100 // steps)
        return 0
