"""``run_batch``: plan (skip finished videos), run an executor, show progress, write the summary.

The driver itself never loads a model. Before starting workers it computes each video's input checksum and
skips videos whose ``done.json`` matches, so a finished batch re-runs in the time it takes to hash the
inputs, with no worker or Ray cluster started. Workers check again before tracking (cheap, and it keeps the
answer right if the driver could not read a file that the workers can, e.g. on a remote Ray cluster).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidtrack.batch import state
from vidtrack.batch.manifest import VideoJob
from vidtrack.batch.worker import skipped_result
from vidtrack.errors import InputError

EXECUTORS = ("local", "ray")


@dataclass
class BatchOptions:
    """How a batch runs (what each video is tracked with lives in :class:`~vidtrack.batch.manifest.JobOptions`).

    Attributes:
        out_dir: output folder: ``OUT/<id>/`` per video, ``OUT/<id>.error.txt`` per failure,
            ``OUT/batch_summary.json``.
        executor: ``local`` (process pool on this machine) or ``ray`` (Ray Data actor pool).
        workers: worker processes / actors. None: one per GPU, or 1 without GPUs. ``0`` (local only): track
            in this process.
        device: ``auto``, ``cpu`` or ``cuda``. Local workers each see one GPU (round-robin), Ray assigns GPUs.
        retries: extra attempts for a video that failed for a reason other than bad input, or whose worker
            died.
        threads: torch CPU threads per worker (default: the CPUs of this process divided between CPU workers).
        address: Ray cluster address (None: start a local cluster for the run).
        gpus_per_worker: Ray only: GPUs reserved per actor (default 1 when the cluster has GPUs).
        ray_cpus: Ray only: CPUs of the local cluster started for the run (default max(2, workers)).
        quiet: no progress bar.
    """

    out_dir: Path
    executor: str = "local"
    workers: int | None = None
    device: str = "auto"
    retries: int = 1
    threads: int | None = None
    address: str | None = None
    gpus_per_worker: float | None = None
    ray_cpus: int | None = None
    quiet: bool = False


@dataclass
class BatchSummary:
    """Counts, throughput and one row per video; written as ``OUT/batch_summary.json``."""

    total: int
    done: int
    skipped: int
    failed: int
    frames: int
    seconds: float
    fps: float
    executor: str
    workers: int | None
    started_at: str
    finished_at: str
    videos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(jobs: list[VideoJob], out_dir: Path) -> tuple[list[VideoJob], list[dict[str, Any]]]:
    """Split ``jobs`` into (to run, already done). A job whose inputs cannot be read here is left to run:
    its worker will record the reason (or succeed, when only the workers can see the file)."""
    todo, done = [], []
    for job in jobs:
        try:
            digest = state.checksum(state.job_inputs(job, job.load_prompts()))
        except Exception:
            todo.append(job)
            continue
        marker = state.is_done(out_dir, job.id, digest)
        if marker is None:
            todo.append(job)
        else:
            state.clear_error(out_dir, job.id)
            done.append(skipped_result(job, marker, out_dir))
    return todo, done


def default_workers(device: str) -> int:
    """One worker per visible GPU, or 1 on CPU (a SAM 2 worker already uses every core it is given)."""
    from vidtrack.batch.local import visible_gpus

    return max(1, len(visible_gpus())) if device != "cpu" else 1


def _execute(todo: list[VideoJob], opts: BatchOptions, progress: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    if not todo:
        return iter(())
    if opts.executor == "ray":
        from vidtrack.batch.ray_executor import run_ray

        return run_ray(todo, out_dir=opts.out_dir, workers=opts.workers, device=opts.device, retries=opts.retries,
                       threads=opts.threads, address=opts.address, gpus_per_worker=opts.gpus_per_worker,
                       num_cpus=opts.ray_cpus, quiet=opts.quiet)
    from vidtrack.batch.local import run_local

    workers = default_workers(opts.device) if opts.workers is None else opts.workers
    return run_local(todo, out_dir=opts.out_dir, workers=workers, device=opts.device, retries=opts.retries,
                     threads=opts.threads, progress=progress)


def run_batch(jobs: list[VideoJob], options: BatchOptions, *, console: Any = None) -> BatchSummary:
    """Track every video of ``jobs`` (skipping finished ones) and return the summary.

    Holds a lock on the output folder for the run and first removes staging folders a killed run left.
    Failed videos do not raise: they are counted, listed in the summary and have an error file.
    """
    if options.executor not in EXECUTORS:
        raise InputError(f"unknown executor {options.executor!r}; choose local or ray")
    if options.workers is not None and options.workers < 0:
        raise InputError("--workers must be >= 0")
    if options.executor == "ray" and options.workers == 0:
        raise InputError("--workers 0 (track in this process) is for the local executor; give Ray at least 1")
    if options.address and options.executor != "ray":
        raise InputError("--address is a Ray cluster address; add --executor ray")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir = options.out_dir = Path(options.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file; give a folder")
    console = console or Console(stderr=True)
    started_at, t0 = state.now_iso(), time.perf_counter()
    with state.run_lock(out_dir):
        state.remove_stale_stages(out_dir)
        todo, results = plan(jobs, out_dir)
        order = {j.id: i for i, j in enumerate(jobs)}
        todo.sort(key=lambda j: (j.options.model_key().__repr__(), order[j.id]))  # same model back to back
        frames_live = 0
        counts = {"done": 0, "skipped": len(results), "failed": 0}
        with Progress(TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console,
                      disable=options.quiet) as bar:
            task = bar.add_task("batch", total=len(jobs), completed=len(results), stats="")

            def refresh() -> None:
                el = time.perf_counter() - t0
                bar.update(task, stats=f"done {counts['done']} skipped {counts['skipped']} failed "
                                       f"{counts['failed']} | {frames_live} frames, {frames_live / el:.1f} fps")

            def progress(n: int) -> None:
                nonlocal frames_live
                frames_live += n
                refresh()

            refresh()
            for res in _execute(todo, options, progress):
                results.append(res)
                counts[res["status"]] = counts.get(res["status"], 0) + 1
                if res["status"] == "failed" and not options.quiet:
                    bar.console.print(f"[red]failed[/] {res['id']}: {res.get('error', '')}", highlight=False,
                                      soft_wrap=True)
                bar.update(task, advance=1)
                refresh()
        elapsed = time.perf_counter() - t0
        tracked = sum(int(r.get("frames", 0)) for r in results if r["status"] == "done")
        results.sort(key=lambda r: order.get(r["id"], len(order)))
        summary = BatchSummary(
            total=len(jobs), done=counts["done"], skipped=counts["skipped"], failed=counts["failed"],
            frames=tracked, seconds=round(elapsed, 3), fps=round(tracked / elapsed, 3) if elapsed > 0 else 0.0,
            executor=options.executor, workers=options.workers, started_at=started_at,
            finished_at=state.now_iso(), videos=results,
        )
        state.write_json(out_dir / state.SUMMARY, summary.to_dict())
    return summary
