"""The local executor: a pool of spawned worker processes, one model each, GPUs assigned round-robin.

Why not ``concurrent.futures.ProcessPoolExecutor``: when one worker dies (a segfault in a codec, the OOM
killer) that pool breaks and fails every video in flight, without saying which video killed it. Here each
worker has its own pipe and the driver hands it one video at a time, so the driver always knows which video
a dead worker was tracking: that video is retried (or recorded as failed) and a fresh worker takes the slot.

Why spawn: CUDA cannot be used in a forked child, and spawn gives each worker a clean interpreter whose
``CUDA_VISIBLE_DEVICES`` is set before torch touches the GPU, so worker *i* sees only GPU ``i mod n`` as
``cuda:0``.

Workers die with the driver: on Linux each asks the kernel for SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``), and every worker also exits when its pipe to the driver closes. A killed batch
therefore leaves no orphan burning a GPU on a video the next run will redo anyway.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from vidtrack.batch import state
from vidtrack.batch.manifest import VideoJob

ProgressFn = Callable[[int], None]


def visible_gpus() -> list[str]:
    """GPU ids this process may hand out: ``CUDA_VISIBLE_DEVICES`` when set, else ``0..n-1``.

    Uses ``torch.cuda.device_count()``, which asks NVML and does not create a CUDA context in the driver.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch CUDA build, no driver
        return []


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the driver dies: PR_SET_PDEATHSIG on Linux, plus a polling thread everywhere."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="vidtrack-parent-watch", daemon=True).start()


def _worker_main(conn: Connection, gpu: str | None, parent_pid: int, proc_kwargs: dict[str, Any]) -> None:
    """A worker process: receive job dicts, send back ``("progress", n)`` and ``("result", dict)``."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _die_with_parent(parent_pid)
    from vidtrack.batch.worker import VideoProcessor

    processor = VideoProcessor(**proc_kwargs)
    pending = 0
    last = time.monotonic()

    def progress(n: int) -> None:
        nonlocal pending, last
        pending += n
        if time.monotonic() - last >= 0.25:
            conn.send(("progress", pending))
            pending, last = 0, time.monotonic()

    try:
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                break
            if item is None:
                break
            res = processor.process(VideoJob.from_dict(item), progress)
            if pending:
                conn.send(("progress", pending))
                pending = 0
            conn.send(("result", res))
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    finally:
        processor.close()


@dataclass
class _Slot:
    index: int
    gpu: str | None
    proc: Any = None
    conn: Connection | None = None
    job: VideoJob | None = None


def run_local(jobs: list[VideoJob], *, out_dir: Any, workers: int, device: str, retries: int,
              threads: int | None, progress: ProgressFn | None = None) -> Iterator[dict[str, Any]]:
    """Track ``jobs`` in ``workers`` spawned processes; yields one result dict per video as it finishes.

    ``workers=0`` tracks in this process (no pool), which is handy for debugging and small batches.
    """
    if threads is None and workers > 1 and (device == "cpu" or not visible_gpus()):
        # the CPUs of this process shared between the workers, instead of every worker taking all of them
        from vidtrack.engines.sam2.runtime import default_cpu_threads

        threads = max(1, default_cpu_threads() // workers)
    proc_kwargs: dict[str, Any] = {"out_dir": str(out_dir), "device": device, "retries": retries, "threads": threads}
    if workers <= 0:
        from vidtrack.batch.worker import VideoProcessor

        processor = VideoProcessor(**proc_kwargs)
        try:
            for job in jobs:
                yield processor.process(job, progress)
        finally:
            processor.close()
        return

    gpus = [] if device == "cpu" else visible_gpus()
    if gpus and device.startswith("cuda:"):
        proc_kwargs["device"] = "cuda"  # each worker sees exactly one GPU, as cuda:0
    ctx = mp.get_context("spawn")
    queue: deque[VideoJob] = deque(jobs)
    crashes: dict[str, int] = {}
    slots = [_Slot(i, gpus[i % len(gpus)] if gpus else None) for i in range(min(workers, len(jobs)))]

    def start(slot: _Slot) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child_conn, slot.gpu, os.getpid(), proc_kwargs),
                           name=f"vidtrack-batch-{slot.index}", daemon=True)
        # the spawned interpreter inherits the environment at exec: its GPU is fixed before any import
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if slot.gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
        try:
            proc.start()
        finally:
            if saved is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = saved
        child_conn.close()
        slot.proc, slot.conn, slot.job = proc, parent_conn, None

    def dispatch(slot: _Slot) -> None:
        assert slot.conn is not None
        if queue:
            slot.job = queue.popleft()
            with contextlib.suppress(OSError):  # a dead worker is handled when its sentinel fires
                slot.conn.send(slot.job.to_dict())
        else:
            slot.job = None
            with contextlib.suppress(OSError):
                slot.conn.send(None)

    def crashed(slot: _Slot) -> dict[str, Any] | None:
        """A worker died: retry its video or report it failed; start a replacement if work remains."""
        job, code = slot.job, slot.proc.exitcode
        if slot.conn is not None:
            slot.conn.close()
        slot.proc.join(timeout=1)
        slot.proc, slot.conn, slot.job = None, None, None
        res = None
        if job is not None:
            crashes[job.id] = crashes.get(job.id, 0) + 1
            if crashes[job.id] <= retries:
                queue.appendleft(job)
            else:
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                msg = f"the worker process died ({how}) while tracking this video"
                if crashes[job.id] > 1:
                    msg += f" (after {crashes[job.id]} attempts)"
                with contextlib.suppress(Exception):
                    state.record_error(Path(out_dir), job.id, msg)
                res = {"id": job.id, "source": job.source, "status": "failed", "error": msg,
                       "attempts": crashes[job.id], "frames": 0, "seconds": 0.0}
        if queue:
            start(slot)
            dispatch(slot)
        return res

    try:
        for slot in slots:
            start(slot)
            dispatch(slot)
        while any(s.proc is not None and (s.job is not None) for s in slots):
            live = [s for s in slots if s.proc is not None]
            waitables: list[Any] = [s.conn for s in live] + [s.proc.sentinel for s in live]
            ready = wait(waitables, timeout=1.0)
            for slot in live:
                if slot.conn is not None and slot.conn in ready:
                    try:
                        while slot.conn.poll():
                            kind, payload = slot.conn.recv()
                            if kind == "progress":
                                if progress is not None:
                                    progress(int(payload))
                            elif kind == "result":
                                yield payload
                                dispatch(slot)
                    except (EOFError, OSError):
                        pass  # the pipe closed: the process is ending; its sentinel says how
                if slot.proc is not None and not slot.proc.is_alive():
                    if slot.job is None:  # finished normally after its last video
                        if slot.conn is not None:
                            slot.conn.close()
                        slot.proc.join(timeout=1)
                        slot.proc, slot.conn = None, None
                    else:
                        res = crashed(slot)
                        if res is not None:
                            yield res
    finally:
        for slot in slots:
            if slot.conn is not None:
                with contextlib.suppress(OSError):
                    slot.conn.send(None)
        deadline = time.monotonic() + 10
        for slot in slots:
            if slot.proc is not None:
                slot.proc.join(timeout=max(0.1, deadline - time.monotonic()))
                if slot.proc.is_alive():  # interrupted mid-video: do not wait for it
                    slot.proc.kill()
                    slot.proc.join(timeout=5)
            if slot.conn is not None:
                slot.conn.close()
