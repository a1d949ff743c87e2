"""Sharing a ZooKeeper client's requests among many callers: `Slots` and `Batcher`.

Both work with any kazoo handler (gevent or threading): they use only its lock, event and
async-result objects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

# Two batches on their way at once: the next one leaves without waiting for the answer.
FLUSHES_IN_FLIGHT = 2


class Slots:
    """At most `size` holders at a time, served in order; works with any kazoo handler."""

    def __init__(self, handler: Any, size: int) -> None:
        if size < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._handler = handler
        self._lock = handler.lock_object()
        self._free = size
        self._waiters: deque[Any] = deque()

    def __enter__(self) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                return
            turn = self._handler.event_object()
            self._waiters.append(turn)
        try:
            turn.wait()
        except BaseException:
            # Killed while waiting: give back the slot if it was handed over meanwhile.
            with self._lock:
                if not turn.is_set():
                    self._waiters.remove(turn)
                    raise
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().set()  # the slot passes straight to the next holder
            else:
                self._free += 1


class Batcher:
    """Group commit: many callers' items go out together, `parallel` flushes at a time.

    `submit(item)` returns an async result. Whatever is submitted while the flushes are on
    their way goes in a next one, so batches grow with the load and a lone caller waits for
    nothing.
    `flush(items)` returns one outcome per item; if it raises, every item of that flush gets
    the exception.
    """

    def __init__(
        self,
        handler: Any,
        flush: Callable[[list[Any]], list[Any]],
        size: int,
        parallel: int = FLUSHES_IN_FLIGHT,
    ) -> None:
        self._handler = handler
        self._flush = flush
        self._size = size
        self._parallel = parallel
        self._lock = handler.lock_object()
        self._pending: list[tuple[Any, Any]] = []
        self._flushing = 0

    def submit(self, item: Any) -> Any:
        result = self._handler.async_result()
        with self._lock:
            self._pending.append((item, result))
            start = self._flushing < self._parallel
            if start:
                self._flushing += 1
        if start:
            self._handler.spawn(self._run)
        return result

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._size]
                del self._pending[: self._size]
                if not batch:
                    self._flushing -= 1
                    return
            try:
                outcomes = self._flush([item for item, _ in batch])
            except BaseException as exc:
                for _, result in batch:
                    result.set_exception(exc)
                if not isinstance(exc, Exception):
                    with self._lock:
                        self._flushing -= 1
                    raise
            else:
                for (_, result), outcome in zip(batch, outcomes, strict=True):
                    result.set(outcome)
