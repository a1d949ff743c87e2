"""Stopping the job API without cutting a request in half.

gevent's server, when stopped, keeps serving kept-alive connections until its timeout and
then kills whatever handler is still running, in the middle of an add if need be (the job
stored, its queue entry not). :class:`Draining` wraps the WSGI application: once draining,
new requests get a 503 that closes the connection, and the server waits only for the
requests already running.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import gevent.event

_BODY = json.dumps(
    {
        "status": 503,
        "message": "the job API is shutting down; retry on another instance or after its restart",
    }
).encode()


class Draining:
    """A WSGI middleware that counts running requests and refuses new ones when draining."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.draining = False
        self._running = 0
        self._idle = gevent.event.Event()
        self._idle.set()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if self.draining:
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(_BODY))),
                    ("Connection", "close"),
                ],
            )
            return [_BODY]
        self._running += 1
        self._idle.clear()
        try:
            # falcon builds the whole response in this call: done means done.
            return self.app(environ, start_response)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests; wait for the running ones. True if none is left."""
        self.draining = True
        return bool(self._idle.wait(timeout))
