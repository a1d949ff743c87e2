# An action module in upstream's own shape, registered with upstream's decorator (so the
# package's executor runs it, and this engine through --nuvla-package): each run adds a
# marker job naming the engine that ran it, so that tests count the runs of each job.
from nuvla.job_engine.job.actions import action


@action("nuvla_counted")
class CountedJob:
    def __init__(self, job):
        self.job = job
        self.api = job.api

    def do_work(self):
        engine = type(self.job).__module__.split(".")[0]  # "nuvla" (upstream) or "nuvla_job"
        self.api.add(
            "job",
            {
                "action": "run_marker",
                "execution-mode": "pull",
                "target-resource": {"href": self.job.id},
                "tags": [engine],
            },
        )
        return 0
