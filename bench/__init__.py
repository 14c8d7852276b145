"""Benchmarks of the exporter: ``python bench/run.py`` (see docs/performance.md)."""
