"""Benchmarks: each script prints its numbers; results are recorded in RESULTS.md with the command."""
