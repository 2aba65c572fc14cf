"""Compare vidtrack's SAMURAI / SAM2Long with an official run recorded by ``run_official.py`` (hand-runs).

The tests do this on the committed goldens; this script does it on any recorded run, e.g. the 1024 px
hand-run on the full hiera-tiny architecture (docs/PARITY.md):

    python scripts/golden/compare_vidtrack.py --method samurai --official samurai_1024.json \\
        --checkpoint tiny1024_calibrated.pt --frames DAVIS/JPEGImages/480p/car-shadow \\
        --mask DAVIS/Annotations/480p/car-shadow/00000.png --num-frames 24 --vanilla

The checkpoint's yaml must lie beside it (vidtrack reads the architecture from the weights and that yaml).
Prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from golden import support
from vidtrack import Prompt


def samurai_figures(off: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    tracked = [f for f in off["frames"] if "ious" in f]
    kf_driven = [f["frame"] for f in tracked if f["multimask"] and f["stable_before"] >= 15
                 and f["chosen"] != int(np.argmax(f["ious"]))]
    refused = [f["frame"] for f in tracked if f["frame"] >= 2 and not (
        f["ious"][f["chosen"]] > 0.5 and f["object_score"] > 0 and (f["kf_score"] is None or f["kf_score"] > 0))]
    ours_refused = sorted(f for f, ok in ours["admitted"].items() if f >= 2 and not ok)
    kf = [abs(ours["kf"][f["frame"]] - f["kf_score"]) for f in tracked if f["kf_score"] is not None]
    return {"tracked_frames": len(tracked), "kf_phase_frames": sum(f["stable_before"] >= 15 for f in tracked),
            "kf_driven_frames": kf_driven,
            "chosen_equal": sum(ours["chosen"].get(f["frame"]) == f["chosen"] for f in tracked),
            "memory_equal": sum(ours["memory"].get(f["frame"]) == f["memory_frames"] for f in tracked),
            "refused_official": refused, "refused_equal": refused == ours_refused,
            "kf_score_max_abs_diff": max(kf) if kf else None}


def sam2long_figures(off: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    tree = {r["frame"]: r for r in off["tree"] if not r["first"]}
    mine = {c["frame"]: c for c in ours["choices"] if not c["first"]}
    equal = [f for f in tree if f in mine and list(zip(mine[f]["parents"], mine[f]["candidates"], strict=True))
             == list(zip(tree[f]["parents"], tree[f]["candidates"], strict=True))]
    diffs = [abs(a - b) for f in equal for a, b in zip(mine[f]["scores"], tree[f]["scores"], strict=True)]
    out = {f["frame"]: f for f in off["frames"]}
    back = [f for f, r in tree.items() if out[f]["best_lineage_slot"] != 0
            and support.iou(support.decode(out[f]["mask"]), support.decode(r["greedy_mask"])) < 1.0]
    return {"tree_frames": len(tree), "choices_equal": len(equal),
            "choices_differ": sorted(set(tree) - set(equal)),
            "diverging_frames": sum(r["distinct_masks"] > 1 for r in tree.values()),
            "uncertain_frames": sum(r["uncertain"] for r in tree.values()),
            "backtracking_changed_frames": back, "score_max_abs_diff": max(diffs) if diffs else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=["samurai", "sam2long"])
    ap.add_argument("--official", required=True, type=Path, help="JSON written by run_official.py")
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--frames", required=True, type=Path)
    ap.add_argument("--mask", required=True, type=Path)
    ap.add_argument("--num-frames", required=True, type=int)
    ap.add_argument("--vanilla", action="store_true", help="also run plain SAM 2.1 and report its mean IoU")
    args = ap.parse_args()
    for p in (args.official, args.checkpoint, args.mask):
        if not p.is_file():
            print(f"error: {p} not found", file=sys.stderr)
            sys.exit(2)
    off = json.loads(args.official.read_text())
    prompts = [Prompt.from_mask(0, 1, np.asarray(Image.open(args.mask)) > 0)]
    run = support.run_samurai if args.method == "samurai" else support.run_sam2long
    ours = run(f"{args.method}-tiny", args.checkpoint, args.frames, prompts, args.num_frames)
    ious = support.mask_ious(off, ours["masks"])
    fig: dict[str, Any] = {"method": args.method, "frames": len(ious), "mean_iou": float(ious.mean()),
                           "min_iou": float(ious.min()), "argmin": int(ious.argmin())}
    fig.update(samurai_figures(off, ours) if args.method == "samurai" else sam2long_figures(off, ours))
    if args.vanilla:
        van = support.run_sam2long("sam2.1-tiny", args.checkpoint, args.frames, prompts, args.num_frames)
        v = support.mask_ious(off, van["masks"])
        fig["vanilla_mean_iou"], fig["vanilla_min_iou"] = float(v.mean()), float(v.min())
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
