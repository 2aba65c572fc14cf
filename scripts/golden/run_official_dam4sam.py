"""Run an official DAM4SAM checkout (jovanavidenovic/DAM4SAM) on CPU in float32 and record what it decides.

Not part of vidtrack and not imported by it: ``scripts/golden/regen_dam4sam.py`` runs this file in a subprocess
whose ``PYTHONPATH`` starts with the checkout's root folder, so its ``sam2`` package shadows the installed
``sam2==1.1.0`` and its ``dam4sam_tracker`` / ``utils`` import; the tracker's extra dependency (vot-toolkit,
for ``Mask`` boxes and ``calculate_overlaps``) lives in a folder given on the same ``PYTHONPATH``.

The tracker is driven exactly as ``run_bbox_example.py`` drives it: ``DAM4SAMTracker.initialize(frame 0,
None, bbox=[x, y, w, h])`` (the box becomes a mask through ``estimate_mask_from_box``), then
``DAM4SAMTracker.track(frame)`` for every later frame. Nothing of the checkout is edited or copied; run-time
changes, all needed to run it on a CPU-only machine or at another input size:

* ``dam4sam_tracker.py`` hard-codes CUDA (``torch.device("cuda")``, ``device="cuda:0"``) and
  ``_modeling/sam2_base.py`` moves memories with ``.cuda()``: the tracker module's source is read, those two
  literals replaced by ``"cpu"``, and executed in place of the module (the file on disk is untouched);
  ``torch.Tensor.cuda`` returns the tensor itself.
* the tracker is built on our checkpoint and its composed ``sam21pp_hiera_t.yaml`` plus the architecture's
  overrides (``determine_tracker`` knows only the released file names), and ``input_image_size`` (hard-coded
  1024 in ``__init__``) is set to the model's image size so that below 1024 px the frame fits the model.
* hole filling is off (``fill_hole_area = 0``: the filler is a CUDA extension).

What is recorded, per frame, by wrapping methods at run time: the output mask (COCO RLE, video resolution),
the predicted IoUs of the three candidates and the object logit (``track_step``), the memory frames memory
attention reads, split into DRM (the selected conditioning frames, ``select_closest_cond_frames``) and RAM
(the others; logged through ``maskmem_features.cuda()``, called once per frame read, in order), the object
pointers' temporal distances (``get_1d_sine_pe`` input times ``t_diff_max``), and whether the frame was added
to DRM (``SAM2VideoPredictor.add_to_drm``).

    PYTHONPATH=/work/official/DAM4SAM:/work/official/pydeps python scripts/golden/run_official_dam4sam.py \\
        --checkpoint ckpt.pt --image-size 256 --frames DIR --box X0 Y0 X1 Y1 --num-frames 40 --out out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def load_tracker_module() -> types.ModuleType:
    """``dam4sam_tracker`` with its CUDA literals replaced by ``"cpu"`` (see the module doc)."""
    import importlib.util

    spec = importlib.util.find_spec("dam4sam_tracker")
    assert spec is not None and spec.origin is not None, "dam4sam_tracker not on PYTHONPATH"
    src = Path(spec.origin).read_text()
    for old in ('torch.device("cuda")', 'device="cuda:0"'):
        assert src.count(old) == 1, f"unexpected dam4sam_tracker.py: {old} not found once"
    src = src.replace('torch.device("cuda")', 'torch.device("cpu")').replace('device="cuda:0"', 'device="cpu"')
    mod = types.ModuleType("dam4sam_tracker")
    mod.__file__ = spec.origin
    sys.modules["dam4sam_tracker"] = mod
    exec(compile(src, spec.origin, "exec"), mod.__dict__)
    return mod


def build_tracker(mod: types.ModuleType, checkpoint: str, overrides: list[str]) -> Any:
    from sam2.build_sam import build_sam2_video_predictor

    tracker = mod.DAM4SAMTracker.__new__(mod.DAM4SAMTracker)
    tracker.checkpoint, tracker.model_cfg = checkpoint, "sam21pp_hiera_t.yaml"
    tracker.predictor = build_sam2_video_predictor(tracker.model_cfg, checkpoint, device="cpu",
                                                   hydra_overrides_extra=overrides)
    tracker.predictor.fill_hole_area = 0
    tracker.input_image_size = tracker.predictor.image_size
    tracker.img_mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32)[:, None, None]
    tracker.img_std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32)[:, None, None]
    tracker.tracking_times = []
    return tracker


def run(tracker: Any, frames: list[Path], box_xyxy: list[float]) -> list[dict[str, Any]]:
    import sam2.modeling.sam2_base as base

    pred = tracker.predictor
    current: dict[str, Any] = {}
    logged: list[torch.Tensor] | None = None
    orig_cuda = torch.Tensor.cuda

    def cuda(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if logged is not None:
            logged.append(self)
        return self

    torch.Tensor.cuda = cuda  # type: ignore[method-assign]
    orig_select = base.select_closest_cond_frames
    orig_pe = base.get_1d_sine_pe
    orig_prepare = pred._prepare_memory_conditioned_features
    orig_track_step = pred.track_step
    orig_add = pred.add_to_drm

    def select(frame_idx: int, cond: Any, max_cond: int) -> Any:
        sel, unsel = orig_select(frame_idx, cond, max_cond)
        current["drm_read"] = [int(t) for t in sel]
        return sel, unsel

    def pe(pos: torch.Tensor, dim: int, *a: Any, **k: Any) -> torch.Tensor:
        current["pe_pos"] = [float(v) for v in pos.flatten()]
        return orig_pe(pos, dim, *a, **k)

    def prepare(*args: Any, **kwargs: Any) -> Any:
        nonlocal logged
        frame_idx = int(kwargs["frame_idx"])
        logged = []
        try:
            return orig_prepare(*args, **kwargs)
        finally:
            od = kwargs["output_dict"]
            where = {id(o["maskmem_features"]): (int(t), key == "cond_frame_outputs")
                     for key in ("cond_frame_outputs", "non_cond_frame_outputs") for t, o in od[key].items()
                     if o.get("maskmem_features") is not None}
            read = [where[id(x)] for x in logged if id(x) in where]
            logged = None
            drm = set(current.get("drm_read", []))
            current["memory_read"] = [t for t, _ in read]
            current["ram_read"] = [t for t, _ in read if t not in drm]
            tmax = min(frame_idx + 1, pred.max_obj_ptrs_in_encoder) - 1  # num_frames = frame_idx + 1 here
            current["pointer_distances"] = [round(p * tmax) for p in current.pop("pe_pos", [])]

    def track_step(*args: Any, **kwargs: Any) -> Any:
        out = orig_track_step(*args, **kwargs)
        if out.get("all_pred_masks") is not None and not kwargs.get("is_init_cond_frame"):
            current["ious"] = [float(v) for v in np.asarray(out["all_pred_masks"][1]).reshape(-1)]
            current["object_score"] = float(out["object_score_logits"].reshape(-1)[0])
        return out

    def add_to_drm(*args: Any, **kwargs: Any) -> Any:
        current["drm_added"] = True
        return orig_add(*args, **kwargs)

    base.select_closest_cond_frames = select
    base.get_1d_sine_pe = pe
    pred._prepare_memory_conditioned_features = prepare
    pred.track_step = track_step
    pred.add_to_drm = add_to_drm
    rows: list[dict[str, Any]] = []
    x0, y0, x1, y1 = box_xyxy
    try:
        for i, path in enumerate(frames):
            current.clear()
            img = Image.open(path).convert("RGB")
            out = tracker.initialize(img, None, bbox=[x0, y0, x1 - x0, y1 - y0]) if i == 0 else tracker.track(img)
            m = np.asarray(out["pred_mask"]).astype(bool)
            row: dict[str, Any] = {"frame": i, "mask": rle(m), "n_pixels": int(m.sum()),
                                   "drm_added": bool(current.get("drm_added", False))}
            for k in ("ious", "object_score", "memory_read", "drm_read", "ram_read", "pointer_distances"):
                if k in current:
                    row[k] = current[k]
            rows.append(row)
            print(f"frame {i}: n={row['n_pixels']} drm_added={row['drm_added']} ram={row.get('ram_read')} "
                  f"drm={row.get('drm_read')}", file=sys.stderr, flush=True)
    finally:
        torch.Tensor.cuda = orig_cuda  # type: ignore[method-assign]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", required=True, type=Path)
    ap.add_argument("--box", required=True, type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    ap.add_argument("--num-frames", required=True, type=int)
    ap.add_argument("--override", action="append", default=[], help="hydra override of the architecture")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    images = (".jpg", ".jpeg", ".png")
    frames = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in images)[: args.num_frames]
    mod = load_tracker_module()
    tracker = build_tracker(mod, args.checkpoint, args.override)
    assert tracker.predictor.image_size == args.image_size, (tracker.predictor.image_size, args.image_size)
    rows = run(tracker, frames, list(args.box))
    import sam2

    out = {"official_package": str(Path(sam2.__file__).parent), "box_xyxy": list(args.box), "frames": rows}
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
