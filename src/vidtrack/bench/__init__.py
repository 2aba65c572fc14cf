"""Benchmark tool: speed and memory of trackers on real or generated videos (``vidtrack bench``)."""

from vidtrack.bench.runner import BenchCase, run_bench, run_sweep

__all__ = ["BenchCase", "run_bench", "run_sweep"]
