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

.PHONY: venv deps test lint run bench clean distclean

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

# ruff; hadolint for the Dockerfile; the compose file against the compose-spec JSON schema
# (vendored in check-jsonschema, so no network is needed).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint --config .hadolint.yaml Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

run: deps venv
	$(VENV)/bin/python -m nuvla_job.cli.demo

bench: deps venv
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build dist .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also drops the virtualenv.
distclean: clean
	rm -rf $(VENV)
