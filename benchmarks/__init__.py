"""Benchmarks of commandbus (run from the repository root: ``python -m benchmarks.throughput``)."""
