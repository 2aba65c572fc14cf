"""Compare vidtrack's SAM 2.1 masks with masks saved from Meta's official predictor.

The official side is not part of this repository (run facebookresearch/sam2 yourself on the same
checkpoint and prompts, and save per-object boolean masks as ``masks_obj<ID>`` arrays of shape [N, H, W]
in an .npz, frame i = i-th frame of the folder). This script runs vidtrack on the same checkpoint, frames and
prompt with Meta's frame resizing (``resize="official"``), and prints per-frame IoU.

    python scripts/parity_sam2.py --checkpoint sam2.1_hiera_tiny.pt --frames DAVIS/JPEGImages/480p/car-shadow \\
        --mask DAVIS/Annotations/480p/car-shadow/00000.png --official official.npz

SAM2Long: ``--model sam2long-tiny --offline`` runs ``track_video`` (the best pathway traced back after the last
frame, what the official predictor returns); without ``--offline`` the online (streamed) masks are compared.
``--policy-option key=value`` overrides policy options (e.g. ``preset=official``). When the official .npz
holds the tree decisions (``parents`` / ``cands`` [N, P], as dumped by the SAM2Long parity runner), the
per-frame (parent pathway, candidate) choices of both sides are compared too (object 1).
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
    ap.add_argument("--max-batch", type=int, default=None, help="objects per memory-attention call (default: engine's)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--offline", action="store_true", help="use track_video (SAM2Long offline back-tracking)")
    ap.add_argument("--policy-option", action="append", default=[], metavar="KEY=VALUE",
                    help="memory-policy option (JSON value, or a plain string)")
    ap.add_argument("--save-ours", help="also save our masks here (.npz, masks_obj<ID> [N, H, W] bool)")
    args = ap.parse_args()

    official = np.load(args.official)
    ids = sorted(int(k.removeprefix("masks_obj")) for k in official.files if k.startswith("masks_obj"))
    n = official[f"masks_obj{ids[0]}"].shape[0]
    prompts = []
    if args.mask:
        prompts += [Prompt.from_mask(0, oid, m) for oid, m in read_mask_png(args.mask).items()]
    if args.box:
        prompts.append(Prompt.from_box(0, args.obj_id, [float(v) for v in args.box.split(",")], fmt="xyxy"))
    options = {}
    for item in args.policy_option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.model.startswith("sam2long"):
        options.setdefault("record_choices", True)
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=args.checkpoint, resize=args.resize,
                         max_batch=args.max_batch,
                         policy_options=options)
    loader = create_tracking_loader(args.model, cfg).load()
    ious: dict[int, list[float]] = {o: [] for o in ids}
    saved: dict[int, list[np.ndarray]] = {o: [] for o in ids}
    metadata = {}
    if args.offline:
        result = loader.track_video(args.frames, prompts, end=n, progress=lambda tf: print(
            "tracked", tf.frame_idx, f"{tf.processing_time:.1f}s", flush=True))
        frames_out = list(result.frames)
        metadata = result.metadata
    else:
        frames_out = loader.stream(args.frames, prompts, end=n)
    for tf in frames_out:
        for o in ids:
            ours = tf.mask_for(o)
            theirs = official[f"masks_obj{o}"][tf.frame_idx]
            saved[o].append(ours.mask if ours is not None else np.zeros_like(theirs))
            ious[o].append(iou(ours.mask if ours is not None else np.zeros_like(theirs), theirs))
        print(tf.frame_idx, " ".join(f"obj{o}: IoU {ious[o][-1]:.5f}" for o in ids), flush=True)
    allv = [v for o in ids for v in ious[o]]
    summary = {"frames": n, "objects": ids, "mean_iou": float(np.mean(allv)), "min_iou": float(np.min(allv)),
               "per_object_mean": {o: float(np.mean(v)) for o, v in ious.items()}, "resize": args.resize,
               "model": args.model, "offline": args.offline, "metadata": metadata}
    session = getattr(loader, "last_session", None)
    state = session.tracks[ids[0]].policy_state if session is not None and ids[0] in session.tracks else None
    if getattr(state, "choices", None):
        ours = {c["frame"]: c for c in state.choices}
        summary["ours_runs"] = {"computed": state.runs, "official_equivalent": state.runs_naive}
        rows = []
        if "parents" in official.files:
            par, cand = official["parents"], official["cands"]
            for f in sorted(ours):
                c = ours[f]
                if c["first"] or f >= par.shape[0]:
                    continue
                theirs = list(zip(par[f].tolist(), cand[f].tolist(), strict=True))
                mine = list(zip(c["parents"], c["candidates"], strict=True))
                rows.append({"frame": f, "ours": mine, "official": theirs, "equal": mine == theirs,
                             "uncertain": c["uncertain"], "distinct_runs": c["distinct_runs"],
                             "scores": c["scores"], "object_logits": c["object_logits"]})
                print(f"frame {f:3d} choices ours {mine} official {theirs} {'==' if mine == theirs else '!='}"
                      f" uncertain={c['uncertain']} distinct_runs={c['distinct_runs']}")
            summary["choices_equal_frames"] = sum(r["equal"] for r in rows)
            summary["choices_compared_frames"] = len(rows)
            summary["frames_with_non_zero_parent"] = sum(any(p != 0 for p, _ in r["ours"]) for r in rows)
            summary["frames_with_distinct_branches"] = sum(len(set(r["ours"])) > 1 for r in rows)
        summary["choices"] = rows or [
            {k: c[k] for k in ("frame", "parents", "candidates", "uncertain", "scores", "object_logits")}
            for c in state.choices]
    print(json.dumps({k: v for k, v in summary.items() if k != "choices"}))
    if args.save_ours:
        np.savez_compressed(args.save_ours, **{f"masks_obj{o}": np.stack(v) for o, v in saved.items()})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "ious": ious}, f, indent=1)


if __name__ == "__main__":
    main()
