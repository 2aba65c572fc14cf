"""Run a tracker over a real or generated video and measure it.

Reported per case: end-to-end FPS (wall time of the tracking loop, decoding included), per-stage seconds
(decode, image encoder, memory attention, decoder, memory encoder, policy), per-frame latency percentiles,
peak RSS of the process and peak GPU memory, and the engine's state size at the end (bounded-memory check).
With random weights the figures are labelled ``speed_only``: they say nothing about accuracy.
"""

from __future__ import annotations

import gc
import platform
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from vidtrack.api import create_tracking_loader
from vidtrack.bench.cases import BenchCase, sweep_cases
from vidtrack.catalog import resolve_model
from vidtrack.types import Prompt

STAGES = ("decode", "image_encoder", "memory_attention", "decoder", "memory_encoder", "policy")


def synthetic_video(num_frames: int, height: int, width: int, objects: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Textured background with ``objects`` coloured rectangles moving on their own paths, frame by frame."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    colours = rng.integers(120, 255, (objects, 3), dtype=np.uint8)
    starts = rng.uniform(0.2, 0.8, (objects, 2))
    speeds = rng.uniform(-3, 3, (objects, 2))
    bh, bw = max(height // 8, 4), max(width // 10, 4)
    for t in range(num_frames):
        f = bg.copy()
        for k in range(objects):
            cy = int((starts[k, 0] * height + speeds[k, 0] * t) % (height - bh))
            cx = int((starts[k, 1] * width + speeds[k, 1] * t) % (width - bw))
            f[cy : cy + bh, cx : cx + bw] = colours[k]
        yield f


def _first_frame_boxes(height: int, width: int, objects: int, seed: int) -> list[tuple[float, float, float, float]]:
    frame = next(synthetic_video(1, height, width, objects, seed))
    rng = np.random.default_rng(seed)
    rng.integers(0, 80, (height, width, 3), dtype=np.uint8)  # same draws as synthetic_video
    colours = rng.integers(120, 255, (objects, 3), dtype=np.uint8)
    boxes = []
    for k in range(objects):
        ys, xs = np.nonzero((frame == colours[k]).all(axis=-1))
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    return boxes


def _build_model(case: BenchCase) -> Any:
    from vidtrack.engines.sam2.weights import random_sam2_model, sam2_config, tiny_test_config, with_image_size

    image_size = case.tracker.image_size
    if resolve_model(case.model).backend == "edgetam":  # one architecture: the released one, at the input size
        from vidtrack.engines.sam2.backends.edgetam_weights import edgetam_config, random_edgetam_model

        size = image_size or (256 if case.arch == "test" else 1024)
        return random_edgetam_model(edgetam_config(size), seed=case.seed, object_bias=case.object_bias)
    if case.arch == "test":
        cfg = tiny_test_config(image_size or 128)
    else:
        cfg = sam2_config(resolve_model(case.model).size if case.arch == "auto" else case.arch)
        if image_size:
            cfg = with_image_size(cfg, image_size)
    return random_sam2_model(cfg, seed=case.seed, object_bias=case.object_bias, iou_spread=case.iou_spread)


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def run_bench(case: BenchCase) -> dict[str, Any]:
    """Measure one case; returns a JSON-ready dict."""
    spec = resolve_model(case.check().model)
    loader = create_tracking_loader(case.model, case.config())
    t_load = time.perf_counter()
    loader.load(model=None if case.checkpoint else _build_model(case))  # type: ignore[call-arg]
    load_s = time.perf_counter() - t_load
    engine = loader.engine  # type: ignore[attr-defined]
    dev = engine.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    if case.source:
        from vidtrack.sources import open_source

        src = open_source(case.source, end=case.frames)
        height, width = src.probe_size()
        frames: Any = (f for _, f in src)
        first = next(iter(open_source(case.source, end=1)))[1]
        boxes = _boxes_from_first_frame(first, case.objects)
    else:
        height, width = case.height, case.width
        frames = synthetic_video(case.frames, height, width, case.objects, case.seed)
        boxes = _first_frame_boxes(height, width, case.objects, case.seed)
    prompts = [Prompt.from_box(0, i + 1, b, fmt="xyxy") for i, b in enumerate(boxes)]

    latencies: list[float] = []
    stages = dict.fromkeys(STAGES, 0.0)
    gc.collect()
    cpu_started = time.process_time()
    started = time.perf_counter()
    n = 0
    started_steady, cpu_steady = started, cpu_started
    for tf in loader.stream(frames, prompts):
        if n >= case.warmup:
            latencies.append(tf.processing_time + tf.timings.get("decode", 0.0))
            for k in STAGES:
                stages[k] += tf.timings.get(k, 0.0)
        if n + 1 == case.warmup:
            started_steady, cpu_steady = time.perf_counter(), time.process_time()
        n += 1
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started  # robust to other processes on the machine (not to spin-waits)
    steady_frames = max(n - case.warmup, 0)
    steady_s = time.perf_counter() - started_steady
    cpu_steady_s = time.process_time() - cpu_steady
    state_bytes = _last_state_bytes(loader)
    lat = np.array(latencies) if latencies else np.zeros(1)
    result = {
        "case": case.record(),
        "model": spec.name,
        "policy": loader.policy_name,  # type: ignore[attr-defined]  # the model's own, or --policy
        "speed_only": case.checkpoint is None,
        "frames": n,
        "objects": case.objects,
        "video": [height, width],
        "image_size": engine.image_size,
        "params_m": round(sum(p.numel() for p in engine.model.parameters()) / 1e6, 3),
        "fps": n / elapsed if elapsed > 0 else 0.0,
        "steady_fps": steady_frames / steady_s if steady_s > 0 and steady_frames else 0.0,
        "ms_per_frame": 1000 * float(np.mean(lat)),
        "cpu_ms_per_frame": 1000 * cpu_s / max(n, 1),
        "steady_cpu_ms_per_frame": 1000 * cpu_steady_s / max(steady_frames, 1),
        "load_s": round(load_s, 2),
        "engine": {"dtype": str(engine.dtype).removeprefix("torch."), "max_batch": engine.max_batch,
                   "autocast": str(engine.autocast_dtype).removeprefix("torch.") if engine.autocast_dtype else None,
                   "compile": case.tracker.compile, "encoder_ahead": bool(getattr(loader, "encoder_ahead", False)),
                   "threads": torch.get_num_threads()},
        "latency_ms": {f"p{q}": 1000 * float(np.percentile(lat, q)) for q in (50, 90, 99)},
        "stage_ms_per_frame": {k: 1000 * v / max(steady_frames, 1) for k, v in stages.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev.type == "cuda" else None,
        "state_kib": round(state_bytes / 1024, 1),
        **_policy_stats(loader, n),
    }
    loader.unload()
    return result


def _boxes_from_first_frame(frame: np.ndarray, objects: int) -> list[tuple[float, float, float, float]]:
    h, w = frame.shape[:2]
    return [(w * (0.1 + 0.8 * i / max(objects, 1)), h * 0.3, w * (0.1 + 0.8 * (i + 0.7) / max(objects, 1)), h * 0.7)
            for i in range(objects)]


def _policy_stats(loader: Any, frames: int) -> dict[str, Any]:
    """SAM2Long: how many pathway passes ran per object and frame (1 = pathways identical, P = diverged)."""
    session = getattr(loader, "last_session", None)
    if session is None or session.policy.name != "sam2long":
        return {}
    states = [t.policy_state for t in session.tracks.values()]
    runs, naive = sum(s.runs for s in states), sum(s.runs_naive for s in states)
    tree_frames = max(frames - 1, 1) * max(len(states), 1)
    return {"sam2long_runs_per_object_frame": round(runs / tree_frames, 3),
            "sam2long_runs_official_per_object_frame": round(naive / tree_frames, 3)}


def _last_state_bytes(loader: Any) -> int:
    session = getattr(loader, "last_session", None)
    return int(session.state_nbytes()) if session is not None else 0


def run_sweep(base: BenchCase, *, isolate: bool = True, **axes: list[Any]) -> list[dict[str, Any]]:
    """Every combination of the given axes (e.g. ``model=[...], frames=[50, 400], max_batch=[1, 16]``, see
    :func:`~vidtrack.bench.cases.sweep_cases`), each checked before the first runs."""
    return run_cases([c.check() for c in sweep_cases(base, **axes)], isolate=isolate)


def run_cases(cases: list[BenchCase], *, isolate: bool = True) -> list[dict[str, Any]]:
    """Measure ``cases`` in turn.

    ``isolate`` runs each case in a fresh process: peak RSS is a per-process high-water mark, so cases sharing a
    process would inherit each other's peaks (and caches and allocator state).
    """
    if not isolate:
        return [run_bench(c) for c in cases]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = []
    for c in cases:
        with ctx.Pool(1) as pool:
            out.append(pool.apply(run_bench, (c,)))
    return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(results: list[dict[str, Any]]) -> str:
    head = ("| model | arch | px | frames | objects | dtype | device | batch | compile | FPS | ms/frame p50 | "
            "CPU ms/frame | enc | mem-attn | dec | mem-enc | policy | peak RSS MB | peak GPU MB | state KiB |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        c, s = r["case"], r["stage_ms_per_frame"]
        rows.append(
            f"| {r['model']} | {c['arch'] if not c['checkpoint'] else 'weights'} | {r['image_size']} | {r['frames']} | "
            f"{r['objects']} | {r['engine']['autocast'] or r['engine']['dtype']} | {c['device']} | "
            f"{r['engine']['max_batch']} | {'yes' if c['compile'] else 'no'} | "
            f"{r['steady_fps']:.2f} | {r['latency_ms']['p50']:.1f} | {r['steady_cpu_ms_per_frame']:.0f} | "
            f"{s['image_encoder']:.1f} | {s['memory_attention']:.1f} | {s['decoder']:.1f} | "
            f"{s['memory_encoder']:.1f} | "
            f"{s['policy']:.1f} | {r['peak_rss_mb']} | {r['peak_gpu_mb'] or '-'} | {r['state_kib']} |"
        )
    return "\n".join(rows)
