"""Record facebookresearch/EdgeTAM's video predictor on the calibrated random EdgeTAM (tests/golden/edgetam_*.json).

EdgeTAM's official code is not on the package index, so its outputs are committed as goldens and this script
regenerates them. It is not part of vidtrack and imports nothing of the checkout into the repository: run it
with ``PYTHONPATH`` starting with the checkout's root, so the checkout's ``sam2`` package shadows the installed
``sam2==1.1.0`` (EdgeTAM is a fork that keeps the package name)::

    PYTHONPATH=/work/official/EdgeTAM OMP_NUM_THREADS=1 python scripts/golden/edgetam_official.py \\
        --frames ../shared/data/davis2016/JPEGImages/480p/car-shadow --num-frames 16 --chaos

What it does:

1. rebuilds the calibrated checkpoint from its seed in the official layout (tests/golden/edgetam_checkpoint.py),
   saves it as ``edgetam.pt`` in a temporary folder and builds the official predictor on it
   (``build_sam2_video_predictor("configs/edgetam.yaml", ckpt)``: the predictor's post-processing overrides
   on, the checkpoint loaded strictly by the official loader). The official trunk is built by
   ``timm.create_model(..., pretrained=True)``; the call is made with ``pretrained=False`` (no download: every
   weight comes from the checkpoint right after). Hole filling is off (a CUDA extension), float32 on CPU.
   The official ``PerceiverResampler.forward_2d`` fails for a batch of more than one memory (``expand`` then
   ``view`` of its window latents), which the predictor's preflight builds when two objects are prompted on
   one frame; the instance's ``spatial_perceiver.forward`` is wrapped to run one object at a time (each
   object's latents depend on its own memory map only, so the values are those of a working batch).
2. runs each case (:func:`run`: prompts, then ``propagate_in_video``; the official bfloat16 memory storage
   kept) and, with ``--chaos``, the non-chaos check (1e-6 on frame 1's features; frame t-1 dropped from t's
   memory);
3. writes one JSON per case: the prompts, per frame and object the official mask (COCO RLE), the checkpoint's
   seed and digest, and the chaos figures.

Cases: two objects on frame 0 of the clip, (a) ``mask``: the DAVIS ground-truth mask of the car and a mask of
the road region below it; (b) ``box``: their bounding boxes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "parity"), str(ROOT / "tests" / "golden")]


def rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def second_object(shape: tuple[int, int]) -> np.ndarray:
    """Object 2: a fixed region of the road in the lower left of the frame (rows 70-95 %, columns 5-40 %)."""
    h, w = shape
    m = np.zeros((h, w), bool)
    m[int(0.70 * h): int(0.95 * h), int(0.05 * w): int(0.40 * w)] = True
    return m


def cases(frames: Path, gt_dir: Path) -> dict[str, list[Any]]:
    import calibration as cal

    first = sorted(p for p in frames.iterdir() if p.suffix == ".jpg")[0]
    car = np.asarray(Image.open(gt_dir / (first.stem + ".png"))) > 0
    road = second_object(car.shape)
    return {
        "mask": [cal.OfficialPrompt(0, 1, mask=car), cal.OfficialPrompt(0, 2, mask=road)],
        "box": [cal.OfficialPrompt(0, 1, box=tuple(bbox(car))),  # type: ignore[arg-type]
                cal.OfficialPrompt(0, 2, box=tuple(bbox(road)))],  # type: ignore[arg-type]
    }


def build_official(checkpoint: Path) -> Any:
    import sam2
    import timm.models

    if "EdgeTAM" not in str(Path(sam2.__file__).resolve()):
        raise SystemExit(f"sam2 resolves to {sam2.__file__}, not an EdgeTAM checkout: put the checkout first on "
                         "PYTHONPATH")
    import sam2.modeling.backbones.timm as official_timm
    from sam2.build_sam import build_sam2_video_predictor

    create = timm.models.create_model

    def no_download(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    official_timm.create_model = no_download  # type: ignore[attr-defined]
    pred = build_sam2_video_predictor("configs/edgetam.yaml", str(checkpoint), device="cpu")
    pred.fill_hole_area = 0
    perceive = pred.spatial_perceiver.forward

    def one_object_at_a_time(x: torch.Tensor, pos: torch.Tensor | None = None) -> Any:
        outs = [perceive(x[i : i + 1], None if pos is None else pos[i : i + 1]) for i in range(x.size(0))]
        return torch.cat([o[0] for o in outs]), None if outs[0][1] is None else torch.cat([o[1] for o in outs])

    pred.spatial_perceiver.forward = one_object_at_a_time
    return pred.eval()


def run(pred: Any, frames: Path, n: int, prompts: list[Any], *, perturb: float = 0.0,
        drop_previous_memory: bool = False) -> dict[int, np.ndarray]:
    """The official predictor on the first ``n`` frames: prompts added, then one ``propagate_in_video``; masks
    per object (n, H, W). EdgeTAM's predictor is the SAM 2.0 one (every object in one batch, one output dict),
    so ``calibration.run_official`` (written for the per-object 1.1 predictor) does not apply; the same two
    checks are made here by wrapping this instance's methods: ``perturb`` adds ``perturb * N(0, 1)`` (seeded)
    to frame 1's image features, ``drop_previous_memory`` hides frame t-1 from frame t's memory."""
    import calibration as cal

    def wrap_features(orig: Any) -> Any:
        def f(inference_state: Any, frame_idx: int, batch_size: int) -> Any:
            out = orig(inference_state, frame_idx, batch_size)
            if not perturb or frame_idx != 1:
                return out
            g = torch.Generator().manual_seed(1234)
            feats = [x + perturb * torch.randn(x.shape, generator=g).to(x) for x in out[2]]
            return (out[0], out[1], feats, out[3], out[4])
        return f

    def wrap_memory(orig: Any) -> Any:
        def f(*a: Any, **kw: Any) -> Any:
            od, t = kw["output_dict"], kw["frame_idx"]
            hidden = od["non_cond_frame_outputs"].pop(t - 1, None) if drop_previous_memory else None
            try:
                return orig(*a, **kw)
            finally:
                if hidden is not None:
                    od["non_cond_frame_outputs"][t - 1] = hidden
        return f

    import contextlib
    stack = contextlib.ExitStack()
    with stack, cal.frame_folder(frames, n) as folder, torch.inference_mode():
        stack.enter_context(cal._wrapped(pred, "_get_image_feature", wrap_features))
        stack.enter_context(cal._wrapped(pred, "_prepare_memory_conditioned_features", wrap_memory))
        state = pred.init_state(str(folder))
        h, w = state["video_height"], state["video_width"]
        for p in prompts:
            if p.mask is not None:
                pred.add_new_mask(state, p.frame_idx, p.obj_id, p.mask)
            else:
                pred.add_new_points_or_box(state, p.frame_idx, p.obj_id, box=np.asarray(p.box, np.float32))
        masks = {p.obj_id: np.zeros((n, h, w), bool) for p in prompts}
        for f, obj_ids, video_masks in pred.propagate_in_video(state):
            for i, o in enumerate(obj_ids):
                masks[o][f] = (video_masks[i, 0] > 0).cpu().numpy()
    return masks


def chaos(pred: Any, frames: Path, n: int, prompts: list[Any], base: dict[int, np.ndarray]) -> dict[str, Any]:
    import calibration as cal

    pert = run(pred, frames, n, prompts, perturb=1e-6)
    drop = run(pred, frames, n, prompts, drop_previous_memory=True)
    pi = np.concatenate([cal.per_frame_iou(base[o], pert[o]) for o in base])
    di = np.concatenate([cal.per_frame_iou(base[o], drop[o]) for o in base])
    return {"perturbed_min_iou": float(pi.min()), "dropped_mean_iou": float(di.mean()),
            "dropped_min_iou": float(di.min()),
            "ok": bool(pi.min() >= 0.9999 and di.min() < 0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, required=True, help="a DAVIS JPEGImages/480p/<sequence> folder")
    ap.add_argument("--num-frames", type=int, default=16)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "golden")
    ap.add_argument("--chaos", action="store_true", help="also run the non-chaos check (3 more runs per case)")
    ap.add_argument("--cases", default="mask,box")
    args = ap.parse_args()
    import edgetam_checkpoint as ec

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    frames = args.frames.resolve()
    gt_dir = Path(str(frames).replace("JPEGImages", "Annotations"))
    sd = ec.official_state_dict()
    digest = ec.state_digest(sd)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "edgetam.pt"
        torch.save({"model": sd}, ckpt)
        pred = build_official(ckpt)
    all_cases = cases(frames, gt_dir)
    for name in args.cases.split(","):
        prompts = all_cases[name]
        masks = run(pred, frames, args.num_frames, prompts)
        report = chaos(pred, frames, args.num_frames, prompts, masks) if args.chaos else None
        sequence = frames.name
        out = {
            "what": "facebookresearch/EdgeTAM SAM2VideoPredictor on the calibrated random EdgeTAM, CPU float32",
            "official_commit": "9cc44bf",
            "checkpoint": {"seed": ec.SEED, "trunk_gain": ec.TRUNK_GAIN, "gains": ec.calibration_gains(),
                           "state_digest": digest, "image_size": ec.IMAGE_SIZE},
            "clip": {"sequence": sequence, "frames": f"davis2016/JPEGImages/480p/{sequence}",
                     "num_frames": args.num_frames},
            "prompts": [
                {"frame": p.frame_idx, "obj_id": p.obj_id,
                 **({"mask": rle(p.mask)} if p.mask is not None else {"box": list(p.box)})}
                for p in prompts
            ],
            "objects": {str(o): [rle(masks[o][f]) for f in range(args.num_frames)] for o in sorted(masks)},
            "chaos": report,
        }
        path = args.out_dir / f"edgetam_{sequence}_{name}.json"
        tmp_path = path.with_name(path.name + ".tmp")
        tmp_path.write_text(json.dumps(out) + "\n")
        tmp_path.replace(path)
        areas = [float(masks[o][f].mean()) for o in masks for f in range(args.num_frames)]
        print(f"{path.name}: areas {min(areas):.3f}-{max(areas):.3f}, chaos {report}", flush=True)


if __name__ == "__main__":
    main()
