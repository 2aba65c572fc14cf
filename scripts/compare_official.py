"""vidtrack beside Meta's official SAM 2 video predictor, interleaved frame by frame in one process.

    OMP_NUM_THREADS=1 python scripts/compare_official.py --sizes 256,512,1024 --objects 1,3 \
        --frames 12 --warmup 7 --json compare.json --md compare.md

For every (input size, object count): one Meta-format hiera-tiny checkpoint (random weights, calibrated as in
tests/parity, written with its yaml; ``--checkpoint`` for your own ``.pt`` + yaml) is loaded by both sides:
the official ``SAM2VideoPredictor`` (the installed ``sam2`` package, built by ``build_sam2_video_predictor``
with ``++model.image_size``) and vidtrack (its own conversion, Meta's PIL frame resizing). Both get the same
JPEG frames, the same boxes on frame 0 and the same torch threads; both are generators (``propagate_in_video``
and ``stream``) advanced one frame at a time, alternating which goes first, so load swings on a shared machine
hit both alike. Cost = process CPU time per frame after ``--warmup`` frames (the memory bank is full from frame
``num_maskmem``); min and median over the measured frames, ratio vidtrack / official of each. Per-stage
columns (image encoder, memory attention incl. gathering the memory, decoder, memory encoder, the rest) in CPU
and wall time come from wrapping the same stage functions on both sides at run time (nothing is edited).

Not counted for either: the official predictor decodes and resizes every frame in ``init_state`` before
tracking; vidtrack gets the decoded frames and resizes each one in its loop (counted, stage ``preprocess``).
The JSON also gives the official ``init_state`` CPU time per frame and the median ratio with it added.
``--with-stock`` adds a third contender: vidtrack with transformers' stock modules (without
:func:`vidtrack.engines.sam2.fast_modules.install_fast_modules`), for a before/after in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # the official predictor draws a progress bar per call

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "parity"))

import calibration  # noqa: E402  (tests/parity: build and calibrate the official model)

from vidtrack import Prompt, TrackingConfig, create_tracking_loader  # noqa: E402

STAGES = ("image_encoder", "memory_attention", "decoder", "memory_encoder", "preprocess")
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "davis2016" / "JPEGImages" / "480p" / "car-shadow"


class StageClock:
    """Accumulates process CPU and wall seconds per stage for the frame being measured."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}

    def reset(self) -> None:
        self.cpu, self.wall = {}, {}

    def wrap(self, obj: Any, name: str, stage: str) -> None:
        """Replace ``obj.name`` by a timed call on this instance only."""
        fn = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[stage] = self.cpu.get(stage, 0.0) + time.process_time() - c0
                self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w0

        setattr(obj, name, timed)


class Contender:
    """One tracker as a frame generator, with its stage clock and per-frame records."""

    def __init__(self, name: str, frames: Iterator[Any], clock: StageClock) -> None:
        self.name = name
        self.frames = frames
        self.clock = clock
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.stage_cpu: list[dict[str, float]] = []
        self.stage_wall: list[dict[str, float]] = []
        self.load_cpu = 0.0  # the official predictor's init_state: every frame decoded and resized up front

    def step(self) -> None:
        self.clock.reset()
        c0, w0 = time.process_time(), time.perf_counter()
        next(self.frames)
        self.cpu.append(time.process_time() - c0)
        self.wall.append(time.perf_counter() - w0)
        self.stage_cpu.append(dict(self.clock.cpu))
        self.stage_wall.append(dict(self.clock.wall))


def official_contender(ckpt: Path, arch: calibration.Architecture, frames_dir: Path,
                       boxes: list[tuple[float, float, float, float]]) -> Contender:
    pred = calibration.build_predictor(arch, ckpt)
    clock = StageClock()
    clock.wrap(pred, "forward_image", "image_encoder")
    clock.wrap(pred, "_prepare_memory_conditioned_features", "memory_attention")
    clock.wrap(pred, "_forward_sam_heads", "decoder")
    clock.wrap(pred, "_encode_new_memory", "memory_encoder")

    def run() -> Iterator[Any]:
        with torch.inference_mode():
            c0 = time.process_time()
            state = pred.init_state(str(frames_dir))
            contender.load_cpu = time.process_time() - c0
            for k, b in enumerate(boxes):
                pred.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1, box=np.array(b, np.float32))
            yield from pred.propagate_in_video(state)

    contender = Contender("official", run(), clock)
    return contender


def vidtrack_contender(name: str, ckpt: Path, frames: list[np.ndarray], boxes: list[tuple[float, float, float, float]],
                       threads: int, stock: bool = False) -> Contender:
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=str(ckpt), resize="official",
                         threads=threads)
    loader: Any = create_tracking_loader("sam2.1-tiny", cfg).load()
    eng = loader.engine
    if stock:
        from vidtrack.engines.sam2.fast_modules import restore_stock_modules

        restore_stock_modules(eng.model)
    clock = StageClock()
    clock.wrap(eng, "encode_image", "image_encoder")
    clock.wrap(eng, "preprocess", "preprocess")
    clock.wrap(eng, "memory_conditioned_batch", "memory_attention")
    clock.wrap(eng, "sam_heads", "decoder")
    clock.wrap(eng, "encode_memory", "memory_encoder")
    prompts = [Prompt.from_box(0, k + 1, b, fmt="xyxy") for k, b in enumerate(boxes)]
    return Contender(name, iter(loader.stream(iter(frames), prompts)), clock)


def boxes_for(objects: int, height: int, width: int) -> list[tuple[float, float, float, float]]:
    """``objects`` boxes side by side across the middle of the frame."""
    return [(width * (0.1 + 0.8 * k / objects), height * 0.3, width * (0.1 + 0.8 * (k + 0.8) / objects), height * 0.75)
            for k in range(objects)]


def summarise(c: Contender, warmup: int) -> dict[str, Any]:
    cpu = [1000 * x for x in c.cpu[warmup:]]
    wall = [1000 * x for x in c.wall[warmup:]]

    def med(rows: list[dict[str, float]], stage: str) -> float:
        return 1000 * statistics.median(r.get(stage, 0.0) for r in rows[warmup:])

    stages_cpu = {s: med(c.stage_cpu, s) for s in STAGES}
    stages_wall = {s: med(c.stage_wall, s) for s in STAGES}
    stages_cpu["other"] = statistics.median(
        t - 1000 * sum(r.values()) for t, r in zip(cpu, c.stage_cpu[warmup:], strict=True))
    stages_wall["other"] = statistics.median(
        t - 1000 * sum(r.values()) for t, r in zip(wall, c.stage_wall[warmup:], strict=True))
    return {"load_cpu_ms_per_frame": 1000 * c.load_cpu / max(len(c.cpu), 1),
            "cpu_ms_min": min(cpu), "cpu_ms_median": statistics.median(cpu), "wall_ms_min": min(wall),
            "wall_ms_median": statistics.median(wall), "cpu_ms": cpu, "stage_cpu_ms": stages_cpu,
            "stage_wall_ms": stages_wall}


def run_case(size: int, objects: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    arch = calibration.tiny(size)
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        ckpt = tmp / f"hiera-tiny-{size}.pt"
        if not ckpt.exists():
            calibration.save_checkpoint(arch, ckpt)
    with calibration.frame_folder(args.source, args.frames) as frames_dir:
        paths = sorted(frames_dir.iterdir())
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        h, w = frames[0].shape[:2]
        boxes = boxes_for(objects, h, w)
        contenders = [official_contender(ckpt, arch, frames_dir, boxes),
                      vidtrack_contender("vidtrack", ckpt, frames, boxes, args.threads)]
        if args.with_stock:
            contenders.append(vidtrack_contender("vidtrack-stock", ckpt, frames, boxes, args.threads, stock=True))
        torch.set_num_threads(args.threads)
        for i in range(args.frames):
            order = contenders if i % 2 == 0 else contenders[::-1]
            for c in order:
                c.step()
            if args.verbose:
                print(f"  {size} px, {objects} obj, frame {i}: "
                      + ", ".join(f"{c.name} {1000 * c.cpu[-1]:.0f}" for c in contenders), file=sys.stderr)
        for c in contenders:
            with contextlib.suppress(StopIteration):
                next(c.frames)
    out = {"image_size": size, "objects": objects, "frames": args.frames, "warmup": args.warmup,
           "threads": args.threads, "checkpoint": str(ckpt) if args.checkpoint else f"hiera-tiny-{size} random"}
    for c in contenders:
        out[c.name] = summarise(c, args.warmup)
    off = out["official"]
    for c in contenders[1:]:
        s = out[c.name]
        s["ratio_median"] = s["cpu_ms_median"] / off["cpu_ms_median"]
        s["ratio_min"] = s["cpu_ms_min"] / off["cpu_ms_min"]
        # the official predictor resizes every frame in init_state, before tracking; vidtrack in its loop
        s["ratio_median_with_official_loading"] = s["cpu_ms_median"] / (
            off["cpu_ms_median"] + off["load_cpu_ms_per_frame"])
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    names = [k for k in results[0] if isinstance(results[0][k], dict) and "cpu_ms_min" in results[0][k]]
    others = [n for n in names if n != "official"]
    head = "| px | objects | " + " | ".join(
        f"{n} CPU ms min / median" for n in names) + " | " + " | ".join(
        f"{n} / official (min, median)" for n in others) + " |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        cells = [f"{r[n]['cpu_ms_min']:.0f} / {r[n]['cpu_ms_median']:.0f}" for n in names]
        ratios = [f"**{r[n]['ratio_min']:.3f}**, **{r[n]['ratio_median']:.3f}**" for n in others]
        rows.append(f"| {r['image_size']} | {r['objects']} | " + " | ".join(cells + ratios) + " |")
    stage_cols = (*STAGES, "other")
    rows += ["", "Per stage, median ms per frame, CPU / wall:", "",
             "| px | objects | contender | " + " | ".join(stage_cols) + " |",
             "|" + "---|" * (3 + len(stage_cols))]
    for r in results:
        for n in names:
            sc, sw = r[n]["stage_cpu_ms"], r[n]["stage_wall_ms"]
            rows.append(f"| {r['image_size']} | {r['objects']} | {n} | "
                        + " | ".join(f"{sc[s]:.0f} / {sw[s]:.0f}" for s in stage_cols) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,512,1024", help="comma-separated model input sizes")
    ap.add_argument("--objects", default="1,3", help="comma-separated object counts")
    ap.add_argument("--frames", type=int, default=12, help="frames per run (first --warmup not measured)")
    ap.add_argument("--warmup", type=int, default=7, help="frames before the memory bank is full")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of JPEG frames")
    ap.add_argument("--checkpoint", help="Meta .pt with its yaml beside it (default: random hiera-tiny per size)")
    ap.add_argument("--with-stock", action="store_true", help="also vidtrack on transformers' stock modules")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--md", type=Path, help="write the markdown table here")
    ap.add_argument("--verbose", action="store_true", help="per-frame CPU ms on stderr")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        objects = [int(s) for s in args.objects.split(",")]
    except ValueError:
        print("error: --sizes and --objects take comma-separated integers", file=sys.stderr)
        return 2
    if any(s % 32 for s in sizes) or args.warmup >= args.frames or not args.source.is_dir():
        print("error: sizes must be multiples of 32, --warmup below --frames, --source a folder of JPEGs",
              file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="vidtrack-compare-") as tmp:
        for size in sizes:
            for n in objects:
                results.append(run_case(size, n, args, Path(tmp)))
                print(markdown(results[-1:]).split("\n\n")[0], flush=True)
    machine = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads}
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    if args.md:
        args.md.write_text(table + "\n")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
