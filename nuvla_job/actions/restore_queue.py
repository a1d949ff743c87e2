"""`restore_queue`: queue again the QUEUED push/mixed jobs whose queue entry is gone.

The logic is `nuvla_job.restore` (shared with `job restore`). Payload (optional):
`{"min-age": seconds, "dry-run": bool}`. Distributed every ten minutes; reading a queue of a
million entries takes minutes, so raise that for such queues
(`--distribution-interval restore_queue:SECONDS`).

The action needs ZooKeeper: it connects as the executor it runs in does (`job.zookeeper`,
the executor's hosts, session timeout and security), with a short-lived client of its own so
that its batched reads never compete with the executor's queue consumer for the shared
client's requests in flight.
"""

from collections.abc import Iterator

from nuvla.api import Api

from nuvla_job import restore
from nuvla_job.job import Job
from nuvla_job.jobsearch import has_unfinished
from nuvla_job.registry import action, distribution

INTERVAL = 600
PRIORITY = 10
CONNECT_TIMEOUT = 15.0


@action("restore_queue")
class RestoreQueue:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.api = job.api

    def do_work(self) -> int:
        payload = self.job.payload if isinstance(self.job.payload, dict) else {}
        min_age = payload.get("min-age", restore.DEFAULT_MIN_AGE)
        if not isinstance(min_age, int | float) or isinstance(min_age, bool) or min_age < 0:
            self.job.set_status_message(f"payload 'min-age' must be a number >= 0, not {min_age!r}")
            return 1
        settings = self.job.zookeeper
        if settings is None:
            self.job.set_status_message("this executor was given no ZooKeeper to restore")
            return 1
        zk = settings.make_client()
        try:
            zk.start(timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            zk.close()
            self.job.set_status_message(
                f"cannot connect to ZooKeeper at {settings.hosts}: {type(exc).__name__}"
            )
            return 1
        try:
            report = restore.restore(
                self.api, zk, dry_run=bool(payload.get("dry-run")), min_age=min_age
            )
        except restore.RestoreBusy as exc:
            self.job.set_status_message(f"{exc}; nothing done")
            return 0
        finally:
            zk.stop()
            zk.close()
        self.job.set_status_message(report.summary())
        return 0


@distribution("restore_queue", INTERVAL)
def restore_when_needed(api: Api) -> Iterator[dict]:
    # A restore job that has waited two intervals may itself have lost its entry: add another.
    if not has_unfinished(api, "restore_queue", newer_than=2 * INTERVAL):
        yield {"action": "restore_queue", "priority": PRIORITY}
