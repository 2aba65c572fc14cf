"""Run an official SAMURAI or SAM2Long checkout on CPU in float32 and record what it decides, frame by frame.

Not part of vidtrack and not imported by it: ``scripts/golden/regen.py`` runs this file in a subprocess whose
``PYTHONPATH`` starts with the checkout's package folder, so that checkout's ``sam2`` package shadows the
installed ``sam2==1.1.0`` (both are called ``sam2``). Nothing of the checkout is edited or copied; what we
need to see is recorded by wrapping its methods at run time:

* SAMURAI (yangchris11/samurai, ``configs/samurai/sam2.1_hiera_t.yaml``): ``SAM2Base._forward_sam_heads``
  (predicted IoUs of the three candidates, the chosen one, the object logit, the filter's phase),
  ``KalmanFilter.compute_iou`` (KF IoU of every candidate once the filter is stable), and the
  ``non_cond_frame_outputs`` dict of the inference state (which past frames memory attention reads).
* SAM2Long (Mark12Ding/SAM2Long, ``configs/sam2.1/sam2.1_hiera_t.yaml``): ``SAM2Base.track_step`` (every
  pathway's IoUs and object logit) and ``SAM2VideoPredictor._run_single_frame_inference`` (the kept branches:
  parent pathway, candidate, cumulative score, and the lineages after the last frame).

One run-time change to SAM2Long, needed only below 1024 px: its key modulation (``MemoryAttentionLayer.
_forward_ca``) hard-codes 4096 memory tokens per frame (64 x 64, the 1024 px feature map). The module's source
is read from the checkout, that literal replaced by ``(image_size // 16) ** 2``, and executed in place of the
module before the model is built (the file on disk is untouched). At 1024 px nothing is changed.

Hole filling is off (``fill_hole_area = 0``: the filler is a CUDA extension); the model runs in float32 on
CPU; the checkout's own bfloat16 storage of spatial memories is kept (it is part of the official behaviour).

    PYTHONPATH=/work/official/samurai/sam2 python scripts/golden/run_official.py --method samurai \\
        --checkpoint ckpt.pt --arch arch.json --frames DIR --mask 00000.png --num-frames 24 --out out.json
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

CONFIGS = {"samurai": "configs/samurai/sam2.1_hiera_t.yaml", "sam2long": "configs/sam2.1/sam2.1_hiera_t.yaml"}


def rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def patch_key_modulation(image_size: int) -> bool:
    """Replace SAM2Long's hard-coded 4096 tokens per memory frame by this image size's count (see module doc)."""
    import sam2.modeling.memory_attention as ma

    tokens = (image_size // 16) ** 2
    if tokens == 4096:
        return False
    src = Path(ma.__file__).read_text()
    assert src.count("4096") == 2, "unexpected SAM2Long memory_attention.py: 4096 literal not found twice"
    exec(compile(src.replace("4096", str(tokens)), ma.__file__, "exec"), ma.__dict__)
    return True


def link_frames(frames: Path, n: int) -> tempfile.TemporaryDirectory[str]:
    """The official loader reads every JPEG of a folder: give it a folder with the first ``n`` frames."""
    tmp = tempfile.TemporaryDirectory()
    names = sorted(p.name for p in frames.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    for name in names:
        os.symlink(frames / name, Path(tmp.name) / name)
    return tmp


def build(method: str, checkpoint: str, overrides: list[str]) -> Any:
    from sam2.build_sam import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(CONFIGS[method], checkpoint, device="cpu",
                                           hydra_overrides_extra=overrides, apply_postprocessing=True)
    predictor.fill_hole_area = 0
    return predictor


class LoggingDict(dict):
    """The inference state's ``non_cond_frame_outputs``: records which frames ``.get`` reads while logging."""

    log: list[int] | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        if self.log is not None and key in self:
            self.log.append(int(key))
        return super().get(key, default)


def run_samurai(predictor: Any, video: str, mask: np.ndarray) -> dict[str, Any]:
    model = predictor
    rows: dict[int, dict[str, Any]] = {}
    current: dict[str, Any] = {}
    orig_heads = model._forward_sam_heads
    orig_kf_iou = model.kf.compute_iou
    orig_prepare = model._prepare_memory_conditioned_features

    def kf_iou(pred_bbox: Any, bboxes: Any) -> Any:
        out = orig_kf_iou(pred_bbox, bboxes)
        current["kf_ious"] = [float(v) for v in out]
        current["kf_box"] = [float(v) for v in model.kf.xyah_to_xyxy(pred_bbox)]
        current["boxes"] = [[float(v) for v in b] for b in bboxes]
        return out

    def heads(*args: Any, **kwargs: Any) -> Any:
        stable_before = model.stable_frames
        out = orig_heads(*args, **kwargs)
        multi, _, ious, low, _, _, logits, _, kf = out
        k = next(j for j in range(multi.shape[1]) if torch.equal(multi[:, j : j + 1], low))
        current.update({"ious": [float(v) for v in ious[0]], "chosen": k, "object_score": float(logits.item()),
                        "stable_before": int(stable_before), "stable_after": int(model.stable_frames),
                        "kf_score": None if kf is None else float(kf), "multimask": int(multi.shape[1]) > 1})
        return out

    def prepare(*args: Any, **kwargs: Any) -> Any:
        frame_idx = kwargs.get("frame_idx", args[0] if args else None)
        store.log = []
        try:
            return orig_prepare(*args, **kwargs)
        finally:
            # spatial memories are read first, oldest first, ending with frame t-1; object pointers follow
            log, prev = store.log or [], int(frame_idx) - 1  # type: ignore[arg-type]
            current["memory_frames"] = log[: log.index(prev) + 1] if prev in log else []
            current["frame"] = int(frame_idx)  # type: ignore[arg-type]
            store.log = None

    model._forward_sam_heads = heads
    model.kf.compute_iou = kf_iou
    model._prepare_memory_conditioned_features = prepare

    state = predictor.init_state(video_path=video)
    store = LoggingDict()
    state["output_dict"]["non_cond_frame_outputs"] = store
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
    masks: dict[int, np.ndarray] = {}
    orig_run = predictor._run_single_frame_inference

    def run_frame(*args: Any, **kwargs: Any) -> Any:
        current.clear()
        out = orig_run(*args, **kwargs)
        if not kwargs.get("is_init_cond_frame", False) and kwargs.get("mask_inputs") is None:
            rows[int(kwargs["frame_idx"])] = dict(current)
        return out

    predictor._run_single_frame_inference = run_frame
    for f, _ids, logits in predictor.propagate_in_video(state):
        masks[int(f)] = (logits[0, 0] > 0).numpy()
    frames = []
    for f in sorted(masks):
        r = rows.get(f, {})
        frames.append({"frame": f, "mask": rle(masks[f]), **{k: v for k, v in r.items() if k != "frame"}})
    return {"frames": frames}


def run_sam2long(predictor: Any, video: str, mask: np.ndarray, num_pathway: int, iou_thre: float,
                 uncertainty: float) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    orig_track = predictor.track_step
    orig_run = predictor._run_single_frame_inference

    def track_step(*args: Any, **kwargs: Any) -> Any:
        out = orig_track(*args, **kwargs)
        runs.append(out)
        return out

    def run_frame(*args: Any, **kwargs: Any) -> Any:
        runs.clear()
        out = orig_run(*args, **kwargs)
        frame = int(kwargs["frame_idx"])
        compact, _, picks = out
        if kwargs.get("is_init_cond_frame", False) or kwargs.get("mask_inputs") is not None:
            return out
        start = int(kwargs["start_frame_idx"])
        row: dict[str, Any] = {"frame": frame, "runs": [{"ious": [float(v) for v in r["ious"].reshape(-1)],
                                                         "object_score": float(r["object_score_logits"].item()),
                                                         "areas": [round(float((m > 0).float().mean()), 4)
                                                                   for m in r["pred_masks"][0]]}
                                                        for r in runs]}
        if frame == start + 1:
            row["first"] = True
        else:
            row["first"] = False
            parents, cands = [], []
            for q in range(num_pathway):
                p = int(picks[q][frame - 1])
                r = runs[p]
                mine = compact["pred_masks"][..., q]
                j = next(j for j in range(3) if torch.equal(r["pred_masks"][:, j : j + 1].to(mine.dtype), mine)
                         and float(r["ious"][0, j]) == float(compact["ious"][..., q]))
                parents.append(p)
                cands.append(j)
            row["parents"] = parents
            row["candidates"] = cands
            row["scores"] = [float(s) for s in compact["acc_score"]]
            kept = [compact["pred_masks"][..., q] for q in range(num_pathway)]
            row["distinct_masks"] = len({min(i for i in range(q + 1) if torch.equal(kept[i], kept[q]))
                                         for q in range(num_pathway)})
            row["uncertain"] = max(abs(r["object_score"]) for r in row["runs"]) <= uncertainty
            row["greedy_mask"] = rle((predictor._get_orig_video_res_output(
                state, compact["pred_masks"][..., 0])[1][0, 0] > 0).numpy())
        rows.append(row)
        lineage[0] = picks
        return out

    predictor.track_step = track_step
    predictor._run_single_frame_inference = run_frame
    lineage: list[Any] = [None]
    state = predictor.init_state(video_path=video)
    state["num_pathway"], state["iou_thre"], state["uncertainty"] = num_pathway, iou_thre, uncertainty
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
    _ids, out_masks = predictor.propagate_in_video(state)
    best = {int(k): int(v) for k, v in lineage[0][0].items()}
    frames = [{"frame": i, "mask": rle((m[0, 0] > 0).numpy()), "best_lineage_slot": best.get(i)}
              for i, m in enumerate(out_masks)]
    return {"frames": frames, "tree": rows, "lineages": [{str(k): int(v) for k, v in d.items()} for d in lineage[0]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=sorted(CONFIGS))
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--override", action="append", default=[], help="hydra override for the architecture")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--mask", required=True, help="mask PNG on frame 0 (non-zero = object 1)")
    ap.add_argument("--num-frames", type=int, required=True)
    ap.add_argument("--num-pathway", type=int, default=3)
    ap.add_argument("--iou-thre", type=float, default=0.3)
    ap.add_argument("--uncertainty", type=float, default=2.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import sam2

    patched = args.method == "sam2long" and patch_key_modulation(args.image_size)
    predictor = build(args.method, args.checkpoint, args.override)
    mask = np.array(Image.open(args.mask)) > 0
    tmp = link_frames(Path(args.frames), args.num_frames)
    with torch.inference_mode():
        if args.method == "samurai":
            out = run_samurai(predictor, tmp.name, mask)
        else:
            out = run_sam2long(predictor, tmp.name, mask, args.num_pathway, args.iou_thre, args.uncertainty)
    out["official_package"] = str(Path(sam2.__file__).parent)
    out["key_modulation_patched_tokens"] = (args.image_size // 16) ** 2 if patched else None
    Path(args.out).write_text(json.dumps(out))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
