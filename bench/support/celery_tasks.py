"""The Celery peer's application: one task of the benchmarks' shape (sleep, return nothing).

Configured from the environment, so one module serves every variant: BENCH_BROKER (the
Redis URL), BENCH_BACKEND (a result backend URL, or empty for none) and
BENCH_THREAD_SAFE=1 (``result_backend_thread_safe``: one backend shared by all greenlets
instead of one per greenlet).
"""

import os
import time

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"),
    backend=os.environ.get("BENCH_BACKEND") or None,
)
app.conf.result_backend_thread_safe = os.environ.get("BENCH_THREAD_SAFE") == "1"
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)  # gevent's, under `-P gevent`
