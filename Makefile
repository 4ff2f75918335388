# jobcast: one entry point for setting up, running and checking.
#   make run    the whole stack (Redis if none answers, worker, API on :8080, Flower on :5555)
#   make test   unit tests, then integration tests (real Redis, worker and uvicorn processes,
#               and a headless Chromium for the demo page)
# Each part alone: make worker | api | notifier | api-only | flower.
# Extra arguments for a part's command: make api ARGS="--port 8090"

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEB_STAMP := node_modules/.jobcast-installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help venv web run test test-unit test-integration lint format typecheck audit check \
        worker notifier api api-only flower compose-config clean distclean bench bench-quick

help:
	@echo "make run             start Redis (if none answers), a worker, the API and Flower"
	@echo "make test            unit tests, then integration tests"
	@echo "make lint|typecheck|audit|check   ruff, mypy, pip-audit, all three"
	@echo "make worker|api|notifier|api-only|flower   one part (ARGS=... for extra options)"
	@echo "make compose-config  validate docker-compose.yml"
	@echo "make bench|bench-quick   benchmark against two baselines (bench/README.md)"
	@echo "make web             npm ci: socket.io-client (demo page), playwright-core (browser tests)"
	@echo "make venv|clean|distclean"

# --- set-up: .venv with the package (editable) and the test and dev tools.
# Reinstalls when pyproject.toml changes (the stamp is older than it).
venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: python3.11 (or python3) not found on PATH" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,dev]"
	@touch $(STAMP)

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

# --- checks

# Both phases always run; the target fails if either fails or selects no test at all
# (pytest's exit 5 is not a success). To run a selection: make test-unit ARGS="-k name".
test: venv web
	@unit=0; integration=0; \
	echo "== unit tests (-m 'not integration')"; \
	$(BIN)/python -m pytest -m "not integration" $(ARGS) || unit=$$?; \
	echo "== integration tests (-m integration)"; \
	$(BIN)/python -m pytest -m integration $(ARGS) || integration=$$?; \
	echo "== unit tests: exit $$unit, integration tests: exit $$integration"; \
	if [ $$unit -eq 5 ] || [ $$integration -eq 5 ]; then \
		echo "error: a test phase collected no tests (pytest exit 5)" >&2; fi; \
	if [ $$unit -ne 0 ]; then exit $$unit; fi; \
	exit $$integration

test-unit: venv
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m integration $(ARGS)

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
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) node_modules
