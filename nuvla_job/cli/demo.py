"""The quick start (`make run`): the whole engine on this machine, end to end.

Starts ZooKeeper (Debian's jars) and the job API on free loopback ports, one executor,
submits a batch of demo jobs through the real `nuvla-api` client, shows a progress bar
while they run, prints a summary, and stops exactly the processes it started.
"""

from __future__ import annotations

import json
import random
import sys
import time

import click
from nuvla.api import Api
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..localstack.jobapi import JobApiProcess
from ..localstack.processes import executor_process
from ..localstack.zookeeper import ZooKeeperNotAvailable, ZooKeeperServer
from ..states import FINAL_STATES


def _submit(api: Api, count: int, seconds: float, failing: float, batch: str) -> list[str]:
    rng = random.Random(7)
    ids = []
    for i in range(count):
        payload = {
            "seconds": round(rng.uniform(seconds / 4, seconds), 2),
            "fail": rng.random() < failing,
        }
        body = {
            "action": "sleep",
            "payload": json.dumps(payload),
            "tags": [batch],
            "priority": 100 if i % 10 == 0 else 500,
        }
        ids.append(api.add("job", body).data["resource-id"])
    return ids


def _states(api: Api, batch: str) -> dict[str, int]:
    result = api.search("job", filter=f"tags='{batch}'", last=0, aggregation="terms:state")
    buckets = result.data["aggregations"]["terms:state"]["buckets"]
    return {b["key"]: b["doc_count"] for b in buckets}


@click.command()
@click.option(
    "--jobs",
    default=300,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many demo jobs to submit.",
)
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Longest sleep of a demo job.",
)
@click.option("--concurrency", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--failing",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of demo jobs that fail on purpose.",
)
def main(jobs: int, seconds: float, concurrency: int, failing: float) -> None:
    """Run ZooKeeper, the job API and an executor locally and push demo jobs through."""
    console = Console()
    zookeeper = ZooKeeperServer()
    job_api: JobApiProcess | None = None
    executor = None
    try:
        with console.status("starting ZooKeeper, the job API and an executor"):
            zookeeper.start()
            job_api = JobApiProcess(zookeeper.hosts)
            job_api.start()
            executor = executor_process(
                zookeeper.hosts,
                job_api.endpoint,
                str(job_api.credentials_path),
                "--concurrency",
                str(concurrency),
                "--name",
                "demo-executor",
                actions_path=None,
            ).start()
            executor.wait_for_log("running up to")
        console.print(
            f"ZooKeeper [bold]{zookeeper.hosts}[/]  job API [bold]{job_api.endpoint}"
            f"[/]  executor pid {executor.pid} (concurrency {concurrency})"
        )
        api = job_api.admin_api()
        batch = f"demo-{int(time.time())}"
        started = time.monotonic()
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("submitting", total=jobs, states="")
            _submit(api, jobs, seconds, failing, batch)
            progress.update(task, description="running   ")
            while True:
                states = _states(api, batch)
                done = sum(states.get(s, 0) for s in FINAL_STATES)
                shown = "  ".join(f"{k} {v}" for k, v in sorted(states.items()))
                progress.update(task, completed=done, states=shown)
                if done >= jobs:
                    break
                time.sleep(0.2)
        elapsed = time.monotonic() - started
        console.print(
            f"{jobs} demo jobs through the engine in {elapsed:.1f} s "
            f"({jobs / elapsed:.0f} jobs/s, submitting included)"
        )
        table = Table()
        table.add_column("outcome")
        table.add_column("jobs", justify="right")
        for state, count in sorted(_states(api, batch).items()):
            table.add_row(state, str(count))
        console.print(table)
        console.print(
            "Submit your own while a stack runs: "
            "[bold]api.add('job', {'action': 'sleep', 'payload': '{\"seconds\": 1}'})"
            "[/] with nuvla.api.Api logged in with the admin key the job API writes."
        )
    except ZooKeeperNotAvailable as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(1)
    finally:
        with console.status("stopping"):
            if executor is not None:
                executor.close()
            if job_api is not None:
                job_api.close()
            zookeeper.close()


if __name__ == "__main__":
    main()
