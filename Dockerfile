# syntax=docker/dockerfile:1
# One image for every command: job-executor (the default), job-distributor, `job-api serve`
# and the `job` operator CLI, chosen by the container's command. Configured entirely by
# environment variables (the README's option tables); secrets come from the environment or
# from files (JOB_API_CREDENTIALS), never from the command line.
#
# `docker build .` builds that image (the last stage). `docker build --target nuvla .` builds
# the drop-in for Nuvla's job image: Nuvla's own actions and distributions (the `nuvla`
# extra, on), `my_init` as entrypoint and Nuvla's /app/job_executor.py and
# /app/job_distributor.py; `--build-arg IMAGE_NAME=job-lite` makes it the lite one.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: a virtualenv with the package and its dependencies (all ship wheels: no compiler) -
# pip and setuptools are not needed at run time (about 25 MB); byte-compiled once here since
# the running user cannot write beside the modules.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nuvla_job ./nuvla_job
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[postgresql]" \
 && /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv

# The same with the `nuvla` extra (nuvla-job-engine, pinned in pyproject.toml). Both have the
# `postgresql` extra (psycopg with its own libpq): `JOB_API_DB=postgresql://...` works as is.
FROM ${PYTHON_IMAGE} AS build-nuvla
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nuvla_job ./nuvla_job
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[nuvla,postgresql]" \
 && /opt/venv/bin/pip uninstall -q -y pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv

# -- runtime: tini, an unprivileged user and the environment; the virtualenv comes next --------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="nuvla-job" \
      org.opencontainers.image.description="Distributed job engine: job-executor, job-distributor, job-api" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini is PID 1: it forwards SIGTERM to the engine (graceful drain) and reaps zombies.
# The data and credentials folders exist in the image so that fresh named volumes mounted
# there are owned by the unprivileged user; /opt/nuvla-job/actions is the empty folder where
# users mount their own action modules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini=0.19.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/nuvla-job \
        --shell /usr/sbin/nologin nuvla \
 && install -d -o nuvla -g nuvla -m 0750 /var/lib/nuvla-job \
        /var/lib/nuvla-job/data /var/lib/nuvla-job/credentials \
 && install -d -m 0755 /opt/nuvla-job/actions
# The built-in actions ship in the package; JOB_ACTIONS_PATH names only users' own folders.
# JOB_API_HOST=0.0.0.0: inside a container the API must be reachable from other containers.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOB_ACTIONS_PATH=/opt/nuvla-job/actions \
    JOB_API_HOST=0.0.0.0 \
    JOB_API_PORT=8200 \
    JOB_API_DB=/var/lib/nuvla-job/data/jobs.sqlite \
    JOB_API_ADMIN_CREDENTIALS=/var/lib/nuvla-job/credentials/admin-credentials.json
# Numeric, so that runtimes can check "runs as non-root" without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/nuvla-job
EXPOSE 8200
ENTRYPOINT ["/usr/bin/tini", "--"]

# -- nuvla: started as Nuvla starts its job image, `-- /app/job_executor.py --api-url ...` -----
FROM runtime AS nuvla
ARG IMAGE_NAME=job
COPY --from=build-nuvla /opt/venv /opt/venv
COPY image/app/ /app/
COPY image/app/my_init /usr/local/bin/my_init
# IMAGE_NAME=job-lite registers only the actions that support pull mode, as upstream's.
ENV JOB_NUVLA_PACKAGE=true \
    IMAGE_NAME=${IMAGE_NAME}
ENTRYPOINT ["/usr/bin/tini", "--", "/app/my_init"]
CMD ["--", "/app/job_executor.py"]

# -- the default image: this project's commands, the executor unless told otherwise ----------
FROM runtime AS default
COPY --from=build /opt/venv /opt/venv
CMD ["job-executor"]
