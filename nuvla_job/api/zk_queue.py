"""The job API's side of the ZooKeeper queue: put entries for new jobs (see jobs.py)."""

from __future__ import annotations

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from .. import queue
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
            result = self.client.create_async(
                queue.entry_prefix(priority), job_id.encode(), sequence=True, makepath=True
            )
            return result.get(timeout=self.timeout)
        except (KazooException, self.client.handler.timeout_exception) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc

    def remove(self, path: str) -> None:
        try:
            self.client.delete(path)
        except NoNodeError:
            pass

    def find(self, job_id: str, priority: int) -> str | None:
        """The entry of this priority whose data is the job id, if any (used on recovery)."""
        self._check_connected()
        try:
            names = self.client.get_children(queue.ENTRIES)
        except NoNodeError:
            return None
        prefix = queue.entry_prefix(priority).rsplit("/", 1)[1]
        candidates = [n for n in names if n.startswith(prefix)]
        pending = [(name, self.client.get_async(f"{queue.ENTRIES}/{name}")) for name in candidates]
        wanted = job_id.encode()
        for name, result in pending:
            try:
                data, _ = result.get(timeout=self.timeout)
            except NoNodeError:
                continue
            if data == wanted:
                return f"{queue.ENTRIES}/{name}"
        return None
