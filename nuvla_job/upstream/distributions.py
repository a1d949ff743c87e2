"""The package's distributions (subclasses of upstream's ``DistributionBase``), run by this
engine's distributor.

Upstream's distribution starts its own election loop from its constructor; here each class
is built once per process from a subclass whose ``_start_distribution`` does nothing, so no
thread of upstream's runs. What the engine's distributor needs is read from the instance:

- the election path: upstream elects ``/election/<DISTRIBUTION_NAME>``, which is not the
  registered name for ``monitor_bulk_jobs`` (``monitor_bulk_job``) and
  ``register_usage_record_new_deployment`` (``register_usage_record_updated_deployment``);
  so a mixed set of upstream distributors and these elects one leader per distribution;
- the interval: the instance's ``collect_interval`` (upstream's defaults);
- the jobs: each tick calls ``job_generator()``, whose own ``job_exists()`` checks run as
  upstream's do; ``publish_metric`` sets a Prometheus gauge instead of a statsd one.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

from .. import metrics
from ..registry import Distribution, DistributionRegistry
from . import package

log = logging.getLogger(__name__)


class DistributorView:
    """What upstream's distributions read of their distributor (``self.distributor``).

    ``api`` is the engine distributor's client, set before each tick; ``args`` holds what
    upstream's own loop reads (never run here); ``publish_metric`` feeds a gauge.
    """

    def __init__(self, name: str = "nuvla-job") -> None:
        self.api: Any = None
        self.name = name
        self.kz = None
        self.stop_event = threading.Event()
        self.args = SimpleNamespace(distribution_interval=[], distribution_exclude=[])

    @staticmethod
    def publish_metric(name: str, value: float) -> None:
        metrics.distribution_value(name, value)


def _start_nothing(self: Any) -> None:
    """Replaces upstream's ``_start_distribution``: the engine's distributor elects."""


def adapt(name: str, cls: type, view: DistributorView) -> Distribution:
    """The engine's :class:`Distribution` running an instance of ``cls``."""
    quiet = type(cls.__name__, (cls,), {"_start_distribution": _start_nothing})
    instance: Any = quiet(view)

    def generate(api: Any) -> Any:
        view.api = api
        jobs: Any = instance.job_generator()
        return () if jobs is None else jobs

    return Distribution(
        name,
        float(instance.collect_interval),
        generate,
        election=str(instance.distribution_name),
    )


def add_package_distributions(into: DistributionRegistry) -> int:
    """Register the package's distributions in ``into`` (a name already there keeps its
    own); returns how many were added."""
    version = package.require()
    view = DistributorView()
    added = 0
    replaced: list[str] = []
    for name, cls in sorted(package.distribution_classes().items()):
        if name in into:
            replaced.append(name)
            continue
        try:
            distribution = adapt(name, cls, view)
        except Exception as exc:  # one broken class must not stop the others
            log.error(
                "distribution %s of %s is skipped: %s: %s", name, version, type(exc).__name__, exc
            )
            continue
        into.register(distribution)
        added += 1
    log.info("%d distribution(s) of %s %s added", added, package.DISTRIBUTION, version)
    if replaced:
        log.info(
            "%d distribution(s) of %s replaced by an earlier one of the same name: %s",
            len(replaced),
            package.DISTRIBUTION,
            ", ".join(replaced),
        )
    return added
