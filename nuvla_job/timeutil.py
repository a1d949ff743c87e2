"""Timestamps as CIMI writes them: ISO-8601, UTC, milliseconds, a trailing Z."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """The stored form of an instant: UTC, millisecond precision, ``Z`` suffix (a naive
    `moment` is taken as UTC; years below 1000 keep four digits)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )


def now_iso() -> str:
    return format_time(datetime.now(UTC))


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` or an offset); ValueError when it is not one."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
