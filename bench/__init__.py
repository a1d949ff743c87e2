"""Benchmarks: each module is runnable as ``python -m bench.<name>`` (see bench/README.md)."""
