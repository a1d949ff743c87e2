"""Distributor: every distribution in its own greenlet, each elected through ZooKeeper.

For each distribution a contender greenlet joins kazoo's ``Election`` at
``/election/<name>`` (identifier: the process name). The elected one runs the distribution
loop in a separate greenlet, so that losing the ZooKeeper session can stop it at once.

Ticks fall on a grid shared by every process: ``k * interval + offset(name)`` in wall-clock
time. A new leader therefore continues the old leader's schedule instead of starting its
own, and no interval sees jobs from two leaders (as long as the machines' clocks agree to
within the interval).
"""

from __future__ import annotations

import logging
import math
import signal
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import gevent
import gevent.event
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.protocol.states import KazooState
from kazoo.recipe.election import Election
from nuvla.api import Api, NuvlaError

from . import metrics, monitoring
from .backoff import backoff_delay
from .registry import Distribution, JobBody
from .zk import wait_connected

log = logging.getLogger(__name__)

ELECTION_ROOT = "/election"
# How long a tick may wait for ZooKeeper to confirm that this process still leads.
CONFIRM_TIMEOUT = 2.0
# The confirmation is asked this long before a tick (at most a quarter of the interval)...
CONFIRM_LEAD = 0.2
# ... and asked again at the tick if the process woke up this much later than planned.
STALE_CHECK = 0.2
# Contender greenlets get this long to leave their elections on stop, then are killed.
STOP_TIMEOUT = 10.0


class LeadershipLost(gevent.GreenletExit):
    """Raised into a distribution loop when the ZooKeeper session holding its leadership ended."""


class Stopping(gevent.GreenletExit):
    """Raised into a distribution loop on shutdown."""


class _Suspended(Exception):
    """The ZooKeeper connection dropped during a tick: leadership cannot be vouched for."""


class SelectionError(ValueError):
    """A distribution option names an unknown distribution or holds a bad interval."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def _names(values: Iterable[str]) -> list[str]:
    # Upstream passes several names after one flag; a comma list is accepted too.
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def select(
    known: Mapping[str, Distribution],
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    intervals: Iterable[str] = (),
) -> list[Distribution]:
    """The distributions to run: ``include`` (all when empty) minus ``exclude``, with the
    ``name:seconds`` overrides of ``intervals`` applied. A distribution is named by its own
    name or by its election's (upstream's interval option matches the latter, its exclude
    option the former: both work for both here).

    Raises :class:`SelectionError` for an unknown name or a bad ``name:seconds``.
    """
    by_name = {alias: d.name for d in known.values() for alias in d.names}

    def check(name: str, option: str) -> str:
        if name not in by_name:
            listed = ", ".join(sorted(by_name)) or "none are registered"
            raise SelectionError(option, f"no distribution named '{name}' (known: {listed})")
        return by_name[name]

    overrides: dict[str, int] = {}
    for spec in _names(intervals):
        option = "--distribution-interval"
        name, colon, seconds = spec.rpartition(":")
        if not colon or not name:
            raise SelectionError(option, f"'{spec}' is not NAME:SECONDS")
        name = check(name, option)
        try:
            value = int(seconds)
        except ValueError:
            raise SelectionError(
                option, f"'{spec}': '{seconds}' is not a whole number of seconds"
            ) from None
        if value <= 0:
            raise SelectionError(option, f"'{spec}': the interval must be > 0 seconds")
        overrides[name] = value
    included = [check(name, "--distribution-include") for name in _names(include)]
    excluded = [check(name, "--distribution-exclude") for name in _names(exclude)]
    selected = [
        d for d in known.values() if (not included or d.name in included) and d.name not in excluded
    ]
    return [
        replace(d, interval=float(overrides[d.name])) if d.name in overrides else d
        for d in selected
    ]


def election_path(name: str) -> str:
    return f"{ELECTION_ROOT}/{name}"


def tick_offset(name: str, interval: float) -> float:
    """Where in each interval a distribution's ticks fall: derived from its name only, so the
    same in every process, and different distributions do not all fire at the same instant."""
    return zlib.crc32(name.encode("utf-8")) / 2**32 * interval


def next_tick(now: float, interval: float, offset: float) -> float:
    """The first grid point ``k * interval + offset`` strictly after ``now``."""
    return (math.floor((now - offset) / interval) + 1) * interval + offset


def _sleep_until(moment: float) -> bool:
    """Sleep until the wall clock reads ``moment``; False if the clock went back meanwhile
    (by more than a second), so that the caller can plan again from the new time."""
    longest = moment - time.time()
    while True:
        delay = moment - time.time()
        if delay <= 0:
            return True
        if delay > longest + 1.0:
            return False
        gevent.sleep(delay)


@dataclass
class _State:
    """What one distribution's contender remembers between leaderships."""

    distribution: Distribution
    election: Election | None = None
    loop: gevent.Greenlet | None = None  # set while this process leads
    generator_failures: int = 0
    loop_failures: int = 0


class Distributor:
    """Runs the given distributions, each only while this process is elected for it."""

    def __init__(
        self,
        api: Api,
        zk: KazooClient,
        distributions: Iterable[Distribution],
        *,
        name: str = "distributor",
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self.api = api
        self.zk = zk
        self.name = name
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._states = {d.name: _State(d) for d in distributions}
        self._contenders: list[gevent.Greenlet] = []
        self._stopping = gevent.event.Event()
        self._started = False
        self._keys_refused = False  # the job API knows no unique-key (a Nuvla server)

    @property
    def distributions(self) -> list[Distribution]:
        return [state.distribution for state in self._states.values()]

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Join every election (one greenlet per distribution); returns at once."""
        if self._started:
            return
        self._started = True
        self.zk.add_listener(self._on_zk_state)
        for state in self._states.values():
            d = state.distribution
            log.info(
                "distribution %s every %g s (ticks at +%.3f s in each interval)",
                d.name,
                d.interval,
                tick_offset(d.election_name, d.interval),
            )
            self._contenders.append(gevent.spawn(self._contend, state))
        if not self._states:
            log.warning("no distribution to run (none registered, or all left out)")

    def run(self) -> int:
        """Start, then wait until :meth:`stop` has taken effect. Returns the exit status."""
        self.start()
        self._stopping.wait()
        self.join()
        log.info("distributor %s stopped", self.name)
        return 0

    def stop(self) -> None:
        """Leave every election: waiting contenders cancel, leaders stop their loop."""
        if self._stopping.is_set():
            return
        log.info("stopping: leaving %d election(s)", len(self._states))
        self._stopping.set()
        for state in self._states.values():
            if state.election is not None:
                state.election.cancel()
            if state.loop is not None:
                state.loop.kill(Stopping, block=False)

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the contenders to leave their elections; kill those that do not."""
        gevent.joinall(self._contenders, timeout=timeout)
        stuck = [g for g in self._contenders if not g.dead]
        if stuck:
            log.warning("%d contender(s) did not leave within %.0f s: killed", len(stuck), timeout)
            gevent.killall(stuck, block=True, timeout=2)
        try:
            self.zk.remove_listener(self._on_zk_state)
        except ValueError:
            pass

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.stop)

    # -- ZooKeeper session ------------------------------------------------------------------

    def _on_zk_state(self, state: str) -> None:
        # Called from kazoo's connection greenlet: schedule, never block.
        leading = [
            (s.distribution.name, s.loop) for s in self._states.values() if s.loop is not None
        ]
        if state == KazooState.LOST:
            # The election nodes vanished with the session and another process may
            # already lead: stop distributing now, not at the next tick.
            for name, loop in leading:
                log.error("leadership of %s lost with the ZooKeeper session", name)
                loop.kill(LeadershipLost, block=False)
        elif state == KazooState.SUSPENDED:
            if leading:
                log.warning(
                    "ZooKeeper connection suspended: %d distribution(s) paused until it is back",
                    len(leading),
                )

    # -- contending -------------------------------------------------------------------------

    def _contend(self, state: _State) -> None:
        """Join the election again and again until stopped; lead when elected."""
        name = state.distribution.name
        path = election_path(state.distribution.election_name)
        while not self._stopping.is_set():
            self._wait_connected()
            if self._stopping.is_set():
                break
            election = self.zk.Election(path, self.name)
            state.election = election
            try:
                log.debug("joining election %s", path)
                election.run(self._lead, state)
                state.loop_failures = 0
            except Exception as exc:  # a crashed loop must not stop the other distributions
                if self._stopping.is_set():
                    break
                state.loop_failures += 1
                delay = backoff_delay(state.loop_failures, self.backoff_base, self.backoff_cap)
                log.error(
                    "distribution %s crashed (%d in a row): %s: %s; rejoining in %.0f s",
                    name,
                    state.loop_failures,
                    type(exc).__name__,
                    exc,
                    delay,
                    # ZooKeeper trouble is expected operation: no traceback.
                    exc_info=not isinstance(exc, KazooException),
                )
                monitoring.capture_exception(exc, distribution=name, distributor=self.name)
                self._stopping.wait(delay)
            finally:
                state.election = None
        log.info("left election %s", path)

    def _wait_connected(self) -> None:
        while not self._stopping.is_set() and not self.zk.connected:
            wait_connected(self.zk, 1.0)

    def _lead(self, state: _State) -> None:
        """Elected: run the loop in its own greenlet until it ends, is lost or stopped.

        When this returns or raises, kazoo's election releases the leadership.
        """
        if self._stopping.is_set():
            return
        d = state.distribution
        log.info("leader of %s: distributing every %g s", d.name, d.interval)
        loop = gevent.spawn(self._distribute, state)
        state.loop = loop
        metrics.set_leader(d.name, True)
        try:
            result = loop.get()  # re-raises a crash; GreenletExit comes back as a value
        finally:
            state.loop = None
            metrics.set_leader(d.name, False)
            loop.kill(Stopping)  # only does something if this greenlet itself was killed
        if isinstance(result, LeadershipLost):
            log.warning("no longer leader of %s: rejoining its election", d.name)
        elif not isinstance(result, Stopping):
            log.info("giving up leadership of %s", d.name)

    # -- the distribution loop --------------------------------------------------------------

    def _distribute(self, state: _State) -> None:
        d = state.distribution
        # The election's name: every process of one election shares one grid.
        offset = tick_offset(d.election_name, d.interval)
        # Leadership is confirmed shortly before each tick, so that the round trip to
        # ZooKeeper does not delay the tick.
        lead = min(d.interval / 4, CONFIRM_LEAD)
        tick = next_tick(time.time(), d.interval, offset)
        while True:
            if not _sleep_until(tick - lead):
                # The clock went back: start again from the grid point after now.
                tick = next_tick(time.time(), d.interval, offset)
                continue
            if not self._check(state):
                tick = next_tick(time.time(), d.interval, offset)
                continue
            checked_at = time.time()
            if not _sleep_until(tick):
                tick = next_tick(time.time(), d.interval, offset)
                continue
            if time.time() - checked_at > lead + STALE_CHECK:
                # Woken far later than planned (was the process frozen?): ask again.
                if not self._check(state):
                    tick = next_tick(time.time(), d.interval, offset)
                    continue
            try:
                created, failed, held = self._tick(state)
            except _Suspended:
                log.warning("%s: tick interrupted: ZooKeeper connection suspended", d.name)
                tick = next_tick(time.time(), d.interval, offset)
                continue
            except Exception as exc:
                state.generator_failures += 1
                wait = backoff_delay(state.generator_failures, self.backoff_base, self.backoff_cap)
                # Retries stay on the grid, so a retry never shares an interval with
                # a tick that created some of its jobs before crashing.
                tick = next_tick(time.time() + wait, d.interval, offset)
                log.error(
                    "%s: the generator crashed (%d in a row): %s: %s; next attempt "
                    "in %.1f s (back-off %.0f s)",
                    d.name,
                    state.generator_failures,
                    type(exc).__name__,
                    exc,
                    tick - time.time(),
                    wait,
                    exc_info=True,
                )
                monitoring.capture_exception(exc, distribution=d.name, distributor=self.name)
                continue
            state.generator_failures = 0
            # Jobs whose unique-key an unfinished job holds were not added again.
            unadded = f"; {held} already unfinished" if held else ""
            if failed:
                log.info(
                    "distributed %d job(s) for %s; %d failed%s", created, d.name, failed, unadded
                )
            elif created or held:
                log.info("distributed %d job(s) for %s%s", created, d.name, unadded)
            else:
                # Many ticks find nothing to do: not worth a line each at INFO.
                log.debug("distributed 0 job(s) for %s", d.name)
            tick += d.interval
            now = time.time()
            if tick <= now:
                # The tick outlasted its interval: skip the slots already gone, never
                # run two ticks back to back.
                missed = math.ceil((now - tick) / d.interval)
                log.warning(
                    "%s: the tick took longer than the interval; %d tick(s) skipped", d.name, missed
                )
                tick = next_tick(now, d.interval, offset)

    def _check(self, state: _State) -> bool:
        """True when ZooKeeper confirms the leadership; raises LeadershipLost when it is
        gone; False (skip this tick) when ZooKeeper cannot answer now."""
        confirmed = self._confirm(state)
        if confirmed is False:
            log.error("%s: the election node is gone: leadership lost", state.distribution.name)
            raise LeadershipLost()
        if confirmed is None:
            log.warning(
                "%s: tick skipped: ZooKeeper cannot confirm the leadership now",
                state.distribution.name,
            )
            return False
        return True

    def _confirm(self, state: _State) -> bool | None:
        """Ask ZooKeeper whether our election node still exists in our session.

        True: still the leader; False: the node is gone, so is the leadership; None: no
        answer (connection suspended). A process frozen past its session timeout wakes up
        believing it leads: this check catches that before anything is distributed.
        """
        election = state.election
        node = election.lock.node if election is not None else None
        if node is None:
            return False
        client_id = self.zk.client_id
        if client_id is None or self.zk.state != KazooState.CONNECTED:
            return None
        path = f"{election_path(state.distribution.election_name)}/{node}"
        try:
            stat = self.zk.exists_async(path).get(timeout=CONFIRM_TIMEOUT)
        except (Exception, self.zk.handler.timeout_exception) as exc:
            log.debug("%s: leadership check failed: %s", state.distribution.name, exc)
            return None
        return stat is not None and stat.ephemeralOwner == client_id[0]

    def _tick(self, state: _State) -> tuple[int, int, int]:
        """Create every job the generator yields; returns (created, failed, held: not added
        because an unfinished job holds their unique-key)."""
        d = state.distribution
        created = failed = held = 0
        for body in d.generate(self.api):
            if self.zk.state != KazooState.CONNECTED:
                raise _Suspended()
            if not isinstance(body, dict):
                log.error(
                    "%s: the generator yielded %s instead of a job body: skipped",
                    d.name,
                    type(body).__name__,
                )
                failed += 1
                continue
            try:
                if self._add(self._tagged(body, d)):
                    created += 1
                else:
                    held += 1
            except Exception as exc:  # one failed add must not stop the loop
                failed += 1
                log.error(
                    "%s: adding a %s job failed: %s: %s",
                    d.name,
                    body.get("action"),
                    type(exc).__name__,
                    exc,
                )
        return created, failed, held

    def _add(self, body: JobBody) -> bool:
        """Add one job; False when the job API answered the unfinished job holding its
        unique-key instead (nothing added)."""
        if self._keys_refused:
            body.pop("unique-key", None)
        try:
            answer = self.api.add("job", body)
        except NuvlaError as exc:
            if "unique-key" not in body or not _refuses_unique_keys(exc):
                raise
            # A job API that does not know unique keys (a Nuvla server): add as upstream
            # does, relying on the distribution's own checks.
            log.warning("the job API does not take unique-key (a Nuvla server?): sent without")
            self._keys_refused = True
            body.pop("unique-key")
            answer = self.api.add("job", body)
        return answer.data.get("status") != 200

    def _tagged(self, body: JobBody, distribution: Distribution) -> JobBody:
        # Who created a job, and for which distribution, can be read back from the job API.
        tags = [t for t in body.get("tags", []) if isinstance(t, str)]
        tagged = {
            **body,
            "tags": [*tags, f"distributor:{self.name}", f"distribution:{distribution.name}"],
        }
        key = distribution.key_of(body)
        if key is not None:
            tagged["unique-key"] = key
        return tagged


def _refuses_unique_keys(exc: NuvlaError) -> bool:
    """Whether the job API refused the add for not knowing the unique-key attribute."""
    status = exc.response.status_code if exc.response is not None else None
    return status == 400 and "unique-key" in str(exc.reason)
