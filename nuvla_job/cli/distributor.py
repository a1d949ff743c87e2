"""`job-distributor`: run every registered distribution, each only while elected for it.

The distribution options are defined here and also used by `job-executor --distributions`.
"""

from gevent import monkey

# Before anything imports sockets, so that every blocking call yields to other greenlets.
monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from .. import scheduler  # noqa: E402
from ..distributor import Distributor, SelectionError, select  # noqa: E402
from ..monitoring import setup_logging, setup_sentry  # noqa: E402
from ..registry import Distribution, DistributionRegistry, distributions  # noqa: E402
from .actions_options import ActionSources, actions_options  # noqa: E402
from .metrics_options import MetricsEndpoint, metrics_options  # noqa: E402
from .options import (  # noqa: E402
    CommonConfig,
    common_options,
    connect_zookeeper,
    expand_multi_values,
    make_api,
)

DISTRIBUTION_FLAGS = ("--distribution-interval", "--distribution-exclude", "--distribution-include")
MULTI_VALUE_FLAGS = ("--zk-hosts", "--actions-path", *DISTRIBUTION_FLAGS)


def distribution_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --distribution-interval/-exclude/-include (repeatable, env as space-separated)."""
    options = [
        click.option(
            "--distribution-interval",
            "distribution_interval",
            multiple=True,
            envvar="JOB_DISTRIBUTION_INTERVAL",
            metavar="NAME:SECONDS",
            help="Run the distribution NAME every SECONDS instead of its default "
            "(repeatable, or several values after the flag).",
        ),
        click.option(
            "--distribution-exclude",
            "distribution_exclude",
            multiple=True,
            envvar="JOB_DISTRIBUTION_EXCLUDE",
            metavar="NAME",
            help="Do not run this distribution (repeatable).",
        ),
        click.option(
            "--distribution-include",
            "distribution_include",
            multiple=True,
            envvar="JOB_DISTRIBUTION_INCLUDE",
            metavar="NAME",
            help="Run only these distributions (repeatable) [default: all].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def select_distributions(
    registry: DistributionRegistry,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    intervals: Iterable[str] = (),
) -> list[Distribution]:
    """The distributions to run; a bad name or interval is a usage error naming it."""
    try:
        return select(registry.distributions, include, exclude, intervals)
    except SelectionError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@distribution_options
@actions_options("action and distribution")
@metrics_options
def main(
    common: CommonConfig,
    distribution_interval: tuple[str, ...],
    distribution_exclude: tuple[str, ...],
    distribution_include: tuple[str, ...],
    action_sources: ActionSources,
    metrics: MetricsEndpoint | None = None,
) -> None:
    """Create the jobs of every distribution this process is elected for, until SIGTERM."""
    setup_logging(common.log_level, common.log_format)
    setup_sentry(common.sentry_dsn, common.name)
    action_sources.load()  # their modules declare the distributions
    scheduler.register(distributions)  # the elected loop that queues delayed jobs
    selected = select_distributions(
        distributions, distribution_include, distribution_exclude, distribution_interval
    )
    api = make_api(common, pool_size=len(selected) + 2, wait_when_throttled=True)
    if metrics is not None:
        metrics.start()  # before joining ZooKeeper: a port in use fails cleanly
    zk = connect_zookeeper(common)
    if metrics is not None:
        metrics.watch(zk, distributions=[d.name for d in selected])
    distributor = Distributor(api, zk, selected, name=common.name)
    distributor.install_signal_handlers()
    try:
        code = distributor.run()
    finally:
        # Closing the session deletes whatever election node is left: others take over now.
        zk.stop()
        zk.close()
    sys.exit(code)


def run() -> None:
    """Console-script entry point: accepts upstream's multi-value flags."""
    main(
        args=expand_multi_values(sys.argv[1:], MULTI_VALUE_FLAGS),
        prog_name=os.path.basename(sys.argv[0]),
    )


if __name__ == "__main__":
    run()
