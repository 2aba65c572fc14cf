"""The Ray executor (``pip install 'vidtrack[ray]'``): the same per-video work on a Ray Data actor pool.

Shape of the job, as Ray Data's guide to stateful transforms (actor pools) suggests for stateful video models:

* one dataset row per video, one block per row, so videos, not frames, are what Ray schedules: a memory-based
  tracker (SAM 2, SAMURAI) must see a whole video in one actor;
* ``map_batches`` with a callable class and ``ActorPoolStrategy(size=N)``: each actor builds one
  :class:`~vidtrack.batch.worker.VideoProcessor` (one model, loaded once) and reserves ``num_gpus`` when the
  cluster has GPUs. (``concurrency=N`` is deprecated since Ray 2.51; ``compute=`` is its replacement.);
* each actor writes the video's outputs itself (to a folder every node can reach) and returns only a small
  JSON result row: masks never travel through the object store.

Per-video errors are caught inside the actor and come back as ``failed`` rows, exactly as in the local pool.
A video whose actor dies (segfault, OOM kill) is retried ``retries`` times by Ray
(``max_task_retries``) on a restarted actor; if it keeps dying, ``DataContext.max_errored_blocks`` lets the
rest of the batch finish and the driver records that video as failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vidtrack.batch import state
from vidtrack.batch.manifest import VideoJob
from vidtrack.errors import DependencyError, InputError


class RayVideoActor:
    """A Ray Data actor: one model for the actor's lifetime, one whole video per call."""

    def __init__(self, proc_kwargs: dict[str, Any]) -> None:
        from vidtrack.batch.worker import VideoProcessor

        self.processor = VideoProcessor(**proc_kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = [json.dumps(self.processor.process(VideoJob.from_dict(json.loads(str(j))))) for j in batch["job"]]
        return {"result": np.array(out, dtype=object)}


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise DependencyError("the Ray executor needs Ray Data; install it with: pip install 'vidtrack[ray]'") from None
    return ray


@contextlib.contextmanager
def _token_auth_for_clients() -> Iterator[None]:
    """Send the cluster token when connecting to an existing cluster.

    Since Ray 2.59, ``ray start --head`` enables token authentication whenever a token exists
    (``~/.ray/auth_token``), but ``ray.init(address=...)`` attaches the token only when ``RAY_AUTH_MODE=token``
    is set, so a plain connect to such a cluster fails with InvalidAuthToken (ray-project/ray#64755 review).
    With ``RAY_AUTH_MODE`` unset and a token available we therefore set it for the connection; an explicit
    ``RAY_AUTH_MODE`` (``disabled`` for a cluster without auth) is respected.
    """
    has_token = bool(os.environ.get("RAY_AUTH_TOKEN")) or any(
        Path(p).expanduser().is_file() for p in (os.environ.get("RAY_AUTH_TOKEN_PATH"), "~/.ray/auth_token") if p)
    if "RAY_AUTH_MODE" in os.environ or not has_token:
        yield
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    _refresh_ray_config()  # Ray reads RAY_AUTH_MODE into its config at import; make it look again
    try:
        yield
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        _refresh_ray_config()


def _refresh_ray_config() -> None:
    with contextlib.suppress(Exception):  # a private hook: without it only the first connect may miss the token
        import importlib

        importlib.import_module("ray._raylet").Config.initialize("")


def run_ray(jobs: list[VideoJob], *, out_dir: Path, workers: int | None, device: str, retries: int,
            threads: int | None, address: str | None = None, gpus_per_worker: float | None = None,
            num_cpus: int | None = None, quiet: bool = False) -> Iterator[dict[str, Any]]:
    """Track ``jobs`` on Ray; yields one result dict per video as it finishes.

    Args:
        address: an existing cluster (``ray://head:10001``, ``head:6379``, ``auto``); None starts a local
            cluster for this run (``num_cpus`` CPUs, no dashboard) and shuts it down afterwards. With an
            existing cluster every node needs vidtrack installed and ``out_dir``, the videos and prompts at the
            same paths (shared storage).
        workers: actors in the pool (default: one per GPU of the cluster, or 1 without GPUs).
        gpus_per_worker: GPUs each actor reserves (default 1 when the cluster has GPUs and device is not
            cpu; 0.5 packs two actors per GPU).
    """
    ray = _import_ray()
    if ray.is_initialized():  # the caller's own connection (Python API): use it, leave it open
        yield from _run(ray, jobs, out_dir=out_dir, workers=workers, device=device, retries=retries,
                        threads=threads, gpus_per_worker=gpus_per_worker)
        return
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE", "HF_HOME") if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": not quiet}
    with contextlib.ExitStack() as stack:
        try:
            if address:
                # the token mode must hold for the whole connection, not only for ray.init
                stack.enter_context(_token_auth_for_clients())
                # a local cluster inherits this environment; an existing one gets the variables that decide
                # thread counts and offline weights (a runtime_env costs start-up time, so only here)
                ray.init(address=address, runtime_env={"env_vars": env} if env else None, **kwargs)
            else:
                ncpu = num_cpus or max(2, workers or 1)
                ray.init(address="local", num_cpus=ncpu, object_store_memory=256 * 2**20, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "a local cluster"
            hint = ("; if the cluster has token authentication, make its token available (RAY_AUTH_TOKEN or "
                    "~/.ray/auth_token); if it has none, set RAY_AUTH_MODE=disabled") if address else ""
            raise InputError(f"cannot start or reach Ray at {where}: {state.one_line(e)}{hint}") from None
        try:
            yield from _run(ray, jobs, out_dir=out_dir, workers=workers, device=device, retries=retries,
                            threads=threads, gpus_per_worker=gpus_per_worker)
        finally:
            ray.shutdown()


def _run(ray: Any, jobs: list[VideoJob], *, out_dir: Path, workers: int | None, device: str, retries: int,
         threads: int | None, gpus_per_worker: float | None) -> Iterator[dict[str, Any]]:
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if cluster_gpus > 0 and device != "cpu" else 0.0
    if workers is None:
        workers = max(1, int(cluster_gpus / gpus_per_worker)) if gpus_per_worker > 0 else 1
    workers = max(1, min(workers, len(jobs)))
    proc_device = "cuda" if gpus_per_worker > 0 and device.startswith("cuda") else device  # Ray sets the GPU

    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start", "max_errored_blocks")}
    ctx.enable_progress_bars = False  # our own bar counts videos; Ray's would count blocks, and interleave
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = len(jobs)  # a video that keeps killing its actor must not stop the batch
    try:
        yield from _map(ray, jobs, out_dir=out_dir, workers=workers, proc_device=proc_device, retries=retries,
                        threads=threads, gpus_per_worker=gpus_per_worker)
    finally:
        for k, v in saved.items():  # the DataContext is per process: leave a caller's session as it was
            setattr(ctx, k, v)


def _map(ray: Any, jobs: list[VideoJob], *, out_dir: Path, workers: int, proc_device: str, retries: int,
         threads: int | None, gpus_per_worker: float) -> Iterator[dict[str, Any]]:
    rows = [{"job": json.dumps(j.to_dict())} for j in jobs]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per video: the unit of work
    with warnings.catch_warnings():
        # Ray 2.6x deprecates passing plain remote args; max_task_retries has no named replacement yet, and
        # without it a video that kills its actor every time would be retried forever (Ray Data's default).
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated", category=Warning)
        ds = ds.map_batches(
            RayVideoActor,
            fn_constructor_kwargs={"proc_kwargs": {"out_dir": str(out_dir), "device": proc_device,
                                                   "retries": retries, "threads": threads}},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=gpus_per_worker if gpus_per_worker > 0 else None,
            max_task_retries=max(0, retries),
        )
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # Ray Data's own progress/INFO lines would tear through our progress bar
    try:
        yield from _collect(ds, jobs, out_dir, retries)
    finally:
        data_log.setLevel(level)


def _collect(ds: Any, jobs: list[VideoJob], out_dir: Path, retries: int) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for row in ds.iter_rows():
        res = json.loads(str(row["result"]))
        seen.add(res["id"])
        yield res
    for job in jobs:  # blocks Ray gave up on (the actor died every time)
        if job.id not in seen:
            msg = f"the Ray actor died while tracking this video (after {retries + 1} attempts)"
            with contextlib.suppress(Exception):  # the output folder may not be reachable from the driver
                state.record_error(out_dir, job.id, msg)
            yield {"id": job.id, "source": job.source, "status": "failed", "error": msg, "attempts": retries + 1,
                   "frames": 0, "seconds": 0.0}
