"""The queue layout (nuvla_job/queue/layout.py): the entry grammar, job ids, priorities."""

from __future__ import annotations

import pytest

from nuvla_job.queue import (
    Entry,
    EntryName,
    check_priority,
    encode_job_id,
    entry_path,
    entry_prefix,
    is_job_id,
    parse_entry_name,
    taken_path,
)


@pytest.mark.parametrize(
    ("name", "priority", "sequence"),
    [
        ("entry-000-0000000000", 0, 0),
        ("entry-042-0000000017", 42, 17),
        ("entry-999-2147483647", 999, 2**31 - 1),
        # ZooKeeper's %010d once the counter passed 2**31: a sign and 9 or 10 digits.
        ("entry-999--000000005", 999, -5),
        ("entry-001--2147483648", 1, -(2**31)),
        ("entry-500--0000000001", 500, -1),
    ],
)
def test_the_grammar_accepts_what_zookeeper_makes(name: str, priority: int, sequence: int) -> None:
    assert parse_entry_name(name) == EntryName(priority, sequence)
    assert Entry(name, b"").priority == priority


@pytest.mark.parametrize(
    "name",
    [
        "",
        "garbage",
        "entry-1-0000000001",  # priority not 3 digits
        "entry-0001-0000000001",
        "entry-001-12",  # sequence not 10 digits
        "entry-001-00000000001",
        "entry-001-0000000001x",
        " entry-001-0000000001",
        "entry-001-0000000001\n",
        "entry-abc-0000000001",
        "entry--01-0000000001",  # a negative priority
        "entry-001--00000001",  # negative with 8 digits
        "entry-001--000000000001",  # negative with 12 digits
        "entry-001-+000000001",
        "Entry-001-0000000001",
        "lock-001-0000000001",
        "entry-001-",
    ],
)
def test_the_grammar_rejects_anything_else(name: str) -> None:
    assert parse_entry_name(name) is None
    assert Entry(name, b"job/x").priority is None


def test_arrival_order_follows_the_counter_past_its_wrap() -> None:
    names = ["entry-000--2147483648", "entry-999-2147483647", "entry-500-0000000003"]
    parsed = [parse_entry_name(name) for name in names]
    arrivals = [entry.arrival for entry in parsed if entry is not None]
    # The wrapped (negative) sequence came after every positive one.
    assert arrivals == [2**31, 2**31 - 1, 3]


@pytest.mark.parametrize(
    "job_id",
    ["job/0b5c1e6a-5f3f-4e86-9a3f-1d2f7ad2d2c4", "job/a", "job/A.b_c~d:e-f", "job/00001"],
)
def test_job_ids_as_the_job_api_makes_them(job_id: str) -> None:
    assert is_job_id(job_id)
    assert encode_job_id(job_id) == job_id.encode("utf-8")
    assert Entry("entry-001-0000000001", job_id.encode()).job_id == job_id


@pytest.mark.parametrize(
    "text",
    ["", "job/", "nuvlabox/1", "job/a b", "job/a\n", "job/a/b", "job/a?x", "job/a%2fb", "job/é"],
)
def test_anything_else_is_not_a_job_id_and_is_never_queued(text: str) -> None:
    assert not is_job_id(text)
    with pytest.raises(ValueError, match="not a job id"):
        encode_job_id(text)


def test_a_job_id_must_be_text() -> None:
    with pytest.raises(TypeError):
        encode_job_id(b"job/a")  # type: ignore[arg-type]


def test_paths_and_priorities() -> None:
    assert entry_path("entry-001-0000000001") == "/job/entries/entry-001-0000000001"
    assert taken_path("entry-001-0000000001") == "/job/taken/entry-001-0000000001"
    assert entry_prefix(5) == "/job/entries/entry-005-"
    assert check_priority(0) == 0 and check_priority(999) == 999
    for bad in (-1, 1000):
        with pytest.raises(ValueError):
            check_priority(bad)
    for wrong in (True, 1.0, "1", None):
        with pytest.raises(TypeError):
            check_priority(wrong)  # type: ignore[arg-type]
