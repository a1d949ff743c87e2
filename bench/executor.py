"""Executor benchmarks: end-to-end throughput, dispatch latency, memory with 1,000 in flight.

Run: ``.venv/bin/python -m bench.executor`` (``--help`` for sizes). Everything is real: a
local ZooKeeper, the job API and `job-executor` processes. Times come from the job API's own
timestamps (`created`, `started`, `updated`), so polling never adds to what is measured.
The baseline, measured in the same run, is the same executor at ``--concurrency 1``: the
upstream engine's model of one job at a time per process.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import click
from nuvla.api import Api

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
        page = api.search("job", filter=f"tags='{tag}'", first=first, last=first + 999,
                          select="id,state,created,started,updated")
        found += [r.data for r in page.resources]
        if len(found) >= page.count or not page.resources:
            return found
        first += 1000


def _wait_count(api: Api, tag: str, states: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while api.search("job", filter=f"tags='{tag}' and state={states}", last=0).count < count:
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
        process = executor_process(self.zk.hosts, self.api_process.endpoint,
                                   str(self.api_process.credentials_path),
                                   "--concurrency", str(concurrency), actions_path=None)
        process.start()
        process.wait_for_log("running up to")
        return process


def throughput(stack: Stack, jobs: int, concurrency: int, seconds: float) -> float:
    """Jobs per second from the first start to the last finish, all queued beforehand."""
    api = stack.api()
    tag = f"tp-{concurrency}-{time.time_ns()}"
    _add_many(api, jobs, seconds, tag)
    process = stack.executor(concurrency)
    try:
        _wait_count(api, tag, "'SUCCESS'", jobs, timeout=jobs * seconds * 2 + 120)
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
        for i in range(samples):
            api.add("job", {"action": "sleep", "payload": json.dumps({"seconds": 0}),
                            "tags": [tag]})
            _wait_count(api, tag, "'SUCCESS'", i + 1, timeout=30)
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
        _add_many(api, in_flight, 120, tag)
        _wait_count(api, tag, "'RUNNING'", in_flight, timeout=300)
        busy = rss_mb(process.pid)
    finally:
        process.stop(timeout=5)
    return idle, busy


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


@click.command()
@click.option("--jobs", default=2000, show_default=True, help="Jobs for the throughput run.")
@click.option("--baseline-jobs", default=200, show_default=True,
              help="Jobs for the --concurrency 1 baseline (it runs one at a time).")
@click.option("--sleep", "seconds", default=0.1, show_default=True,
              help="Each job's action sleeps this long.")
@click.option("--samples", default=200, show_default=True, help="Dispatch latency samples.")
@click.option("--in-flight", default=1000, show_default=True, help="Jobs held for memory.")
def main(jobs: int, baseline_jobs: int, seconds: float, samples: int, in_flight: int) -> None:
    """Measure the executor against the one-job-at-a-time baseline; print a table."""
    rows: list[tuple[str, str, str, str, str]] = []
    with Stack() as stack:
        ours = throughput(stack, jobs, 100, seconds)
        base = throughput(stack, baseline_jobs, 1, seconds)
        rows.append((f"throughput, {seconds * 1000:.0f} ms jobs (jobs/s)", f"{ours:.0f}",
                     f"{base:.1f}", f"{ours / base:.0f}x", "≥ 400 and ≥ 50x"))
        lat = dispatch_latency(stack, samples, 100)
        base_lat = dispatch_latency(stack, max(20, samples // 4), 1)
        rows.append(("dispatch latency p50 (ms)", f"{pct(lat, 50):.1f}",
                     f"{pct(base_lat, 50):.1f}", f"{pct(base_lat, 50) / pct(lat, 50):.1f}x",
                     ""))
        rows.append(("dispatch latency p99 (ms)", f"{pct(lat, 99):.1f}",
                     f"{pct(base_lat, 99):.1f}", f"{pct(base_lat, 99) / pct(lat, 99):.1f}x",
                     "< 50 ms"))
        idle, busy = memory(stack, in_flight)
        rows.append((f"RSS with {in_flight} jobs in flight (MB)", f"{busy:.0f}",
                     f"{idle:.0f} (idle)", f"{busy / idle:.1f}x", "< 250 MB"))
    header = ("measure", "this executor", "baseline: concurrency 1", "ratio", "goal")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    table = "\n".join(lines)
    click.echo(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "executor.md").write_text(
        f"Executor benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; jobs="
        f"{jobs}, baseline jobs={baseline_jobs}, sleep={seconds}s, samples={samples})\n\n"
        f"{table}\n")


if __name__ == "__main__":
    main()
