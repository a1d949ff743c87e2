"""The bulk result (nuvla_job/bulk.py) writes the very text upstream's ``BulkActionResult``
writes, for any sequence of what the monitor does to it (upstream's class, from the
installed package, is the reference)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from nuvla.job_engine.job.actions.utils.bulk_action import BulkActionResult

from nuvla_job.bulk import JOB_CANCELED_REASON, JOB_FAILED_REASON, BulkResult

resources = st.sampled_from([f"deployment/{i}" for i in range(6)])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("success"), resources),
        st.tuples(st.sampled_from([JOB_FAILED_REASON, JOB_CANCELED_REASON, "other"]), resources),
        st.tuples(st.just("queued"), st.lists(resources, max_size=3)),
        st.tuples(st.just("running"), st.lists(resources, max_size=3)),
    ),
    max_size=25,
)


def apply(upstream: BulkActionResult, ours: BulkResult, step: tuple) -> None:
    what, value = step
    if what == "success":
        if not upstream.exist_in_success(value):
            upstream.add_success_action(value)
        ours.add_success(value)
    elif what == "queued":
        upstream.set_queued_actions(list(value))
        ours.queued = list(value)
    elif what == "running":
        upstream.set_running_actions(list(value))
        ours.running = list(value)
    else:
        assert upstream.exist_in_fail_reason_ids(what, value) == ours.has_failed(what, value)
        upstream.fail_action(what, value)
        ours.fail(what, value)


@given(total=st.integers(0, 50), first=steps, second=steps)
def test_same_text_as_upstream_through_a_round_trip(total: int, first: list, second: list) -> None:
    upstream = BulkActionResult(total)
    ours = BulkResult(total_actions=total)
    for step in first:
        apply(upstream, ours, step)
    assert ours.to_json() == upstream.to_json()
    # Read back from the text, as the monitor does on each run, and go on.
    upstream = BulkActionResult.from_json(upstream.to_json())
    ours = BulkResult.parse(ours.to_json())  # type: ignore[assignment]
    assert ours is not None
    for step in second:
        apply(upstream, ours, step)
    assert ours.to_json() == upstream.to_json()


def test_a_message_that_is_no_result_is_told_apart() -> None:
    for text in (None, "", "3 of 4 child job(s) final", "[1, 2]", "12"):
        assert BulkResult.parse(text) is None
    written = BulkActionResult(2)
    written.skip_action("not allowed", "deployment/1", "my app", "no right")
    parsed = BulkResult.parse(written.to_json())
    assert parsed is not None and parsed.to_json() == written.to_json()
    assert json.loads(parsed.to_json())["error_reasons"][0]["category"] == "skipped"
