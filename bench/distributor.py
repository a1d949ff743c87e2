"""Distributor: CPU use and tick jitter of one process running many distributions.

    .venv/bin/python -m bench.distributor [--distributions 50] [--seconds 30] [--interval 1]
        [--publish]

A private ZooKeeper and job API start; a bench-only actions directory (in a temporary folder)
declares the distributions, each creating one job per tick through the job API and recording
when its generator was called. Two `job-distributor` runs follow, each measured over the same
window once every distribution has its leader:

- the baseline: one distribution;
- the load: `--distributions` distributions (default 50), all every `--interval` seconds;
- the same load with generators that yield nothing, which separates the distributor's own
  cost (scheduling, elections, the leadership check) from the cost of creating jobs with
  `nuvla.api` (whose `add` makes two HTTP requests: a search of the collection, then a POST).

CPU is the process's user + system time from /proc/<pid>/stat over the window, in % of one
core. Jitter is |actual start - scheduled start| of each tick, where the scheduled start is
the tick's grid point (`nuvla_job.distributor.tick_offset`) and the actual start is when the
generator was called (after the leadership check). The table goes to stdout and
bench/results/distributor.md; ``--publish`` also replaces the distributor section of
docs/benchmarks.md. A quick run: ``--seconds 10``. Everything started is stopped by pid,
Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from bench import report
from nuvla_job.distributor import tick_offset
from nuvla_job.localstack.jobapi import JobApiProcess
from nuvla_job.localstack.processes import EngineProcess
from nuvla_job.localstack.zookeeper import ZooKeeperServer

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "bench" / "results" / "distributor.md"
GOAL_JITTER_MS = 20.0
GOAL_CPU = 10.0
WARM_UP = 2.0

# The bench-only distributions: BENCH_COUNT of them, every BENCH_INTERVAL seconds, each
# appending "<name> <time>" to BENCH_TIMES when called.
MODULE = """\
import os
import time

from nuvla_job.registry import distribution

TIMES = os.environ["BENCH_TIMES"]
YIELD = os.environ["BENCH_YIELD"] == "1"


def make(name):
    def generate(api):
        with open(TIMES, "a") as handle:
            handle.write(f"{name} {time.time():.6f}\\n")
        if YIELD:
            yield {"action": "bench_noop", "tags": ["bench"]}

    return generate


for index in range(int(os.environ["BENCH_COUNT"])):
    name = f"bench_{index:03d}"
    distribution(name, float(os.environ["BENCH_INTERVAL"]))(make(name))
"""


@dataclass
class Row:
    label: str
    distributions: int
    jobs_per_tick: int
    ticks: int
    expected: int
    cpu_percent: float
    jitter_median_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid`, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as handle:
        # The command name may hold spaces: the fields after it start past the last ')'.
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(
    label: str,
    zk: ZooKeeperServer,
    api: JobApiProcess,
    actions: Path,
    count: int,
    jobs: bool,
    interval: float,
    seconds: float,
) -> Row:
    times = actions.parent / f"times-{count}-{int(jobs)}.txt"
    names = [f"bench_{index:03d}" for index in range(count)]
    env = {
        "BENCH_TIMES": str(times),
        "BENCH_COUNT": str(count),
        "BENCH_YIELD": "1" if jobs else "0",
        "BENCH_INTERVAL": str(interval),
        "JOB_DISTRIBUTION_INCLUDE": " ".join(names),
    }
    process = EngineProcess(
        "nuvla_job.cli.distributor",
        [
            "--zk-hosts",
            zk.hosts,
            "--api-url",
            api.endpoint,
            "--api-credentials-file",
            str(api.credentials_path),
            "--actions-path",
            str(actions),
            "--name",
            f"bench-{count}",
        ],
        env,
    )
    try:
        process.start()
        for name in names:
            process.wait_for_log(f"leader of {name}:", timeout=60)
        time.sleep(WARM_UP)  # a measurement window, not a synchronisation
        started, cpu_before = time.time(), cpu_seconds(process.pid)
        time.sleep(seconds)
        ended, cpu_after = time.time(), cpu_seconds(process.pid)
        process.signal(signal.SIGTERM)
        code = process.wait(30)
        if code != 0:
            raise RuntimeError(f"the distributor exited with {code}:\n{process.log()[-3000:]}")
    finally:
        process.stop()
        shutil.rmtree(process.dir, ignore_errors=True)
    jitters = []
    for line in times.read_text().splitlines():
        name, stamp = line.split()
        moment = float(stamp)
        if not started <= moment < ended:
            continue
        offset = tick_offset(name, interval)
        scheduled = round((moment - offset) / interval) * interval + offset
        jitters.append(abs(moment - scheduled) * 1000)
    if not jitters:
        raise RuntimeError("no tick in the measurement window")
    return Row(
        label,
        count,
        int(jobs),
        len(jitters),
        round(count * (ended - started) / interval),
        (cpu_after - cpu_before) / (ended - started) * 100,
        statistics.median(jitters),
        percentile(jitters, 99),
        max(jitters),
    )


def table(base: Row, load: Row, bare: Row) -> list[str]:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "-"

    lines = [
        "| run | distributions | jobs per tick | ticks (expected) | CPU, % of one core "
        "| jitter median | jitter p99 | jitter max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in (base, load, bare):
        lines.append(
            f"| {row.label} | {row.distributions} | {row.jobs_per_tick} "
            f"| {row.ticks} ({row.expected}) "
            f"| {row.cpu_percent:.1f}% | {row.jitter_median_ms:.1f} ms "
            f"| {row.jitter_p99_ms:.1f} ms | {row.jitter_max_ms:.1f} ms |"
        )
    lines.append(
        f"| ratio load / baseline | {ratio(load.distributions, base.distributions)} "
        f"| | {ratio(load.ticks, base.ticks)} "
        f"| {ratio(load.cpu_percent, base.cpu_percent)} "
        f"| {ratio(load.jitter_median_ms, base.jitter_median_ms)} "
        f"| {ratio(load.jitter_p99_ms, base.jitter_p99_ms)} "
        f"| {ratio(load.jitter_max_ms, base.jitter_max_ms)} |"
    )
    return lines


def header(args: argparse.Namespace) -> list[str]:
    return [
        "# Distributor: CPU and tick jitter",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M')}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, kazoo {version('kazoo')}, "
        f"gevent {version('gevent')}",
        f"- one `job-distributor` process, every distribution every {args.interval:g} s, "
        f"each tick creating one job with `nuvla.api`'s `add` (two HTTP requests) in the job "
        f"API (a separate process on the same machine, as is ZooKeeper), or none in the last "
        f"run; measured over {args.seconds:g} s once all are leaders",
        "- jitter: |generator called - scheduled grid point|; CPU: user + system time of the "
        "distributor process only",
        f"- goal (load): median jitter < {GOAL_JITTER_MS:g} ms, CPU < {GOAL_CPU:g}% of one core",
        # Other processes compete for the CPUs and show up in the jitter's tail.
        "- load average at the start: " + ", ".join(f"{v:.1f}" for v in os.getloadavg()),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distributions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also update the distributor section of docs/benchmarks.md",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = report.load_average()
    # Unwind through the finally blocks, so every process started is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix="bench-distributor-"))
    actions = folder / "actions"
    actions.mkdir()
    (actions / "bench_distributions.py").write_text(MODULE, "utf-8")
    zk = ZooKeeperServer()
    api: JobApiProcess | None = None
    try:
        zk.start()
        api = JobApiProcess(zk.hosts)
        api.start()
        head = header(args)
        print("\n".join(head), flush=True)
        print("\nbaseline: 1 distribution", flush=True)
        base = measure("baseline", zk, api, actions, 1, True, args.interval, args.seconds)
        print(f"  {base}", flush=True)
        print(f"load: {args.distributions} distributions", flush=True)
        load = measure(
            "load", zk, api, actions, args.distributions, True, args.interval, args.seconds
        )
        print(f"  {load}", flush=True)
        print(f"load without jobs: {args.distributions} distributions", flush=True)
        bare = measure(
            "load, no jobs",
            zk,
            api,
            actions,
            args.distributions,
            False,
            args.interval,
            args.seconds,
        )
        print(f"  {bare}", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if api is not None:
            api.close()
        zk.close()
        shutil.rmtree(folder, ignore_errors=True)
    lines = table(base, load, bare)
    print("\n" + "\n".join(lines))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join([*head, "", *lines, ""]), "utf-8")
    print(f"\nwritten to {REPORT.relative_to(REPO)}")
    if args.publish:
        command = report.command_line("bench.distributor", sys.argv[1:] if argv is None else argv)
        setup = "\n".join(head[3:-1])
        report.publish(
            "distributor", report.section(command, load_at_start, f"{setup}\n\n" + "\n".join(lines))
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
