"""Logging set-up shared by every command (Sentry and metrics join it later)."""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Human-readable logs on stderr at ``level`` (a name such as INFO or DEBUG)."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    # kazoo logs every connection attempt at INFO; keep it to warnings unless debugging.
    if level.upper() != "DEBUG":
        logging.getLogger("kazoo").setLevel(logging.WARNING)
