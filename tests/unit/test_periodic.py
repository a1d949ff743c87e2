"""The dashboard samplers' periodic greenlet (api/periodic.py): samples until stopped, and a
failed sample does not end the sampling."""

from __future__ import annotations

import gevent
from gevent.event import Event

from nuvla_job.api.periodic import Periodic


class Counting(Periodic):
    def __init__(self) -> None:
        super().__init__(interval=0.01)
        self.count = 0
        self.third = Event()

    def sample(self) -> None:
        self.count += 1
        if self.count == 3:
            self.third.set()
        if self.count == 1:
            raise RuntimeError("one bad sample")


def test_samples_go_on_after_a_failure_and_stop_when_asked() -> None:
    sampler = Counting()
    sampler.start()
    sampler.start()  # a second start is no second greenlet
    assert sampler.third.wait(5), sampler.count
    sampler.stop()
    gevent.sleep(0)  # let the kill land
    stopped_at = sampler.count
    gevent.sleep(0.05)
    assert sampler.count == stopped_at
