"""The job API's side of the ZooKeeper queue: put entries for new jobs (see jobs.py)."""

from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException, NoNodeError, SessionExpiredError
from kazoo.protocol.states import KazooState

from .. import queue
from ..zk import children, read_nodes
from .jobs import JobQueue, QueueUnavailable


class ZooKeeperJobQueue(JobQueue):
    """Puts entries in ``/job/entries``; refuses at once while ZooKeeper is not connected."""

    def __init__(self, client: KazooClient, timeout: float = 5.0) -> None:
        self.client = client
        self.timeout = timeout

    def _check_connected(self) -> None:
        if self.client.state != KazooState.CONNECTED:
            raise QueueUnavailable("not connected to ZooKeeper")

    def put(self, job_id: str, priority: int) -> str:
        self._check_connected()
        try:
            return queue.put(self.client, job_id, priority, timeout=self.timeout)
        except (KazooException, self.client.handler.timeout_exception) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc

    def put_many(self, items: list[tuple[str, int]]) -> list[str]:
        """Queue (job id, priority) pairs in ZooKeeper transactions; on a failure,
        QueueUnavailable whose ``created`` lists the entries made before it (in order) and
        whose ``certain`` says whether the rest surely were not made."""
        self._check_connected()
        try:
            return queue.put_many(self.client, items)
        except queue.PutManyError as exc:
            cause = exc.__cause__
            # A connection lost during a commit leaves its chunk unknown: made or not.
            certain = not isinstance(cause, ConnectionLoss | SessionExpiredError)
            raise QueueUnavailable(type(cause).__name__, exc.created, certain) from exc

    def remove(self, path: str) -> None:
        try:
            self.client.delete(path)
        except NoNodeError:
            pass

    def find(self, job_id: str, priority: int) -> str | None:
        """The entry of this priority whose data is the job id, if any (used on recovery)."""
        self._check_connected()
        names = children(self.client, queue.ENTRIES)
        prefix = queue.entry_prefix(priority).rsplit("/", 1)[1]
        paths = (queue.entry_path(name) for name in names if name.startswith(prefix))
        wanted = job_id.encode()
        for path, data in read_nodes(self.client, paths, timeout=self.timeout):
            if data == wanted:
                return path
        return None
