"""The job states (job-resource.md): the one definition every module uses.

``nuvla_job.job`` re-exports them under upstream's names (``JOB_SUCCESS``, ...), so that an
upstream action's ``from ..job import JOB_SUCCESS`` has an equivalent here.
"""

from __future__ import annotations

JOB_QUEUED = "QUEUED"
JOB_RUNNING = "RUNNING"
JOB_SUCCESS = "SUCCESS"
JOB_FAILED = "FAILED"
JOB_CANCELED = "CANCELED"

# Tuples, not sets: filters and option lists spell them in this order.
STATES = (JOB_QUEUED, JOB_RUNNING, JOB_SUCCESS, JOB_FAILED, JOB_CANCELED)
FINAL_STATES = (JOB_SUCCESS, JOB_FAILED, JOB_CANCELED)
UNFINISHED_STATES = (JOB_QUEUED, JOB_RUNNING)
