"""Slowing down password guessing: back-off after repeated failed logins, which no other
client can turn against a legitimate one.

Failures are counted per login name (user name or API-key id) *and client address*, and per
client address. Once a counter reaches its limit, further logins for that name from that
address (or anything from that address) are refused with 429 and a Retry-After, without
checking the credentials, for ``backoff`` seconds; the wait doubles with each further
failure, up to ``window``. A successful login clears its name-and-address counter; any
counter is forgotten ``window`` seconds after its last failure. Attempts being verified
count too, so a burst of parallel guesses cannot slip past the limit.

Why not per name alone: then five bad logins from anywhere lock the name out for everyone,
and a name is easy to learn (an API key's id is logged). Counted per name and address, the
right secret from any other address is still accepted. The price: a guesser with many
addresses gets ``max_failures`` tries per name from each of them (and ``per_address`` in
all from each), before argon2's cost per try; API-key secrets are 256 random bits, so this
matters for weak user passwords. ``max_failures_per_name`` (off by default) adds a count
per name from all addresses for whoever prefers that lock-out to that exposure.

The address is the TCP peer: behind a reverse proxy every client shares the proxy's, so
set the per-address limit to 0 there (counts per name and proxy still apply, and then do
let one client lock a name out for the others behind the same proxy).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..backoff import backoff_delay

# Past this many tracked names/addresses, forgotten ones are pruned (bounded memory under a
# spray of random names).
_PRUNE_AT = 10_000
# An attempt being verified counts this long at most: one whose process died never ends.
PENDING_TTL = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins are allowed before back-off (0 turns a limit off)."""

    max_failures: int = 5  # per login name from one address
    max_failures_per_address: int = 50  # from one address, all names together
    max_failures_per_name: int = 0  # per login name from every address together (0: off)
    backoff: float = 30.0
    window: float = 900.0


@dataclass
class Counter:
    failures: int = 0
    pending: int = 0
    last_failure: float = 0.0
    pending_until: float = 0.0  # when the attempts being verified stop counting


class CounterStore(Protocol):
    """Where the counters live: this process's memory, or a database that replicas share
    (postgres.py), so that the back-off holds across them."""

    def update(self, keys: list[str], now: float, change: Callable[[dict[str, Counter]], T]) -> T:
        """Atomically: the counters of `keys` (new ones at zero), changed in place by
        `change`, kept; its result. Nothing is kept when `change` raises."""


class MemoryCounters:
    """Counters in this process's memory (a restart forgets them)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.counters: dict[str, Counter] = {}
        self._prune_at = _PRUNE_AT

    def update(self, keys: list[str], now: float, change: Callable[[dict[str, Counter]], T]) -> T:
        before = {key: self.counters.get(key) for key in keys}
        work = {key: Counter(**vars(c)) if c else Counter() for key, c in before.items()}
        result = change(work)
        self.counters.update(work)
        if len(self.counters) > self._prune_at:
            self._prune(now)
        return result

    def _prune(self, now: float) -> None:
        self.counters = {
            key: c
            for key, c in self.counters.items()
            if c.pending or (c.failures and now - c.last_failure < self.window)
        }
        # Under a spray of fresh names most counters are live: do not prune on every login.
        self._prune_at = max(_PRUNE_AT, 2 * len(self.counters))


class TooManyFailures(Exception):
    """Logins for this name or from this address are refused for ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Failed-login counters, in memory by default (a restart forgets them), or in the
    ``store`` replicas share (then ``clock`` must be the wall clock: time.time)."""

    def __init__(
        self,
        limits: LoginLimits,
        clock: Callable[[], float] = time.monotonic,
        store: CounterStore | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.store = store or MemoryCounters(limits.window)

    def _keys(self, name: str, address: str) -> list[tuple[str, int]]:
        keys = []
        if self.limits.max_failures > 0:
            # NUL cannot be in an address: no name and address pair reads as another.
            keys.append((f"pair:{address}\0{name}", self.limits.max_failures))
        if self.limits.max_failures_per_address > 0 and address:
            keys.append((f"addr:{address}", self.limits.max_failures_per_address))
        if self.limits.max_failures_per_name > 0:
            keys.append((f"name:{name}", self.limits.max_failures_per_name))
        return keys

    def _fresh(self, counter: Counter, now: float) -> Counter:
        if counter.pending and now > counter.pending_until:
            counter.pending = 0  # their process never ended them
        if not counter.pending and now - counter.last_failure >= self.limits.window:
            counter.failures, counter.last_failure = 0, 0.0  # forgotten
        return counter

    def _wait(self, counter: Counter, limit: int, now: float) -> float:
        """Seconds before one more attempt may be checked (0: now)."""
        if counter.failures + counter.pending < limit:
            return 0.0
        if counter.pending:
            return 1.0  # the attempts being verified may still succeed
        excess = counter.failures - limit
        delay = backoff_delay(excess + 1, self.limits.backoff, self.limits.window)
        return max(0.0, counter.last_failure + delay - now)

    def begin(self, name: str, address: str) -> None:
        """Reserve one attempt, or raise :class:`TooManyFailures`; then call :meth:`end`."""
        now = self.clock()
        keys = self._keys(name, address)

        def reserve(counters: dict[str, Counter]) -> None:
            current = [(self._fresh(counters[key], now), limit) for key, limit in keys]
            wait = max((self._wait(c, limit, now) for c, limit in current), default=0.0)
            if wait > 0:
                raise TooManyFailures(max(1, math.ceil(wait)))
            for counter, _ in current:
                counter.pending += 1
                counter.pending_until = now + PENDING_TTL

        if keys:
            self.store.update([key for key, _ in keys], now, reserve)

    def end(self, name: str, address: str, success: bool | None) -> bool:
        """Record the outcome of an attempt reserved with :meth:`begin` (None: no outcome,
        e.g. the database failed). True when this failure starts a back-off."""
        now = self.clock()
        keys = self._keys(name, address)

        def record(counters: dict[str, Counter]) -> bool:
            started = False
            for key, limit in keys:
                counter = counters[key]
                counter.pending = max(0, counter.pending - 1)
                if success is None:
                    continue
                if not success:
                    counter.failures += 1
                    counter.last_failure = now
                    started = started or counter.failures == limit
                elif key.startswith("pair:"):
                    # Only this name's counter from this address: one valid account must
                    # not clear an address that is guessing others' passwords, nor the
                    # others' failures for this name.
                    counter.failures = 0
            return started

        return bool(keys) and self.store.update([key for key, _ in keys], now, record)
