"""Run Meta's SAM 3 tracker predictor (``sam3==0.1.4``, facebookresearch/sam3) on the CPU and record its masks.

Not part of vidtrack and not imported by it. ``sam3`` pins ``numpy<2`` and pulls the detector's dependencies,
so it is installed beside the project, not into its environment::

    pip install --target /work/official/pydeps_sam3 --no-deps sam3==0.1.4 timm ftfy==6.1.1 einops wcwidth
    PYTHONPATH=/work/official/pydeps_sam3 python scripts/golden/sam3_tracker_official.py --out tests/golden/...

What runs: ``Sam3TrackerPredictor`` as ``sam3.model_builder.build_tracker`` configures it (every constructor
argument the same: 1008 px, 7 memories, ``max_cond_frames_in_attn`` 4, multimask tracking, dynamic multimask
via stability, ``clear_non_cond_mem_around_input``), with its own vision backbone (``with_backbone=True``:
ViT + the tracker's ``sam2_convs`` neck), reduced as ``tests/golden/sam3_tracker_checkpoint.py`` describes, on
that file's calibrated checkpoint converted to Meta's layout. Frames: the official JPEG loader (PIL resize to
1008) with SAM 3's mean/std 0.5 (what ``Sam3VideoInference`` passes; the tracker-only ``init_state`` would use
ImageNet's), given to the predictor's state.

CPU run: the predictor hard-codes ``.cuda()`` / ``pin_memory()`` on tensors and a CUDA bfloat16 autocast; the
first two are made no-ops for this process (values unchanged), autocast disables itself without CUDA, and the
sine position encodings are built without their CUDA pre-computation (the same values, computed on first use).
The installed files are never edited.

Each case: prompts added on frame 0 (``add_new_mask`` / ``add_new_points_or_box``), then one
``propagate_in_video(start 0, preflight)``; per object and frame the video-resolution mask (``> 0``) and the
object-score logit are recorded. ``--chaos`` also runs each case with a 1e-6 perturbation of frame 1's features
and with frame t-1 hidden from frame t's memory, and prints the IoUs (the checkpoint's non-chaos evidence).
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "golden"))
sys.path.insert(0, str(ROOT / "src"))

torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign,assignment]  # CPU run (see above)
torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign,assignment]

JUDO = Path(os.environ.get("VIDTRACK_DATA", ROOT.parent / "shared" / "data")) / "cutie_judo"
BOX2 = (620.0, 75.0, 700.0, 245.0)


def build_official(vit_hidden: int, vit_layers: int, global_blocks: tuple[int, ...], mem_layers: int,
                   image_size: int) -> Any:
    """``build_tracker(with_backbone=True)`` with the reduced ViT and memory-attention depth."""
    from sam3 import model_builder as mb
    from sam3.model.memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.model.vitdet import ViT
    from sam3.model.vl_combiner import SAM3VLBackbone

    vit = ViT(img_size=image_size, pretrain_img_size=336, patch_size=14, embed_dim=vit_hidden, depth=vit_layers,
              num_heads=max(vit_hidden // 64, 1), mlp_ratio=4.625, norm_layer="LayerNorm", drop_path_rate=0.0,
              qkv_bias=True, use_abs_pos=True, tile_abs_pos=True, global_att_blocks=global_blocks,
              rel_pos_blocks=(), use_rope=True, use_interp_rope=True, window_size=24, pretrain_use_cls_token=True,
              retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
              bias_patch_embed=False, compile_mode=None, use_act_checkpoint=False)
    neck = Sam3DualViTDetNeck(position_encoding=mb._create_position_encoding(precompute_resolution=None),
                              d_model=256, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=vit, add_sam2_neck=True)
    transformer = mb._create_tracker_transformer()
    transformer.encoder.layers = transformer.encoder.layers[:mem_layers]
    transformer.encoder.num_layers = mem_layers
    pe = PositionEmbeddingSine(num_pos_feats=64, normalize=True, scale=None, temperature=10000,
                               precompute_resolution=None)
    maskmem = SimpleMaskEncoder(
        out_dim=64, position_encoding=pe,
        mask_downsampler=SimpleMaskDownSampler(kernel_size=3, stride=2, padding=1, interpol_size=[1152, 1152]),
        fuser=SimpleFuser(layer=CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1.0e-06,
                                        use_dwconv=True), num_layers=2))
    model = Sam3TrackerPredictor(
        image_size=image_size, num_maskmem=7, backbone=SAM3VLBackbone(scalp=1, visual=neck, text=None),
        backbone_stride=14, transformer=transformer, maskmem_backbone=maskmem, multimask_output_in_sam=True,
        forward_backbone_per_frame_for_eval=True, trim_past_non_cond_mem_for_eval=False,
        multimask_output_for_tracking=True, multimask_min_pt_num=0, multimask_max_pt_num=1,
        always_start_from_first_ann_frame=False, non_overlap_masks_for_mem_enc=False,
        non_overlap_masks_for_output=False, max_cond_frames_in_attn=4, offload_output_to_cpu_for_eval=False,
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True,
                                     "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98},
        clear_non_cond_mem_around_input=True, fill_hole_area=0, use_memory_selection=False)
    return model.eval()


def official_model(seed: int, keys_out: Path | None) -> Any:
    import sam3_tracker_checkpoint as ck

    cfg = ck.config()
    bb = cfg.vision_config.backbone_config
    model = build_official(bb.hidden_size, bb.num_hidden_layers, tuple(bb.global_attn_indexes),
                           ck.MEMORY_ATTENTION_LAYERS, ck.IMAGE_SIZE)
    own = model.state_dict()
    keys = {k: list(v.shape) for k, v in own.items()}
    if keys_out is not None:
        keys_out.write_text(json.dumps(keys, indent=0) + "\n")
    sd = ck.to_meta_state_dict(ck.calibrated_state_dict(seed), keys)
    sd.update({k: v for k, v in own.items() if k.endswith("attn.freqs_cis")})
    model.load_state_dict(sd, strict=True)
    return model


def judo_prompts(kind: str) -> list[tuple[int, dict[str, Any]]]:
    from PIL import Image

    m1 = np.array(Image.open(JUDO / "prompts" / "00000.png")) == 1
    ys, xs = np.nonzero(m1)
    box1 = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    if kind == "mask":
        m2 = np.zeros_like(m1)
        x1, y1, x2, y2 = (int(v) for v in BOX2)
        m2[y1:y2, x1:x2] = True
        return [(1, {"mask": m1}), (2, {"mask": m2})]
    return [(1, {"box": box1}), (2, {"box": BOX2})]


def load_frames(folder: Path, n: int, image_size: int) -> tuple[torch.Tensor, int, int]:
    from sam3.model.utils.sam2_utils import load_video_frames_from_jpg_images

    with tempfile.TemporaryDirectory() as tmp:
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".jpg")[:n]
        for i, name in enumerate(names):
            os.symlink(folder / name, Path(tmp) / f"{i:05d}.jpg")
        images, h, w = load_video_frames_from_jpg_images(tmp, image_size, offload_video_to_cpu=True,
                                                         img_mean=(0.5, 0.5, 0.5), img_std=(0.5, 0.5, 0.5),
                                                         compute_device=torch.device("cpu"))
    return images, h, w


def run(model: Any, images: torch.Tensor, h: int, w: int, prompts: list[tuple[int, dict[str, Any]]],
        perturb: float = 0.0, drop_previous: bool = False) -> dict[str, Any]:
    n = images.shape[0]
    state = model.init_state(video_height=h, video_width=w, num_frames=n)
    state["images"] = images
    state["storage_device"] = torch.device("cpu")
    state["device"] = torch.device("cpu")
    orig_feat = model._get_image_feature
    orig_mem = model._prepare_memory_conditioned_features

    def feat(st: Any, frame_idx: int, batch_size: int) -> Any:
        out = orig_feat(st, frame_idx, batch_size)
        if perturb and frame_idx == 1:
            g = torch.Generator().manual_seed(1234)
            out = (out[0], out[1], [x + perturb * torch.randn(x.shape, generator=g) for x in out[2]], out[3], out[4])
        return out

    def mem(*args: Any, **kw: Any) -> Any:
        od, t = kw["output_dict"], kw["frame_idx"]
        hidden = od["non_cond_frame_outputs"].pop(t - 1, None) if drop_previous else None
        try:
            return orig_mem(*args, **kw)
        finally:
            if hidden is not None:
                od["non_cond_frame_outputs"][t - 1] = hidden

    model._get_image_feature = feat
    model._prepare_memory_conditioned_features = mem
    try:
        with torch.inference_mode():
            for obj_id, p in prompts:
                if "mask" in p:
                    model.add_new_mask(state, 0, obj_id, torch.from_numpy(p["mask"]))
                else:
                    x1, y1, x2, y2 = p["box"]
                    box = torch.tensor([x1 / w, y1 / h, x2 / w, y2 / h], dtype=torch.float32)
                    model.add_new_points_or_box(state, 0, obj_id, box=box)
            masks = {o: np.zeros((n, h, w), bool) for o, _ in prompts}
            logits = {o: [float("nan")] * n for o, _ in prompts}
            for f, obj_ids, _, video_masks, scores in model.propagate_in_video(
                    state, start_frame_idx=0, max_frame_num_to_track=n, reverse=False, tqdm_disable=True,
                    propagate_preflight=True):
                for i, o in enumerate(obj_ids):
                    masks[o][f] = (video_masks[i, 0] > 0).numpy()
                    logits[o][f] = float(scores[i].flatten()[0])
    finally:
        del model._get_image_feature, model._prepare_memory_conditioned_features
    return {"masks": masks, "logits": logits}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def rle(mask: np.ndarray) -> dict[str, Any]:
    from vidtrack.types import rle_encode

    return rle_encode(mask)  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-frames", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default="mask,box")
    ap.add_argument("--out", type=Path, help="golden JSON to write")
    ap.add_argument("--keys-out", type=Path, help="write the official key list (tests/fixtures/...)")
    ap.add_argument("--chaos", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import sam3_tracker_checkpoint as ck

    model = official_model(args.seed, args.keys_out)
    images, h, w = load_frames(JUDO / "JPEGImages", args.num_frames, ck.IMAGE_SIZE)
    record: dict[str, Any] = {
        "source": "sam3==0.1.4 Sam3TrackerPredictor (facebookresearch/sam3), CPU float32",
        "checkpoint": {"seed": args.seed, "digest": ck.state_digest(ck.calibrated_state_dict(args.seed)),
                       "gains": ck.calibration_gains(), "memory_attention_layers": ck.MEMORY_ATTENTION_LAYERS},
        "clip": "cutie_judo", "num_frames": args.num_frames, "height": h, "width": w, "box2": list(BOX2),
        "cases": {},
    }
    for case in args.cases.split(","):
        prompts = judo_prompts(case)
        out = run(model, images, h, w, prompts)
        record["cases"][case] = {
            str(o): {"masks": [rle(m) for m in out["masks"][o]], "object_logits": out["logits"][o]}
            for o in out["masks"]}
        areas = {o: [round(float(m.mean()), 3) for m in out["masks"][o]] for o in out["masks"]}
        print(case, "area fraction per frame", areas, flush=True)
        if args.chaos:
            for label, kw in (("perturbed 1e-6", {"perturb": 1e-6}), ("t-1 dropped", {"drop_previous": True})):
                alt = run(model, images, h, w, prompts, **kw)
                ious = [iou(out["masks"][o][f], alt["masks"][o][f]) for o in out["masks"]
                        for f in range(1, args.num_frames)]
                print(f"{case} {label}: mean IoU {np.mean(ious):.6f} min {np.min(ious):.6f}", flush=True)
    if args.out is not None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
