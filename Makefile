# Developer entry points. CI runs `make test` through .ci/run.
#
#   make serve   install into .venv and run the gateway on the embedded default (no Redis)
#   make test    install test dependencies, start a Redis if none is running, run the tests
#
# Each recipe runs as one bash script (.ONESHELL), so a trap set early in a recipe
# still fires when a later line fails. A recipe whose first line starts with @ is not
# echoed as a whole.

SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
# The tests' own Redis, on a port of its own so that they never write to a development Redis.
REDIS_PORT ?= 6399
# Extra arguments for pytest, for example `make test PYTEST_ARGS='-k cache -x'`.
PYTEST_ARGS ?=

.PHONY: help serve test

help:
	@echo "make serve   install into $(VENV) and run the gateway on the embedded default (no Redis)"
	@echo "make test    install test dependencies, start a Redis if none is running, run the tests"

$(VENV)/bin/python:
	@echo "== creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Each install writes a stamp file into the venv, so pip runs again only when pyproject.toml
# or setup.py is newer than the stamp, or the venv is new. The install is editable, so changed
# source files need no reinstall. Delete the stamp files to force one.
#
# The edge extra compiles llama-cpp-python from source on first install (8.7 CPU-minutes for
# 0.3.36, about 5 minutes on 2 idle cores); pip's wheel cache makes later installs take seconds.
#
# LLAMA_CMAKE_ARGS is passed to that build as CMAKE_ARGS, unless CMAKE_ARGS is set. The
# default builds for any x86-64 CPU with AVX2 instead of the build machine's own features
# (GGML_NATIVE). On an Intel Xeon virtual machine that reports AMX, a native build of
# llama.cpp 0.3.36 crashed with a segmentation fault in ggml_backend_amx_mul_mat on its first
# chat request. A wheel already in pip's cache is reused as it was built:
# `pip cache remove llama_cpp_python` makes the next install compile again.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

$(VENV)/.installed-edge: pyproject.toml setup.py | $(VENV)/bin/python
	@echo "== pip install -e '.[edge]' into $(VENV)"
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(PIP) install -e '.[edge]'
	touch $@

$(VENV)/.installed-test-edge: pyproject.toml setup.py | $(VENV)/bin/python
	@echo "== pip install -e '.[test,edge,otel]' into $(VENV)"
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(PIP) install -e '.[test,edge,otel]'
	touch $@

serve: $(VENV)/.installed-edge
	exec $(VENV)/bin/tierwise serve

# Redis is started only when nothing answers on REDIS_PORT, and is shut down again when
# the tests end. A Redis that was already running is left alone.
test: $(VENV)/.installed-test-edge

	redis_ping() { redis-cli -h 127.0.0.1 -p $(REDIS_PORT) ping >/dev/null 2>&1; }
	redis_dir=""
	stop_redis() {
		if [ -n "$$redis_dir" ]; then
			redis-cli -h 127.0.0.1 -p $(REDIS_PORT) shutdown nosave >/dev/null 2>&1 \
				|| kill "$$(cat "$$redis_dir/redis.pid")" 2>/dev/null || true
			rm -rf "$$redis_dir"
		fi
	}
	trap stop_redis EXIT

	if redis_ping; then
		echo "== using the Redis already running on 127.0.0.1:$(REDIS_PORT)"
	else
		if ! command -v redis-server >/dev/null; then
			if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
				echo "redis-server not found; installing the Debian package redis-server"
				apt-get update -qq
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
			else
				echo "redis-server not found. Install it (Debian/Ubuntu: sudo apt-get install redis-server," >&2
				echo "macOS: brew install redis) or start a Redis on 127.0.0.1:$(REDIS_PORT), then rerun make test." >&2
				exit 1
			fi
		fi
	fi
	# Installing the Debian package may itself start a Redis service, so ping again.
	if ! redis_ping; then
		redis_dir="$$(mktemp -d -t tierwise-redis.XXXXXX)"
		# No persistence: the test database is scratch data.
		redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --daemonize yes \
			--pidfile "$$redis_dir/redis.pid" --dir "$$redis_dir" \
			--logfile "$$redis_dir/redis.log" --save '' --appendonly no
		for _ in $$(seq 50); do redis_ping && break; sleep 0.1; done
		if ! redis_ping; then
			echo "Redis did not respond on 127.0.0.1:$(REDIS_PORT) within 5 s; its log:" >&2
			cat "$$redis_dir/redis.log" >&2
			exit 1
		fi
		echo "Started redis-server on 127.0.0.1:$(REDIS_PORT) (pidfile $$redis_dir/redis.pid)"
	fi

	export TIERWISE_TEST_REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/15
	echo "== pytest with TIERWISE_TEST_REDIS_URL=$$TIERWISE_TEST_REDIS_URL"
	status=0
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=$$?
	# pytest exits 5 when it collected no tests, as after a mistyped -k or path in
	# PYTEST_ARGS; that fails too, so a typo cannot pass for a green run.
	if [ "$$status" = 5 ]; then
		echo "pytest collected no tests; check PYTEST_ARGS" >&2
	fi
	exit "$$status"
