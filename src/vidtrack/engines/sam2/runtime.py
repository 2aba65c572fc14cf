"""How the SAM 2 engine runs on a device: precision, ``torch.compile``, CPU threads, the encoder running ahead.

Apart from autocast's reduced precision, none of this changes what is computed, only how fast: each option is
checked against the plain float32 run (tests/test_runtime.py) and measured with ``vidtrack bench``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidtrack.errors import InputError

if TYPE_CHECKING:
    from vidtrack.engines.sam2.engine import ImageFeatures, Sam2Engine

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def resolve_precision(dtype: str, autocast: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype or None) for the ``dtype`` / ``autocast`` options.

    ``dtype="auto"`` keeps float32 weights everywhere; ``autocast="auto"`` then runs CUDA under autocast in
    bfloat16 where the GPU supports it (compute capability >= 8.0: Ampere, Hopper...) and float16 on older
    GPUs, like the official predictor's ``torch.autocast("cuda", dtype=torch.bfloat16)``; CPUs stay in float32
    (bf16 is slower than fp32 on CPUs without AMX, docs/POLICIES.md). An explicit ``dtype`` casts the weights
    and turns ``autocast="auto"`` off.
    """
    if dtype != "auto" and dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    if autocast not in ("auto", "off", "bfloat16", "float16", "bf16", "fp16"):
        raise InputError(f"unknown autocast {autocast!r}; use auto, off, bfloat16 or float16")
    weights = torch.float32 if dtype == "auto" else _DTYPES[dtype]
    if autocast == "off":
        return weights, None
    if autocast != "auto":
        return weights, _DTYPES[autocast]
    if dtype != "auto" or device.type != "cuda":
        return weights, None
    major, _ = torch.cuda.get_device_capability(device)
    return weights, torch.bfloat16 if major >= 8 else torch.float16


def default_cpu_threads() -> int:
    """Intra-op threads for CPU runs: the CPUs this process may use (cgroup/affinity aware, unlike
    ``os.cpu_count``), so containers and Ray workers limited to N CPUs do not oversubscribe them."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def apply_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads`` if given, else ``OMP_NUM_THREADS`` if the user set it, else
    :func:`default_cpu_threads`. Returns the value in force."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(default_cpu_threads())
    return torch.get_num_threads()


def compile_model(model: Any, mode: str | None = None) -> None:
    """``torch.compile`` the stable-shape modules in place: the image encoder (one 1x3xSxS input), and the
    memory encoder, mask decoder and memory attention with dynamic shapes (batch size and memory length
    change during the first frames). The engine's :meth:`~Sam2Engine.warmup` then triggers compilation so
    the first real frame does not pay for it."""
    model.vision_encoder = torch.compile(model.vision_encoder, mode=mode, dynamic=False)
    for name in ("memory_encoder", "mask_decoder", "memory_attention"):
        setattr(model, name, torch.compile(getattr(model, name), mode=mode, dynamic=True))


class EncoderAhead:
    """Runs the image encoder one frame ahead of the sequential memory path, in a worker thread.

    Frame t+1's encoder (which needs no memory) overlaps frame t's memory attention / decoder / memory encoder:
    on a GPU on a second CUDA stream, on a CPU on a second core. Features are handed over in order; at most
    one frame is in flight, so memory stays bounded.
    """

    def __init__(self, engine: Sam2Engine, frames: Iterator[tuple[int, np.ndarray]]) -> None:
        self.engine = engine
        self.frames = frames
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtrack-encoder")
        self.stream = torch.cuda.Stream(engine.device) if engine.device.type == "cuda" else None

    def _encode(self, frame: np.ndarray) -> tuple[ImageFeatures, float]:
        eng = self.engine
        t0 = time.perf_counter()
        with torch.inference_mode(), eng.autocast():
            if self.stream is None:
                feats = eng.encode_image(eng.preprocess(frame))
            else:
                with torch.cuda.stream(self.stream):
                    feats = eng.encode_image(eng.preprocess(frame))
                self.stream.synchronize()
                main = torch.cuda.default_stream(eng.device)
                for t in (*feats.vision_feats, *feats.vision_pos, *feats.high_res):
                    t.record_stream(main)  # used on the main stream from now on
        return feats, time.perf_counter() - t0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, ImageFeatures, float]]:
        """Yields (frame index, frame, features, encoder seconds)."""
        try:
            pending: tuple[int, np.ndarray, Future[tuple[ImageFeatures, float]]] | None = None
            for idx, frame in self.frames:
                job = (idx, frame, self.pool.submit(self._encode, frame))
                if pending is not None:
                    feats, secs = pending[2].result()
                    yield pending[0], pending[1], feats, secs
                pending = job
            if pending is not None:
                feats, secs = pending[2].result()
                yield pending[0], pending[1], feats, secs
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
