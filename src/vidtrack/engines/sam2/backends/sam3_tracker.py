"""The SAM 3 tracker (Carion et al., 2025, "SAM 3: Segment Anything with Concepts") as an engine backend.

SAM 3's video tracker is SAM 2's design (``transformers.Sam3TrackerVideoModel`` reuses ``Sam2VideoModel``'s
modules) on another image encoder and with other constants. What differs, each checked against the official
``Sam3TrackerPredictor`` (facebookresearch/sam3, ``sam3/model/sam3_tracking_predictor.py`` and
``sam3_tracker_base.py``) on a calibrated random checkpoint (docs/PARITY.md):

* **input** -- 1008 px (14 px patches: a 72x72 feature and memory grid, 288x288 low-res masks) normalised with
  mean = std = 0.5 (what ``Sam3VideoInference`` loads frames with);
* **image encoder** -- the perception-encoder ViT with the tracker's own FPN neck (transformers'
  ``Sam3VisionModel``); the base class's :meth:`encode_image` calls it unchanged;
* **memory encoder input** -- the official ``SimpleMaskDownSampler`` resizes the *scaled* mask (after the
  binarise-or-sigmoid rule and x20 - 10) from 1008 to 1152 px (antialiased bilinear) so that its 16x
  downsampling lands on the 72x72 grid; transformers resizes the raw logits before that rule, which is not the
  same function. :meth:`mask_for_memory` does it the official way;
* **mask prompts** (``add_new_mask``) -- the prompt is resized to 1152 px without thresholding for the
  pointer's decoder pass, and the frame's output and memory come from the video-resolution mask as logits
  +-1024 resized (antialiased) to the 288x288 low-res grid (:meth:`mask_prompt`);
* **several objects prompted on one frame** -- the official preflight keeps their masks from overlapping
  (per pixel only the highest-scoring object stays above -10) before memorising them
  (:meth:`prompt_memory_masks`); tracked frames are not constrained (``non_overlap_masks_for_mem_enc`` False);
* **conditioning frames read** -- at most 4 (``max_cond_frame_num``), the temporally closest
  (:attr:`max_cond_frames`).

The memory attention, decoder, pointers and memory bank rules are SAM 2.1's and come from the base class.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from vidtrack.engines.sam2.backends import register_backend
from vidtrack.engines.sam2.backends.base import Backend
from vidtrack.engines.sam2.contract import KeyScale, MemoryRead

NO_OBJ_SCORE = -1024.0
MEMORY_MASK_SCALE = 4
"""The memory encoder's input is the low-res mask grid x 4 (288 -> 1152 px at 1008 px input; official
``SimpleMaskDownSampler(interpol_size=[1152, 1152])``)."""


@register_backend
class Sam3TrackerBackend(Backend):
    """``transformers.Sam3TrackerVideoModel`` driven by the SAM 2 engine (see the module docstring)."""

    family: ClassVar[str] = "sam3-tracker"
    model_types: ClassVar[tuple[str, ...]] = ("sam3_tracker_video",)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    max_cond_frames = 4

    def __init__(self, model: Any, device: torch.device) -> None:
        super().__init__(model, device)
        if getattr(model, "vision_encoder", None) is None:
            raise ValueError("this Sam3TrackerVideoModel has no vision encoder (built with remove_vision_encoder)")
        self.memory_mask_size = (self.low_res_size[0] * MEMORY_MASK_SCALE, self.low_res_size[1] * MEMORY_MASK_SCALE)
        _install_fast_memory_attention(model)

    def mask_for_memory(self, high_res_masks: torch.Tensor, binarize: bool) -> torch.Tensor:
        """The base rule at the model's input size, then the official resize to the memory encoder's size."""
        mask = super().mask_for_memory(high_res_masks, binarize)
        if tuple(mask.shape[-2:]) != self.memory_mask_size:
            mask = F.interpolate(mask.float(), size=self.memory_mask_size, mode="bilinear", align_corners=False,
                                 antialias=True)
        return mask

    def mask_prompt(self, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A (H, W) bool mask prompt -> (the decoder's mask input before ``mask_downsample``, (1, 1, 1152, 1152)
        float, not thresholded; the frame's low-res logits (1, 1, 288, 288))."""
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(self.device)[None, None]
        mask_in = m
        if tuple(m.shape[-2:]) != self.memory_mask_size:
            mask_in = F.interpolate(m, size=self.memory_mask_size, mode="bilinear", align_corners=False,
                                    antialias=True)
        video_logits = torch.where(m > 0.5, -NO_OBJ_SCORE, NO_OBJ_SCORE)
        low = F.interpolate(video_logits, size=self.low_res_size, mode="bilinear", align_corners=False,
                            antialias=True)
        return mask_in, low

    def prompt_memory_masks(self, high_res_masks: torch.Tensor) -> torch.Tensor:
        """The official ``_apply_non_overlapping_constraints`` on the objects prompted on one frame: where an
        object is not the highest-scoring one, its logits are clamped to at most -10."""
        if high_res_masks.size(0) < 2:
            return high_res_masks
        winner = torch.argmax(high_res_masks, dim=0, keepdim=True)
        idx = torch.arange(high_res_masks.size(0), device=high_res_masks.device)[:, None, None, None]
        return torch.where(winner == idx, high_res_masks, high_res_masks.clamp(max=-10.0))

    def limit_conditioning(self, read: MemoryRead, frame_idx: int, *, reverse: bool, max_ptrs: int) -> MemoryRead:
        """At most :attr:`max_cond_frames` conditioning frames, chosen as the official
        ``select_closest_cond_frames`` does (the closest before, the closest at or after, then the temporally
        closest others). An unselected one among the last ``num_maskmem - 1`` frames is read in that slot as a
        tracked frame would be, and its pointer stays only within the pointer window (official
        ``_prepare_memory_conditioned_features``)."""
        cap = self.max_cond_frames
        cond_slot = self.num_maskmem - 1
        conds = [rec.frame_idx for slot, rec in read.memories if rec.is_cond and slot == cond_slot]
        if cap is None or len(conds) <= cap:
            return read
        chosen = select_closest_cond_frames(frame_idx, conds, cap)
        sign = -1 if reverse else 1
        weights = read.key_scale.frames if read.key_scale is not None else [None] * len(read.memories)
        kept = [(m, w) for m, w in zip(read.memories, weights, strict=True)
                if not (m[1].is_cond and m[0] == cond_slot and m[1].frame_idx not in chosen)]
        used = {slot for (slot, rec), _ in kept if not (rec.is_cond and slot == cond_slot)}
        by_frame = {rec.frame_idx: rec for slot, rec in read.memories if rec.is_cond and slot == cond_slot}
        for f in conds:
            k = (frame_idx - f) * sign
            if f not in chosen and 1 <= k <= cond_slot and k - 1 not in used:
                kept.append(((k - 1, by_frame[f]), None))
        keep_ptr = [not (rec.is_cond and rec.frame_idx not in chosen and d >= (read.max_ptrs or max_ptrs))
                    for d, rec in read.pointers]
        pointers = [p for p, k in zip(read.pointers, keep_ptr, strict=True) if k]
        key_scale = read.key_scale
        if key_scale is not None:
            one = torch.ones((), device=self.device)
            ptr_w = [w for w, k in zip(key_scale.pointers, keep_ptr, strict=True) if k]
            key_scale = KeyScale([one if w is None else w for _, w in kept], ptr_w)
        return MemoryRead([m for m, _ in kept], pointers, key_scale, read.max_ptrs)


def select_closest_cond_frames(frame_idx: int, cond_frames: list[int], cap: int) -> set[int]:
    """The conditioning frames a read keeps when there are more than ``cap`` (official
    ``sam3_tracker_utils.select_closest_cond_frames`` without ``keep_first_cond_frame``)."""
    chosen: set[int] = set()
    before = [t for t in cond_frames if t < frame_idx]
    after = [t for t in cond_frames if t >= frame_idx]
    if before:
        chosen.add(max(before))
    if after:
        chosen.add(min(after))
    rest = sorted((t for t in cond_frames if t not in chosen), key=lambda t: abs(t - frame_idx))
    chosen.update(rest[: max(cap - len(chosen), 0)])
    return chosen


def _install_fast_memory_attention(model: Any) -> None:
    """transformers' SAM 3 memory attention and its RoPE attention are line-for-line copies of SAM 2's (under
    other class names); give them the engine's faster SAM 2 subclasses, which also take SAM2Long's per-token
    key weights (``key_scale``). Exact-type swaps, in place, as ``fast_modules.install_fast_modules`` does."""
    from transformers.models.sam3_tracker_video import modeling_sam3_tracker_video as m

    from vidtrack.engines.sam2.fast_modules import FastMemoryAttention, FastRoPEAttention, _swap_classes

    _swap_classes(model, {m.Sam3TrackerVideoMemoryAttention: FastMemoryAttention,
                          m.Sam3TrackerVideoRoPEAttention: FastRoPEAttention})
