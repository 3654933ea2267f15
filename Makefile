# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DATA_DIR ?= ./data

.PHONY: install bytecode demo serve test test-replicas lint typecheck bench bench-scaleout bench-peers clean pg-start pg-stop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Byte-compile the package (an editable install does not, and PYTHONDONTWRITEBYTECODE keeps
## Python from caching it): otherwise every start compiles ~40 modules from source (~0.15 s).
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q fingerprints bench tests

## Seed the synthetic demo catalog and serve it (GraphiQL at http://127.0.0.1:8000/graphql).
demo: bytecode
	$(BIN)/fingerprints demo --data-dir $(DATA_DIR)

serve: bytecode
	$(BIN)/fingerprints serve --data-dir $(DATA_DIR)

lint: $(STAMP)
	$(BIN)/ruff check fingerprints tests bench
	$(BIN)/ruff format --check fingerprints tests bench

typecheck: $(STAMP)
	$(BIN)/mypy fingerprints

## Lint, type-check and run the whole default test suite (what CI runs). The API suite runs on
## SQLite and on a throwaway local PostgreSQL (scripts/pg.sh; installed when missing and root);
## without one, the PostgreSQL half is skipped. Two pytest workers (pytest-xdist): much of the
## suite waits on PostgreSQL, subprocesses and index builds (about 6 minutes on 2 cores).
test: lint typecheck
	PG_URL=$$(scripts/pg.sh start) || PG_URL=""; \
	FINGERPRINTS_TEST_PG_URL=$${FINGERPRINTS_TEST_PG_URL:-$$PG_URL} $(BIN)/pytest -n 2

## Two real replicas over one PostgreSQL: sync, job take-over after SIGKILL, no job run twice.
test-replicas: $(STAMP)
	PG_URL=$$(scripts/pg.sh start) && \
	FINGERPRINTS_TEST_PG_URL=$${FINGERPRINTS_TEST_PG_URL:-$$PG_URL} $(BIN)/pytest -m replicas

## A local PostgreSQL for development (port 55432, data under /tmp); prints its URL.
pg-start:
	@scripts/pg.sh start

pg-stop:
	@scripts/pg.sh stop

## Benchmarks: figures are ratios against a baseline measured in the same run.
bench: $(BENCH_STAMP) bytecode
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.aggregate
	$(BIN)/python -m bench.graphql
	$(BIN)/python -m bench.scaleout
	$(BIN)/python -m bench.peers

## Scale-out: PostgreSQL vs SQLite (ingest, similar QPS), two `fingerprints serve` replicas vs
## one. Starts its own PostgreSQL (fsync on; Debian's server binaries); ARGS=--quick for a short run.
bench-scaleout: bytecode
	$(BIN)/python -m bench.scaleout $(ARGS)

## The peers (chromadb, lancedb, qdrant, milvus-lite; the `bench` extra): BENCHMARKS.md's figures.
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP) bytecode
	$(BIN)/python -m bench.peers

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
