"""Logging and Sentry set-up shared by every command.

Secrets the process knows (API secrets, passwords, the Sentry DSN) are registered with
:func:`register_secret`; they are masked in every log line and every Sentry event.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
MASK = "********"

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


def setup_logging(level: str = "INFO") -> None:
    """Human-readable logs on stderr at ``level`` (a name such as INFO or DEBUG)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
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


def _before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
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
