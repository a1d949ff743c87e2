# Developer entry points. `make test` is the command the README and CI use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
# Touched after a successful install: reinstall only when pyproject.toml changes.
VENV_MARKER := $(VENV)/.installed
# What runs need from Debian, as CHECK:PACKAGE (CHECK: a file, which may be a glob, or a
# command on PATH).
# ZooKeeper's jars (the server of `make run` and of the tests) need a JRE; the dashboard's
# browser test drives Chromium through its driver; the TLS tests make certificates with openssl;
# the PostgreSQL store's tests start a server of their own (any version Debian ships); the
# compose stack's test runs its HAProxy configuration in front of two job API replicas.
RUN_NEEDS := /usr/share/java/zookeeper.jar:zookeeper java:default-jre-headless
TEST_NEEDS := $(RUN_NEEDS) chromium:chromium chromedriver:chromium-driver openssl:openssl \
	/usr/lib/postgresql/*/bin/initdb:postgresql /usr/sbin/haproxy:haproxy
# bench/peers.py runs Celery on a Redis it starts itself.
BENCH_NEEDS := $(RUN_NEEDS) redis-server:redis-server
PYTEST_ARGS ?=
BENCH_ARGS ?=
UP_ARGS ?=

.PHONY: venv deps test-deps bench-deps test faults lint run up bench clean distclean

venv: $(VENV_MARKER)

$(VENV_MARKER): pyproject.toml
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Installs the missing packages of a *_NEEDS list as root; otherwise prints the command.
define apt_needs
	@missing=""; \
	for need in $(1); do \
		check=$${need%%:*}; package=$${need#*:}; \
		case $$check in \
			/*) compgen -G "$$check" >/dev/null && continue ;; \
			*) command -v "$$check" >/dev/null 2>&1 && continue ;; \
		esac; \
		missing="$$missing $$package"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "missing Debian packages:$$missing; install them with:" >&2; \
		echo "  sudo apt-get update && sudo apt-get install -y$$missing" >&2; \
		exit 1; \
	fi
endef

deps:
	$(call apt_needs,$(RUN_NEEDS))

# Every test runs: none is skipped for want of a system package.
test-deps:
	$(call apt_needs,$(TEST_NEEDS))

bench-deps:
	$(call apt_needs,$(BENCH_NEEDS))

test: test-deps venv
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The fault-injection suite: seven scenarios of 1,000 jobs each (docs/reliability.md). The
# table goes to build/faults/table.md; FAULTS_PUBLISH=1 also rewrites the one in
# docs/reliability.md. `make test` runs only its quick subset.
faults: deps venv
	$(VENV)/bin/python -m pytest tests/faults -m faults $(PYTEST_ARGS)

# ruff (lint and format), mypy (config in pyproject.toml); hadolint for the Dockerfile; the
# compose file against the compose-spec JSON schema (vendored in check-jsonschema: no network).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

run: deps venv
	$(VENV)/bin/python -m nuvla_job.cli.demo

# A local stack to play with (ZooKeeper, job API on port 8200, an executor, a distributor),
# until Ctrl-C; UP_ARGS=--port 0 picks a free port (`python -m nuvla_job.cli.up --help`).
up: deps venv
	$(VENV)/bin/python -m nuvla_job.cli.up $(UP_ARGS)

# Every benchmark at full size (about 20 minutes), the peer table (bench/peers.py) first.
# BENCH_ARGS=--publish also rewrites the generated sections of docs/benchmarks.md and the plots
# in docs/img/; --quick for small sizes.
bench: bench-deps venv $(VENV)/.bench-installed
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# The `bench` extra (matplotlib for the plots, Celery for the peers), reinstalled when
# pyproject.toml changes.
$(VENV)/.bench-installed: pyproject.toml $(VENV_MARKER)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also drops the virtualenv.
distclean: clean
	rm -rf $(VENV)
