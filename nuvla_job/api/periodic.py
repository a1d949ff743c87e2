"""A greenlet that calls ``sample()`` every ``interval`` seconds, from ``start()`` to
``stop()``: the dashboard's samplers (queue depth, fleet) are each one."""

from __future__ import annotations

import logging

import gevent

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses define ``sample()``; one failed sample is logged and the next one runs."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._greenlet: gevent.Greenlet | None = None

    def sample(self) -> object:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # never let one bad sample end the sampling
                log.exception("%s failed", type(self).__name__)
            gevent.sleep(self.interval)

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
