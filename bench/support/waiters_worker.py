"""One phase of bench.waiters, in a process of its own: submit the jobs, then wait for all of
them from one waiter each, through nuvla_job.client.

``python -m bench.support.waiters_worker MODE RUNTIME CREDENTIALS OUT [options]``

- MODE ``longpoll``: each waiter calls ``handle.wait()`` (the client's one long poll);
  ``poll``: each waiter calls ``handle.refresh()`` every ``--interval`` seconds until the job
  is final (the naive way, one request per waiter per interval); ``none``: nobody waits, one
  search a second tells when every job is final (the job API's cost of the jobs alone).
- RUNTIME ``threads``: one OS thread per waiter; ``greenlets``: gevent, monkey-patched
  before anything else is imported, one greenlet per waiter.

It prints ``WAITING`` once every job is submitted and the waiters start, and ``DONE`` once
every waiter has returned (the driver measures between the two), then writes OUT: for each
job, when its waiter returned and when the job API wrote its final state.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[2] == "greenlets":
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime  # noqa: E402

import requests.adapters  # noqa: E402

from nuvla_job.client import Client, JobHandle  # noqa: E402
from nuvla_job.states import FINAL_STATES  # noqa: E402

SUBMITTERS = 8  # threads (or greenlets) adding the jobs, each on its own connection


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _spawn(runtime: str, target: Callable[[], None]) -> Callable[[], None]:
    """Start ``target`` as a thread or a greenlet; returns its join."""
    if runtime == "greenlets":
        import gevent

        greenlet = gevent.spawn(target)
        return greenlet.join
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread.join


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("longpoll", "poll", "none"))
    parser.add_argument("runtime", choices=("threads", "greenlets"))
    parser.add_argument("credentials")
    parser.add_argument("out")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()

    client = Client.from_credentials_file(args.credentials)
    # Enough kept-alive connections for every waiter at once: the polling baseline is not
    # charged for reconnecting (the long poll uses one connection whatever the size).
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=args.jobs + 16)
    client.api.session.mount("http://", adapter)
    rng = random.Random(args.seed)
    tag = f"waiters-{args.mode}-{args.runtime}-{time.time_ns()}"
    seconds = [round(args.min_seconds + rng.uniform(0, args.spread), 3) for _ in range(args.jobs)]
    handles: list[JobHandle | None] = [None] * args.jobs

    def submit(first: int) -> None:
        for index in range(first, args.jobs, SUBMITTERS):
            payload = {"seconds": seconds[index]}
            handles[index] = client.submit("sleep", payload=payload, tags=[tag])

    for join in [_spawn(args.runtime, lambda i=i: submit(i)) for i in range(SUBMITTERS)]:
        join()
    jobs = [h for h in handles if h is not None]
    assert len(jobs) == args.jobs

    returned: dict[str, float] = {}
    ended: dict[str, float] = {}

    def wait(handle: JobHandle) -> None:
        result = handle.wait(timeout=600)
        returned[handle.id] = time.time()
        ended[handle.id] = _epoch(result.job["updated"])

    def poll(handle: JobHandle) -> None:
        while True:
            handle.refresh()
            if handle.state in FINAL_STATES:
                returned[handle.id] = time.time()
                assert handle.doc is not None
                ended[handle.id] = _epoch(handle.doc["updated"])
                return
            time.sleep(args.interval)

    print("WAITING", flush=True)
    began = time.time()
    if args.mode == "none":
        query = f"tags='{tag}' and state!='QUEUED' and state!='RUNNING'"
        while client.api.search("job", filter=query, last=0).count < args.jobs:
            time.sleep(1.0)
    else:
        waiter = wait if args.mode == "longpoll" else poll
        joins = [_spawn(args.runtime, lambda h=h: waiter(h)) for h in jobs]
        for join in joins:
            join()
    print("DONE", flush=True)
    with open(args.out, "w") as handle:
        json.dump({"began": began, "returned": returned, "ended": ended}, handle)
    client.close()


if __name__ == "__main__":
    main()
