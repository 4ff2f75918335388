# jobcast: one entry point for setting up, running and checking.
#   make run    the whole stack (Redis if none answers, worker, API on :8080, Flower on :5555)
#   make run-cluster   the same scaled out (Redis Cluster, 3 notifiers behind HAProxy)
#   make test   unit tests, then integration tests (real Redis, worker and uvicorn processes,
#               and a headless Chromium for the demo page), then the transport-sensitive
#               integration tests again on the stock transport (JOBCAST_FAST_TRANSPORT=false)
#   make lock   refresh requirements/*.txt from pyproject.toml (pip-compile, hashed)
#   make test-matrix   the transport-sensitive tests at the lowest and at the locked versions
# Each part alone: make worker | api | notifier | api-only | flower.
# Extra arguments for a part's command: make api ARGS="--port 8090"

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEB_STAMP := node_modules/.jobcast-installed
ARGS   ?=

# Hashed pins (pip-compile --generate-hashes): LOCK for .venv (the base dependencies and the
# server, flower, test and dev extras), RUNTIME_LOCK for the image (base, server and flower;
# the same versions). LOWEST pins every direct dependency to its lower bound in
# pyproject.toml (made from it: see $(LOWEST) below). The base install (`pip install
# jobcast`) is the producer side alone: what a Celery worker needs to report progress.
LOCK         := requirements/lock.txt
RUNTIME_LOCK := requirements/runtime.txt
LOWEST       := requirements/lowest.txt
PIP_COMPILE_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras \
                     --no-emit-index-url --no-emit-find-links

# The integration tests that depend on the transport path (uvicorn, websockets,
# python-engineio, python-socketio): run again with JOBCAST_FAST_TRANSPORT=false.
TRANSPORT_TESTS := tests/integration/delivery tests/integration/security \
                   tests/integration/transport tests/integration/browser
# The suites run again with jobcast's keys on a Redis Cluster of the tests' own (3 masters,
# 3 replicas; Celery's broker a standalone Redis), with the cluster's own tests.
CLUSTER_TESTS := tests/integration/delivery tests/integration/rest \
                 tests/integration/celery tests/integration/cluster

# make test-matrix: one venv per dependency set, outside .venv.
MATRIX := .matrix

.DEFAULT_GOAL := help
.PHONY: help venv lock web run run-cluster test test-unit test-integration test-matrix lint format \
        typecheck audit check worker notifier api api-only flower compose-config clean distclean bench bench-quick soak

help:
	@echo "make run             start Redis (if none answers), a worker, the API and Flower"
	@echo "make run-cluster     the same scaled out: Redis Cluster (3+3), broker Redis, 3 notifiers behind HAProxy"
	@echo "make test            unit tests, integration tests, transport tests on the stock path"
	@echo "make test-matrix     transport tests at the lowest and the locked dependency versions"
	@echo "make lock            refresh requirements/*.txt (ARGS=--upgrade for newer releases)"
	@echo "make lint|typecheck|audit|check   ruff, mypy, pip-audit, all three"
	@echo "make worker|api|notifier|api-only|flower   one part (ARGS=... for extra options)"
	@echo "make compose-config  validate docker-compose.yml"
	@echo "make bench|bench-quick   benchmark against two baselines (bench/README.md)"
	@echo "make soak            30-minute soak of one notifier (bench/README.md; not in CI)"
	@echo "make web             npm ci: socket.io-client (demo page), playwright-core (browser tests)"
	@echo "make venv|clean|distclean"

# --- set-up: .venv with exactly the versions of $(LOCK) (pip checks every file against its
# hash), then the package itself with the extras .venv runs (editable, built with the
# locked setuptools; --no-index: every dependency of the package and of those extras must
# already be there, from the lock, or the install fails). Reinstalls when pyproject.toml or
# the lock changes (the stamp is older than either). Either failure (the install, `pip
# check`) means the lock no longer satisfies pyproject.toml: run `make lock`.
VENV_EXTRAS := server,flower,postgres,test,dev

venv: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-index --no-build-isolation -e ".[$(VENV_EXTRAS)]" \
		|| { echo "error: $(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@$(BIN)/python -m pip check || { echo "error: $(LOCK) does not satisfy pyproject.toml" \
		"(or something else installed into $(VENV) conflicts): run make lock" >&2; exit 1; }
	@touch $(STAMP)

# --- the locks. pip-compile keeps every pin that still fits pyproject.toml and resolves the
# rest: `make lock` after a change of dependencies, `make lock ARGS=--upgrade` (or
# ARGS="--upgrade-package uvicorn") for newer releases within the caps. The runtime lock is
# compiled under the full one, so the image runs the versions the tests ran. Does not go
# through `make venv` (whose pip check fails while the lock is behind pyproject.toml).
lock:
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet "pip-tools>=7.6.1,<8"
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) --extra server --extra flower --extra postgres \
		--extra test --extra dev $(ARGS) --output-file $(LOCK) pyproject.toml
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) --extra server --extra flower --constraint $(LOCK) \
		--output-file $(RUNTIME_LOCK) pyproject.toml
	@$(MAKE) --no-print-directory $(LOWEST)

# Every direct dependency (base, and every extra: server, flower, test, dev) pinned to its
# lower bound (`>=`) in pyproject.toml; a dependency without one is an error. A pip
# constraints file: no extras.
define LOWEST_PY
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("# Generated from pyproject.toml by `make requirements/lowest.txt` (make lock does it too):")
print("# every direct dependency at its lower bound. Constraints for make test-matrix.")
for req in project["dependencies"] + [req for reqs in extras.values() for req in reqs]:
    name, spec = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*(.*)", req).groups()
    low = [s.strip()[2:] for s in spec.split(",") if s.strip().startswith(">=")]
    if not low:
        raise SystemExit(f"error: {req!r} has no lower bound (>=) in pyproject.toml")
    print(f"{name}=={low[0].strip()}")
endef
export LOWEST_PY

$(LOWEST): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	$(PYTHON) -c "$$LOWEST_PY" > $@.tmp && mv $@.tmp $@

# --- the browser side, exactly as package-lock.json pins it (npm ci): socket.io-client,
# which the API serves to the demo page from node_modules, and playwright-core, which drives
# Chromium in the browser tests. Reinstalls when package.json or the lockfile changes.
# Without npm this warns and goes on (the demo page then cannot load socket.io-client and
# the browser tests are skipped), except under CI, where it fails: CI runs those tests.
web: $(WEB_STAMP)

$(WEB_STAMP): package.json package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ -n "$$CI" ]; then \
			echo "error: npm not found; CI runs the browser tests (install nodejs and npm)" >&2; \
			exit 1; \
		fi; \
		echo "warning: npm not found: no socket.io-client for the demo page;" \
			"the browser tests will be skipped (install Node.js and npm, then: make web)" >&2; \
		exit 0; \
	fi; \
	npm ci --no-audit --no-fund && touch $@

# --- run

run: venv web
	$(BIN)/python -m api.launcher $(ARGS)

# The scaled topology: a 3-master + 3-replica Redis Cluster, a standalone broker Redis, three
# notifiers (restarted when they die) behind HAProxy on JOBCAST_HTTP_PORT (docs/scaling.md).
run-cluster: venv web
	$(BIN)/python -m api.launcher --cluster $(ARGS)

worker: venv
	$(BIN)/python -m celery -A workers.app worker -l INFO $(ARGS)

# The notifier and the REST API composed in one ASGI app (the default deployment, :8080).
api: venv web
	$(BIN)/python -m api $(ARGS)

# The notifier alone (Socket.IO, native WebSocket, /healthz, /readyz, /metrics).
notifier: venv
	$(BIN)/python -m notifier $(ARGS)

# The REST API alone (app api.rest:app). Served through `python -m api --app` rather than
# plain `uvicorn api.rest:app` so uvicorn's own logs are redacted too (tokens in ?token=).
api-only: venv
	$(BIN)/python -m api --app api.rest:app $(ARGS)

# Basic auth is passed through Flower's FLOWER_BASIC_AUTH, not on the command line.
flower: venv
	FLOWER_BASIC_AUTH="$${JOBCAST_FLOWER_BASIC_AUTH:?set JOBCAST_FLOWER_BASIC_AUTH=user:password}" \
	$(BIN)/python -m celery -A workers.app flower \
		--port=$${JOBCAST_FLOWER_PORT:-5555} --address=127.0.0.1 $(ARGS)

# --- benchmark (bench/README.md): jobcast against a naive python-socketio server and a
# Node socket.io server, same workloads, same run; writes bench/results/<timestamp>.md.
bench: venv
	bash bench/run.sh $(ARGS)

bench-quick: venv
	bash bench/run.sh --quick $(ARGS)

# The soak of issue 18 (not in CI, not in `make test`): 30 min, 5,000 connections, 1,000
# events/s; ARGS="--minutes 5 --connections 1000 --rate 300" for a shorter run. Writes
# bench/results/soak-<timestamp>.md and .png.
soak: venv
	BENCH_MODULE=bench.soak bash bench/run.sh $(ARGS)

# --- checks

# Three phases, each always run: unit tests, integration tests, then the transport-sensitive
# integration tests again on the stock transport path (JOBCAST_FAST_TRANSPORT=false). The
# target fails if any phase fails or selects no test at all (pytest's exit 5 is not a
# success). To run a selection: make test-unit ARGS="-k name".
test: venv web
	@unit=0; integration=0; stock=0; cluster=0; \
	echo "== unit tests (-m 'not integration')"; \
	$(BIN)/python -m pytest -m "not integration" $(ARGS) || unit=$$?; \
	echo "== integration tests (-m integration)"; \
	$(BIN)/python -m pytest -m integration $(ARGS) || integration=$$?; \
	echo "== transport tests on the stock transport (JOBCAST_FAST_TRANSPORT=false)"; \
	JOBCAST_FAST_TRANSPORT=false $(BIN)/python -m pytest -m integration $(TRANSPORT_TESTS) $(ARGS) \
		|| stock=$$?; \
	echo "== delivery, REST, Celery and cluster tests on a Redis Cluster (JOBCAST_TEST_REDIS_CLUSTER=1)"; \
	JOBCAST_TEST_REDIS_CLUSTER=1 $(BIN)/python -m pytest -m integration $(CLUSTER_TESTS) $(ARGS) \
		|| cluster=$$?; \
	echo "== unit tests: exit $$unit, integration tests: exit $$integration," \
		"transport tests (stock): exit $$stock, Redis Cluster tests: exit $$cluster"; \
	if [ $$unit -eq 5 ] || [ $$integration -eq 5 ] || [ $$stock -eq 5 ] || [ $$cluster -eq 5 ]; then \
		echo "error: a test phase collected no tests (pytest exit 5)" >&2; fi; \
	for status in $$unit $$integration $$stock $$cluster; do \
		if [ $$status -ne 0 ]; then exit $$status; fi; done

test-unit: venv
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m integration $(ARGS)

# --- the dependency matrix: the transport-sensitive integration tests, each on the fast and
# on the stock transport path, in two venvs under $(MATRIX)/: `lowest` (every direct
# dependency at its lower bound, $(LOWEST); the rest resolved by pip) and `locked` ($(LOCK),
# hash-checked). Each venv is rebuilt when pyproject.toml or its pins change. All four runs
# always happen; the target fails if any fails or selects no test (pytest exit 5).
# Only one venv: make test-matrix MATRIX_SETS=lowest
MATRIX_SETS ?= lowest locked

$(MATRIX)/.gitignore:
	@mkdir -p $(MATRIX)
	@echo '*' > $@

$(MATRIX)/lowest/.installed: pyproject.toml $(LOWEST) | $(MATRIX)/.gitignore
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	rm -rf $(MATRIX)/lowest
	$(PYTHON) -m venv $(MATRIX)/lowest
	$(MATRIX)/lowest/bin/python -m pip install --quiet --upgrade pip
	$(MATRIX)/lowest/bin/python -m pip install --quiet --constraint $(LOWEST) -e ".[$(VENV_EXTRAS)]"
	$(MATRIX)/lowest/bin/python -m pip check
	@touch $@

$(MATRIX)/locked/.installed: pyproject.toml $(LOCK) | $(MATRIX)/.gitignore
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	rm -rf $(MATRIX)/locked
	$(PYTHON) -m venv $(MATRIX)/locked
	$(MATRIX)/locked/bin/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(MATRIX)/locked/bin/python -m pip install --quiet --no-index --no-build-isolation \
		-e ".[$(VENV_EXTRAS)]"
	$(MATRIX)/locked/bin/python -m pip check
	@touch $@

test-matrix: web $(foreach set,$(MATRIX_SETS),$(MATRIX)/$(set)/.installed)
	@failed=0; summary=""; \
	for set in $(MATRIX_SETS); do \
		for fast in true false; do \
			echo "== $$set: transport tests, JOBCAST_FAST_TRANSPORT=$$fast"; \
			status=0; \
			JOBCAST_FAST_TRANSPORT=$$fast $(MATRIX)/$$set/bin/python -m pytest -m integration \
				$(TRANSPORT_TESTS) $(ARGS) || status=$$?; \
			summary="$$summary $$set/fast=$$fast:$$status"; \
			if [ $$status -eq 5 ]; then echo "error: no tests collected (pytest exit 5)" >&2; fi; \
			if [ $$status -ne 0 ]; then failed=1; fi; \
		done; \
	done; \
	echo "== test-matrix exits:$$summary"; \
	exit $$failed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: venv
	$(BIN)/mypy

# jobcast itself is not on PyPI: audit its dependencies only.
audit: venv
	$(BIN)/pip-audit --skip-editable

check: lint typecheck audit

# Needs the Docker Compose v2 plugin. `config` only reads the file; a placeholder secret
# stands in when JOBCAST_JWT_SECRET is not set, as compose refuses to expand without it.
compose-config:
	JOBCAST_JWT_SECRET="$${JOBCAST_JWT_SECRET:-compose-config-check}" \
	JOBCAST_FLOWER_BASIC_AUTH="$${JOBCAST_FLOWER_BASIC_AUTH:-admin:compose-config-check}" \
	docker compose config -q

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache build dist tests/artifacts
	find . \( -path ./$(VENV) -o -path ./$(MATRIX) \) -prune -o -name __pycache__ -type d \
		-exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(MATRIX) node_modules
