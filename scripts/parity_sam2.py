"""Compare vidtrack's SAM 2.1 masks with masks saved from Meta's official predictor.

The official side is not part of this repository (run facebookresearch/sam2 yourself on the same
checkpoint and prompts, and save per-object boolean masks as ``masks_obj<ID>`` arrays of shape [N, H, W]
in an .npz, frame i = i-th frame of the folder). This script runs vidtrack on the same checkpoint, frames and
prompt with Meta's frame resizing (``resize="official"``), and prints per-frame IoU.

    python scripts/parity_sam2.py --checkpoint sam2.1_hiera_tiny.pt --frames DAVIS/JPEGImages/480p/car-shadow \\
        --mask DAVIS/Annotations/480p/car-shadow/00000.png --official official.npz
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.prompt_files import read_mask_png


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model", default="sam2.1-tiny")
    ap.add_argument("--frames", required=True)
    ap.add_argument("--official", required=True, help=".npz with masks_obj<ID> arrays [N, H, W]")
    ap.add_argument("--mask", help="mask PNG on frame 0 (mode L: object 1; palette: one object per index)")
    ap.add_argument("--box", help="x1,y1,x2,y2 on frame 0 for --obj-id")
    ap.add_argument("--obj-id", type=int, default=1)
    ap.add_argument("--resize", default="official", choices=["official", "transformers"])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    official = np.load(args.official)
    ids = sorted(int(k.removeprefix("masks_obj")) for k in official.files if k.startswith("masks_obj"))
    n = official[f"masks_obj{ids[0]}"].shape[0]
    prompts = []
    if args.mask:
        prompts += [Prompt.from_mask(0, oid, m) for oid, m in read_mask_png(args.mask).items()]
    if args.box:
        prompts.append(Prompt.from_box(0, args.obj_id, [float(v) for v in args.box.split(",")]))
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=args.checkpoint, resize=args.resize)
    loader = create_tracking_loader(args.model, cfg).load()
    ious: dict[int, list[float]] = {o: [] for o in ids}
    for tf in loader.stream(args.frames, prompts, end=n):
        for o in ids:
            ours = tf.mask_for(o)
            theirs = official[f"masks_obj{o}"][tf.frame_idx]
            ious[o].append(iou(ours.mask if ours is not None else np.zeros_like(theirs), theirs))
        print(tf.frame_idx, " ".join(f"obj{o}: IoU {ious[o][-1]:.5f}" for o in ids), flush=True)
    allv = [v for o in ids for v in ious[o]]
    summary = {"frames": n, "objects": ids, "mean_iou": float(np.mean(allv)), "min_iou": float(np.min(allv)),
               "per_object_mean": {o: float(np.mean(v)) for o, v in ious.items()}, "resize": args.resize}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "ious": ious}, f, indent=1)


if __name__ == "__main__":
    main()
