"""Benchmarks (run on purpose, e.g. ``python -m bench.ingest``); not part of the package."""
