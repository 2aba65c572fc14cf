"""How far the causal and the official semantics of prompts on several frames differ (docs/SEMANTICS.md).

Runs ``track_video`` twice on the same checkpoint, frames and prompts -- ``semantics="official"`` (Meta's
predictor: every prompt first) and ``semantics="causal"`` (a prompt takes effect when reached, backward pass
for later objects) -- and prints the per-frame mask IoU between the two as a markdown table, per case and
object. Cases (real frames of ../shared/data, first 12 frames):

* correction: DAVIS car-shadow, the GT mask on frame 0 and again on frame 8 (one object);
* late object: Cutie judo, object 1 by its mask on frame 0, object 2 by the box of its frame-5 mask;
* reverse: Cutie judo, object 2 by that box on frame 5, object 3 by its mask on frame 8 (nothing on frame 0).

    python scripts/semantics_difference.py --checkpoint small_calibrated.pt --data ../shared/data

The checkpoint is any Meta ``.pt`` vidtrack loads (a calibrated random one: tests/parity/calibration.py
``save_checkpoint``). Meta's resizing (``resize="official"``), CPU, float32.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vidtrack import Prompt, TrackingConfig, create_tracking_loader


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def cases(data: Path) -> dict[str, tuple[Path, list[Prompt]]]:
    davis = data / "davis2016"
    judo = data / "cutie_judo"

    def gt(f: int) -> np.ndarray:
        return np.asarray(Image.open(davis / "Annotations/480p/car-shadow" / f"{f:05d}.png")) > 0

    def palette(f: int, obj: int) -> np.ndarray:
        return np.asarray(Image.open(judo / "prompts" / f"{f:05d}.png")) == obj

    return {
        "correction (car-shadow, mask on 0 and 8)": (
            davis / "JPEGImages/480p/car-shadow", [Prompt.from_mask(0, 1, gt(0)), Prompt.from_mask(8, 1, gt(8))]),
        "late object (judo, 1 on 0, 2 first on 5)": (
            judo / "JPEGImages", [Prompt.from_mask(0, 1, palette(0, 1)),
                                   Prompt.from_box(5, 2, box_of(palette(5, 2)), fmt="xyxy")]),
        "reverse (judo, 2 on 5, 3 on 8)": (
            judo / "JPEGImages", [Prompt.from_box(5, 2, box_of(palette(5, 2)), fmt="xyxy"),
                                   Prompt.from_mask(8, 3, palette(8, 3))]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--model", default="sam2.1-tiny")
    ap.add_argument("--cases", default="correction,late,reverse", help="comma-separated: correction, late, reverse")
    args = ap.parse_args()
    wanted = {c.strip() for c in args.cases.split(",")}

    loaders = {
        s: create_tracking_loader(args.model, TrackingConfig(
            device="cpu", dtype="float32", checkpoint_path=args.checkpoint, resize="official", semantics=s)).load()
        for s in ("official", "causal")
    }
    n = args.frames
    print("| case | object | mean | min | " + " | ".join(str(f) for f in range(n)) + " |")
    print("|---|---|---|---|" + "---|" * n)
    for name, (frames_dir, prompts) in cases(Path(args.data)).items():
        if name.split(" ")[0] not in wanted:
            continue
        t0 = time.perf_counter()
        results = {s: loader.track_video(str(frames_dir), prompts, end=n) for s, loader in loaders.items()}
        for obj in sorted({p.object_id for p in prompts}):
            vals = []
            for fo, fc in zip(results["official"].frames, results["causal"].frames, strict=True):
                a, b = fo.mask_for(obj), fc.mask_for(obj)
                vals.append(iou(a.mask, b.mask) if a is not None and b is not None else float("nan"))
            v = np.array(vals)
            cells = " | ".join(f"{x:.3f}" for x in v)
            print(f"| {name} | {obj} | {np.nanmean(v):.3f} | {np.nanmin(v):.3f} | {cells} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
