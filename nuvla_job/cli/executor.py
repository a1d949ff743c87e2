"""`job-executor`: run jobs from the ZooKeeper queue, many at once (or one, in pull mode).

With `--distributions` it also runs the distributions, as `job-distributor` does.
"""

from __future__ import annotations

from gevent import monkey

# Before anything imports sockets, so that every blocking call yields to other greenlets.
monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import click  # noqa: E402
import gevent  # noqa: E402

from .. import newer_version  # noqa: E402
from ..limits import Limits, parse_caps  # noqa: E402
from ..middleware import Middleware  # noqa: E402
from ..middleware.blocking import BlockedLoopWarning  # noqa: E402
from ..middleware.log_context import LogContext  # noqa: E402
from ..middleware.metrics import Metrics  # noqa: E402
from ..middleware.retries import Retries  # noqa: E402
from ..middleware.sentry import Sentry  # noqa: E402
from ..middleware.time_limit import TimeLimit  # noqa: E402
from ..monitoring import setup_logging, setup_sentry  # noqa: E402
from ..presence import ExecutorPresence  # noqa: E402
from ..timeutil import now_iso  # noqa: E402
from .actions_options import ActionSources, actions_options  # noqa: E402
from .distributor import (  # noqa: E402
    DISTRIBUTION_FLAGS,
    distribution_options,
    select_distributions,
)
from .metrics_options import MetricsEndpoint, metrics_options  # noqa: E402
from .options import (  # noqa: E402
    CommonConfig,
    common_options,
    connect_zookeeper,
    expand_multi_values,
    make_api,
)

if TYPE_CHECKING:
    from kazoo.client import KazooClient

    from ..distributor import Distributor
    from ..executor import Executor

MULTI_VALUE_FLAGS = ("--zk-hosts", "--actions-path", *DISTRIBUTION_FLAGS)
# How often the executor's running jobs are copied to its presence node (which itself is
# written at most once a second, and only on change).
IN_FLIGHT_POLL = 0.5
# Greenlets are cooperative: an action computing without yielding stalls every other job.
# Such a stall longer than this is logged as a warning naming the job.
BLOCKING_WARNING = 1.0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.option(
    "--concurrency",
    type=click.IntRange(1, 10_000),
    default=100,
    envvar="JOB_CONCURRENCY",
    show_default=True,
    help="Jobs run at once, each in its own greenlet.",
)
@click.option(
    "--grace-period",
    type=click.FloatRange(0),
    default=120.0,
    envvar="JOB_GRACE_PERIOD",
    show_default=True,
    help="Seconds running jobs may take to finish after SIGTERM.",
)
@click.option(
    "--action-timeout",
    type=click.FloatRange(0),
    default=0.0,
    envvar="JOB_ACTION_TIMEOUT",
    show_default=True,
    metavar="SECONDS",
    help="Longest an action may run; a job over it is FAILED (0: no limit). An "
    "action's own @action(..., timeout=) wins.",
)
@click.option(
    "--newer-version-max-releases",
    type=click.IntRange(0),
    default=newer_version.MAX_RELEASES,
    envvar="JOB_NEWER_VERSION_MAX_RELEASES",
    show_default=True,
    help="A job for a newer engine goes back to the queue at most this many times from "
    "this executor; the next time it is FAILED, saying no engine took it.",
)
@click.option(
    "--newer-version-max-wait",
    type=click.FloatRange(0),
    default=newer_version.MAX_WAIT,
    envvar="JOB_NEWER_VERSION_MAX_WAIT",
    show_default=True,
    metavar="SECONDS",
    help="The same bound in time, from the first release by this executor.",
)
@actions_options("action")
@click.option(
    "--max-concurrent",
    "max_concurrent",
    multiple=True,
    envvar="JOB_MAX_CONCURRENT",
    metavar="ACTION=N",
    help="Run at most N jobs of ACTION at once in this executor; the others wait, holding "
    "no slot (repeatable).",
)
@click.option(
    "--fleet-max-concurrent",
    "fleet_max_concurrent",
    multiple=True,
    envvar="JOB_FLEET_MAX_CONCURRENT",
    metavar="ACTION=N",
    help="Run at most N jobs of ACTION at once across every executor, as "
    "@action(max_concurrent=N) does, which it overrides; give every executor the same "
    "(repeatable).",
)
@click.option(
    "--job-id",
    envvar="JOB_ID",
    default=None,
    help="Pull mode: run only this job (job/<uuid>) and exit with its outcome.",
)
@click.option(
    "--distributions/--no-distributions",
    default=False,
    envvar="JOB_EXECUTOR_DISTRIBUTIONS",
    show_default=True,
    help="Also run the distributions in this process (each still elected, as in job-distributor).",
)
@distribution_options
@metrics_options
def main(
    common: CommonConfig,
    concurrency: int,
    grace_period: float,
    action_timeout: float,
    newer_version_max_releases: int,
    newer_version_max_wait: float,
    action_sources: ActionSources,
    max_concurrent: tuple[str, ...],
    fleet_max_concurrent: tuple[str, ...],
    job_id: str | None,
    distributions: bool,
    distribution_interval: tuple[str, ...],
    distribution_exclude: tuple[str, ...],
    distribution_include: tuple[str, ...],
    metrics: MetricsEndpoint | None = None,
) -> None:
    """Run jobs from the queue until SIGTERM; `--job-id` runs one job and exits."""
    setup_logging(common.log_level, common.log_format)
    setup_sentry(common.sentry_dsn, common.name)
    if job_id is not None and not job_id.startswith("job/"):
        raise click.BadParameter("must look like job/<uuid>", param_hint="--job-id")
    from .. import scheduler
    from ..registry import distributions as registered

    scheduler.register(registered)  # the elected loop that queues delayed jobs
    actions = action_sources.require(action_sources.load())
    caps = {
        option: _caps(values, actions.names(), option)
        for option, values in (
            ("--max-concurrent", max_concurrent),
            ("--fleet-max-concurrent", fleet_max_concurrent),
        )
    }
    # Checked even when distributions are off, so a typo is found before it matters.
    selected = select_distributions(
        registered, distribution_include, distribution_exclude, distribution_interval
    )
    if not distributions or job_id is not None:
        selected = []
    api = make_api(common, pool_size=concurrency + len(selected) + 10, wait_when_throttled=True)
    from ..executor import Executor
    from ..queue import QueueConsumer

    blocked_loop = BlockedLoopWarning(BLOCKING_WARNING)
    published = metrics is not None and job_id is None
    middleware = executor_middleware(
        common.name, action_timeout or None, blocked_loop, metrics=published
    )
    if job_id is not None:
        executor = Executor(
            api,
            None,
            actions,
            middleware=middleware,
            concurrency=1,
            name=common.name,
            nuvlaedge_fs=common.nuvlaedge_fs,
            zookeeper=common.zookeeper,
        )
        blocked_loop.watch()
        sys.exit(executor.run_pull(job_id))

    if metrics is not None:
        metrics.start()  # before joining ZooKeeper: a port in use fails cleanly
    zk = connect_zookeeper(common)
    executor = Executor(
        api,
        QueueConsumer(zk, identifier=common.name),
        actions,
        middleware=middleware,
        concurrency=concurrency,
        grace_period=grace_period,
        name=common.name,
        nuvlaedge_fs=common.nuvlaedge_fs,
        zookeeper=common.zookeeper,
        newer_versions=newer_version.NewerVersionWaits(
            newer_version_max_releases, newer_version_max_wait
        ),
        limits=Limits(zk, caps["--max-concurrent"], caps["--fleet-max-concurrent"]),
    )
    zk.add_listener(executor.session_changed)
    blocked_loop.watch()
    if metrics is not None:
        metrics.watch(zk, executor, [d.name for d in selected])
    presence, follower = _announce(zk, executor, common.name, concurrency)
    distributor = None
    if distributions:
        from ..distributor import Distributor

        distributor = Distributor(api, zk, selected, name=common.name)
        _stop_both_on_signals(executor, distributor)
        distributor.start()
    else:
        executor.install_signal_handlers()
    try:
        code = executor.run()
    finally:
        follower.kill()
        presence.stop()
        if distributor is not None:
            distributor.stop()
            distributor.join()
        zk.stop()
        zk.close()
    sys.exit(code)


def _caps(values: tuple[str, ...], actions: list[str], option: str) -> dict[str, int]:
    try:
        return parse_caps(values, actions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def executor_middleware(
    name: str,
    action_timeout: float | None,
    blocked_loop: BlockedLoopWarning,
    *,
    metrics: bool,
) -> list[Middleware]:
    """The executor's middleware, in hook order: the log context is bound before any other
    hook logs; metrics only when they are published (pull mode publishes none)."""
    return [
        *([Metrics()] if metrics else []),
        LogContext(),
        blocked_loop,
        Sentry(name),
        TimeLimit(action_timeout),
        Retries(),
    ]


def _announce(
    zk: KazooClient, executor: Executor, name: str, concurrency: int
) -> tuple[ExecutorPresence, gevent.Greenlet]:
    """Announce this executor under /executors and keep its in-flight job ids there."""
    presence = ExecutorPresence()
    presence.start(
        zk,
        {
            "name": name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "concurrency": concurrency,
            "started": now_iso(),
        },
    )

    def follow() -> None:
        while True:
            presence.set_in_flight(executor.in_flight())
            gevent.sleep(IN_FLIGHT_POLL)

    return presence, gevent.spawn(follow)


def _stop_both_on_signals(executor: Executor, distributor: Distributor) -> None:
    # Distributions stop at once (others take over); running jobs get the grace period.
    def stop() -> None:
        distributor.stop()
        executor.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop)


def run() -> None:
    """Console-script entry point: accepts upstream's multi-value flags."""
    main(
        args=expand_multi_values(sys.argv[1:], MULTI_VALUE_FLAGS),
        prog_name=os.path.basename(sys.argv[0]),
    )


if __name__ == "__main__":
    run()
