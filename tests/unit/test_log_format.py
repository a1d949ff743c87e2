"""Log formats in-process: text (default) and JSON, the job context carried by greenlets, and
secrets masked in both. The end-to-end checks with real processes are in
tests/integration/test_container_config.py and tests/integration/test_json_logs.py."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import gevent
import pytest

from nuvla_job import monitoring
from nuvla_job.monitoring import bind_job_context

SECRET = "s3cr3t-Api-Value"


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go, through the handler setup_logging builds, to a buffer."""
    log_format = getattr(request, "param", "text")
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    monitoring.setup_logging("DEBUG", log_format)
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    monitoring.register_secret(SECRET)
    try:
        yield logging.getLogger("nuvla_job.test"), stream
    finally:
        monitoring._secrets.discard(SECRET)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.captureWarnings(False)


def _records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("capture", ["json"], indirect=True)
def test_json_one_object_per_line_with_the_fields(capture) -> None:
    log, stream = capture
    log.info("hello %s", "world")
    log.warning("multi\nline")
    first, second = _records(stream)
    assert first["message"] == "hello world"
    assert first["level"] == "INFO" and first["logger"] == "nuvla_job.test"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "job_id" not in first and "action" not in first and "exception" not in first
    assert second["message"] == "multi\nline"


@pytest.mark.parametrize("capture", ["json"], indirect=True)
def test_json_exception_text_and_secrets_are_redacted(capture) -> None:
    log, stream = capture
    try:
        raise RuntimeError(f"login with {SECRET} failed")
    except RuntimeError:
        log.exception("call failed with %s", SECRET)
    (record,) = _records(stream)
    assert SECRET not in stream.getvalue()
    assert record["message"] == f"call failed with {monitoring.MASK}"
    assert "Traceback" in record["exception"] and "RuntimeError" in record["exception"]
    assert monitoring.MASK in record["exception"]


def test_text_masks_secrets_in_tracebacks_too(capture) -> None:
    log, stream = capture
    try:
        raise ValueError(SECRET)
    except ValueError:
        log.exception("boom")
    assert SECRET not in stream.getvalue()
    assert "ValueError: ********" in stream.getvalue()


@pytest.mark.parametrize("capture", ["json"], indirect=True)
def test_each_greenlet_logs_its_own_job(capture) -> None:
    log, stream = capture

    def run(job_id: str, action: str) -> None:
        bind_job_context(job_id, action)  # for the rest of this greenlet, as the executor does
        log.info("start")
        gevent.sleep(0.001)  # let the other jobs log in between
        log.info("end")

    def after() -> None:  # a greenlet of no job, once the jobs' greenlets bound theirs
        log.info("after")

    jobs = [(f"job/{n}", f"action-{n}") for n in range(5)]
    gevent.joinall([gevent.spawn(run, *job) for job in jobs], raise_error=True)
    gevent.joinall([gevent.spawn(after) for _ in jobs], raise_error=True)
    log.info("outside")
    records = _records(stream)
    for job_id, action in jobs:
        mine = [r for r in records if r.get("job_id") == job_id]
        assert [r["message"] for r in mine] == ["start", "end"]
        assert {r["action"] for r in mine} == {action}
    untagged = [r for r in records if "job_id" not in r]
    assert [r["message"] for r in untagged] == ["after"] * 5 + ["outside"]


def test_text_tags_lines_inside_a_job(capture) -> None:
    log, stream = capture

    def run() -> None:
        bind_job_context("job/abc", "sleep")  # for the rest of this greenlet
        log.info("running")

    gevent.spawn(run).get()
    log.info("idle")
    inside, outside = stream.getvalue().splitlines()
    assert "nuvla_job.test [job/abc sleep]: running" in inside
    assert "nuvla_job.test: idle" in outside and "[" not in outside


@pytest.mark.parametrize("capture", ["json"], indirect=True)
def test_explicit_extra_fields_win(capture) -> None:
    log, stream = capture

    def run() -> None:
        bind_job_context("job/ctx", "ctx-action")
        log.info("explicit", extra={"job_id": "job/explicit"})

    gevent.spawn(run).get()
    (record,) = _records(stream)
    assert record["job_id"] == "job/explicit" and record["action"] == "ctx-action"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        monitoring.make_formatter("xml")
