"""``--metrics-port`` / ``--metrics-host``: the Prometheus endpoint of the engine's commands."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsEndpoint:
    host: str
    port: int

    def start(self) -> Any:
        """Serve /metrics now; a one-line error when the address cannot be bound."""
        from ..metrics import serve

        try:
            server = serve(self.host, self.port)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        log.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)
        return server

    @staticmethod
    def watch(zk: Any, executor: Any = None, distributions: Iterable[str] = ()) -> None:
        """Publish the metrics of the roles this process plays."""
        from .. import metrics

        metrics.watch_zookeeper(lambda: zk.connected)
        if executor is not None:
            metrics.watch_executor(executor, lambda: executor.consumer.depth)
        names = list(distributions)
        if names:
            metrics.watch_distributor(names)


def metrics_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options; the command receives ``metrics``: a MetricsEndpoint, or None (off)."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        port, host = kwargs.pop("metrics_port"), kwargs.pop("metrics_host")
        endpoint = MetricsEndpoint(host, port) if port else None
        return command(metrics=endpoint, **kwargs)

    wrapper = click.option(
        "--metrics-host",
        default="127.0.0.1",
        envvar="JOB_METRICS_HOST",
        show_default=True,
        help="Address of the metrics endpoint (0.0.0.0 to let a Prometheus elsewhere scrape it).",
    )(wrapper)
    wrapper = click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        envvar="JOB_METRICS_PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics [default: off; 0: off].",
    )(wrapper)
    return wrapper
