"""What one consumer knows of the queue: a pure model, no ZooKeeper in it.

`QueueView` holds the entries and taken nodes the consumer has listed and followed, and the
names out of play because of what this consumer is doing itself:

- *trying*: a take transaction for it is in flight;
- *held*: taken by us (name -> the `Entry` handed out);
- *closing*: held, with a consume or release in flight;
- *unsure*: a connection loss hid whether our take (or the deletion of our taken node)
  happened; only a read of the taken node can tell.

The invariant, kept by every transition below: *available* (sorted, so a take pops the
smallest name: priority, then arrival) is exactly the entries that are neither taken, nor
trying, nor held, nor unsure. `closing` is always a subset of `held`.

Each ZooKeeper step of the consumer is one method here; the consumer calls them under its
lock, and the unit tests (tests/unit/test_queue_view.py) drive them directly. The view also
keeps two caches that go stale with the entries they are about: entry data read ahead of
the takes (`prefetch`) and taken-node versions `holds` has just read (`confirm`).

Every change of the view's facts from the outside (a new connection, the end of a session,
a stop) invalidates it: no take starts until a listing is applied again. Watch events that
arrive while a listing is in flight are recorded and replayed on top of it, so the last word
about each node wins.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

from sortedcontainers import SortedList

from .layout import Entry


class TakeOutcome(enum.Enum):
    """How one take transaction ended (as the consumer sees it)."""

    TAKEN = "taken"  # our taken node is there, and so is the entry
    GONE = "gone"  # the entry no longer exists
    BUSY = "busy"  # someone else's taken node is there
    ORPHAN = "orphan"  # taken, but the entry was deleted right after: give the node back
    UNSURE = "unsure"  # the connection dropped: the node may or may not be ours
    LOST = "lost"  # the session ended (or changed) meanwhile: nothing is ours


class QueueView:
    """The entries, taken nodes and our own takes of one consumer, with their transitions.

    `on_available()` is called each time a name becomes available (a waiting take may go);
    it runs inside the transition, so it must only wake someone.
    """

    def __init__(self, on_available: Callable[[], None] = lambda: None) -> None:
        self._on_available = on_available
        # Facts from the listing and the watch.
        self._entries: set[str] = set()
        self._taken: set[str] = set()
        # Names out of the available list because of what this consumer is doing.
        self._trying: set[str] = set()
        self._held: dict[str, Entry] = {}
        self._closing: set[str] = set()
        self._unsure: set[str] = set()
        self._available = SortedList()
        # Entry data read ahead of the takes (name -> an opaque async read).
        self._prefetched: dict[str, Any] = {}
        # Taken-node versions `holds` just read from the server: name -> (session, version).
        self._confirmed: dict[str, tuple[int | None, int]] = {}
        self.session: int | None = None  # the session the view and `held` belong to
        self.ready = False  # a listing was applied and nothing invalidated it since
        self._listing = 0  # bumped by every invalidation: a listing in flight is then stale
        self._pending: list[tuple[bool, str, bool]] | None = None  # events during a listing

    # -- reading ------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """How many entries are available (known, not taken by anyone)."""
        return len(self._available)

    def available(self) -> list[str]:
        return list(self._available)

    def held(self) -> list[Entry]:
        """The entries we hold, by name."""
        return [self._held[name] for name in sorted(self._held)]

    def holds(self, entry: Entry) -> bool:
        """Whether `entry` is the very object handed out for a name we still hold.

        Identity, not equality: an Entry of a lost session equals a later take of it.
        """
        return self._held.get(entry.name) is entry

    def facts(self) -> dict[str, frozenset[str]]:
        """Copies of every name set, for tests and debugging."""
        return {
            "entries": frozenset(self._entries),
            "taken": frozenset(self._taken),
            "trying": frozenset(self._trying),
            "held": frozenset(self._held),
            "closing": frozenset(self._closing),
            "unsure": frozenset(self._unsure),
            "available": frozenset(self._available),
        }

    # -- listing ------------------------------------------------------------------------------

    def invalidate(self) -> None:
        """The facts may be stale (connection state changed, or stopping): wait for a listing."""
        self._listing += 1
        self.ready = False
        self._pending = None

    def begin_listing(self) -> int:
        """A listing starts (its watch is already on): record events until it is applied.

        Returns the listing's token for `apply_listing` / `abandon_listing`.
        """
        self.invalidate()
        self._pending = []
        return self._listing

    def abandon_listing(self, token: int) -> None:
        """The listing failed: stop recording events for it."""
        if token == self._listing:
            self._pending = None

    def apply_listing(
        self, token: int, entries: Iterable[str], taken: Iterable[str], session: int
    ) -> list[str] | None:
        """The queue as listed in `session`, with the events recorded since replayed on it.

        Returns the names whose taken node may be ours though nothing holds it (after an
        unsure take, left without its entry, or held while its entry went): the consumer
        reads and deletes those of ours. None if the listing is stale (something invalidated
        the view since `begin_listing`): nothing is changed then.
        """
        if token != self._listing:
            return None
        entries, taken = set(entries), set(taken)
        events, self._pending = self._pending or [], None
        for is_entry, name, created in events:
            names = entries if is_entry else taken
            if created:
                names.add(name)
            else:
                names.discard(name)
        if session != self.session:
            self.forget_session()
            self.session = session
        self._entries, self._taken = entries, taken
        self._prefetched = {}
        self._confirmed = {n: v for n, v in self._confirmed.items() if v[0] == session}
        orphans = []
        for name in list(self._held):
            if name in self._closing:
                continue
            if name not in taken:
                del self._held[name]  # someone deleted our taken node
            elif name not in entries:
                del self._held[name]
                orphans.append(name)
        # Taken nodes that may be ours though nothing here holds them: after an unsure
        # take, or left without their entry.
        to_check = (self._unsure & taken) | (taken - entries)
        to_check -= self._held.keys() | self._trying | self._closing
        to_check.update(orphans)
        self._unsure = to_check & self._unsure
        blocked = self._trying | self._held.keys() | self._unsure
        self._available = SortedList(
            name for name in entries if name not in taken and name not in blocked
        )
        self.ready = True
        return sorted(to_check)

    def forget_session(self) -> int:
        """The session ended: its taken nodes, hence everything we held, are gone.

        Returns how many entries were held.
        """
        lost = len(self._held)
        self._held.clear()
        self._unsure.clear()
        self._confirmed.clear()
        self.session = None
        return lost

    def record(self, is_entry: bool, name: str, created: bool) -> bool:
        """A watch event: `name` under /job/entries (`is_entry`) or /job/taken was created or
        deleted. While a listing is in flight it is only recorded, for `apply_listing`.

        Returns True when it deleted the entry of a name we held (and were not finishing):
        the taken node left behind is ours to delete.
        """
        if self._pending is not None:
            self._pending.append((is_entry, name, created))
            return False
        names = self._entries if is_entry else self._taken
        orphaned = False
        if created:
            names.add(name)
        else:
            names.discard(name)
            if is_entry:
                self._prefetched.pop(name, None)
            if name in self._held and name not in self._closing:
                # Our entry or our taken node was deleted by someone else: not ours any
                # more, and a taken node without its entry is ours to delete.
                del self._held[name]
                orphaned = is_entry
        self._refresh(name)
        return orphaned

    # -- taking -------------------------------------------------------------------------------

    def begin_take(self) -> str | None:
        """The first available name, now trying; None if there is none (or not ready)."""
        if not self.ready or not self._available:
            return None
        name = self._available.pop(0)
        self._trying.add(name)
        return name

    def abandon_take(self, name: str) -> None:
        """The take of `name` was interrupted before any answer."""
        self._trying.discard(name)
        self._refresh(name)

    def end_take(
        self, name: str, session: int | None, outcome: TakeOutcome, entry: Entry | None
    ) -> TakeOutcome:
        """The take of `name`, sent in `session`, ended with `outcome` on the server.

        `entry` is what to hold if it was taken (None: do not keep it, e.g. stopping).
        Returns the outcome as the view sees it: LOST if the session is not the view's any
        more, ORPHAN for a take whose entry's deletion was reported meanwhile; TAKEN with
        `entry` held, or TAKEN with nothing held if `entry` was None (the node is to be
        given back, as for ORPHAN; so is an UNSURE one, once that can be known).
        """
        self._trying.discard(name)
        if outcome is TakeOutcome.GONE:
            # Its deletion event came before this answer, so the view should know already;
            # if it does not, trust the server rather than retry the name for ever.
            self._entries.discard(name)
        if session is None or session != self.session:
            outcome = TakeOutcome.LOST
        elif outcome is TakeOutcome.TAKEN:
            if name not in self._entries:
                outcome = TakeOutcome.ORPHAN  # its deletion was reported while we took it
            elif entry is not None:
                self._held[name] = entry
                return outcome
        elif outcome is TakeOutcome.UNSURE:
            self._unsure.add(name)
        self._refresh(name)
        return outcome

    def prefetched(self, name: str) -> Any:
        """The read of `name`'s data made ahead of its take, if any (taken out of the cache)."""
        return self._prefetched.pop(name, None)

    def next_in_line(self, count: int) -> list[str]:
        """The first `count` available names whose data is not read ahead yet."""
        return [name for name in self._available.islice(0, count) if name not in self._prefetched]

    def prefetch(self, name: str, reading: Any) -> None:
        """Keep `reading` (of `name`'s data) for its take, unless the entry went meanwhile."""
        if name in self._entries:
            self._prefetched.setdefault(name, reading)

    # -- giving back a taken node -------------------------------------------------------------

    def mark_unsure(self, name: str, session: int | None) -> None:
        """Whether our taken node for `name` is still there cannot be known now (connection
        lost): the name stays out of play until the next listing checks it."""
        if session == self.session:
            self._unsure.add(name)
            self._refresh(name)

    def given_back(self, name: str) -> None:
        """No taken node of ours is left for `name` (deleted, or it was not ours)."""
        self._unsure.discard(name)
        self._refresh(name)

    # -- consume and release ------------------------------------------------------------------

    def confirm(self, entry: Entry, session: int | None, version: int) -> bool:
        """`holds` read our taken node of `entry` in `session` at `version`: keep that for
        the consume or release right behind it. False if the entry is no longer ours."""
        if not self.holds(entry) or session != self.session:
            return False
        self._confirmed[entry.name] = (session, version)
        return True

    def pop_confirmed(self, name: str) -> tuple[int | None, int] | None:
        """The (session, version) `confirm` recorded for `name`, used once."""
        return self._confirmed.pop(name, None)

    def begin_finish(self, entry: Entry) -> bool:
        """A consume or release of `entry` starts; False if it is not ours or already ending."""
        if not self.holds(entry) or entry.name in self._closing:
            return False
        self._closing.add(entry.name)
        return True

    def end_finish(self, name: str, settled: bool) -> None:
        """The consume or release of `name` is over; `settled`: it is not ours any more
        (done, or refused by the server), rather than interrupted."""
        self._closing.discard(name)
        if settled:
            self._held.pop(name, None)
        self._refresh(name)

    # -- the invariant ------------------------------------------------------------------------

    def _refresh(self, name: str) -> None:
        """Put `name` in or out of the available list after something about it changed."""
        if (
            name in self._entries
            and name not in self._taken
            and name not in self._trying
            and name not in self._held
            and name not in self._unsure
        ):
            if name not in self._available:
                self._available.add(name)
                self._on_available()
        else:
            self._available.discard(name)
