"""Executor benchmarks: end-to-end throughput, dispatch latency, memory with 1,000 in flight.

Run: ``.venv/bin/python -m bench.executor`` (``--help`` for sizes). Everything is real: a
local ZooKeeper, the job API and `job-executor` processes. Times come from the job API's own
timestamps (`created`, `started`, `updated`), so polling never adds to what is measured.
The baseline, measured in the same run, is the same executor at ``--concurrency 1``: the
upstream engine's model of one job at a time per process.

Besides the table, a sweep over ``--sweep`` concurrencies gives the jobs/s plot, and the
dispatch latency samples give a cumulative distribution plot (p50 and p99 marked), both PNGs
in bench/results/ (and docs/img/ with ``--publish``, which also updates docs/benchmarks.md).
A quick run: ``--jobs 300 --baseline-jobs 30 --samples 50 --in-flight 200 --sweep 1,10,50,100``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from nuvla.api import Api

from bench import plots, report
from nuvla_job.localstack.jobapi import JobApiProcess
from nuvla_job.localstack.processes import EngineProcess, executor_process
from nuvla_job.localstack.zookeeper import ZooKeeperServer

RESULTS = Path(__file__).resolve().parent / "results"


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _add_many(api: Api, count: int, seconds: float, tag: str) -> None:
    body = {"action": "sleep", "payload": json.dumps({"seconds": seconds}), "tags": [tag]}
    for _ in range(count):
        api.add("job", dict(body))


def _jobs(api: Api, tag: str) -> list[dict]:
    found, first = [], 1
    while True:
        page = api.search(
            "job",
            filter=f"tags='{tag}'",
            first=first,
            last=first + 999,
            select="id,state,created,started,updated",
        )
        found += [r.data for r in page.resources]
        if len(found) >= page.count or not page.resources:
            return found
        first += 1000


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _wait_count(api: Api, tag: str, states: str, count: int, timeout: float, since: str) -> None:
    """Poll until `count` jobs of `tag` are in `states`.

    `created>=since` keeps each poll on the (state, created) index: a filter on the tag
    alone reads every job of the database, and the sweep stores thousands, so the polls
    would take the job API's time from the executor being measured.
    """
    deadline = time.monotonic() + timeout
    query = f"state={states} and created>='{since}' and tags='{tag}'"
    while api.search("job", filter=query, last=0).count < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {count} jobs {states} within {timeout} s")
        time.sleep(0.2)


class Stack:
    def __init__(self) -> None:
        self.zk = ZooKeeperServer()
        self.api_process: JobApiProcess | None = None

    def __enter__(self) -> Stack:
        self.zk.start()
        self.api_process = JobApiProcess(self.zk.hosts)
        self.api_process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.api_process is not None:
            self.api_process.close()
        self.zk.close()

    def api(self) -> Api:
        assert self.api_process is not None
        return self.api_process.admin_api()

    def executor(self, concurrency: int) -> EngineProcess:
        assert self.api_process is not None
        process = executor_process(
            self.zk.hosts,
            self.api_process.endpoint,
            str(self.api_process.credentials_path),
            "--concurrency",
            str(concurrency),
            actions_path=None,
        )
        process.start()
        process.wait_for_log("running up to")
        return process


def throughput(stack: Stack, jobs: int, concurrency: int, seconds: float) -> float:
    """Jobs per second from the first start to the last finish, all queued beforehand."""
    api = stack.api()
    tag = f"tp-{concurrency}-{time.time_ns()}"
    since = _now_iso()
    _add_many(api, jobs, seconds, tag)
    process = stack.executor(concurrency)
    try:
        _wait_count(api, tag, "'SUCCESS'", jobs, timeout=jobs * seconds * 2 + 120, since=since)
    finally:
        process.stop()
    docs = _jobs(api, tag)
    start = min(_ts(d["started"]) for d in docs)
    end = max(_ts(d["updated"]) for d in docs)
    return jobs / (end - start)


def dispatch_latency(stack: Stack, samples: int, concurrency: int) -> list[float]:
    """created -> started (ms) for jobs submitted one at a time to an idle executor."""
    api = stack.api()
    tag = f"lat-{concurrency}-{time.time_ns()}"
    process = stack.executor(concurrency)
    try:
        for _ in range(samples):
            job_id = api.add(
                "job", {"action": "sleep", "payload": json.dumps({"seconds": 0}), "tags": [tag]}
            ).data["resource-id"]
            # Polled by id (one indexed row), so that polling adds nothing to what is timed.
            deadline = time.monotonic() + 30
            while api.get(job_id, select="state").data["state"] != "SUCCESS":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{job_id} did not succeed within 30 s")
                time.sleep(0.01)
    finally:
        process.stop()
    return sorted((_ts(d["started"]) - _ts(d["created"])) * 1000 for d in _jobs(api, tag))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(stack: Stack, in_flight: int) -> tuple[float, float]:
    """(idle RSS, RSS with `in_flight` jobs running) of one executor, in MB."""
    api = stack.api()
    tag = f"mem-{time.time_ns()}"
    process = stack.executor(in_flight)
    try:
        idle = rss_mb(process.pid)
        since = _now_iso()
        _add_many(api, in_flight, 120, tag)
        _wait_count(api, tag, "'RUNNING'", in_flight, timeout=300, since=since)
        busy = rss_mb(process.pid)
    finally:
        process.stop(timeout=5)
    return idle, busy


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def concurrency_list(text: str) -> list[int]:
    try:
        values = sorted({int(v.replace("_", "")) for v in text.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of integers: {text!r}") from None
    if any(v < 1 for v in values):
        raise click.BadParameter("every concurrency must be at least 1")
    return values


def jobs_at(concurrency: int, jobs: int, baseline_jobs: int) -> int:
    """Jobs for one point of the sweep: the baseline's count at concurrency 1, up to `jobs`
    as concurrency grows, so each point runs at least about as long as the baseline."""
    return baseline_jobs if concurrency == 1 else min(jobs, baseline_jobs * concurrency)


def _md_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + "".join(" --- |" if h == "goal" else " ---: |" for h in header[1:]),
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


@click.command()
@click.option(
    "--jobs",
    default=2000,
    show_default=True,
    help="Jobs for the throughput run at --concurrency (and the sweep's cap).",
)
@click.option(
    "--baseline-jobs",
    default=200,
    show_default=True,
    help="Jobs for the --concurrency 1 baseline (it runs one at a time).",
)
@click.option(
    "--concurrency",
    default=100,
    show_default=True,
    help="The executor's concurrency measured against the baseline.",
)
@click.option(
    "--sweep",
    default="1,10,50,100,200",
    show_default=True,
    help="Concurrencies of the jobs/s plot (1 and --concurrency are always run).",
)
@click.option(
    "--sleep", "seconds", default=0.1, show_default=True, help="Each job's action sleeps this long."
)
@click.option("--samples", default=200, show_default=True, help="Dispatch latency samples.")
@click.option("--in-flight", default=1000, show_default=True, help="Jobs held for memory.")
@click.option(
    "--publish",
    is_flag=True,
    help="Also copy the plots to docs/img/ and update docs/benchmarks.md.",
)
def main(
    jobs: int,
    baseline_jobs: int,
    concurrency: int,
    sweep: str,
    seconds: float,
    samples: int,
    in_flight: int,
    publish: bool,
) -> None:
    """Measure the executor against the one-job-at-a-time baseline; print a table."""
    if min(jobs, baseline_jobs, concurrency, samples, in_flight) < 1 or seconds < 0:
        raise click.UsageError("sizes must be positive and --sleep not negative")
    points = sorted({1, concurrency, *concurrency_list(sweep)})
    load_at_start = report.load_average()
    rates: dict[int, float] = {}
    with Stack() as stack:
        for c in points:
            count = jobs if c == concurrency else jobs_at(c, jobs, baseline_jobs)
            rates[c] = throughput(stack, count, c, seconds)
            click.echo(f"concurrency {c}: {count} jobs, {rates[c]:,.1f} jobs/s")
        lat = dispatch_latency(stack, samples, concurrency)
        base_lat = dispatch_latency(stack, max(20, samples // 4), 1)
        click.echo(
            f"dispatch latency p50/p99: {pct(lat, 50):.1f}/{pct(lat, 99):.1f} ms "
            f"(concurrency 1: {pct(base_lat, 50):.1f}/{pct(base_lat, 99):.1f} ms)"
        )
        idle, busy = memory(stack, in_flight)
    ours, base = rates[concurrency], rates[1]
    rows = [
        (
            f"throughput, {jobs} jobs of {seconds * 1000:g} ms (jobs/s)",
            f"{ours:.0f}",
            f"{base:.1f} ({baseline_jobs} jobs)",
            f"{ours / base:.0f}x",
            "≥ 400 and ≥ 50x",
        ),
        (
            "dispatch latency p50 (ms)",
            f"{pct(lat, 50):.1f}",
            f"{pct(base_lat, 50):.1f}",
            f"{pct(base_lat, 50) / pct(lat, 50):.1f}x",
            "",
        ),
        (
            "dispatch latency p99 (ms)",
            f"{pct(lat, 99):.1f}",
            f"{pct(base_lat, 99):.1f}",
            f"{pct(base_lat, 99) / pct(lat, 99):.1f}x",
            "< 50 ms",
        ),
        (
            f"RSS with {in_flight} jobs in flight (MB)",
            f"{busy:.0f}",
            f"{idle:.0f} (idle)",
            f"{busy / idle:.1f}x",
            "< 250 MB",
        ),
    ]
    main_table = _md_table(
        ("measure", f"concurrency {concurrency}", "baseline: concurrency 1", "ratio", "goal"), rows
    )
    sweep_rows = [
        (
            str(c),
            str(jobs if c == concurrency else jobs_at(c, jobs, baseline_jobs)),
            f"{rates[c]:,.1f}",
            f"{c / seconds:,.0f}" if seconds else "-",
            f"{rates[c] / base:.1f}x",
        )
        for c in points
    ]
    sweep_table = _md_table(
        ("concurrency", "jobs", "jobs/s", "ideal jobs/s", "vs concurrency 1"), sweep_rows
    )
    tables = f"{main_table}\n\n{sweep_table}\n"
    click.echo(f"\n{tables}")

    images = [
        plots.throughput_vs_concurrency(
            RESULTS / "executor-concurrency.png",
            points,
            [rates[c] for c in points],
            seconds,
            goal=400,
        ),
        plots.latency_cdf(
            RESULTS / "executor-latency.png",
            {f"concurrency {concurrency}": lat, "baseline: concurrency 1": base_lat},
            {"p50": pct(lat, 50), "p99": pct(lat, 99)},
            goal_ms=50,
        ),
    ]
    command = report.command_line("bench.executor", sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executor.md").write_text(
        f"# Executor benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n"
        f"`{command}`\n\n{tables}"
    )
    click.echo(f"written: bench/results/executor.md, {', '.join(i.name for i in images)}")
    if publish:
        alts = ("jobs/s against concurrency", "dispatch latency distribution")
        body = report.section(command, load_at_start, tables, list(zip(alts, images, strict=True)))
        report.publish("executor", body, images)


if __name__ == "__main__":
    main()
