"""Tests use the package's engine-process launcher (see nuvla_job/localstack/processes.py)."""

from nuvla_job.localstack.processes import (  # noqa: F401
    EngineProcess,
    executor_process,
    serving_on_free_port,
)
