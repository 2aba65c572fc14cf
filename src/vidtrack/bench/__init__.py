"""Benchmark tool: speed and memory of trackers on real or generated videos (``vidtrack bench``).

:mod:`~vidtrack.bench.cases` (what to measure) imports no torch; the runner's names are imported on first use.
"""

from typing import TYPE_CHECKING, Any

from vidtrack.bench.cases import BenchCase, sweep_cases

if TYPE_CHECKING:
    from vidtrack.bench.runner import run_bench, run_cases, run_sweep

_RUNNER = ("run_bench", "run_cases", "run_sweep")


def __getattr__(name: str) -> Any:
    if name not in _RUNNER:
        raise AttributeError(f"module 'vidtrack.bench' has no attribute {name!r}")
    from vidtrack.bench import runner

    return getattr(runner, name)


__all__ = ["BenchCase", "run_bench", "run_cases", "run_sweep", "sweep_cases"]
