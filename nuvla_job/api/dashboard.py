"""The live dashboard: a static page at ``/dashboard`` and its JSON under ``/api/dashboard``.

The page (HTML, JS and CSS in ``static/dashboard``, no build step, nothing fetched from
elsewhere) polls these endpoints and the job collection itself:

- ``GET /api/dashboard/queue``: queue depth over time, sampled every few seconds from the
  stats of ``/job/entries`` and ``/job/taken`` (``numChildren``: one cheap read each, even
  with a million entries) into a ring buffer;
- ``GET /api/dashboard/executors``: the executors announced under ``/executors`` (see
  :mod:`nuvla_job.presence`) with their in-flight jobs;
- ``GET /api/dashboard/leaders``: the leader of each distribution, read from kazoo's
  election nodes under ``/election/<name>`` (the contender with the lowest sequence leads);
- ``GET /api/dashboard/fleet``: the fleet over time (jobs ended per second by outcome, queue
  depth, running jobs, p50/p99 duration per action, executors' in-flight jobs), from the
  ring of samples :mod:`nuvla_job.api.fleet` takes;
- ``GET /api/dashboard/actions``: the per-action table of a period (any logged-in user: it
  counts the jobs the caller may see).

Authentication is the API's own: the session cookie made by ``POST /api/session`` (password
or API key). These cluster-wide views are for administrators: 401 without a session, 403
for other users. Jobs themselves (the search, one job's page) come from ``GET /api/job``, with
the job ACLs as always.
Nothing here writes to ZooKeeper.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import falcon
import gevent
import orjson
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState

from .. import presence, queue
from ..distributor import ELECTION_ROOT
from ..zk import children, pipelined, read_nodes
from . import fleet
from .errors import ApiError
from .fleet import FleetSampler
from .periodic import Periodic

if TYPE_CHECKING:
    from .app import Context

log = logging.getLogger(__name__)
T = TypeVar("T")

STATIC_DIR = Path(__file__).resolve().parent / "static" / "dashboard"
SAMPLE_INTERVAL = 2.0
SAMPLE_COUNT = 450  # 15 minutes at one sample every 2 s
ZK_TIMEOUT = 5.0
# kazoo's lock (and so election) node names: "<uuid hex>__lock__<sequence>".
_CONTENDER = re.compile(r"__lock__(-?\d{10})$")
# Everything the page loads comes from this server: say so to the browser.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _send(resp: falcon.Response, body: Any) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)
    resp.cache_control = ["no-store"]


class ZooKeeperView:
    """Read-only views of the engine's ZooKeeper tree for the dashboard."""

    def __init__(self, zk: KazooClient | None, timeout: float = ZK_TIMEOUT) -> None:
        self.zk = zk
        self.timeout = timeout

    def _client(self) -> KazooClient:
        if self.zk is None or self.zk.state != KazooState.CONNECTED:
            raise ApiError(503, "not connected to ZooKeeper")
        return self.zk

    def _children(self, zk: KazooClient, path: str) -> list[str]:
        return children(zk, path, timeout=self.timeout)

    def _get_all(self, zk: KazooClient, paths: list[str]) -> list[tuple[str, bytes]]:
        """(path, data) of each node that still exists (some may be gone since listed)."""
        return [
            (path, data)
            for path, data in read_nodes(zk, paths, timeout=self.timeout)
            if data is not None
        ]

    def _guarded(self, read: Callable[[KazooClient], T]) -> T:
        try:
            return read(self._client())
        except (KazooException, gevent.Timeout) as exc:
            raise ApiError(503, f"ZooKeeper read failed: {type(exc).__name__}") from None

    def queue_depth(self) -> dict[str, int]:
        """Children of ``/job/entries`` (queued, taken ones included) and ``/job/taken``."""

        def read(zk: KazooClient) -> dict[str, int]:
            pending = {
                name: zk.exists_async(path)
                for name, path in (("entries", queue.ENTRIES), ("taken", queue.TAKEN))
            }
            counts = {}
            for name, result in pending.items():
                stat = result.get(timeout=self.timeout)
                counts[name] = stat.numChildren if stat is not None else 0
            return counts

        return self._guarded(read)

    def executors(self) -> list[dict[str, Any]]:
        def read(zk: KazooClient) -> list[dict[str, Any]]:
            names = self._children(zk, presence.ROOT)
            docs = []
            for path, data in self._get_all(zk, [f"{presence.ROOT}/{n}" for n in names]):
                try:
                    doc = orjson.loads(data)
                except orjson.JSONDecodeError:
                    doc = None
                if not isinstance(doc, dict):
                    doc = {"error": "unreadable presence data"}
                doc["node"] = path.rsplit("/", 1)[1]
                docs.append(doc)
            return sorted(docs, key=lambda d: (str(d.get("name", "")), d["node"]))

        return self._guarded(read)

    def leaders(self) -> list[dict[str, Any]]:
        def read(zk: KazooClient) -> list[dict[str, Any]]:
            names = sorted(self._children(zk, ELECTION_ROOT))
            listings = pipelined(
                names,
                lambda name: zk.get_children_async(f"{ELECTION_ROOT}/{name}"),
                timeout=self.timeout,
            )
            result = []
            for name, listed, _gone in listings:
                # Ordered as kazoo orders contenders: by the sequence suffix.
                matches = sorted(
                    (m.group(1), child) for child in listed or [] if (m := _CONTENDER.search(child))
                )
                paths = [f"{ELECTION_ROOT}/{name}/{child}" for _, child in matches]
                contenders = [
                    data.decode("utf-8", "replace") for _, data in self._get_all(zk, paths)
                ]
                result.append(
                    {
                        "distribution": name,
                        "leader": contenders[0] if contenders else None,
                        "contenders": contenders,
                    }
                )
            return result

        return self._guarded(read)


class QueueDepthSampler(Periodic):
    """Samples the queue depth every ``interval`` seconds into a ring buffer (a greenlet)."""

    def __init__(
        self, view: ZooKeeperView, interval: float = SAMPLE_INTERVAL, size: int = SAMPLE_COUNT
    ) -> None:
        super().__init__(interval)
        self.view = view
        self.samples: deque[dict[str, Any]] = deque(maxlen=size)

    def sample(self) -> bool:
        """Take one sample now; False (and nothing recorded) while ZooKeeper is away."""
        try:
            counts = self.view.queue_depth()
        except ApiError:
            return False
        self.samples.append({"time": round(time.time(), 3), **counts})
        return True


def _require_admin(ctx: Context, req: falcon.Request) -> None:
    caller = ctx.caller(req)
    if caller.is_anonymous:
        raise ApiError(
            401, "authentication required: log in with POST /api/session (password or API key)"
        )
    if not caller.is_admin:
        raise ApiError(403, "the dashboard's cluster views are for administrators")


class QueueDepth:
    def __init__(self, ctx: Context, sampler: QueueDepthSampler) -> None:
        self.ctx = ctx
        self.sampler = sampler

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _require_admin(self.ctx, req)
        _send(resp, {"interval": self.sampler.interval, "samples": list(self.sampler.samples)})


class Executors:
    def __init__(self, ctx: Context, view: ZooKeeperView) -> None:
        self.ctx = ctx
        self.view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _require_admin(self.ctx, req)
        executors = self.view.executors()
        _send(resp, {"count": len(executors), "executors": executors})


class Leaders:
    def __init__(self, ctx: Context, view: ZooKeeperView) -> None:
        self.ctx = ctx
        self.view = view

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _require_admin(self.ctx, req)
        _send(resp, {"distributions": self.view.leaders()})


def _seconds(req: falcon.Request, name: str, default: float, least: float, most: float) -> float:
    text = req.get_param(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not least <= value <= most:  # nan included
        raise ApiError(400, f"{name} must be a number of seconds from {least:g} to {most:g}")
    return value


class Fleet:
    """``GET /api/dashboard/fleet?window=S``: the fleet's samples of the last S seconds."""

    def __init__(self, ctx: Context, sampler: FleetSampler) -> None:
        self.ctx = ctx
        self.sampler = sampler

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _require_admin(self.ctx, req)
        window = _seconds(req, "window", 900, 60, fleet.WINDOW)
        _send(resp, self.sampler.series(window))


class Actions:
    """``GET /api/dashboard/actions?period=S``: per action, the jobs last updated in the last S
    seconds (a final job: that ended then), or between ``since`` and ``until`` (epoch
    seconds): counts by state, failure rate, duration percentiles. A user counts the jobs
    they may see, as in a search.

    An administrator's table of the last day or more reads every job of the period (0.3 s
    for 7 days at a million jobs): it is kept for ``CACHED_FOR`` seconds, and the answer
    says when it was made (``until``). A user's reads follow the jobs they may see, and an
    explicit ``since``/``until`` is always read afresh."""

    CACHED_FROM = 86400.0  # periods at least this long
    CACHED_FOR = 60.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._kept: dict[float, tuple[float, dict[str, Any]]] = {}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = self.ctx.caller(req)
        if caller.is_anonymous:
            raise ApiError(
                401, "authentication required: log in with POST /api/session (password or API key)"
            )
        now = time.time()
        period = _seconds(req, "period", 3600, 60, fleet.MAX_PERIOD)
        rolling = req.get_param("since") is None and req.get_param("until") is None
        if rolling and caller.is_admin and period >= self.CACHED_FROM:
            kept = self._kept.get(period)
            if kept is not None and now - kept[0] < self.CACHED_FOR:
                _send(resp, kept[1])
                return
        until = _seconds(req, "until", now, 0, now + 86400)
        since = _seconds(req, "since", until - period, 0, until)
        principals = None if caller.is_admin else caller.claims
        rows = self.ctx.jobs.store.updated_counts(fleet.iso(since), fleet.iso(until), principals)
        answer = {
            "since": fleet.iso(since),
            "until": fleet.iso(until),
            "periods": list(fleet.PERIODS),
            "actions": fleet.action_table(rows),
        }
        if rolling and caller.is_admin and period >= self.CACHED_FROM:
            self._kept[period] = (now, answer)
        _send(resp, answer)


class Page:
    """``GET /dashboard``: the page itself, public (it holds no data; its JSON needs a login)."""

    def __init__(self) -> None:
        self.html = (STATIC_DIR / "index.html").read_bytes()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = self.html
        resp.set_header("Content-Security-Policy", CSP)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.cache_control = ["no-cache"]


def register(app: falcon.App, ctx: Context) -> tuple[QueueDepthSampler, FleetSampler]:
    """Add the dashboard's routes to ``app`` and start sampling the queue and the fleet."""
    # The job queue's kazoo client (ZooKeeperJobQueue.client); None without ZooKeeper.
    view = ZooKeeperView(getattr(ctx.jobs.queue, "client", None))
    sampler = QueueDepthSampler(view)
    fleet_sampler = FleetSampler(ctx.jobs.store, view, ctx.settings.dashboard_interval)
    app.add_route("/dashboard", Page())
    app.add_static_route("/dashboard/static", str(STATIC_DIR))
    app.add_route("/api/dashboard/queue", QueueDepth(ctx, sampler))
    app.add_route("/api/dashboard/executors", Executors(ctx, view))
    app.add_route("/api/dashboard/leaders", Leaders(ctx, view))
    app.add_route("/api/dashboard/fleet", Fleet(ctx, fleet_sampler))
    app.add_route("/api/dashboard/actions", Actions(ctx))
    sampler.start()
    fleet_sampler.start()
    return sampler, fleet_sampler
