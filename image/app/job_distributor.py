#!/opt/venv/bin/python
"""Nuvla's /app/job_distributor.py: this engine's `job-distributor`, same command line."""

from nuvla_job.cli.distributor import run

run()
