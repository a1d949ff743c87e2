# Written exactly in the shape of an upstream Nuvla job-engine action; only the import
# line below is pointed at this package.

from nuvla_job.registry import action


@action("upstream_style_cleanup")
class UpstreamStyleCleanupJob:
    def __init__(self, job):
        self.job = job
        self.api = job.api

    def cleanup(self):
        self.job.set_progress(10)
        target = self.job.target_resource_href
        self.job.add_affected_resource("job/upstream-affected")
        self.job.set_status_message("cleaned {} (action {})".format(target, self.job["action"]))
        return 0

    def do_work(self):
        return self.cleanup()
