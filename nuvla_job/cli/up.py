"""`make up`: a local stack to play with, running until Ctrl-C.

Starts ZooKeeper, the job API, one executor and one distributor on the embedded defaults
(nuvla_job/localstack/stack.py), prints where the dashboard and the admin credentials are
and a Python snippet to paste, then waits. Ctrl-C (SIGINT) or SIGTERM stops exactly the
processes it started, by pid, and it exits 0; a second one kills what is still stopping.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from types import FrameType

import click

from ..localstack.jobapi import BindFailed
from ..localstack.stack import LocalStack, StackStopped
from ..localstack.zookeeper import ZooKeeperNotAvailable, ZooKeeperStartError
from ..registry import CHECKOUT_ACTIONS

DEFAULT_PORT = 8200  # the job API's own default, which the client's default endpoint names


def snippet(credentials: str) -> str:
    """Python to paste into the interpreter: a job submitted, followed and waited for. The
    blank line after the loop ends it at the interactive prompt."""
    return "\n".join(
        [
            "from nuvla_job.client import Client",
            f"client = Client.from_credentials_file({credentials!r})",
            'job = client.submit("sleep", payload={"seconds": 3})',
            "for step in job.progress(timeout=60):",
            "    print(step.state, step.progress, step.status_message)",
            "",
            "result = job.wait(timeout=60)",
            "print(result.state, result.return_code, result.duration)",
        ]
    )


def banner(stack: LocalStack) -> str:
    assert stack.job_api is not None
    credentials = str(stack.job_api.credentials_path)
    pids = ", ".join(f"{name}={pid}" for name, pid in stack.pids().items())
    logs = "\n".join(f"    {name}: {path}" for name, path in stack.logs().items())
    actions = "the built-in ones" + (
        f" and those in {CHECKOUT_ACTIONS}/ (restart to load new ones)" if CHECKOUT_ACTIONS else ""
    )
    shell = (
        f"export JOB_API_URL={stack.job_api.endpoint} "
        f"JOB_API_CREDENTIALS={shlex.quote(credentials)} ZK_HOSTS={stack.zookeeper.hosts}"
    )
    return f"""
nuvla-job local stack is up (Ctrl-C stops it)
  dashboard:          {stack.dashboard_url}
  job API:            {stack.job_api.endpoint}
  admin credentials:  {credentials}
  ZooKeeper:          {stack.zookeeper.hosts}
  executor:           concurrency {stack.concurrency}; actions: {actions}
  pids:               {pids}
  logs:
{logs}

Paste into the venv's Python (.venv/bin/python):

{snippet(credentials)}

Or from a shell, the operator CLI (.venv/bin/job list, job submit sleep --wait, ...):

{shell}
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The job API's port (and the dashboard's); 0: a free one.",
)
@click.option(
    "--zk-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="ZooKeeper's client port; 0: a free one.",
)
@click.option("--concurrency", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--grace-period",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="Seconds running jobs may take to finish once Ctrl-C is pressed.",
)
def main(port: int, zk_port: int, concurrency: int, grace_period: float) -> None:
    """Run ZooKeeper, the job API, an executor and a distributor until Ctrl-C."""
    stack = LocalStack(
        api_port=port, zk_port=zk_port, concurrency=concurrency, grace_period=grace_period
    )
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            echo(f"\n{signal.Signals(signum).name}: stopping (again to kill them now)")
        else:
            echo(f"{signal.Signals(signum).name} again: killing what is still running")
            stack.kill()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    code = 0
    try:
        echo("starting ZooKeeper, the job API, an executor and a distributor ...")
        stack.start(lambda: signals["count"] > 0)
        echo(banner(stack))
        while not signals["count"]:
            gone = stack.exited()
            if gone is not None:
                echo(f"the {gone} process exited; its log: {stack.logs()[gone]}")
                echo(_log_tail(stack.logs()[gone]))
                code = 1
                break
            time.sleep(0.2)
    except StackStopped:
        pass
    except BindFailed:
        echo(f"port {port} is taken (another `make up`?); --port 0 picks a free one")
        code = 1
    except (ZooKeeperNotAvailable, ZooKeeperStartError, RuntimeError, AssertionError) as exc:
        if not signals["count"]:
            echo(f"the stack did not start: {exc}")
            code = 1
    finally:
        started = stack.pids()
        if started:
            echo(f"stopping {', '.join(f'{n}={p}' for n, p in started.items())}")
        stack.stop()
        echo("stopped")
    sys.exit(code)


def echo(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


def _log_tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    main()
