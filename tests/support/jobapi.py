"""Tests use the package's job API launcher (see nuvla_job/localstack/jobapi.py)."""

from nuvla_job.localstack.jobapi import JobApiClients, JobApiProcess  # noqa: F401
