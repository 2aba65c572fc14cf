"""Meta's SAM 2.x video predictor on a calibrated random checkpoint: build, initialise, save, run, record.

Used by the parity tests (``tests/parity``) and by scripts (put ``tests/parity`` on ``sys.path`` and
``import calibration``). Needs the official package (``sam2==1.1.0``, facebookresearch/sam2 @ 2b90b9f), which
is installed beside vidtrack, never copied into it; every architecture change below is a hydra override of a
config shipped inside that package, and every recording hook wraps an official method on one model instance
at run time (the installed files are never edited).

Why calibrate. With plain random weights tracking is chaotic: a rounding-level difference on one frame grows
~30x a frame, so "faithful but rounded differently" cannot be told from "wrong". :func:`calibrate` draws a
seeded random model and rescales a few tensors so that memory matters but small differences die out:

* memory cross-attention: q/k projections x ``QK_GAIN`` (sharper attention: each query reads the memory
  tokens of its own position, so the previous mask is carried forward) and its output projection x
  ``OUT_GAIN`` (the memory read dominates the current frame's features, so the track follows the memory);
* the temporal position encoding of memories (``maskmem_tpos_enc``) x ``TPOS_GAIN`` (which slot a memory sits
  in changes what is read, so a temporal-slot error shows), and the projection of the object pointers'
  temporal encoding (``obj_ptr_tpos_proj``, SAM 2.1) x ``PTR_TPOS_GAIN`` (without it a pointer's temporal
  offset off by one moved the masks by IoU 0.9995 only, under the parity bar);
* the mask decoder's 2x2 transposed convolutions get one tap repeated over the 2x2 block (random taps make a
  checkerboard of isolated pixels, each a rounding-sensitive decision);
* every tensor that the modules initialise to a constant (norm weights/biases, biases, layer scale 1e-6,
  embeddings set to zero) is redrawn, so an error in a key mapping cannot hide behind equal values.

:func:`chaos_check` measures both sides of the claim on real frames (perturbation dies out; dropping a
memory frame moves the masks).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

QK_GAIN = 3.0
OUT_GAIN = 15.0
TPOS_GAIN = 10.0
PTR_TPOS_GAIN = 10.0
OBJECT_BIAS = 2.0
"""Bias of the object-score head's last layer: random weights would otherwise call objects absent at random."""
DEFAULT_SEED = 5
"""The calibration alone does not make every draw usable; the seed is chosen by :func:`chaos_check` on DAVIS
car-shadow (12 frames, GT mask on frame 0). SAM 2.1 small: seeds 0, 1, 3, 4, 7 give masks whose box is the
whole frame, 2 lets a dropped memory frame move the masks too little, 5 is the first to pass everything. SAM 2.0
small: seed 2 is the only one of 0-9 that passes (see :data:`SMALL_V20`)."""

SAM21_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SAM20_CONFIG = "configs/sam2/sam2_hiera_t.yaml"


@dataclass(frozen=True)
class Architecture:
    """A hiera-tiny-based architecture, as hydra overrides of one of the official configs.

    ``None`` fields keep the config's value. The small one has fewer and narrower Hiera blocks, other window
    sizes and background grid, two memory-attention layers and a 256 px input, so that none of them can be
    guessed from the released sizes: a loader must read them from the checkpoint or the yaml.
    """

    name: str
    version: str = "2.1"
    image_size: int = 1024
    embed_dim: int | None = None
    num_heads: int | None = None
    stages: tuple[int, ...] | None = None
    global_att_blocks: tuple[int, ...] | None = None
    window_spec: tuple[int, ...] | None = None
    window_pos_embed_bkg_spatial_size: tuple[int, int] | None = None
    memory_attention_layers: int | None = None
    seed: int = DEFAULT_SEED

    @property
    def config_name(self) -> str:
        return SAM21_CONFIG if self.version == "2.1" else SAM20_CONFIG

    def overrides(self) -> list[str]:
        def lst(v: Sequence[int]) -> str:
            return "[" + ",".join(str(int(x)) for x in v) + "]"

        s = self.image_size
        o = [f"++model.image_size={s}"]
        feat = s // 16
        for att in ("self_attention", "cross_attention"):
            o.append(f"++model.memory_attention.layer.{att}.feat_sizes=[{feat},{feat}]")
        t = "++model.image_encoder.trunk."
        if self.embed_dim is not None:
            o.append(f"{t}embed_dim={self.embed_dim}")
            d = self.embed_dim
            o.append(f"++model.image_encoder.neck.backbone_channel_list={lst([8 * d, 4 * d, 2 * d, d])}")
        if self.num_heads is not None:
            o.append(f"{t}num_heads={self.num_heads}")
        if self.stages is not None:
            o.append(f"{t}stages={lst(self.stages)}")
        if self.global_att_blocks is not None:
            o.append(f"{t}global_att_blocks={lst(self.global_att_blocks)}")
        if self.window_spec is not None:
            o.append(f"{t}window_spec={lst(self.window_spec)}")
        if self.window_pos_embed_bkg_spatial_size is not None:
            o.append(f"{t}window_pos_embed_bkg_spatial_size={lst(self.window_pos_embed_bkg_spatial_size)}")
        if self.memory_attention_layers is not None:
            o.append(f"++model.memory_attention.num_layers={self.memory_attention_layers}")
        return o


SMALL = Architecture(
    "small", image_size=256, embed_dim=48, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_spec=(8, 4, 8, 4), window_pos_embed_bkg_spatial_size=(4, 4), memory_attention_layers=2,
)
SMALL_V20 = Architecture(**{**SMALL.__dict__, "name": "small-2.0", "version": "2.0", "seed": 2})
TINY_1024 = Architecture("hiera-tiny-1024")


def tiny(image_size: int, version: str = "2.1") -> Architecture:
    """The released hiera-tiny architecture at any input size (a multiple of 32)."""
    return Architecture(f"hiera-tiny-{image_size}" + ("" if version == "2.1" else "-2.0"), version=version,
                        image_size=image_size)


# --- build, initialise, save -----------------------------------------------------------------------------

def compose_config(arch: Architecture) -> Any:
    """The resolved hydra config of the official video predictor for ``arch`` (post-processing on, as
    ``build_sam2_video_predictor(apply_postprocessing=True)`` composes it)."""
    import sam2  # noqa: F401  (initialises hydra's config module)
    from hydra import compose
    from omegaconf import OmegaConf

    overrides = [
        "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
        *arch.overrides(),
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=8",
    ]
    cfg = compose(config_name=arch.config_name, overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def build_predictor(arch: Architecture, checkpoint: str | Path | None = None) -> Any:
    """The official ``SAM2VideoPredictor`` on the CPU in float32, hole filling off (the filler is a CUDA
    extension; without it the official code warns and skips it anyway)."""
    from sam2.build_sam import build_sam2_video_predictor

    pred = build_sam2_video_predictor(arch.config_name, str(checkpoint) if checkpoint else None, device="cpu",
                                      hydra_overrides_extra=arch.overrides(), apply_postprocessing=True)
    pred.fill_hole_area = 0
    return pred.eval()


def _is_norm_weight(name: str, shape: torch.Size) -> bool:
    return len(shape) == 1 and name.endswith(".weight") and any(k in name for k in ("norm", "layer_norm"))


def calibrate(model: torch.nn.Module, seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """Our seeded calibrated init of an official SAM 2.x model, in place; returns its state dict.

    1. every parameter redrawn from a seeded generator with PyTorch's default scale (uniform +-1/sqrt(fan_in)
       for matrices and kernels, N(0, 1) for the prompt encoder's Gaussian matrix and embedding tables,
       N(0, 0.02) for the learnt tokens, biases and the memory embeddings, N(1, 0.02) for norm weights, 0.1 +
       0.03 N(0, 1) for layer scales), so the draw does not depend on module construction order;
    2. the calibration of the module docstring.

    Buffers are not redrawn: the prompt encoder's Gaussian matrix is drawn from the global generator when the
    model is built, so seed it before building (:func:`save_checkpoint` does).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            shape = p.shape

            def randn(shape: torch.Size = shape) -> torch.Tensor:
                return torch.randn(shape, generator=gen)

            if _is_norm_weight(name, shape):
                v = 1.0 + 0.02 * randn()
            elif name.endswith("gamma"):
                v = 0.1 + 0.03 * randn()
            elif "positional_encoding_gaussian_matrix" in name or (
                "sam_prompt_encoder" in name and "embed" in name and len(shape) == 2
            ):
                v = randn()
            elif len(shape) >= 2 and name.endswith("weight"):
                fan_in = shape[1] * math.prod(shape[2:])
                bound = 1.0 / math.sqrt(fan_in)
                v = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            else:
                v = 0.02 * randn()
            p.copy_(v)

        layers = model.memory_attention.layers  # type: ignore[union-attr]
        for layer in layers:
            ca = layer.cross_attn_image
            ca.q_proj.weight.mul_(QK_GAIN)
            ca.k_proj.weight.mul_(QK_GAIN)
            ca.out_proj.weight.mul_(OUT_GAIN)
            ca.out_proj.bias.mul_(OUT_GAIN)
        model.maskmem_tpos_enc.mul_(TPOS_GAIN)  # type: ignore[operator]
        tpos_proj = model.obj_ptr_tpos_proj
        if isinstance(tpos_proj, torch.nn.Linear):  # SAM 2.0 has no temporal encoding of pointers (Identity)
            tpos_proj.weight.mul_(PTR_TPOS_GAIN)
            tpos_proj.bias.mul_(PTR_TPOS_GAIN)
        for m in model.sam_mask_decoder.output_upscaling:  # type: ignore[union-attr]
            if isinstance(m, torch.nn.ConvTranspose2d):
                m.weight.copy_(m.weight[:, :, :1, :1].expand_as(m.weight))
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(OBJECT_BIAS)  # type: ignore[union-attr]
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_checkpoint(arch: Architecture, path: str | Path, seed: int | None = None) -> Path:
    """Build ``arch`` with :func:`calibrate` (``seed``, default ``arch.seed``) and save ``{"model": state_dict}``
    (Meta's format) at ``path``, plus the composed model config as ``<path without suffix>.yaml`` (Meta's yaml layout: a
    ``model:`` section) beside it. Written under temporary names and renamed."""
    from omegaconf import OmegaConf

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    seed = arch.seed if seed is None else seed
    torch.manual_seed(seed)  # the prompt encoder's Gaussian matrix is a buffer, drawn at construction
    pred = build_predictor(arch)
    sd = calibrate(pred, seed)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"model": sd}, tmp)
    os.replace(tmp, p)
    yaml_path = p.with_suffix(".yaml")
    tmp_y = yaml_path.with_name(yaml_path.name + ".tmp")
    tmp_y.write_text(OmegaConf.to_yaml(compose_config(arch)))
    os.replace(tmp_y, yaml_path)
    return p


# --- prompts, frames ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OfficialPrompt:
    """One prompt for the official predictor: a mask [H, W] bool, or points/labels and/or a box (pixels)."""

    frame_idx: int
    obj_id: int
    mask: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None


@contextlib.contextmanager
def frame_folder(frames_dir: str | Path, num_frames: int) -> Iterator[Path]:
    """A temporary folder of links to the first ``num_frames`` JPEGs of ``frames_dir`` (the official loader
    reads every frame of a folder; links keep both sides on exactly the same files)."""
    src = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if len(src) < num_frames:
        raise ValueError(f"{frames_dir} has {len(src)} frames, {num_frames} asked for")
    with tempfile.TemporaryDirectory(prefix="vidtrack-frames-") as d:
        for i, f in enumerate(src[:num_frames]):
            os.symlink(f.resolve(), Path(d) / f"{i:05d}.jpg")
        yield Path(d)


# --- the official run, recorded ----------------------------------------------------------------------------

@dataclass
class OfficialRun:
    """Per object id: masks [N, H, W] bool (frame i = i-th frame of the clip; all-False on frames it was not
    tracked), chosen candidate per frame (argmax of the predicted IoUs on multimask frames, -1 where a mask
    prompt was used as the output or the decoder gave one mask), object-score logit per frame (nan where not
    tracked); ``order`` is the frame order the predictor yielded."""

    masks: dict[int, np.ndarray]
    candidates: dict[int, np.ndarray]
    object_logits: dict[int, np.ndarray]
    order: list[int] = field(default_factory=list)


@contextlib.contextmanager
def _wrapped(obj: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Replace ``obj.name`` (a bound method) by ``make(original)`` on this instance only, restored on exit."""
    original = getattr(obj, name)
    setattr(obj, name, make(original))
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            delattr(obj, name)


def run_official(
    predictor: Any,
    frames_dir: str | Path,
    num_frames: int,
    prompts: Sequence[OfficialPrompt],
    *,
    reverse: bool = False,
    start_frame_idx: int | None = None,
    perturb: tuple[int, float] | None = None,
    drop_previous_memory: bool = False,
    upcast_memory: bool = True,
) -> OfficialRun:
    """Run the official predictor on the first ``num_frames`` frames of ``frames_dir`` and record it.

    Prompts are added in the given order, then ``propagate_in_video(start_frame_idx, reverse)`` runs once.

    ``perturb=(frame, eps)`` adds ``eps * N(0, 1)`` (seeded) to that frame's image features whenever they are
    read (chaos check). ``drop_previous_memory`` hides frame t-1 (t+1 in reverse) from frame t's memory and
    pointers (an algorithmic change the check must see). ``upcast_memory``: the official code stores memories
    in bfloat16 and, on the CPU in float32 without autocast, concatenates them with float32 tensors only when
    an object pointer promotes the result; where none does (an object first prompted on a later frame) it
    fails with a dtype mismatch. The wrapper casts the memory-attention inputs to the query dtype (values
    unchanged; what autocast does on a GPU).
    """
    n = num_frames
    h = w = 0
    state_ref: dict[str, Any] = {}
    current: dict[str, Any] = {}
    cands: dict[tuple[int, int], int] = {}
    logits: dict[tuple[int, int], float] = {}

    def wrap_single(orig: Callable[..., Any]) -> Callable[..., Any]:
        def f(*args: Any, **kw: Any) -> Any:
            st = kw["inference_state"]
            od = kw["output_dict"]
            obj_idx = next(i for i, d in st["output_dict_per_obj"].items() if d is od)
            current.update(frame=kw["frame_idx"], obj=obj_idx, mask=kw.get("mask_inputs") is not None, ious=None)
            out = orig(*args, **kw)
            key = (st["obj_idx_to_id"][obj_idx], kw["frame_idx"])
            ious = current.get("ious")
            if current["mask"] or ious is None or ious.shape[-1] == 1:
                cands[key] = -1
            else:
                cands[key] = int(torch.argmax(ious[0]).item())
            logits[key] = float(out[0]["object_score_logits"].flatten()[0].item())
            current.clear()
            return out

        return f

    def wrap_heads(orig: Callable[..., Any]) -> Callable[..., Any]:
        def f(*args: Any, **kw: Any) -> Any:
            out = orig(*args, **kw)
            if current:
                current["ious"] = out[2].detach()
            return out

        return f

    def wrap_features(orig: Callable[..., Any]) -> Callable[..., Any]:
        def f(inference_state: Any, frame_idx: int, batch_size: int) -> Any:
            out = orig(inference_state, frame_idx, batch_size)
            if perturb is None or frame_idx != perturb[0]:
                return out
            g = torch.Generator().manual_seed(1234)
            feats = [x + perturb[1] * torch.randn(x.shape, generator=g).to(x) for x in out[2]]
            return (out[0], out[1], feats, out[3], out[4])

        return f

    def wrap_memory(orig: Callable[..., Any]) -> Callable[..., Any]:
        def f(*args: Any, **kw: Any) -> Any:
            od = kw["output_dict"]
            t = kw["frame_idx"]
            hidden = None
            prev = t + 1 if kw.get("track_in_reverse") else t - 1
            if drop_previous_memory and prev in od["non_cond_frame_outputs"]:
                hidden = od["non_cond_frame_outputs"].pop(prev)
            try:
                return orig(*args, **kw)
            finally:
                if hidden is not None:
                    od["non_cond_frame_outputs"][prev] = hidden

        return f

    def wrap_attention(orig: Callable[..., Any]) -> Callable[..., Any]:
        def f(curr: Any, memory: Any, curr_pos: Any = None, memory_pos: Any = None,
              num_obj_ptr_tokens: int = 0) -> Any:
            dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
            return orig(curr, memory.to(dtype), curr_pos, memory_pos.to(dtype) if memory_pos is not None else None,
                        num_obj_ptr_tokens)

        return f

    stack = contextlib.ExitStack()
    with stack, frame_folder(frames_dir, n) as folder, torch.inference_mode():
        stack.enter_context(_wrapped(predictor, "_run_single_frame_inference", wrap_single))
        stack.enter_context(_wrapped(predictor, "_forward_sam_heads", wrap_heads))
        stack.enter_context(_wrapped(predictor, "_get_image_feature", wrap_features))
        stack.enter_context(_wrapped(predictor, "_prepare_memory_conditioned_features", wrap_memory))
        if upcast_memory:
            stack.enter_context(_wrapped(predictor.memory_attention, "forward", wrap_attention))
        state = predictor.init_state(str(folder))
        state_ref["s"] = state
        h, w = state["video_height"], state["video_width"]
        for p in prompts:
            if p.mask is not None:
                predictor.add_new_mask(state, p.frame_idx, p.obj_id, p.mask)
            else:
                predictor.add_new_points_or_box(
                    state, p.frame_idx, p.obj_id,
                    points=None if p.points is None else np.asarray(p.points, np.float32),
                    labels=None if p.labels is None else np.asarray(p.labels, np.int32),
                    box=None if p.box is None else np.asarray(p.box, np.float32),
                )
        ids = sorted({p.obj_id for p in prompts})
        masks = {o: np.zeros((n, h, w), bool) for o in ids}
        order: list[int] = []
        for f, obj_ids, video_masks in predictor.propagate_in_video(state, start_frame_idx=start_frame_idx,
                                                                    reverse=reverse):
            order.append(int(f))
            for i, o in enumerate(obj_ids):
                masks[o][f] = (video_masks[i, 0] > 0).cpu().numpy()
    cand_arr = {o: np.full(n, -2, np.int64) for o in ids}
    logit_arr = {o: np.full(n, np.nan) for o in ids}
    for (o, f), c in cands.items():
        cand_arr[o][f] = c
        logit_arr[o][f] = logits[(o, f)]
    return OfficialRun(masks, cand_arr, logit_arr, order)


# --- measures -------------------------------------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU; two empty masks agree (1.0)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def per_frame_iou(a: np.ndarray, b: np.ndarray, frames: Sequence[int] | None = None) -> np.ndarray:
    idx = range(a.shape[0]) if frames is None else frames
    return np.array([iou(a[i], b[i]) for i in idx])


def box_fraction(mask: np.ndarray) -> float:
    """Area of the mask's bounding box over the frame's area (1.0: the box is the whole frame)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    return float((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) / mask.size)


@dataclass
class ChaosReport:
    """Figures of :func:`chaos_check` (per frame, all objects pooled)."""

    perturbed_min_iou: float
    dropped_mean_iou: float
    dropped_min_iou: float
    area_fraction: tuple[float, float]
    box_fraction_max: float
    perturbation_reached: float

    def ok(self) -> bool:
        lo, hi = self.area_fraction
        return (self.perturbed_min_iou >= 0.9999 and self.dropped_min_iou < 0.99 and lo >= 0.02 and hi <= 0.7
                and self.box_fraction_max < 0.98)


def chaos_check(
    predictor: Any, frames_dir: str | Path, num_frames: int, prompts: Sequence[OfficialPrompt],
    baseline: OfficialRun | None = None,
) -> ChaosReport:
    """The official predictor against itself: 1e-6 on frame 1's image features, and frame t-1 dropped from
    frame t's memory. Also mask area (fraction of the frame) and bounding-box fraction of the baseline."""
    base = baseline or run_official(predictor, frames_dir, num_frames, prompts)
    pert = run_official(predictor, frames_dir, num_frames, prompts, perturb=(1, 1e-6))
    drop = run_official(predictor, frames_dir, num_frames, prompts, drop_previous_memory=True)
    pi = np.concatenate([per_frame_iou(base.masks[o], pert.masks[o]) for o in base.masks])
    di = np.concatenate([per_frame_iou(base.masks[o], drop.masks[o]) for o in base.masks])
    areas = [m[i].mean() for m in base.masks.values() for i in range(m.shape[0])]
    boxes = [box_fraction(m[i]) for m in base.masks.values() for i in range(m.shape[0])]
    reached = max(float(np.nanmax(np.abs(base.object_logits[o] - pert.object_logits[o]))) for o in base.masks)
    return ChaosReport(float(pi.min()), float(di.mean()), float(di.min()), (float(min(areas)), float(max(areas))),
                       float(max(boxes)), reached)
