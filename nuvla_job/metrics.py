"""Prometheus metrics of the engine: definitions, recording helpers and the scrape server.

Every metric is created unregistered and joins the process's registry only when a role
asks for it (:func:`watch_executor`, :func:`watch_distributor`, :func:`watch_zookeeper`,
:func:`watch_http`), so that a scrape shows what the process actually does: the job API
does not show an executor's queue depth as 0.

Recording is cheap: the executor's metrics middleware (nuvla_job/middleware/metrics.py)
calls :func:`job_taken` and :func:`job_done` once per entry; label children are looked up
once and cached. Gauges whose value the engine already knows (queue depth, jobs in flight,
the ZooKeeper connection) are read when scraped, not updated on every event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from gevent.pywsgi import WSGIServer
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.registry import Collector

from .outcome import Decision, Outcome

PREFIX = "nuvla_job_"
UNKNOWN_ACTION = "unknown"

# Actions run from milliseconds (a quick API call) to an hour (a bulk job).
JOB_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- executor -----------------------------------------------------------------------------

JOBS = Counter(
    f"{PREFIX}jobs_processed",
    "Queue entries processed, by job action and outcome.",
    ["action", "outcome"],
    registry=None,
)
JOB_DURATION = Histogram(
    f"{PREFIX}job_duration_seconds",
    "Seconds from taking an entry to its job's end (entries consumed only), by action.",
    ["action"],
    buckets=JOB_BUCKETS,
    registry=None,
)
DEAD_LETTERS = Counter(
    f"{PREFIX}dead_letters",
    "Jobs FAILED for good after their action ran (their retries, if any, used up), by action.",
    ["action"],
    registry=None,
)
TAKES = Counter(f"{PREFIX}queue_takes", "Entries taken from the queue.", registry=None)
RELEASES = Counter(
    f"{PREFIX}queue_releases", "Taken entries released back to the queue.", registry=None
)
IN_FLIGHT = Gauge(f"{PREFIX}jobs_in_flight", "Jobs this executor is processing now.", registry=None)
WAITING = Gauge(
    f"{PREFIX}jobs_waiting_for_limit",
    "Jobs this executor took that wait, QUEUED and holding no slot, for a concurrency limit.",
    registry=None,
)
QUEUE_DEPTH = Gauge(
    f"{PREFIX}queue_depth",
    "Queue entries this executor sees available to take (not taken).",
    registry=None,
)

# -- distributor --------------------------------------------------------------------------

LEADER = Gauge(
    f"{PREFIX}leader",
    "1 while this process leads the distribution, else 0.",
    ["distribution"],
    registry=None,
)

# Upstream's distributions publish statsd gauges (`publish_metric`); they become this one.
DISTRIBUTION_VALUE = Gauge(
    f"{PREFIX}distribution_value",
    "Values Nuvla's own distributions publish, by their upstream metric name.",
    ["name"],
    registry=None,
)

# -- ZooKeeper ----------------------------------------------------------------------------

ZK_CONNECTED = Gauge(
    f"{PREFIX}zookeeper_connected", "1 while the ZooKeeper connection is up, else 0.", registry=None
)

# -- job API ------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    f"{PREFIX}http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_DURATION = Histogram(
    f"{PREFIX}http_request_duration_seconds",
    "Seconds to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=None,
)

# The `outcome` label of a processed entry, from the executor's (decision, state written).
_OUTCOME_LABELS = {
    (Decision.CONSUME, "SUCCESS"): "success",
    (Decision.CONSUME, "FAILED"): "failed",
    (Decision.CONSUME, "QUEUED"): "pull_mode",  # a mixed-mode job failed and went to pull mode
    (Decision.CONSUME, "RUNNING"): "left_running",  # the action left its job to a monitor
    (Decision.CONSUME, None): "dropped",  # not found, malformed, already final, refused, error
    (Decision.RELEASE, None): "released",
    (Decision.LOST, None): "lost",
}


def outcome_label(outcome: Outcome) -> str:
    """The ``outcome`` label of an executor outcome (an unknown pair is named after it)."""
    if outcome.retried:
        return "retried"  # failed, queued again for another attempt
    decision, state = outcome.decision, outcome.state
    key = (decision, state if decision is Decision.CONSUME else None)
    return _OUTCOME_LABELS.get(key) or f"{decision.value}_{state or 'none'}".lower()


_registered: set[int] = set()


def _register(*collectors: Collector) -> None:
    for collector in collectors:
        if id(collector) not in _registered:
            REGISTRY.register(collector)
            _registered.add(id(collector))


# -- recording ----------------------------------------------------------------------------

# (action, decision, state, retried) -> (counter child, histogram child or None, is a release)
_job_children: dict[tuple[str, Decision, str | None, bool], tuple] = {}


def job_taken() -> None:
    TAKES.inc()


def job_done(action: str | None, outcome: Outcome, seconds: float) -> None:
    """Count one processed entry; ``action`` is None when it is not a registered action
    (labels stay bounded whatever the jobs hold)."""
    key = (action or UNKNOWN_ACTION, outcome.decision, outcome.state, outcome.retried)
    children = _job_children.get(key)
    if children is None:
        label = action or UNKNOWN_ACTION
        consumed = outcome.decision is Decision.CONSUME
        children = _job_children[key] = (
            JOBS.labels(label, outcome_label(outcome)),
            # Released and lost entries may have waited out a delay: not an action's time.
            JOB_DURATION.labels(label) if consumed else None,
            outcome.decision is Decision.RELEASE,
        )
    counter, histogram, released = children
    counter.inc()
    if histogram is not None:
        histogram.observe(seconds)
    if released:
        RELEASES.inc()


def distribution_value(name: str, value: float) -> None:
    DISTRIBUTION_VALUE.labels(name).set(value)


def dead_letter(action: str | None) -> None:
    """Count a job FAILED for good after its action ran."""
    DEAD_LETTERS.labels(action or UNKNOWN_ACTION).inc()


def set_leader(distribution: str, leading: bool) -> None:
    LEADER.labels(distribution).set(1 if leading else 0)


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(seconds)


# -- roles --------------------------------------------------------------------------------


class _Executor(Protocol):
    def in_flight(self) -> list[str]: ...

    def waiting(self) -> int: ...


def watch_executor(executor: _Executor, depth: Callable[[], int]) -> None:
    """Publish the executor's metrics; in-flight jobs and queue depth are read at scrape."""
    IN_FLIGHT.set_function(lambda: len(executor.in_flight()))
    WAITING.set_function(executor.waiting)
    QUEUE_DEPTH.set_function(depth)
    _register(JOBS, JOB_DURATION, DEAD_LETTERS, TAKES, RELEASES, IN_FLIGHT, WAITING, QUEUE_DEPTH)


def watch_distributor(distributions: list[str]) -> None:
    """Publish leadership; every distribution shows 0 until this process leads it."""
    for name in distributions:
        LEADER.labels(name)
    _register(LEADER, DISTRIBUTION_VALUE)


def watch_zookeeper(connected: Callable[[], bool]) -> None:
    ZK_CONNECTED.set_function(lambda: 1 if connected() else 0)
    _register(ZK_CONNECTED)


def watch_http() -> None:
    _register(HTTP_REQUESTS, HTTP_DURATION)


# -- scrape endpoint ----------------------------------------------------------------------

METRICS_PATH = "/metrics"


def wsgi_app() -> Callable:
    """A WSGI app answering ``GET /metrics`` with the registry, 404 elsewhere."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO", "").rstrip("/") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: the metrics are at /metrics\n"]
        return metrics(environ, start_response)

    return app


def serve(host: str, port: int) -> WSGIServer:
    """Serve /metrics on ``host:port`` from greenlets of this process (a gevent WSGI server:
    no thread, fine under monkey-patching). Raises OSError when the address is taken."""
    server = WSGIServer(
        (host, port), wsgi_app(), log=None, error_log=logging.getLogger("nuvla_job.metrics.http")
    )
    server.start()
    return server
