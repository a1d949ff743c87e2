"""Tests use the package's local PostgreSQL launcher (see nuvla_job/localstack/postgres.py)."""

from nuvla_job.localstack.postgres import (  # noqa: F401
    PostgresNotAvailable,
    PostgresServer,
    PostgresStartError,
    find_binaries,
)
