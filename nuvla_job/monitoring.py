"""Logging and Sentry set-up shared by every command.

Secrets the process knows (API secrets, passwords, the Sentry DSN) are registered with
:func:`register_secret`; they are masked in every log line and every Sentry event.

Logs are text for humans by default, or one JSON object per line (``--log-format json``).
A line logged while a job is being processed carries its ``job_id`` and ``action``: the
executor's log-context middleware calls :func:`bind_job_context` in the job's greenlet.
Each gevent greenlet has its own contextvars context, so concurrent jobs never mix.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(job_tag)s: %(message)s"
LOG_FORMATS = ("text", "json")
MASK = "********"

# (job id, action) of the job the current greenlet is processing, if any.
_job: contextvars.ContextVar[tuple[str | None, str | None] | None] = contextvars.ContextVar(
    "nuvla_job_context", default=None
)

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never show ``value`` in logs or Sentry events from now on."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks registered secrets in the final text of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def bind_job_context(job_id: str | None, action: str | None = None) -> None:
    """Tag every later line of the current greenlet (one greenlet runs one job)."""
    _job.set((job_id, action))


def current_job_context() -> tuple[str | None, str | None]:
    """The (job id, action) of the current greenlet, (None, None) outside a job."""
    return _job.get() or (None, None)


class JobContextFilter(logging.Filter):
    """Adds ``job_id`` and ``action`` (None outside a job) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id, action = current_job_context()
        # Fields given explicitly with ``extra=`` win over the greenlet's context.
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id
        if getattr(record, "action", None) is None:
            record.action = action
        return True


def _job_fields(record: logging.LogRecord) -> dict[str, str]:
    fields = {"job_id": getattr(record, "job_id", None), "action": getattr(record, "action", None)}
    return {key: str(value) for key, value in fields.items() if value is not None}


class TextFormatter(logging.Formatter):
    """The human format, with ``[job/... action]`` after the logger inside a job; the whole
    text, traceback included, is redacted."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        fields = _job_fields(record)
        record.job_tag = f" [{' '.join(fields.values())}]" if fields else ""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and job_id,
    action and exception when present. Every text field is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **_job_fields(record),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(log_format: str = "text") -> logging.Formatter:
    """The formatter for ``log_format``, one of LOG_FORMATS (any case)."""
    if log_format.lower() == "json":
        return JsonFormatter()
    if log_format.lower() == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Logs on stderr at ``level`` (a name such as INFO or DEBUG), as human-readable text or
    one JSON object per line (``log_format`` "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(RedactingFilter())
    handler.addFilter(JobContextFilter())
    # Python warnings (e.g. urllib3's InsecureRequestWarning) become log lines in the same
    # format, instead of bare text on stderr between JSON lines.
    logging.captureWarnings(True)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # kazoo logs every connection attempt at INFO; keep it to warnings unless debugging.
    if level.upper() != "DEBUG":
        logging.getLogger("kazoo").setLevel(logging.WARNING)
        logging.getLogger("urllib3").setLevel(logging.WARNING)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _before_send(event: Event, hint: Hint) -> Event | None:
    return _scrub(event)


def setup_sentry(dsn: str | None, server_name: str, environment: str | None = None) -> bool:
    """Send exceptions to Sentry when a DSN is given; True when enabled."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    register_secret(dsn)
    sentry_sdk.init(
        dsn=dsn,
        server_name=server_name,
        environment=environment,
        send_default_pii=False,
        before_send=_before_send,
        # Exceptions are reported explicitly, tagged with their job; error log lines would
        # report them a second time.
        integrations=[LoggingIntegration(event_level=None)],
        default_integrations=True,
    )
    sentry_sdk.set_tag("executor", server_name)
    return True


def capture_exception(exc: BaseException, **tags: str | None) -> None:
    """Report ``exc`` to Sentry (a no-op without a DSN), tagged e.g. with job_id and action."""
    import sentry_sdk

    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            if value is not None:
                scope.set_tag(key, value)
        sentry_sdk.capture_exception(exc)
