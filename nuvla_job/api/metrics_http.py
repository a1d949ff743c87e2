"""The job API's Prometheus side: request metrics (a falcon middleware) and ``GET /metrics``.

Requests are labelled with the route *template* (``/api/job/{uuid}``), never the raw path,
so that the number of series stays bounded whatever clients ask for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .. import metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route: 404s for whatever path was asked
STATIC = "/dashboard/static/{file}"


class RequestMetrics:
    """Counts every answered request by method, route template and status, and times it."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        started = getattr(req.context, "metrics_started", None)
        if started is None:
            return
        route = req.uri_template
        if route is None:
            # Static files are served without a template: one label for all of them.
            route = STATIC if req.path.startswith("/dashboard/static/") else UNMATCHED
        method = req.method if req.method in METHODS else "OTHER"
        metrics.http_request(method, route, resp.status_code, time.perf_counter() - started)


class MetricsEndpoint:
    """``GET /metrics``: the process's metrics in Prometheus' text format."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(REGISTRY)


def register(app: falcon.App, zookeeper_connected: Callable[[], bool]) -> None:
    """Serve ``/metrics`` on ``app`` and count its requests (call before serving)."""
    metrics.watch_http()
    metrics.watch_zookeeper(zookeeper_connected)
    app.add_middleware(RequestMetrics())
    app.add_route("/metrics", MetricsEndpoint())
