"""The job API's draining middleware (nuvla_job/api/draining.py)."""

from __future__ import annotations

import json

import gevent
import gevent.event

from nuvla_job.api.draining import Draining


def call(app: Draining) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({}, start_response))
    return seen["status"], seen["headers"], body  # type: ignore[return-value]


def test_running_requests_finish_and_new_ones_are_refused() -> None:
    release = gevent.event.Event()

    def slow_app(environ: dict, start_response) -> list[bytes]:
        release.wait()
        start_response("201 Created", [("Content-Type", "application/json")])
        return [b"{}"]

    app = Draining(slow_app)
    running = gevent.spawn(call, app)
    gevent.sleep(0)  # the request is now inside the application
    assert not app.drain(timeout=0.05)  # still running: not drained
    status, headers, body = call(app)  # a new request while draining
    assert status.startswith("503") and headers["Connection"] == "close"
    assert json.loads(body)["status"] == 503
    release.set()
    assert running.get(timeout=5)[0] == "201 Created"  # the running one was not cut
    assert app.drain(timeout=1)
