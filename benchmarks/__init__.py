"""Benchmarks: each module measures one part against a baseline run in the same process."""
