"""The executor's middleware: one concern per module, hooked around each job.

The hook protocol is in :mod:`.hooks`; the executor receives its list at construction
(``job-executor`` builds it in nuvla_job/cli/executor.py):

- :mod:`.metrics`: takes and processed entries in the Prometheus metrics
- :mod:`.log_context`: every log line names the job and action it is about
- :mod:`.blocking`: a warning naming the job that blocks the event loop
- :mod:`.sentry`: exceptions of actions, and unexpected errors, to Sentry
- :mod:`.time_limit`: the longest an action may run
- :mod:`.retries`: whether a failed attempt gets another one, and when
"""

from .hooks import Chain, JobRun, Middleware

__all__ = ["Chain", "JobRun", "Middleware"]
