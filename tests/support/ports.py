"""Tests use the package's free-port helper (see nuvla_job/localstack/ports.py)."""

from nuvla_job.localstack.ports import free_port  # noqa: F401
