"""SAM 2.1 weights: Hub ids, local transformers folders, and Meta's original ``.pt`` checkpoints.

Meta's checkpoints (``sam2.1_hiera_{tiny,small,base_plus,large}.pt``, what SAMURAI and SAM2Long users have)
are converted here, in our own code, by the rules of transformers' ``convert_sam2_video_to_hf.py`` (which is
not shipped in the wheel): key renames, MLP re-indexing, and two tensor surgeries (the four point embeddings
are concatenated into one table; the Gaussian PE matrix is used twice). The size is read off the checkpoint.

Nothing here touches the network unless ``download=True``.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from vidtrack.catalog import META_CHECKPOINT_NAMES, SAM2_SIZES
from vidtrack.engines.sam2.checkpoints import (
    check_hub_reachable,
    check_transformers_folder,
    from_pretrained_strict,
    load_state_dict_strict,
    unreadable_message,
)
from vidtrack.errors import WeightsError

# --- configs ---------------------------------------------------------------------------------------------

_HIERA: dict[str, dict[str, Any]] = {
    "tiny": {},  # the transformers defaults are hiera-tiny
    "small": {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]},
    "base-plus": {
        "hidden_size": 112,
        "embed_dim_per_stage": [112, 224, 448, 896],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 3, 16, 3],
        "global_attention_blocks": [12, 16, 20],
        "window_positional_embedding_background_size": [14, 14],
    },
    "large": {
        "hidden_size": 144,
        "embed_dim_per_stage": [144, 288, 576, 1152],
        "num_attention_heads_per_stage": [2, 4, 8, 16],
        "blocks_per_stage": [2, 6, 36, 4],
        "global_attention_blocks": [23, 33, 43],
        "window_size_per_stage": [8, 4, 16, 8],
        "window_positional_embedding_background_size": [7, 7],
    },
}


def sam2_config(size: str, *, version: str = "2.1") -> Sam2VideoConfig:
    """The transformers config of a SAM 2.x size (lists, not tuples: 5.x configs are strict)."""
    if size not in _HIERA:
        raise WeightsError(f"unknown SAM 2 size {size!r}; expected one of {', '.join(SAM2_SIZES)}")
    hiera = dict(_HIERA[size])
    dims = hiera.get("embed_dim_per_stage", [96, 192, 384, 768])
    hiera["model_type"] = "sam2_hiera_det_model"
    vision = {"backbone_config": hiera, "backbone_channel_list": list(reversed(dims))}
    v21 = version == "2.1"
    return Sam2VideoConfig(
        vision_config=vision,
        enable_temporal_pos_encoding_for_object_pointers=v21,
        enable_occlusion_spatial_embedding=v21,
    )


def with_image_size(config: Sam2VideoConfig, image_size: int) -> Sam2VideoConfig:
    """The same architecture at another input size. Five fields must agree (reference note §4): the model,
    backbone and prompt-encoder sizes, the FPN feature sizes (S/4, S/8, S/16) and the RoPE grid (S/16).
    Pretrained weights run at other sizes (Hiera interpolates its position embedding) but were trained at 1024."""
    if image_size % 32:
        raise WeightsError(f"image size must be a multiple of 32; got {image_size}")
    s = image_size
    d = config.to_dict()
    d["image_size"] = s
    d["vision_config"]["backbone_config"]["image_size"] = [s, s]
    d["vision_config"]["backbone_feature_sizes"] = [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]
    d["prompt_encoder_config"]["image_size"] = s
    d["memory_attention_rope_feat_sizes"] = [s // 16, s // 16]
    return Sam2VideoConfig.from_dict(d)


def tiny_test_config(image_size: int = 128) -> Sam2VideoConfig:
    """A 1.4 M-parameter SAM 2.1-shaped config for tests and speed-only benchmarks (64-256 px).

    Constraints (reference note §4): memory channels must be 64 (the memory-attention layer hard-codes
    ``kv_in_dim=64``), the hidden size must be a multiple of 64 and larger than 64, and a global-attention
    block must not open a Hiera stage.
    """
    if image_size % 32:
        raise WeightsError(f"test config image size must be a multiple of 32; got {image_size}")
    s = image_size
    hiera = {
        "hidden_size": 16,
        "embed_dim_per_stage": [16, 32, 64, 128],
        "num_attention_heads_per_stage": [1, 1, 1, 1],
        "blocks_per_stage": [1, 1, 2, 1],
        "global_attention_blocks": [3],
        "window_size_per_stage": [4, 4, 4, 4],
        "window_positional_embedding_background_size": [2, 2],
        "image_size": [s, s],
        "model_type": "sam2_hiera_det_model",
    }
    vision = {
        "backbone_config": hiera,
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        "fpn_hidden_size": 128,
    }
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 128, "image_size": s},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 128, "iou_head_hidden_dim": 128},
        image_size=s,
        memory_attention_hidden_size=128,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=128,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=128,
        memory_fuser_num_layers=1,
        memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=256,
    )


# --- Meta checkpoint conversion ------------------------------------------------------------------------

_RENAMES: list[tuple[str, str]] = [
    ("image_encoder.trunk.", "vision_encoder.backbone."),
    ("image_encoder.neck.", "vision_encoder.neck."),
    ("patch_embed.proj.", "patch_embed.projection."),
    ("sam_prompt_encoder.", "prompt_encoder."),
    ("sam_mask_decoder.", "mask_decoder."),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("mask_downscaling.0.", "mask_embed.conv1."),
    ("mask_downscaling.1.", "mask_embed.layer_norm1."),
    ("mask_downscaling.3.", "mask_embed.conv2."),
    ("mask_downscaling.4.", "mask_embed.layer_norm2."),
    ("mask_downscaling.6.", "mask_embed.conv3."),
    ("output_upscaling.0.", "upscale_conv1."),
    ("output_upscaling.1.", "upscale_layer_norm."),
    ("output_upscaling.3.", "upscale_conv2."),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("obj_ptr_tpos_proj", "temporal_positional_encoding_projection_layer"),
    ("obj_ptr_proj", "object_pointer_proj"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("pix_feat_proj", "feature_projection"),
    ("fuser.", "memory_fuser."),
    ("dwconv", "depthwise_conv"),
    ("pwconv", "pointwise_conv"),
    (".gamma", ".scale"),
    (".norm", ".layer_norm"),
    ("out_proj", "o_proj"),
    ("not_a_point_embed", "not_a_point_embed"),
]

_MLP3 = re.compile(r"(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+|object_pointer_proj)"
                   r"\.layers\.(\d)\.")
_MLP2 = re.compile(r"\.mlp\.layers\.(\d)\.")
_NECK = re.compile(r"neck\.convs\.(\d+)\.conv\.")
_DOWNSAMPLER = re.compile(r"mask_downsampler\.encoder\.(\d+)\.")


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new)
    key = _NECK.sub(r"neck.convs.\1.", key)
    key = _MLP3.sub(lambda m: f"{m.group(1)}." + {"0": "proj_in", "1": "layers.0", "2": "proj_out"}[m.group(2)] + ".",
                    key)
    key = _MLP2.sub(lambda m: ".mlp." + {"0": "proj_in", "1": "proj_out"}[m.group(1)] + ".", key)
    if key.startswith("memory_encoder.o_proj."):
        key = key.replace("memory_encoder.o_proj.", "memory_encoder.projection.")

    def _down(m: re.Match[str]) -> str:
        i = int(m.group(1))
        if i == 12:
            return "mask_downsampler.final_conv."
        return f"mask_downsampler.layers.{i // 3}." + ("conv." if i % 3 == 0 else "layer_norm.")

    return _DOWNSAMPLER.sub(_down, key)


def convert_meta_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta SAM 2.x ``state_dict`` -> ``Sam2VideoModel`` state dict."""
    out: dict[str, torch.Tensor] = {}
    point_embeds: dict[int, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight", key)
        if m:
            point_embeds[int(m.group(1))] = value
            continue
        new = _rename(key)
        out[new] = value
        if new == "prompt_encoder.shared_embedding.positional_embedding":
            out["shared_image_embedding.positional_embedding"] = value
    if point_embeds:
        out["prompt_encoder.point_embed.weight"] = torch.cat([point_embeds[i] for i in sorted(point_embeds)], 0)
    return out


def detect_meta_size(state_dict: dict[str, torch.Tensor]) -> tuple[str, str]:
    """(size, version) of a Meta checkpoint, read off its patch-embedding width and block count."""
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None:
        raise WeightsError("not a SAM 2 checkpoint: no image_encoder.trunk.patch_embed.proj.weight")
    blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    width, n_blocks = int(w.shape[0]), len(blocks)
    size = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base-plus", (144, 48): "large"}.get((width, n_blocks))
    if size is None:
        raise WeightsError(f"unrecognised SAM 2 checkpoint (embed dim {width}, {n_blocks} Hiera blocks)")
    version = "2.1" if "no_obj_embed_spatial" in state_dict else "2.0"
    return size, version


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns before it fails; the error below says it in one line
                warnings.simplefilter("ignore")
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for a bad file
        raise WeightsError(unreadable_message(path, e)) from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"checkpoint {path} holds no state dict of tensors")
    return sd


def load_meta_checkpoint(path: str | Path) -> Sam2VideoModel:
    """Build a ``Sam2VideoModel`` from a Meta ``.pt`` / ``.safetensors`` file (original or transformers keys)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}")
    sd = _read_state_dict(p)
    if any(k.startswith("vision_encoder.") for k in sd):
        raise WeightsError(f"{p} has transformers key names; pass the folder that holds it and its config.json")
    size, version = detect_meta_size(sd)
    model = Sam2VideoModel(sam2_config(size, version=version))
    converted = convert_meta_state_dict(sd)
    load_state_dict_strict(model, converted, what=f"checkpoint {p}", expected=f"SAM {version} {size}")
    return model.eval()


def load_sam2_model(
    *,
    size: str,
    hub_id: str,
    checkpoint_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Sam2VideoModel:
    """Load SAM 2.1 weights from, in order: ``checkpoint_path`` (a Meta file, or a transformers folder), then
    the Hub id (from the local cache; from the network only when ``download=True``)."""
    if checkpoint_path is not None:
        p = Path(checkpoint_path).expanduser()
        if p.is_dir():
            check_transformers_folder(p)
            model = _from_pretrained(str(p), cache_dir=None, local_only=True, what=f"folder {p}")
        elif p.is_file():
            model = load_meta_checkpoint(p)
        else:
            raise WeightsError(f"checkpoint not found: {p} (pass a sam2.1_hiera_*.pt file or a transformers folder)")
    else:
        model = _from_pretrained(hub_id, cache_dir=cache_dir, local_only=not download,
                                 what=f"{hub_id}", size=size)
    return model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]


def _from_pretrained(
    ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str, size: str | None = None
) -> Sam2VideoModel:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our CLI draws its own progress; theirs would break one-line errors
    try:
        if not local_only:  # cached weights need no network; otherwise fail fast when the Hub is unreachable
            with contextlib.suppress(OSError, ValueError):
                return from_pretrained_strict(ref, cache_dir=cache_dir, local_only=True, what=what)
            check_hub_reachable(ref)
        return from_pretrained_strict(ref, cache_dir=cache_dir, local_only=local_only, what=what)
    except (OSError, ValueError) as e:
        if size is not None and local_only:
            meta = META_CHECKPOINT_NAMES.get(size, "sam2.1_hiera_<size>.pt")
            raise WeightsError(
                f"weights for {what} are not in the local cache; download them with --download (or "
                f"`huggingface-cli download {ref}`), or pass --checkpoint PATH to {meta} or a transformers folder"
            ) from None
        raise WeightsError(f"cannot load SAM 2 weights from {what}: {_first_line(e)}") from None


def save_pretrained(model: Sam2VideoModel, folder: str | Path) -> None:
    """Save in transformers layout (config.json + model.safetensors)."""
    model.save_pretrained(str(folder))


def random_sam2_model(
    config: Sam2VideoConfig, seed: int = 0, *, object_bias: float = 2.0, iou_spread: float = 0.0
) -> Sam2VideoModel:
    """A randomly initialised model whose outputs are not degenerate, for tests and speed-only benchmarks.

    transformers initialises many tensors to zero or one (biases, embeddings, norms), which makes random
    models output the same empty mask everywhere. Every constant tensor is redrawn from N(0, 0.02) (norm
    weights from N(1, 0.02)), and the object-score head is biased so objects are judged present.

    ``iou_spread`` > 0 redraws the IoU head's output layer with that standard deviation, so the three candidates
    get clearly different predicted IoUs as with trained weights (at the default init they all sit at ~0.5, and
    SAM2Long's diversity rule, which compares IoUs rounded to 2 decimals, then never splits pathways).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and float(p.std()) > 0:
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.02
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_(base + noise)
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_bias)
        if iou_spread > 0:
            out = model.mask_decoder.iou_prediction_head.proj_out
            out.weight.copy_(torch.randn(out.weight.shape, generator=gen) * iou_spread)
    return model
