"""Nuvla's action mix: the package's own actions (`nuvla-job-engine`, the `nuvla` extra) run
by this executor and by the package's executor, in the same run, on one ZooKeeper and one job
API.

Run: ``.venv/bin/python -m bench.nuvla_mix`` (``--help`` for sizes). The mix is the package's
``dummy_test_action`` (its 3-30 s random wait scaled down to ``--wait LOW,HIGH`` seconds,
tests/actions_nuvla/short_waits.py) and, for a share ``--api-share`` of the jobs, its
``cancel_children_jobs`` on a parent without children (a job API search and the outcome
write): the shape of Nuvla's jobs, which mostly wait on something else. Each engine runs alone
on its own jobs, all queued beforehand; jobs/s is measured from the job API's timestamps, first
start to last finish. The package's executor runs one job at a time per process, as deployed;
this one runs ``--concurrency`` at once, with the package's actions (``--nuvla-package
--no-builtin-actions``).
A quick run: ``--jobs 300 --upstream-jobs 30``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from bench import report
from bench.executor import Stack, _jobs, _now_iso, _ts, _wait_count
from nuvla_job.localstack.processes import EngineProcess
from tests.support.upstream import our_executor, upstream_executor

RESULTS = Path(__file__).resolve().parent / "results"


def _add_mix(api: object, count: int, api_share: float, tag: str) -> None:
    every = round(1 / api_share) if api_share > 0 else 0
    for i in range(count):
        if every and i % every == 0:
            body = {"action": "cancel_children_jobs", "target-resource": {"href": "job/none"}}
        else:
            body = {"action": "dummy_test_action"}
        api.add("job", {**body, "tags": [tag]})  # type: ignore[attr-defined]


def run_mix(stack: Stack, engine: str, jobs: int, concurrency: int, api_share: float) -> float:
    api = stack.api()
    assert stack.api_process is not None
    tag = f"nuvla-{engine}-{time.time_ns()}"
    since = _now_iso()
    _add_mix(api, jobs, api_share, tag)
    server = stack.api_process
    process: EngineProcess
    if engine == "ours":
        process = our_executor(
            stack.zk.hosts,
            server.endpoint,
            server.credentials_path,
            "--no-builtin-actions",
            "--concurrency",
            str(concurrency),
        )
        ready = "running up to"
    else:
        process = upstream_executor(stack.zk.hosts, server.endpoint, server.credentials())
        ready = "I am executor"
    process.start()
    try:
        process.wait_for_log(ready, timeout=60)
        _wait_count(api, tag, "'SUCCESS'", jobs, timeout=jobs * 2 + 120, since=since)
    finally:
        process.kill() if engine == "upstream" else process.stop()
    docs = _jobs(api, tag)
    return jobs / (max(_ts(d["updated"]) for d in docs) - min(_ts(d["started"]) for d in docs))


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs for this executor.")
@click.option(
    "--upstream-jobs", default=200, show_default=True, help="Jobs for the package's executor."
)
@click.option("--concurrency", default=100, show_default=True, help="This executor's.")
@click.option(
    "--wait",
    default="0.03,0.3",
    show_default=True,
    help="dummy_test_action's random wait, LOW,HIGH seconds (upstream's 3-30 s / 100).",
)
@click.option(
    "--api-share", default=0.2, show_default=True, help="Share of cancel_children_jobs jobs."
)
@click.option("--publish", is_flag=True, help="Also update docs/benchmarks.md.")
def main(
    jobs: int, upstream_jobs: int, concurrency: int, wait: str, api_share: float, publish: bool
) -> None:
    """This executor against the package's on Nuvla's action mix; print a table."""
    try:
        low, high = (float(x) for x in wait.split(","))
    except ValueError:
        raise click.BadParameter("must be LOW,HIGH seconds", param_hint="--wait") from None
    if min(jobs, upstream_jobs, concurrency) < 1 or not 0 <= low <= high or not 0 <= api_share <= 1:
        raise click.UsageError("sizes must be positive, 0 <= LOW <= HIGH and 0 <= share <= 1")
    os.environ["NUVLA_DUMMY_WAIT"] = f"{low},{high}"  # read by both engines' processes
    load_at_start = report.load_average()
    with Stack() as stack:
        theirs = run_mix(stack, "upstream", upstream_jobs, 1, api_share)
        click.echo(f"package's executor: {upstream_jobs} jobs, {theirs:,.1f} jobs/s")
        ours = run_mix(stack, "ours", jobs, concurrency, api_share)
        click.echo(f"this executor: {jobs} jobs, {ours:,.1f} jobs/s")
    mean_wait = (low + high) / 2 * (1 - api_share)
    table = "\n".join(
        [
            "| measure | this executor | baseline: the package's executor | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| Nuvla mix, {jobs} / {upstream_jobs} jobs (jobs/s) | {ours:,.0f} "
            f"(--concurrency {concurrency}) | {theirs:,.1f} (one process) "
            f"| {ours / theirs:,.0f}x |",
            f"| ideal for one job at a time (jobs/s) | | {1 / mean_wait:,.1f} | |"
            if mean_wait
            else "",
        ]
    ).strip()
    tables = (
        f"Mix: dummy_test_action waiting {low:g}-{high:g} s, {api_share:.0%} "
        f"cancel_children_jobs.\n\n{table}\n"
    )
    click.echo(f"\n{tables}")
    command = report.command_line("bench.nuvla_mix", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nuvla_mix.md").write_text(
        f"# Nuvla mix ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"`{command}`\n\n{tables}"
    )
    if publish:
        report.publish("nuvla_mix", report.section(command, load_at_start, tables, []))


if __name__ == "__main__":
    main()
