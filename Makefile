# Developer entry points. `make test` is the command the README and CI use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
# Touched after a successful install: reinstall only when pyproject.toml changes.
VENV_MARKER := $(VENV)/.installed
ZOOKEEPER_JAR := /usr/share/java/zookeeper.jar
APT_PACKAGES := zookeeper default-jre-headless
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv deps test faults lint run bench clean distclean

venv: $(VENV_MARKER)

$(VENV_MARKER): pyproject.toml
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Debian's zookeeper package provides the jars the test fixture runs; it needs a JRE.
deps:
	@if [ -f $(ZOOKEEPER_JAR) ] && command -v java >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			$(APT_PACKAGES); \
	else \
		echo "ZooKeeper or Java is missing; install them with:" >&2; \
		echo "  sudo apt-get update && sudo apt-get install -y $(APT_PACKAGES)" >&2; \
		exit 1; \
	fi

test: deps venv
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The fault-injection suite: seven scenarios of 1,000 jobs each (docs/reliability.md, which
# it rewrites with the table of the run). `make test` runs only its quick subset.
faults: deps venv
	$(VENV)/bin/python -m pytest tests/faults -m faults $(PYTEST_ARGS)

# ruff; hadolint for the Dockerfile; the compose file against the compose-spec JSON schema
# (vendored in check-jsonschema, so no network is needed).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

run: deps venv
	$(VENV)/bin/python -m nuvla_job.cli.demo

# Every benchmark at full size (about 15 minutes). BENCH_ARGS=--publish also rewrites the
# generated sections of docs/benchmarks.md and the plots in docs/img/; --quick for small sizes.
bench: deps venv $(VENV)/.bench-installed
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# The `bench` extra (matplotlib, for the plots), reinstalled when pyproject.toml changes.
$(VENV)/.bench-installed: pyproject.toml $(VENV_MARKER)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also drops the virtualenv.
distclean: clean
	rm -rf $(VENV)
