# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data

.PHONY: install demo serve test lint typecheck bench bench-scaleout clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Seed the synthetic demo catalog and serve it (GraphiQL at http://127.0.0.1:8000/graphql).
demo: $(STAMP)
	$(BIN)/fingerprints demo --data-dir $(DATA_DIR)

serve: $(STAMP)
	$(BIN)/fingerprints serve --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check fingerprints tests bench
	$(BIN)/ruff format --check fingerprints tests bench

typecheck: $(STAMP)
	$(BIN)/mypy fingerprints

## Lint, type-check and run the whole default test suite (what CI runs).
test: lint typecheck
	$(BIN)/pytest

## Benchmarks: figures are ratios against a baseline measured in the same run.
bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.aggregate
	$(BIN)/python -m bench.graphql

## Scale-out: PostgreSQL vs SQLite (ingest, similar QPS), two `fingerprints serve` replicas vs
## one. Starts its own PostgreSQL (fsync on; Debian's server binaries); ARGS=--quick for a short run.
bench-scaleout: $(STAMP)
	$(BIN)/python -c "import psycopg" 2>/dev/null || $(BIN)/pip install --quiet 'psycopg[binary]>=3.2'
	$(BIN)/python -m bench.scaleout $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
