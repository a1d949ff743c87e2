"""``python -m bench``: run every benchmark module in turn with its default options.

Each runs in its own interpreter (``python -m bench.<name>``), as it would on its own: the
benchmarks start servers and load processes, and some monkey-patch with gevent.
"""

from __future__ import annotations

import os
import pkgutil
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(BENCH)])
                  if not m.name.startswith("_") and not m.ispkg)


def run_one(name: str, env: dict[str, str]) -> int:
    process = subprocess.Popen([sys.executable, "-m", f"bench.{name}"], cwd=BENCH.parent,
                               env=env)

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


def main() -> int:
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    failed = []
    for name in modules():
        print(f"==== python -m bench.{name}", flush=True)
        code = run_one(name, env)
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
