"""Queue takes: `QueueConsumer` against kazoo's `LockingQueue` as the queue gets deep.

    .venv/bin/python -m bench.queue_takes [--depths 1000,100000,1000000] [--takes 2000]
        [--rounds 3] [--concurrency 100] [--baseline-takes 200] [--baseline-seconds 20]
        [--force-sync no] [--publish]

In order:

1. a private ZooKeeper starts (tests/support/zookeeper.py; `forceSync` as given, "no" by
   default like the tests: writes reach the OS but are not fsync'ed), and one unreported round
   of ours warms up its JVM (a cold JIT halves the first rate);
2. for each depth, smallest first, the queue is topped up with `put_many` to depth + rounds *
   takes entries (random priorities, `job/<uuid>` data), so it never drops below the depth
   while our consumer works;
3. ours: a fresh `QueueConsumer` on a gevent client lists the queue (timed apart), then, for
   each of `--rounds` rounds, `--concurrency` greenlets take + consume `--takes` entries;
   takes/s = takes / that time, and the median round is reported (with the range: the
   machine may be shared, and its load average is in the header);
4. the baseline: one kazoo `LockingQueue` (a LockingQueue holds one entry at a time) takes +
   consumes until `--baseline-takes` or `--baseline-seconds`, whichever comes first; its rate is
   takes / time, extrapolated to any number of takes since every take costs the same listing;
5. the consumer's memory: another fresh consumer lists the queue under tracemalloc (the Python
   objects it keeps) and the process RSS growth is read from /proc;
6. the table goes to stdout and bench/results/queue_takes.md, the plot (takes/s against depth,
   log-log) to bench/results/queue-takes.png; ``--publish`` also copies the plot to docs/img/
   and replaces the queue_takes section of docs/benchmarks.md.

A quick run: ``--depths 1000,10000 --takes 500 --rounds 2 --baseline-takes 50
--baseline-seconds 5``.

The process is monkey-patched with gevent first, as the executor is. The ZooKeeper process is
stopped on exit, Ctrl-C and SIGTERM included.
"""

# ruff: noqa: E402
from gevent import monkey

monkey.patch_all()

import argparse
import gc
import os
import platform
import random
import signal
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import gevent
from kazoo.client import KazooClient
from kazoo.recipe.queue import LockingQueue

from bench import plots, report
from nuvla_job.queue import ENTRIES, ROOT, QueueConsumer, put_many
from nuvla_job.zk import make_client
from tests.support.zookeeper import ZooKeeperServer

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "bench" / "results" / "queue_takes.md"
PLOT = REPO / "bench" / "results" / "queue-takes.png"
GOAL = 1000.0  # takes/s for one process, at every depth
SESSION_TIMEOUT = 30.0  # listing 1,000,000 names keeps the gevent hub busy for seconds
TAKE_TIMEOUT = 60.0


@dataclass
class Row:
    depth: int
    ours_rates: list[float]
    ours_listing_s: float
    kazoo_rate: float
    kazoo_takes: int
    retained_mb: float
    rss_growth_mb: float

    @property
    def ours_rate(self) -> float:
        return statistics.median(self.ours_rates)

    @property
    def ratio(self) -> float:
        return self.ours_rate / self.kazoo_rate if self.kazoo_rate else float("inf")


def job_ids(count: int, rng: random.Random) -> Iterator[tuple[str, int]]:
    for _ in range(count):
        yield f"job/{uuid.UUID(int=rng.getrandbits(128), version=4)}", rng.randrange(1000)


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def queue_size(client: KazooClient) -> int:
    stat = client.exists(ENTRIES)
    return stat.numChildren if stat else 0


def fill(client: KazooClient, target: int, rng: random.Random) -> None:
    missing = target - queue_size(client)
    if missing <= 0:
        return
    started = time.perf_counter()
    put_many(client, job_ids(missing, rng))
    elapsed = time.perf_counter() - started
    print(f"  queued {missing:,} entries in {elapsed:.1f} s ({missing / elapsed:,.0f}/s)")


def run_ours(
    client: KazooClient, takes: int, concurrency: int, rounds: int
) -> tuple[list[float], float]:
    """(takes/s of each round, listing seconds): `takes` take+consume with `concurrency`
    greenlets, `rounds` times, on one consumer."""
    consumer = QueueConsumer(client)
    started = time.perf_counter()
    consumer.start()
    listing = time.perf_counter() - started
    remaining = [0]

    def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            entry = consumer.take(timeout=TAKE_TIMEOUT)
            if entry is None:
                raise RuntimeError("no entry to take: the queue ran dry")
            if not consumer.consume(entry):
                raise RuntimeError(f"could not consume {entry.name}")

    rates = []
    try:
        for _ in range(rounds):
            remaining[0] = takes
            started = time.perf_counter()
            gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)], raise_error=True)
            rates.append(takes / (time.perf_counter() - started))
    finally:
        consumer.stop()
    return rates, listing


def run_kazoo(client: KazooClient, max_takes: int, max_seconds: float) -> tuple[float, int]:
    """(takes/s, takes done) for one LockingQueue taking + consuming, bounded."""
    queue = LockingQueue(client, ROOT)
    done = 0
    started = time.perf_counter()
    while done < max_takes and time.perf_counter() - started < max_seconds:
        if queue.get(timeout=TAKE_TIMEOUT) is None:
            raise RuntimeError("LockingQueue got nothing: the queue ran dry")
        if not queue.consume():
            raise RuntimeError("LockingQueue could not consume its entry")
        done += 1
    return done / (time.perf_counter() - started), done


def consumer_memory(client: KazooClient) -> tuple[float, float]:
    """(MiB of Python objects a started consumer keeps, MiB of RSS growth) at this depth."""
    gc.collect()
    rss_before = rss_mb()
    tracemalloc.start()
    consumer = QueueConsumer(client)
    try:
        consumer.start()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] / 2**20
        rss_growth = rss_mb() - rss_before
    finally:
        tracemalloc.stop()
        consumer.stop()
    return retained, rss_growth


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| depth | ours takes/s (range) | kazoo takes/s | ratio | ours: initial listing "
        "| ours: memory kept (RSS growth) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.depth:,} | {row.ours_rate:,.0f} ({min(row.ours_rates):,.0f}-"
            f"{max(row.ours_rates):,.0f}) | {row.kazoo_rate:,.1f} "
            f"({row.kazoo_takes} takes) | {row.ratio:,.0f}x | {row.ours_listing_s:.2f} s "
            f"| {row.retained_mb:,.0f} MiB ({row.rss_growth_mb:,.0f} MiB) |"
        )
    return lines


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def header(args: argparse.Namespace, server: ZooKeeperServer) -> list[str]:
    zk_version = server.four_letter_word("srvr").splitlines()[0].split(":", 1)[-1].strip()
    return [
        "# Queue takes: QueueConsumer vs kazoo's LockingQueue",
        "",
        f"- {time.strftime('%Y-%m-%d %H:%M')}, {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, kazoo {version('kazoo')}, "
        f"gevent {version('gevent')}, sortedcontainers {version('sortedcontainers')}; "
        f"load average at start {load_average()}",
        f"- ZooKeeper {zk_version}, standalone on the same machine, forceSync={args.force_sync}",
        f"- ours: one process, one gevent client, {args.concurrency} greenlets doing "
        f"take + consume of {args.takes:,} entries, {args.rounds} rounds (median, range); the "
        f"queue holds depth to depth + {args.rounds * args.takes:,} entries meanwhile",
        f"- kazoo: one LockingQueue doing take + consume, up to {args.baseline_takes} takes or "
        f"{args.baseline_seconds:g} s per depth; rate = takes / time",
        f"- goal: >= {GOAL:,.0f} takes/s for ours at every depth; one unreported round of "
        "ours warms the JVM up first",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--depths",
        default="1000,100000,1000000",
        type=lambda text: sorted(int(d.replace("_", "")) for d in text.split(",") if d),
        help="comma-separated queue depths (default: %(default)s)",
    )
    parser.add_argument("--takes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--baseline-takes", type=int, default=200)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--force-sync", choices=("yes", "no"), default="no")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also copy the plot to docs/img/ and update docs/benchmarks.md",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = report.load_average()
    main_greenlet = gevent.getcurrent()
    # Unwind through the finally blocks below, so ZooKeeper is stopped.
    gevent.signal_handler(signal.SIGTERM, gevent.kill, main_greenlet, KeyboardInterrupt)
    rng = random.Random(args.seed)
    server = ZooKeeperServer(extra_config={"forceSync": args.force_sync})
    clients: list[KazooClient] = []
    rows: list[Row] = []
    try:
        server.start()
        for _ in range(3):
            client = make_client(server.hosts, timeout=SESSION_TIMEOUT, use_gevent=True)
            client.start(timeout=30)
            clients.append(client)
        producer, ours, theirs = clients
        head = header(args, server)
        print("\n".join(head), flush=True)
        fill(producer, args.takes, rng)
        warm_up, _ = run_ours(ours, args.takes, args.concurrency, 1)
        print(f"\nwarm-up (not reported): {warm_up[0]:,.0f} takes/s", flush=True)
        for depth in args.depths:
            print(f"\ndepth {depth:,}", flush=True)
            fill(producer, depth + args.rounds * args.takes, rng)
            rates, listing = run_ours(ours, args.takes, args.concurrency, args.rounds)
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            print(f"  ours: {shown} takes/s (initial listing {listing:.2f} s)")
            fill(producer, depth, rng)
            kazoo_rate, kazoo_takes = run_kazoo(theirs, args.baseline_takes, args.baseline_seconds)
            print(f"  kazoo: {kazoo_rate:,.1f} takes/s ({kazoo_takes} takes)")
            retained, rss_growth = consumer_memory(ours)
            print(f"  ours, memory: {retained:,.0f} MiB kept, RSS +{rss_growth:,.0f} MiB")
            rows.append(Row(depth, rates, listing, kazoo_rate, kazoo_takes, retained, rss_growth))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for client in clients:
            client.stop()
            client.close()
        server.close()
    head[2] += f"; load average at the end {load_average()}"
    text = [*head, "", *table(rows), ""]
    print("\n" + "\n".join(table(rows)))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(text), "utf-8")
    plot = plots.takes_vs_depth(
        PLOT,
        [row.depth for row in rows],
        [row.ours_rate for row in rows],
        [(min(row.ours_rates), max(row.ours_rates)) for row in rows],
        [row.kazoo_rate for row in rows],
        goal=GOAL,
    )
    print(f"\nwritten to {REPORT.relative_to(REPO)}, {plot.relative_to(REPO)}")
    if args.publish:
        command = report.command_line("bench.queue_takes", sys.argv[1:] if argv is None else argv)
        setup = "\n".join(head[3:])
        body = report.section(
            command,
            load_at_start,
            f"{setup}\n\n" + "\n".join(table(rows)),
            [("takes/s against queue depth", plot)],
        )
        report.publish("queue_takes", body, [plot])
    return 0


if __name__ == "__main__":
    sys.exit(main())
