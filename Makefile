# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DATA_DIR ?= ./data

.PHONY: install demo serve test lint typecheck bench bench-peers clean

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
bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.aggregate
	$(BIN)/python -m bench.graphql
	$(BIN)/python -m bench.peers

## The peers (chromadb, lancedb, qdrant, milvus-lite; the `bench` extra): BENCHMARKS.md's figures.
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $(BENCH_STAMP)

bench-peers: $(BENCH_STAMP)
	$(BIN)/python -m bench.peers

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
