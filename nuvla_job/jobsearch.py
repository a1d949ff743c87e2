"""Searching the job collection in ways the built-in actions and the operator CLI share.

`iter_jobs` pages with a cursor on (created, id) rather than with `first`/`last` offsets: an
offset page costs more the deeper it is, and skips or repeats jobs when the matching set
changes while we page (e.g. while cancelling the jobs being paged through). The cursor
condition is written as a range on `created`, so the store seeks its index to each page,
and every search is confined to a window of `created` (see `iter_jobs`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from nuvla.api import Api

from .states import UNFINISHED_STATES
from .timeutil import format_time, parse_time

DEFAULT_PAGE_SIZE = 1000
MIN_WINDOW = timedelta(milliseconds=1)


def quote(value: str) -> str:
    """A CIMI filter string literal for `value`."""
    for mark in ("'", '"'):
        if mark not in value:
            return f"{mark}{value}{mark}"
    raise ValueError(f"cannot quote {value!r} in a filter: it holds both kinds of quotes")


def any_of(values: list[str] | tuple[str, ...]) -> str:
    """A CIMI list literal, e.g. for ``state=['QUEUED','RUNNING']``."""
    return "[" + ",".join(quote(v) for v in values) + "]"


def _pages(
    api: Api, filter: str, select: str | None, page_size: int
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(count of the matches, page of documents) for every page, with a cursor on
    (created, id)."""
    cursor: tuple[str, str] | None = None
    while True:
        page_filter = f"({filter})"
        if cursor is not None:
            created, job_id = quote(cursor[0]), quote(cursor[1])
            page_filter += f" and created>={created} and (created!={created} or id>{job_id})"
        params: dict[str, Any] = {
            "filter": page_filter,
            "orderby": "created:asc,id:asc",
            "last": page_size,
        }
        if select:
            params["select"] = select
        answer = api.search("job", **params).data
        docs = answer.get("resources", [])
        yield int(answer.get("count", len(docs))), docs
        if len(docs) < page_size:
            return
        cursor = (docs[-1]["created"], docs[-1]["id"])


def _created_bound(api: Api, filter: str, order: str) -> tuple[int, datetime | None]:
    answer = api.search("job", filter=filter, orderby=order, last=1, select="created").data
    docs = answer.get("resources", [])
    return int(answer.get("count", 0)), parse_time(docs[0]["created"]) if docs else None


def iter_jobs(
    api: Api, filter: str, select: str | None = None, page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[dict[str, Any]]:
    """Every job matching `filter`, oldest first, fetched `page_size` at a time.

    `select` (a comma list) is extended with `id` and `created`, which the cursor needs.
    The job API counts the matches of every search, so each search is confined to a window
    of `created` sized to hold about one page: the work stays linear in the number of jobs.
    Jobs created after the first search come last, in a final open-ended window.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if select is not None:
        wanted = [name.strip() for name in select.split(",") if name.strip()]
        select = ",".join(dict.fromkeys([*wanted, "id", "created"]))
    total, oldest = _created_bound(api, filter, "created:asc")
    if oldest is None:
        return
    start = oldest
    if total > page_size:
        newest = _created_bound(api, filter, "created:desc")[1] or oldest
        width = max((newest - oldest) * page_size / total, MIN_WINDOW)
        while start <= newest:
            end = start + width
            window = (
                f"({filter}) and created>={quote(format_time(start))} and "
                f"created<{quote(format_time(end))}"
            )
            population = None
            for count, docs in _pages(api, window, select, page_size):
                population = count if population is None else population
                yield from docs
            # Aim the next window at one page's worth of jobs (within a factor of 4 a step).
            ratio = page_size / max(population or 0, 1)
            width = max(width * min(max(ratio, 0.25), 4.0), MIN_WINDOW)
            start = end
    tail = f"({filter}) and created>={quote(format_time(start))}"
    for _, docs in _pages(api, tail, select, page_size):
        yield from docs


def count_by_state(api: Api, filter: str) -> Counter[str]:
    """How many jobs matching `filter` are in each state (one aggregation, no documents)."""
    answer = api.search("job", filter=filter, last=0, aggregation="terms:state").data
    buckets = answer.get("aggregations", {}).get("terms:state", {}).get("buckets", [])
    return Counter({bucket["key"]: int(bucket["doc_count"]) for bucket in buckets})


def has_unfinished(api: Api, action: str, newer_than: float | None = None) -> bool:
    """Whether a job of `action` (created less than `newer_than` seconds ago, if given) is
    still QUEUED or RUNNING.

    Distributions use it to add no new job while the previous one has not run yet.
    """
    filter = f"action={quote(action)} and state={any_of(UNFINISHED_STATES)}"
    if newer_than is not None:
        filter += f" and created>'now-{max(1, int(newer_than))}s'"
    return api.search("job", filter=filter, last=0).data.get("count", 0) > 0
