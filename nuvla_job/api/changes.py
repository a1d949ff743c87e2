"""Who waits for which job, woken when the job rules write it: the long poll behind
``POST /api/job/wait``, on which the Python client's ``wait()`` and ``progress()`` rest.

A caller names the jobs it follows, each with the :func:`etag` of the version it has (or
none). The job rules answer at once with every job whose version differs (and the ids that
are gone); otherwise the request is held, registered here as a :class:`Waiter`, until the
rules write one of its jobs (:meth:`Changes.changed`, called by jobs.py after each write)
or its time is up. One request follows any number of jobs, so a client process waiting
for a thousand jobs holds one connection and sends one request per change or timeout.

Writes made through another job API process on the same database are not notified here:
a held request also reads its jobs again every :data:`RECHECK` seconds (one query for all
of them), so it sees those within that time.

A client replaces its held request when it starts following more jobs: requests that carry
the same ``watch`` token (per caller) and a higher ``seq`` supersede the held ones, which
answer at once. A request that arrives after a newer one of its token (reordered on the
way) is superseded on arrival.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable

import gevent.event
import orjson

from .store import Doc

# The longest a request may be held, in seconds: below the idle timeouts of common proxies.
MAX_WAIT = 60.0
# How often a held request reads its jobs again, for writes made by other processes.
RECHECK = 2.0
# Jobs one request may follow.
MAX_JOBS = 10_000
# Watch tokens remembered (their last seq), the least recently used forgotten first.
MAX_WATCHES = 10_000


def etag(doc: Doc) -> str:
    """The version of a stored document: a digest of its content (any write changes it)."""
    return hashlib.blake2b(
        orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), digest_size=12
    ).hexdigest()


class Waiter:
    """One held request: the jobs it follows and what has happened to them since."""

    def __init__(self, ids: Iterable[str], watch: tuple[str, str] | None, seq: int) -> None:
        self.ids = frozenset(ids)
        self.watch = watch
        self.seq = seq
        self.changed: set[str] = set()  # notified since the last look
        self.superseded = False  # a newer request of the same watch token arrived
        self.closed = False  # the server is stopping
        self._event = gevent.event.Event()

    @property
    def done(self) -> bool:
        """Nothing more will come: answer with what there is."""
        return self.superseded or self.closed

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> set[str]:
        """Wait up to ``timeout`` seconds for a notification; the ids notified (possibly
        none: timed out, superseded or closed)."""
        if not self.changed and not self.done:
            self._event.wait(timeout)
        self._event.clear()
        changed, self.changed = self.changed, set()
        return changed


class Changes:
    """The held requests of one job API process, by job and by watch token.

    Everything runs on the server's gevent loop: no locks.
    """

    def __init__(self) -> None:
        self._by_job: dict[str, set[Waiter]] = {}
        self._by_watch: dict[tuple[str, str], set[Waiter]] = {}
        self._last_seq: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.closed = False

    def __len__(self) -> int:
        """How many requests are held."""
        return len({w for waiters in self._by_job.values() for w in waiters})

    def register(
        self, ids: Iterable[str], watch: tuple[str, str] | None = None, seq: int = 0
    ) -> Waiter:
        """A waiter for ``ids``, registered before the caller reads them, so that no write
        between the read and the wait is missed. ``watch``: (caller identity, token)."""
        waiter = Waiter(ids, watch, seq)
        waiter.closed = self.closed
        if watch is not None:
            last = self._last_seq.get(watch)
            if last is not None and seq < last:
                waiter.superseded = True  # a newer request of this token came first
                return waiter
            self._last_seq[watch] = seq
            self._last_seq.move_to_end(watch)
            while len(self._last_seq) > MAX_WATCHES:
                self._last_seq.popitem(last=False)
            for older in list(self._by_watch.get(watch, ())):
                if older.seq < seq:
                    older.superseded = True
                    older.wake()
            self._by_watch.setdefault(watch, set()).add(waiter)
        for job_id in waiter.ids:
            self._by_job.setdefault(job_id, set()).add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        for job_id in waiter.ids:
            waiters = self._by_job.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_job[job_id]
        if waiter.watch is not None:
            same = self._by_watch.get(waiter.watch)
            if same is not None:
                same.discard(waiter)
                if not same:
                    del self._by_watch[waiter.watch]

    def changed(self, job_id: str) -> None:
        """The job rules wrote (or deleted) ``job_id``: wake whoever follows it."""
        for waiter in self._by_job.get(job_id, ()):
            waiter.changed.add(job_id)
            waiter.wake()

    def close(self) -> None:
        """The server is stopping: every held request answers now (its client asks again,
        of another process or after the restart)."""
        self.closed = True
        for waiters in list(self._by_job.values()):
            for waiter in waiters:
                waiter.closed = True
                waiter.wake()
