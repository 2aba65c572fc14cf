"""The calibrated random SAM 3 tracker the parity goldens were recorded on, rebuilt from its seed.

Architecture (:func:`config`): the SAM 3 tracker exactly as released (1008 px input, 72x72 memory grid, 256-wide
features, 64-channel memories, 7 memory slots, ``max_cond_frame_num`` 4, the two-way mask decoder), with two
reductions that keep CPU runs short and change no algorithm: the ViT has 2 blocks of width 64 (block 1 global,
block 0 windowed 24x24, RoPE, tiled absolute position embedding: every mechanism of the 32-block ViT-L) and the
memory attention has :data:`MEMORY_ATTENTION_LAYERS` layer(s) instead of 4.

Initialisation (:func:`calibrated_state_dict`), in transformers' key space: every parameter redrawn from one
seeded generator in sorted-name order at PyTorch's default scales, then the calibration of
``tests/parity/calibration.py`` (the same gains, on the same tensors under their transformers names) so that
tracking is not chaotic: memory cross-attention q/k x QK_GAIN and output x OUT_GAIN, memory temporal encoding
x TPOS_GAIN, pointer temporal projection x PTR_TPOS_GAIN, mask-decoder transposed-conv taps tied, object-score
bias OBJECT_BIAS.

Meta's layout (:func:`to_meta_state_dict`) is what the official predictor loads; it is produced from the same
tensors through the key list of the official tracker-only model (``tests/fixtures/meta_keys_sam3_tracker.json``)
and the inverse of our conversion, so ``load_meta_checkpoint`` of the result must give back the same model.

The state dict is rebuilt at test time (too big to commit); :data:`DIGEST` pins it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
META_KEYS = ROOT / "tests" / "fixtures" / "meta_keys_sam3_tracker.json"
SEED = 0
MEMORY_ATTENTION_LAYERS = 1
IMAGE_SIZE = 1008


def calibration_gains() -> dict[str, float]:
    parity = ROOT / "tests" / "parity"
    if str(parity) not in sys.path:
        sys.path.insert(0, str(parity))
    import calibration as cal

    return {k: float(getattr(cal, k)) for k in ("QK_GAIN", "OUT_GAIN", "TPOS_GAIN", "PTR_TPOS_GAIN", "OBJECT_BIAS")}


def config(image_size: int = IMAGE_SIZE) -> Any:
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import sam3_tracker_config

    return sam3_tracker_config(vit_hidden=64, vit_layers=2, vit_intermediate=296, global_attn=(1,),
                               memory_attention_layers=MEMORY_ATTENTION_LAYERS, image_size=image_size)


def _is_norm_weight(name: str, shape: torch.Size) -> bool:
    return len(shape) == 1 and name.endswith(".weight") and "norm" in name


def calibrated_state_dict(seed: int = SEED, gains: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The calibrated random tracker in transformers' key space (see the module docstring)."""
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import build_empty

    g = gains or calibration_gains()
    model = build_empty(config())
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    params = {k: v for k, v in model.state_dict().items() if k != "shared_image_embedding.positional_embedding"}
    for name in sorted(params):
        shape = params[name].shape

        def randn(shape: torch.Size = shape) -> torch.Tensor:
            return torch.randn(shape, generator=gen)

        if _is_norm_weight(name, shape):
            v = 1.0 + 0.02 * randn()
        elif name.endswith(".scale"):  # the memory fuser's layer scale
            v = 0.1 + 0.03 * randn()
        elif "positional_embedding" in name or name.endswith("point_embed.weight") or (
            name.startswith("prompt_encoder.") and "embed" in name and len(shape) == 2
        ):
            v = randn()
        elif len(shape) >= 2 and name.endswith("weight"):
            fan_in = shape[1] * math.prod(shape[2:])
            v = (torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)
        else:
            v = 0.02 * randn()
        sd[name] = v
    # the prompt encoder's Gaussian matrix is shared with the image-wide positional embedding
    gaussian = sd["prompt_encoder.shared_embedding.positional_embedding"]
    sd["shared_image_embedding.positional_embedding"] = gaussian.clone()
    for i in range(MEMORY_ATTENTION_LAYERS):
        ca = f"memory_attention.layers.{i}.cross_attn_image."
        sd[ca + "q_proj.weight"] *= g["QK_GAIN"]
        sd[ca + "k_proj.weight"] *= g["QK_GAIN"]
        sd[ca + "o_proj.weight"] *= g["OUT_GAIN"]
        sd[ca + "o_proj.bias"] *= g["OUT_GAIN"]
    sd["memory_temporal_positional_encoding"] *= g["TPOS_GAIN"]
    sd["temporal_positional_encoding_projection_layer.weight"] *= g["PTR_TPOS_GAIN"]
    sd["temporal_positional_encoding_projection_layer.bias"] *= g["PTR_TPOS_GAIN"]
    for conv in ("mask_decoder.upscale_conv1.weight", "mask_decoder.upscale_conv2.weight"):
        sd[conv] = sd[conv][:, :, :1, :1].expand_as(sd[conv]).clone()
    sd["mask_decoder.pred_obj_score_head.proj_out.bias"].fill_(g["OBJECT_BIAS"])
    for k, v in model.state_dict().items():  # buffers the model computes itself
        if k not in sd:
            sd[k] = v.clone()
    return sd


def model(seed: int = SEED, image_size: int = IMAGE_SIZE) -> Any:
    """The calibrated tracker as a ``Sam3TrackerVideoModel`` (float32, eval)."""
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import build_empty

    m = build_empty(config(image_size))
    m.load_state_dict(calibrated_state_dict(seed), strict=True, assign=True)
    return m.eval()


def state_digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# --- Meta's layout ----------------------------------------------------------------------------------------

_NECK_NAMES = {0: ("dconv_2x2_0", "dconv_2x2_1"), 1: ("dconv_2x2", None)}


def meta_keys() -> dict[str, list[int]]:
    """Key -> shape of the official tracker-only model for :func:`config` (recorded by
    scripts/golden/sam3_tracker_official.py from ``sam3==0.1.4``)."""
    data: dict[str, list[int]] = json.loads(META_KEYS.read_text())
    return data


def to_meta_state_dict(hf: dict[str, torch.Tensor], keys: dict[str, list[int]] | None = None
                       ) -> dict[str, torch.Tensor]:
    """The same tensors under Meta's names and layout (RoPE tables ``freqs_cis`` as zeros of their shape: the
    official model computes them, our conversion reads only which blocks are global off them). Each Meta key
    is sent through our forward conversion to find its transformers tensor(s)."""
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import convert_meta_state_dict

    keys = keys or meta_keys()
    out: dict[str, torch.Tensor] = {}
    vit = "backbone.vision_backbone.trunk."
    for k, shape in keys.items():
        if k.endswith("attn.freqs_cis"):  # the official model computes these; only their shapes are read
            out[k] = torch.zeros(shape, dtype=torch.complex64)
            continue
        if k == vit + "pos_embed":
            pe = hf["vision_encoder.backbone.embeddings.position_embeddings"]
            out[k] = torch.cat([torch.zeros_like(pe[:, :1]), pe], dim=1)  # the class-token row is never read
            continue
        if k.startswith("backbone.vision_backbone.convs."):  # the detector's neck: not the tracker's
            out[k] = hf[next(iter(convert_meta_state_dict(
                {k.replace(".convs.", ".sam2_convs."): torch.zeros(shape)})))].clone()
            continue
        if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias"):
            names = list(convert_meta_state_dict({k: torch.zeros(shape)}))
            out[k] = torch.cat([hf[n] for n in names], dim=0)
            continue
        if ".point_embeddings." in k:
            i = int(k.split(".point_embeddings.")[1].split(".")[0])
            out[k] = hf["prompt_encoder.point_embed.weight"][i : i + 1].clone()
            continue
        names = [n for n in convert_meta_state_dict({k: torch.zeros(shape)}) if n != "shared_image_embedding."
                 "positional_embedding"]
        if len(names) != 1:
            raise KeyError(f"{k} maps to {names}")
        out[k] = hf[names[0]].reshape(shape).clone()
    return out
