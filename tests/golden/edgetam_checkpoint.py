"""The calibrated random EdgeTAM the EdgeTAM goldens were recorded on, rebuilt from its seed in the official
``edgetam.pt`` layout.

Architecture: EdgeTAM exactly as released (official ``sam2/configs/edgetam.yaml``: RepViT-M1 trunk, FPN neck,
2-layer memory attention with RoPE on the perceiver's window latents, 2-layer spatial perceiver with 256 + 256
latents), at its own input size, 1024 px.

Initialisation (:func:`official_state_dict`), in the official key space listed by
``tests/fixtures/meta_keys_edgetam.json`` (the official model's ``state_dict()`` names, shapes and dtypes): one
seeded generator, keys in sorted order, PyTorch's default scales as ``tests/parity/calibration.py`` draws them
(uniform +-1/sqrt(fan_in) for matrices and kernels, N(1, 0.02) for every 1-D weight: all are layer or batch
norm weights, several named by index only, e.g. ``mask_downsampler.encoder.1``, ``output_upscaling.1``;
0.1 + 0.03 N(0, 1) for layer scales, N(0, 1) for the prompt encoder's Gaussian matrix and embeddings,
N(0, 0.02) otherwise), with two EdgeTAM additions: the RepViT convolutions are drawn at TRUNK_GAIN x the
default bound and its batch norms get N(1, 0.02) weights with running statistics 0 / 1, so the trunk's
features neither vanish nor explode through its 30-odd residual convolution blocks (batch norm in eval mode
does not renormalise as Hiera's layer norms do:
at the default bound the four stages' outputs have std 0.11 / 0.07 / 0.10 / 0.06 on a DAVIS frame, at 1.3
0.23 / 0.20 / 0.38 / 0.32, at 1.6 they explode to 1e3-1e4, at He's sqrt(6) to 1e13); then the
calibration of ``calibration.py`` under the official names (memory cross-attention q/k x QK_GAIN and output x
OUT_GAIN, memory temporal encoding x TPOS_GAIN, mask-decoder transposed-conv taps tied, object-score bias
OBJECT_BIAS; EdgeTAM's pointers have no temporal projection to scale), and one more EdgeTAM step, the
conditioning-frame preference (COND_BOOST): each memory cross-attention layer's query bias gets a vector of norm
COND_BOOST along ``W_k (tpos[-1] - mean(tpos[:-1]))``, kept to the channels that EdgeTAM's RoPE barely rotates
(STILL_ROPE_DIMS), so every query scores every token of the prompted frame (temporal slot ``tpos[-1]``) higher by
the same amount, wherever it sits. Why: the queries' attention over the perceiver's latents is content-random
(RoPE positions the 64 x 64 queries and the 16 x 16 window latents on unscaled grids, so it gives no spatial
correspondence), so without it each tracked frame's memory read averages the prompted frame with the recent
frames and the two objects' features differ by ~10 %: they drift onto one mask (mutual IoU 0.95-0.99 within 5
frames on the seeds screened) and rounding grows (1e-6 on frame 1 moved the masks by up to 1.5e-4 IoU). With it the
prompted frame holds nearly all of the attention (its share of frame 2's read, prompted frame + frame 1:
0.41 -> 0.99 in layer 0, 0.62 -> 1.00 in layer 1, at seed 10), the objects keep their own memory, rounding noise
from recent frames is damped, and recent frames still move the masks (dropping frame t-1 from t's memory: min
IoU < 0.9). SEED 10 and COND_BOOST 40 were picked by a screen on vidtrack's engine (both boxes decoding to
non-empty, distinct frame-0 masks; the objects apart on every frame; the perturbation and dropped-frame checks)
and confirmed on the official predictor (docs/BACKENDS.md). No official code is needed to rebuild it (EdgeTAM is
not on the package index); :data:`DIGEST` pins the result.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
META_KEYS = ROOT / "tests" / "fixtures" / "meta_keys_edgetam.json"
SEED = 10
IMAGE_SIZE = 1024
TRUNK_GAIN = 1.3
COND_BOOST = 40.0
"""Norm of the query bias added to each memory cross-attention layer so that queries prefer the conditioning
(prompted) frame's memory tokens; see :func:`official_state_dict`."""
STILL_ROPE_DIMS = [*range(112, 128), *range(240, 256)]
"""Query/key channels on which EdgeTAM's axial RoPE (256 channels: 64 frequency pairs per axis, x then y,
frequency 10000^(-k/64)) barely rotates: pairs 56-63 of each axis turn by at most 0.02 rad over the 64 x 64 grid,
so a bias there adds the same score at every position."""
DIGEST = "b2471343ce61638daf72c70f982255ec21189aaadfd8a958f1bfaed17fd4c23a"
"""sha256 of the rebuilt state dict (:func:`state_digest`); set when the goldens were recorded."""


def calibration_gains() -> dict[str, float]:
    parity = ROOT / "tests" / "parity"
    if str(parity) not in sys.path:
        sys.path.insert(0, str(parity))
    import calibration as cal

    return {k: float(getattr(cal, k)) for k in ("QK_GAIN", "OUT_GAIN", "TPOS_GAIN", "OBJECT_BIAS")}


def official_keys() -> list[tuple[str, list[int], str]]:
    data = json.loads(META_KEYS.read_text())
    return [(k, list(s), d) for k, s, d in data["keys"]]


def official_state_dict(seed: int = SEED, gains: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The calibrated random EdgeTAM in the official layout (``torch.save({"model": sd})`` gives an
    ``edgetam.pt``)."""
    g = gains or calibration_gains()
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape_list, dtype in sorted(official_keys()):
        shape = torch.Size(shape_list)
        if dtype != "float32":  # batch norms' num_batches_tracked
            sd[name] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        trunk = name.startswith("image_encoder.trunk.")
        if name.endswith("running_mean"):
            v = torch.zeros(shape)
        elif name.endswith("running_var"):
            v = torch.ones(shape)
        elif len(shape) == 1 and name.endswith(".weight"):  # every 1-D weight is a norm's, whatever its name
            v = 1.0 + 0.02 * torch.randn(shape, generator=gen)
        elif name.endswith("gamma"):
            v = 0.1 + 0.03 * torch.randn(shape, generator=gen)
        elif "positional_encoding_gaussian_matrix" in name or (
            "sam_prompt_encoder" in name and "embed" in name and len(shape) == 2
        ):
            v = torch.randn(shape, generator=gen)
        elif len(shape) >= 2 and name.endswith("weight"):
            fan_in = shape[1] * math.prod(shape[2:])
            bound = (TRUNK_GAIN if trunk else 1.0) / math.sqrt(fan_in)
            v = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        else:
            v = 0.02 * torch.randn(shape, generator=gen)
        sd[name] = v
    for key in [k for k in sd if ".cross_attn_image." in k]:
        if ".q_proj." in key or ".k_proj." in key:
            sd[key] = sd[key] * g["QK_GAIN"]
        elif ".out_proj." in key:
            sd[key] = sd[key] * g["OUT_GAIN"]
    sd["maskmem_tpos_enc"] = sd["maskmem_tpos_enc"] * g["TPOS_GAIN"]
    for i in (0, 3):  # the two ConvTranspose2d of output_upscaling: one tap over each 2x2 block
        w = sd[f"sam_mask_decoder.output_upscaling.{i}.weight"]
        sd[f"sam_mask_decoder.output_upscaling.{i}.weight"] = w[:, :, :1, :1].expand_as(w).clone()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] = torch.full_like(
        sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"], g["OBJECT_BIAS"])
    # the conditioning frame's keys carry maskmem_tpos_enc[-1] (t_pos 0), recent frames' the other slots: a query
    # bias along W_k (tpos[-1] - mean of the others), kept to the still RoPE channels, raises the score of every
    # prompted-frame token by the same amount at every position
    tpos = sd["maskmem_tpos_enc"]
    cond = (tpos[-1] - tpos[:-1].mean(0)).flatten()
    layers = sorted({k.split(".")[2] for k in sd if ".cross_attn_image.q_proj.bias" in k})
    for i in layers:
        direction = torch.zeros(sd[f"memory_attention.layers.{i}.cross_attn_image.q_proj.bias"].shape)
        key = sd[f"memory_attention.layers.{i}.cross_attn_image.k_proj.weight"] @ cond
        direction[STILL_ROPE_DIMS] = key[STILL_ROPE_DIMS]
        sd[f"memory_attention.layers.{i}.cross_attn_image.q_proj.bias"] += COND_BOOST * direction / direction.norm()
    return sd


def state_digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, seed: int = SEED) -> Path:
    """Write the official-format checkpoint (``{"model": state_dict}``) at ``path`` (temporary name, renamed)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"model": official_state_dict(seed)}, tmp)
    tmp.replace(p)
    return p
