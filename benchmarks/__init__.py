"""Benchmarks for the listing-image processor (python -m benchmarks)."""
