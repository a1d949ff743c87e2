"""Tests use the package's engine-process launcher (see nuvla_job/localstack/processes.py)."""

from nuvla_job.localstack.processes import EngineProcess, executor_process  # noqa: F401
