"""The per-family part of the engine: what differs between SAM 2.1, EdgeTAM and the SAM 3 tracker.

The three model families share SAM 2's tracking design (Ravi et al., 2024): a per-frame image encoder, a
prompt encoder and mask decoder, a memory encoder that turns (features, mask) into memory tokens, and a
memory attention that conditions the current frame on those tokens and on object pointers. Everything the
engine does *around* those calls -- prompts, object pointers, the memory bank, the policies' reads and choices,
batching, gating, export -- is the same for all three and stays in :mod:`vidtrack.engines.sam2.engine`.

A :class:`Backend` supplies only what differs:

* **sizes and normalisation** -- ``image_size``, ``mean``/``std``, the feature grids, channel widths;
* :meth:`Backend.encode_image` -- pixels to :class:`ImageFeatures` (Hiera for SAM 2.1, RepViT for EdgeTAM);
* :meth:`Backend.encode_memory` -- a batch of masks on one frame to memory tokens ``(N, B, mem_dim)``, with
  :attr:`Backend.memory_pos_enc` their spatial position encoding ``(N, 1, mem_dim)`` (the same for every
  frame); EdgeTAM compresses the 64x64 memory map to 512 tokens with its spatial perceiver here;
* :meth:`Backend.memory_attention` -- the memory-attention call, given every read's tokens and the number of
  memory frames in them (EdgeTAM's key RoPE is applied per memory frame);
* :meth:`Backend.decode` -- prompt encoder + mask decoder (shared by the three; overridable).

This class *is* the SAM 2.1 implementation (transformers' ``Sam2VideoModel`` sub-modules, called exactly as
the engine called them before the seam existed); a family subclasses it and overrides what it changes. See
docs/BACKENDS.md for how to write one and :func:`vidtrack.engines.sam2.backends.backend_for` for how the
engine picks it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from vidtrack.engines.sam2.contract import ImageFeatures, MemoryRead
from vidtrack.engines.sam2.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResizeMethod,
    mask_to_model_input,
    preprocess_frame,
)


class Backend:
    """SAM 2.1 on ``transformers.Sam2VideoModel``; the base every family's backend subclasses.

    ``model_types`` are the transformers ``config.model_type`` values this backend drives (the engine's lookup
    key). Subclasses set them and override the methods whose computation differs.
    """

    family: ClassVar[str] = "sam2"
    model_types: ClassVar[tuple[str, ...]] = ("sam2_video",)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_cond_frames: int | None = None
    """Most conditioning frames one read attends to (None: all). SAM 3's tracker uses 4 (``max_cond_frame_num``)."""

    def __init__(self, model: Any, device: torch.device) -> None:
        self.model = model
        self.device = device
        cfg = model.config
        self.config = cfg
        self.image_size = int(cfg.image_size)
        self.num_maskmem = int(cfg.num_maskmem)
        self.max_obj_ptrs = int(cfg.max_object_pointers_in_encoder)
        self.hidden_dim = int(model.hidden_dim)
        self.mem_dim = int(model.mem_dim)
        self.feat_sizes = [tuple(s) for s in model.backbone_feature_sizes]
        self.low_res_size = tuple(model.prompt_encoder.mask_input_size)
        self.dtype = next(model.parameters()).dtype
        with torch.inference_mode():
            self.image_pe = model.get_image_wide_positional_embeddings().to(device)
        self._memory_pos_enc: torch.Tensor | None = None

    # --- pixels -> features --------------------------------------------------------------------------------
    def preprocess(self, frame: np.ndarray, resize: ResizeMethod) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> the (3, S, S) model input (resize, /255, the family's mean/std)."""
        return preprocess_frame(frame, self.image_size, resize=resize, mean=self.mean, std=self.std,
                                device=self.device, dtype=self.dtype)

    def encode_image(self, pixel_values: torch.Tensor) -> ImageFeatures:
        """Image encoder + FPN neck (+ the decoder's ``conv_s0``/``conv_s1`` on the two high-res levels)."""
        out = self.model.get_image_features(pixel_values[None], return_dict=True)
        feats = list(out.fpn_hidden_states)
        pos = list(out.fpn_position_encoding)
        high_res = [
            x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *s)
            for x, s in zip(feats[:-1], self.feat_sizes[:-1], strict=True)
        ]
        return ImageFeatures(feats, pos, high_res)

    # --- decoder -------------------------------------------------------------------------------------------
    def decode(
        self,
        pix_feat: torch.Tensor,
        feats: ImageFeatures,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on (B, C, H, W) features; the raw transformers outputs
        (masks, ious, tokens, object score logits), each with the point-batch axis."""
        sparse, dense = self.model.prompt_encoder(
            input_points=point_coords, input_labels=point_labels, input_boxes=None, input_masks=mask_input
        )
        b = pix_feat.size(0)
        return self.model.mask_decoder(
            image_embeddings=pix_feat,
            image_positional_embeddings=self.image_pe.expand(b, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=feats.high_res,
        )

    # --- prompts ---------------------------------------------------------------------------------------------
    def mask_prompt(self, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A (H, W) bool mask prompt -> (the decoder's mask input before ``mask_downsample``, (1, 1, S, S);
        the frame's low-res logits (1, 1, h, w), its output and memory source).

        SAM 2.1's ``add_new_mask`` + ``_use_mask_as_output``: the mask resized to S (antialiased) and
        thresholded at 0.5, used as logits +10 / -10, downsampled (antialiased) to the low-res grid."""
        mask_in = mask_to_model_input(mask, self.image_size, self.device)
        low = F.interpolate(mask_in * 20.0 - 10.0, size=self.low_res_size, mode="bilinear", align_corners=False,
                            antialias=True)
        return mask_in, low

    def prompt_memory_masks(self, high_res_masks: torch.Tensor) -> torch.Tensor:
        """The high-res masks of the objects prompted on one frame, (B, 1, S, S), as they are memorised.
        SAM 2.1 memorises each as it is (``non_overlap_masks_for_mem_enc`` off); SAM 3 keeps them apart."""
        return high_res_masks

    def limit_conditioning(self, read: MemoryRead, frame_idx: int, *, reverse: bool, max_ptrs: int) -> MemoryRead:
        """A policy's read with at most :attr:`max_cond_frames` conditioning frames (SAM 2.1: all, unchanged)."""
        return read

    # --- memory ----------------------------------------------------------------------------------------------
    @property
    def memory_pos_enc(self) -> torch.Tensor | None:
        """Spatial position encoding of one memory frame's tokens, (N, 1, mem_dim); set by the first
        :meth:`encode_memory` (identical for every frame and object)."""
        return self._memory_pos_enc

    def mask_for_memory(self, high_res_masks: torch.Tensor, binarize: bool) -> torch.Tensor:
        """The official ``is_mask_from_pts`` rule: prompted frames are memorised from the hard mask, tracked
        frames from ``sigmoid(logits)``; both scaled and shifted (20, -10)."""
        cfg = self.config
        mask = (high_res_masks > 0).float() if binarize else torch.sigmoid(high_res_masks)
        return mask * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc

    def memory_map(
        self, feats: ImageFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor, binarize: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory encoder + occlusion embedding -> (B, mem_dim, H, W) features and their position encoding."""
        b = high_res_masks.size(0)
        pix = feats.top.permute(1, 2, 0).reshape(1, self.hidden_dim, *self.feat_sizes[-1]).expand(b, -1, -1, -1)
        mask = self.mask_for_memory(high_res_masks, binarize)
        features, pos = self.model.memory_encoder(pix, mask.to(pix.dtype))
        occl = self.model.occlusion_spatial_embedding_parameter
        if occl is not None:
            absent = 1.0 - (object_score_logits > 0).float()  # (B, 1): always the > 0 test, in every policy
            features = features + absent[..., None, None] * occl[..., None, None].expand(*features.shape)
        return features, pos

    def encode_memory(
        self, feats: ImageFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor, binarize: bool,
    ) -> torch.Tensor:
        """A batch of objects' masks on one frame -> memory tokens (N, B, mem_dim), stored in bfloat16 as the
        official predictor stores them."""
        features, _ = self.memory_map(feats, high_res_masks, object_score_logits, binarize)
        if self._memory_pos_enc is None:
            pe = self.model.memory_encoder.position_encoding(features.shape, features.device, features.dtype)
            self._memory_pos_enc = pe[:1].flatten(2).permute(2, 0, 1).to(self.dtype)
        return features.to(torch.bfloat16).flatten(2).permute(2, 0, 1)

    def memory_attention(
        self,
        current: torch.Tensor,
        current_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        *,
        num_ptr_tokens: int,
        num_frames: int,
        key_scale: torch.Tensor | None,
    ) -> torch.Tensor:
        """Memory attention for B reads at once -> (B, HW, C).

        ``current``/``current_pos`` (HW, B, C); ``memory``/``memory_pos`` (N, B, mem_dim) with the
        ``num_ptr_tokens`` object-pointer tokens last; ``num_frames`` memory frames before them. ``key_scale``
        (B, N), when given, multiplies the cross-attention keys per token (SAM2Long), values untouched."""
        extra = {} if key_scale is None else {"key_scale": key_scale}  # FastMemoryAttention (fast_modules)
        out = self.model.memory_attention(
            current_vision_features=current,
            memory=memory,
            current_vision_position_embeddings=current_pos,
            memory_posision_embeddings=memory_pos,
            num_object_pointer_tokens=num_ptr_tokens,
            **extra,
        )
        return out[0]

    def upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        return F.interpolate(low_res.float(), size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)
