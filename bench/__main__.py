"""``python -m bench [--quick] [--publish] [NAME ...]``: run the benchmarks in turn.

Each runs in its own interpreter (``python -m bench.<name>``), as it would on its own: the
benchmarks start servers and load processes, and some monkey-patch with gevent. With no NAME,
all of them run, at their default (full) sizes unless ``--quick`` gives each the small sizes
of QUICK; ``--publish`` is passed on, so each replaces its section of docs/benchmarks.md and
copies its plots to docs/img/.
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Modules of this package that are helpers, not benchmarks.
HELPERS = {"plots", "report"}
# Run before the others, in this order: the peer table leads docs/benchmarks.md.
FIRST = ("peers",)
# Small sizes that check a benchmark end to end and draw its plots in a minute or two; the
# numbers are not the ones to quote.
QUICK: dict[str, list[str]] = {
    "api": ["--jobs", "10000", "--seconds", "5", "--quiet-wait", "10"],
    "api_stores": ["--jobs", "20000", "--seconds", "5", "--quiet-wait", "10"],
    "capacity": ["--jobs", "300", "--long-jobs", "100", "--long-sleep", "3"],
    "dashboard": ["--jobs", "20000", "--repeat", "5"],
    "delays": ["--jobs", "500", "--max-delay", "15", "--burst", "300"],
    "distributor": ["--seconds", "10"],
    "waiters": ["--jobs", "100", "--min-seconds", "3", "--spread", "3"],
    "nuvla_mix": ["--jobs", "300", "--upstream-jobs", "30"],
    "peers": ["--jobs", "300", "--upstream-jobs", "20", "--rounds", "1"],
    "executor": [
        "--jobs",
        "300",
        "--baseline-jobs",
        "30",
        "--samples",
        "50",
        "--in-flight",
        "200",
        "--sweep",
        "1,10,50,100",
    ],
    "queue_takes": [
        "--depths",
        "1000,10000",
        "--takes",
        "500",
        "--rounds",
        "2",
        "--baseline-takes",
        "50",
        "--baseline-seconds",
        "5",
    ],
}


def modules() -> list[str]:
    """The benchmarks, in the order they run: FIRST, then by name."""
    found = {
        m.name
        for m in pkgutil.iter_modules([str(BENCH)])
        if not m.name.startswith("_") and not m.ispkg and m.name not in HELPERS
    }
    first = [name for name in FIRST if name in found]
    return first + sorted(found - set(first))


def run_one(name: str, args: list[str], env: dict[str, str]) -> int:
    process = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=BENCH.parent, env=env
    )

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                # The child got the same Ctrl-C and is stopping what it started: never kill
                # it mid-cleanup, wait for it.
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    known = modules()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks in turn."
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(known)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: checks the commands and draws the plots quickly",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="update docs/benchmarks.md and docs/img/ with the results",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(known)})")
    args.names = [name for name in known if name in args.names] or known
    return args


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    failed = []
    for name in options.names:
        args = [
            *(QUICK.get(name, []) if options.quick else []),
            *(["--publish"] if options.publish else []),
        ]
        print(f"==== python -m bench.{name} {' '.join(args)}".rstrip(), flush=True)
        code = run_one(name, args, env)
        if code in (130, -signal.SIGINT, -signal.SIGTERM):
            return 130
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
