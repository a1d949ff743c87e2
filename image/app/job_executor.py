#!/opt/venv/bin/python
"""Nuvla's /app/job_executor.py: this engine's `job-executor`, with the same command line."""

from nuvla_job.cli.executor import run

run()
