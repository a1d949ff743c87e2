# One image for every command: job-executor (default), job-distributor, job-api.
# Configured entirely by environment variables (see the README's option tables).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY nuvla_job ./nuvla_job
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
# tini is PID 1: it forwards SIGTERM to the engine (graceful drain) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/nuvla-job --create-home nuvla
COPY --from=build /opt/venv /opt/venv
COPY actions /opt/nuvla-job/actions
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    JOB_ACTIONS_PATH=/opt/nuvla-job/actions \
    JOB_API_HOST=0.0.0.0 \
    JOB_API_DB=/var/lib/nuvla-job/jobs.sqlite
USER nuvla
WORKDIR /var/lib/nuvla-job
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["job-executor"]
