"""The consumer's model of the queue (nuvla_job/queue/view.py), driven without ZooKeeper.

Each test plays the steps the consumer takes (listing, watch events, takes, consumes) as
calls on a `QueueView`, and checks the invariant after them: the available names are exactly
the entries neither taken, nor trying, nor held, nor unsure; closing ones are held.
The same protocol against a real ZooKeeper is tests/integration/test_queue_consumer.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from nuvla_job.queue import Entry, QueueView, TakeOutcome

SESSION = 0x1234
A, B, C, D = (f"entry-{p:03d}-{s:010d}" for p, s in ((0, 3), (1, 1), (1, 2), (9, 0)))


class Wakes:
    """Counts the view's on_available calls (the consumer wakes one take for each)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def check(view: QueueView) -> None:
    facts = view.facts()
    blocked = facts["taken"] | facts["trying"] | facts["held"] | facts["unsure"]
    assert facts["available"] == facts["entries"] - blocked
    assert view.available() == sorted(facts["available"])
    assert view.depth == len(facts["available"])
    assert facts["closing"] <= facts["held"]


def listed(
    entries: Sequence[str],
    taken: Sequence[str] = (),
    session: int = SESSION,
    wakes: Wakes | None = None,
) -> QueueView:
    view = QueueView(wakes or Wakes())
    token = view.begin_listing()
    assert view.apply_listing(token, entries, taken, session) == sorted(set(taken) - set(entries))
    check(view)
    return view


def take(view: QueueView, outcome: TakeOutcome = TakeOutcome.TAKEN) -> Entry:
    name = view.begin_take()
    assert name is not None
    entry = Entry(name, b"job/x")
    assert view.end_take(name, view.session, outcome, entry) is outcome
    check(view)
    return entry


# -- listing ------------------------------------------------------------------------------------


def test_nothing_is_taken_before_a_listing_is_applied() -> None:
    view = QueueView()
    assert not view.ready and view.begin_take() is None
    token = view.begin_listing()
    view.record(True, A, created=True)  # recorded, not applied yet
    assert view.begin_take() is None and view.depth == 0
    view.apply_listing(token, [B], [], SESSION)
    assert view.ready and view.available() == [A, B]


def test_takes_go_by_name_order_and_skip_taken_entries() -> None:
    view = listed([D, C, B, A], taken=[B])
    assert [view.begin_take() for _ in range(4)] == [A, C, D, None]
    check(view)


def test_events_during_a_listing_are_replayed_on_it_the_last_word_wins() -> None:
    view = QueueView()
    token = view.begin_listing()
    view.record(True, C, created=True)  # created after the server listed
    view.record(True, A, created=False)  # deleted after it was listed
    view.record(False, B, created=True)  # taken meanwhile...
    view.record(False, B, created=False)  # ...and released
    view.record(True, D, created=True)
    view.record(True, D, created=False)
    assert view.apply_listing(token, [A, B], [], SESSION) == []
    assert view.available() == [B, C]
    check(view)


def test_a_listing_invalidated_meanwhile_is_stale_and_changes_nothing() -> None:
    view = listed([A])
    token = view.begin_listing()
    view.invalidate()  # e.g. the connection was suspended during the listing
    assert view.apply_listing(token, [A, B], [], SESSION) is None
    assert not view.ready and view.available() == [A]
    # An abandoned listing stops recording: events apply directly again.
    token = view.begin_listing()
    view.abandon_listing(token)
    view.record(True, B, created=True)
    assert view.available() == [A, B]


def test_after_a_new_session_nothing_is_held_and_its_takes_are_lost() -> None:
    view = listed([A, B, C])
    held = take(view)
    trying = view.begin_take()
    assert view.forget_session() == 1 and view.session is None
    token = view.begin_listing()
    # Our old taken node may still be listed (until the server expires it): not ours now.
    assert view.apply_listing(token, [A, B, C], [held.name], SESSION + 1) == []
    assert view.held() == [] and not view.holds(held) and view.available() == [C]
    # The take sent in the old session ends: lost, whatever the server said.
    assert view.end_take(trying, SESSION, TakeOutcome.TAKEN, Entry(trying, b"")) is (
        TakeOutcome.LOST
    )
    assert view.available() == [trying, C]
    check(view)


def test_relisting_in_the_same_session_keeps_what_we_hold_and_finds_what_to_check() -> None:
    view = listed([A, B, C, D])
    kept, lost_node, lost_entry = take(view), take(view), take(view)
    unsure = view.begin_take()
    view.end_take(unsure, SESSION, TakeOutcome.UNSURE, None)
    token = view.begin_listing()
    # Our node of `lost_node` was deleted while we were away, the entry of `lost_entry` too;
    # an unknown taken node without its entry, and our unsure take's node, may be ours.
    to_check = view.apply_listing(
        token,
        [kept.name, lost_node.name, unsure],
        [kept.name, lost_entry.name, unsure, "x"],
        SESSION,
    )
    assert to_check == sorted([lost_entry.name, unsure, "x"])
    assert view.held() == [kept]
    check(view)


# -- taking -------------------------------------------------------------------------------------


def test_a_take_holds_the_very_entry_handed_out() -> None:
    view = listed([A, B])
    entry = take(view)
    assert view.held() == [entry] and view.holds(entry)
    assert not view.holds(Entry(entry.name, entry.data))  # equal, but not the one handed out
    assert view.available() == [B]


@pytest.mark.parametrize("outcome", [TakeOutcome.BUSY, TakeOutcome.LOST])
def test_a_take_that_did_not_get_the_node_puts_the_name_back(outcome: TakeOutcome) -> None:
    wakes = Wakes()
    view = listed([A, B], wakes=wakes)
    before = wakes.count
    name = view.begin_take()
    assert view.end_take(name, SESSION, outcome, Entry(name, b"")) is outcome
    assert view.available() == [A, B] and view.held() == []
    assert wakes.count == before + 1  # a waiting take may try again
    check(view)


def test_a_take_of_a_gone_entry_forgets_it_even_without_its_event() -> None:
    view = listed([A, B])
    name = view.begin_take()
    assert view.end_take(name, SESSION, TakeOutcome.GONE, None) is TakeOutcome.GONE
    assert A not in view.facts()["entries"] and view.available() == [B]
    check(view)


def test_a_take_whose_entry_was_deleted_meanwhile_is_an_orphan() -> None:
    view = listed([A, B])
    name = view.begin_take()
    view.record(True, name, created=False)
    assert view.end_take(name, SESSION, TakeOutcome.TAKEN, Entry(name, b"")) is TakeOutcome.ORPHAN
    assert view.held() == [] and view.available() == [B]
    check(view)


def test_a_take_not_kept_holds_nothing() -> None:
    view = listed([A])
    name = view.begin_take()
    view.record(False, name, created=True)  # our node's creation, reported before the answer
    assert view.end_take(name, SESSION, TakeOutcome.TAKEN, None) is TakeOutcome.TAKEN
    assert view.held() == [] and view.available() == []
    view.record(False, name, created=False)  # given back
    assert view.available() == [A]
    check(view)


def test_an_unsure_take_blocks_its_name_until_given_back() -> None:
    view = listed([A, B])
    name = view.begin_take()
    assert view.end_take(name, SESSION, TakeOutcome.UNSURE, None) is TakeOutcome.UNSURE
    assert view.available() == [B] and view.facts()["unsure"] == {A}
    view.mark_unsure(name, SESSION + 1)  # a give-back of another session changes nothing
    view.given_back(name)
    assert view.available() == [A, B] and view.facts()["unsure"] == frozenset()
    check(view)


def test_an_interrupted_take_puts_the_name_back() -> None:
    view = listed([A, B])
    name = view.begin_take()
    view.abandon_take(name)
    assert view.available() == [A, B]
    check(view)


def test_data_read_ahead_is_kept_for_entries_still_there_and_used_once() -> None:
    view = listed([A, B, C])
    assert view.next_in_line(2) == [A, B]
    view.prefetch(A, "read of A")
    view.record(True, B, created=False)
    view.prefetch(B, "read of B")  # its entry went meanwhile: not kept
    assert view.next_in_line(3) == [C]
    assert view.prefetched(A) == "read of A" and view.prefetched(A) is None
    assert view.prefetched(B) is None
    view.prefetch(C, "read of C")
    view.record(True, C, created=False)  # the deletion drops the read too
    assert view.prefetched(C) is None


# -- events while holding -----------------------------------------------------------------------


def test_our_entry_deleted_by_someone_else_leaves_a_node_to_delete() -> None:
    view = listed([A, B])
    entry = take(view)
    assert view.record(True, entry.name, created=False) is True
    assert view.held() == [] and not view.holds(entry)
    check(view)


def test_our_taken_node_deleted_by_someone_else_drops_the_entry() -> None:
    view = listed([A, B])
    entry = take(view)
    view.record(False, entry.name, created=True)
    assert view.record(False, entry.name, created=False) is False
    assert view.held() == [] and view.available() == [A, B]
    check(view)


def test_someone_elses_taken_node_blocks_its_entry_while_it_exists() -> None:
    wakes = Wakes()
    view = listed([A], wakes=wakes)
    view.record(False, A, created=True)
    assert view.begin_take() is None
    before = wakes.count
    view.record(False, A, created=False)
    assert wakes.count == before + 1 and view.begin_take() == A


# -- consume and release ------------------------------------------------------------------------


def test_a_finish_runs_once_and_keeps_the_entry_through_its_own_events() -> None:
    view = listed([A, B])
    entry = take(view)
    assert view.begin_finish(entry) is True
    assert view.begin_finish(entry) is False  # one finish at a time
    # Our own consume's events: the entry then the node; not someone else's doing.
    assert view.record(True, entry.name, created=False) is False
    assert view.holds(entry)
    check(view)
    view.end_finish(entry.name, settled=True)
    assert view.held() == [] and view.begin_finish(entry) is False
    check(view)


def test_an_interrupted_finish_keeps_the_entry_held() -> None:
    view = listed([A])
    entry = take(view)
    assert view.begin_finish(entry)
    view.end_finish(entry.name, settled=False)
    assert view.holds(entry) and view.begin_finish(entry)


def test_a_confirmed_version_is_recorded_only_for_a_held_entry_and_used_once() -> None:
    view = listed([A, B])
    entry = take(view)
    assert view.confirm(Entry(entry.name, entry.data), SESSION, 3) is False
    assert view.confirm(entry, SESSION + 1, 3) is False
    assert view.confirm(entry, SESSION, 3) is True
    assert view.pop_confirmed(entry.name) == (SESSION, 3)
    assert view.pop_confirmed(entry.name) is None
    view.confirm(entry, SESSION, 4)
    view.forget_session()
    assert view.pop_confirmed(entry.name) is None


# -- the invariant under any order of steps -----------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_the_invariant_holds_whatever_the_order_of_steps(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"entry-{rng.randrange(3):03d}-{i:010d}" for i in range(12)]
    view = listed(rng.sample(names, 6), taken=rng.sample(names, 2))
    trying: list[tuple[str, int | None]] = []
    for _ in range(300):
        step = rng.randrange(10)
        name = rng.choice(names)
        if step == 0:
            view.record(rng.random() < 0.6, name, created=rng.random() < 0.5)
        elif step == 1 and (taken := view.begin_take()) is not None:
            trying.append((taken, view.session))
        elif step == 2 and trying:
            taken, session = trying.pop(rng.randrange(len(trying)))
            outcome = rng.choice(list(TakeOutcome))
            keep = Entry(taken, b"") if rng.random() < 0.8 else None
            result = view.end_take(taken, session, outcome, keep)
            assert (taken in view.facts()["held"]) == (
                result is TakeOutcome.TAKEN and keep is not None
            )
        elif step == 3 and view.held():
            entry = rng.choice(view.held())
            if view.begin_finish(entry):
                view.end_finish(entry.name, settled=rng.random() < 0.7)
        elif step == 4:
            view.mark_unsure(name, view.session)
        elif step == 5:
            view.given_back(name)
        elif step == 6 and rng.random() < 0.2:
            view.invalidate()
            if rng.random() < 0.3:
                view.forget_session()
            token = view.begin_listing()
            view.record(True, name, created=True)
            facts = view.facts()
            view.apply_listing(token, facts["entries"], facts["taken"], rng.choice([SESSION, 7]))
        elif step == 7 and trying:
            taken, _ = trying.pop()
            view.abandon_take(taken)
        check(view)
