"""EdgeTAM (Zhou et al., 2025, "EdgeTAM: On-Device Track Anything Model") on ``transformers.EdgeTamVideoModel``.

EdgeTAM is SAM 2 with two parts replaced, which is all this backend changes:

* **image encoder** -- a RepViT-M1 trunk (timm, through transformers' ``TimmWrapper``) under SAM 2's FPN neck,
  instead of Hiera; same three feature levels (256, 128, 64 px grids at 1024 px input), same normalisation.
  :meth:`Backend.encode_image` already handles it (it calls ``get_image_features``).
* **memory** -- the memory encoder's 64x64 map is compressed by a *2D spatial perceiver*
  (``PerceiverResampler`` in the official ``sam2/modeling/perceiver.py``) into 256 global latents (position
  encoding zero) followed by 256 window latents (one per 4x4 window of the map, with a sine position encoding
  of the 16x16 window grid): 512 tokens per memory frame instead of 4,096. Memory attention is two layers whose
  cross-attention keys are rotated (RoPE) only on the 256 window latents of every memory frame
  (``RoPEAttentionv2``); it therefore needs the number of memory frames in a read.

Object pointers carry no temporal position encoding (``add_tpos_enc_to_obj_ptrs: false`` in the official
``edgetam.yaml``; ``enable_temporal_pos_encoding_for_object_pointers=False`` in the transformers config), which
the engine reads off the config as for SAM 2.1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vidtrack.engines.sam2.backends import register_backend
from vidtrack.engines.sam2.backends.base import Backend
from vidtrack.engines.sam2.contract import ImageFeatures


@register_backend
class EdgeTamBackend(Backend):
    """EdgeTAM: RepViT image encoder, perceiver-compressed memory, RoPE on the memory's window latents."""

    family: ClassVar[str] = "edgetam"
    model_types: ClassVar[tuple[str, ...]] = ("edgetam_video",)

    def encode_memory(
        self, feats: ImageFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor, binarize: bool,
    ) -> torch.Tensor:
        """Memory encoder, occlusion embedding, then the spatial perceiver -> (512, B, 64) tokens in bfloat16
        (the official ``_encode_new_memory`` followed by ``spatial_perceiver``)."""
        features, pos = self.memory_map(feats, high_res_masks, object_score_logits, binarize)
        pos = pos.to(features.dtype)
        # one object at a time: the perceiver's window latents are ``expand``-ed over the batch and then
        # ``view``-ed, which fails for a batch of more than one (in transformers 5.24 as in the official
        # ``PerceiverResampler.forward_2d``); every object's latents depend on its own map only
        outs = [self.model.spatial_perceiver(features[i : i + 1], pos[i : i + 1]) for i in range(features.size(0))]
        latents = torch.cat([o[0] for o in outs], dim=0)
        latent_pos = outs[0][1]
        if self._memory_pos_enc is None:
            self._memory_pos_enc = latent_pos[:1].permute(1, 0, 2).to(self.dtype)
        return latents.to(torch.bfloat16).permute(1, 0, 2)

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
        if key_scale is None:
            out = self.model.memory_attention(
                current_vision_features=current,
                memory=memory,
                current_vision_position_embeddings=current_pos,
                memory_posision_embeddings=memory_pos,
                num_object_pointer_tokens=num_ptr_tokens,
                num_spatial_memory_tokens=num_frames,
            )
            return out[0]
        return _scaled_key_memory_attention(self.model.memory_attention, current, current_pos, memory, memory_pos,
                                            num_ptr_tokens, num_frames, key_scale)


def _scaled_key_memory_attention(
    attn: Any, current: torch.Tensor, current_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
    num_ptr_tokens: int, num_frames: int, key_scale: torch.Tensor,
) -> torch.Tensor:
    """``EdgeTamVideoMemoryAttention.forward`` with every cross-attention key multiplied per token,
    ``key = scale * (memory + pos)``, values left ``memory`` (SAM2Long's key modulation, as
    ``FastMemoryAttention`` does for SAM 2.1). The layers' own sub-modules are called in their order."""
    output = (current + 0.1 * current_pos).transpose(0, 1)  # (B, HW, C)
    mem = memory.transpose(0, 1).unsqueeze(1)
    keys = (mem + memory_pos.transpose(0, 1).unsqueeze(1)) * key_scale.reshape(key_scale.shape[0], 1, -1, 1)
    rope = attn.rotary_emb(output, attn.position_ids)
    rope_k = attn.rotary_emb(output, attn.position_ids_k)
    for layer in attn.layers:
        queries = output.unsqueeze(1) if output.ndim == 3 else output
        q = layer.layer_norm1(queries)
        q, _ = layer.self_attn(query=q, key=q, value=q, position_embeddings=rope)
        queries = queries + layer.dropout1(q)
        q = layer.layer_norm2(queries)
        q, _ = layer.cross_attn_image(query=q, key=keys, value=mem, position_embeddings=rope,
                                      position_embeddings_k=rope_k, num_k_exclude_rope=num_ptr_tokens,
                                      rope_k_repeat=num_frames)
        queries = queries + layer.dropout2(q)
        q = layer.layer_norm3(queries)
        output = queries + layer.dropout3(layer.mlp(q))
    return attn.layer_norm(output).transpose(0, 1)[0]
