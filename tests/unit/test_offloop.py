"""offloop.OffLoop (blocking calls in a bounded pool of threads, with a lane for heavy
ones) and the store's time budget (StoreLimits.query_timeout)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import gevent
import pytest
from gevent.monkey import get_original

from nuvla_job.api.offloop import OffLoop, OffLoopStore
from nuvla_job.api.query import parse_query
from nuvla_job.api.sqlite import SqliteStore
from nuvla_job.api.store import QueryTimeout, StoreLimits

_thread_id = get_original("_thread", "get_ident")


def test_calls_run_in_another_thread_and_exceptions_come_back(capfd) -> None:  # noqa: ANN001
    offloop = OffLoop(2)
    try:
        assert offloop.run(_thread_id) != _thread_id()
        with pytest.raises(KeyError, match="missing"):
            offloop.run({}.__getitem__, "missing")
        # gevent prints what fails in its workers; an exception handed back is not printed.
        assert "Traceback" not in capfd.readouterr().err
        # A call made from one of the pool's threads runs where it is.
        assert offloop.run(lambda: offloop.run(_thread_id) == _thread_id())
    finally:
        offloop.close()


def test_heavy_calls_leave_a_thread_for_light_ones() -> None:
    offloop = OffLoop(3)
    release = threading.Event()  # an OS-level event: the heavy calls block their threads
    started: list[str] = []

    def heavy(name: str) -> str:
        started.append(name)
        release.wait(10)
        return name

    try:
        heavies = [gevent.spawn(offloop.run_heavy, heavy, f"h{i}") for i in range(3)]
        gevent.sleep(0.2)
        assert sorted(started) == ["h0", "h1"], "two of three threads for heavy calls"
        # The light call finds the third thread while both heavy ones hold theirs.
        assert offloop.run(lambda: "light") == "light"
        release.set()
        assert sorted(g.get(timeout=10) for g in heavies) == ["h0", "h1", "h2"]
    finally:
        offloop.close()


def test_the_loop_keeps_running_while_the_database_works(tmp_path: Path) -> None:
    inner = SqliteStore(tmp_path / "jobs.sqlite", StoreLimits(query_timeout=1.0))
    store = OffLoopStore(inner, OffLoop(2))
    docs = [{"id": f"job/{i}", "tags": [f"t{j}" for j in range(300)]} for i in range(500)]
    store.jobs.insert_many(docs)
    heavy = parse_query({"filter": [" or ".join(f"tags^='x{i}'" for i in range(400))]})
    ticks: list[float] = []

    def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match="longer than its 1 s budget"):
            store.jobs.search(heavy, None)
        assert time.monotonic() - started < 3.0
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert len(ticks) > 30 and max(gaps) < 0.1, max(gaps)
    finally:
        ticker.kill()
        store.close()


def test_the_budget_covers_bulk_deletes_too(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "jobs.sqlite", StoreLimits(query_timeout=0.3))
    store.jobs.insert_many(
        {"id": f"job/{i}", "tags": [f"t{j}" for j in range(300)]} for i in range(500)
    )
    heavy = parse_query({"filter": [" or ".join(f"tags^='x{i}'" for i in range(400))]})
    with pytest.raises(QueryTimeout):
        store.jobs.delete_matching(heavy, None)
    assert store.jobs.search(parse_query({"last": ["0"]}), None)[0] == 500  # rolled back
    store.close()


_CONCURRENT_WRITES = """
from gevent import monkey
monkey.patch_all()
import sys, gevent
from nuvla_job.api.offloop import OffLoop, OffLoopStore
from nuvla_job.api.query import parse_query
from nuvla_job.api.sqlite import SqliteStore

store = OffLoopStore(SqliteStore(sys.argv[1]), OffLoop(4))
store.jobs.insert({"id": "job/counter", "progress": 0})
def bump(n):
    store.jobs.update("job/counter", lambda d: {**d, "progress": d["progress"] + 1})
    store.jobs.insert({"id": f"job/{n}"}, enqueue_pending=n % 2 == 0)
gevent.joinall([gevent.spawn(bump, n) for n in range(300)], timeout=60, raise_error=True)
count, _ = store.jobs.search(parse_query({"last": ["0"]}), None)
counted, _ = store.jobs.search(parse_query({"last": ["0"], "filter": ["id^='job/'"]}), None)
print(store.jobs.get("job/counter")["progress"], count, counted, len(store.jobs.pending_enqueue()))
"""


def test_writes_from_many_greenlets_stay_atomic_in_a_patched_process(tmp_path: Path) -> None:
    # As in the server: gevent's monkey-patching makes threading's locks greenlet locks,
    # which would not keep the pool's threads apart (the writer's lock is an OS lock).
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_WRITES, str(tmp_path / "jobs.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["300", "301", "301", "150"]
