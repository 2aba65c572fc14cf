"""SAM 2.1 weights: Hub ids, local transformers folders, and Meta's original ``.pt`` checkpoints.

Meta's checkpoints (``sam2.1_hiera_{tiny,small,base_plus,large}.pt``, what SAMURAI and SAM2Long users have)
are converted here, in our own code, by the rules of transformers' ``convert_sam2_video_to_hf.py`` (which is
not shipped in the wheel): key renames, MLP re-indexing, and two tensor surgeries (the four point embeddings
are concatenated into one table; the Gaussian PE matrix is used twice). The architecture is read off the
checkpoint (any Hiera depth and width) and, for what tensors do not record (heads, global-attention blocks,
windows, input size), off Meta's yaml model config: custom and fine-tuned models ship one.

Nothing here touches the network unless ``download=True``.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    """The same architecture at another input size. Five fields must agree (docs/POLICIES.md): the model,
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


def check_image_size(image_size: int | None, model: Any = None, backend: str = "sam2") -> None:
    """``TrackingConfig.image_size``: None, or a size ``backend``'s rule accepts (:mod:`vidtrack.image_sizes`);
    with an already-built ``model`` it must be that model's size (a built model's position encodings are
    fixed)."""
    from vidtrack.errors import InputError
    from vidtrack.image_sizes import check_image_size as check_rule

    check_rule(image_size, backend)
    if image_size is not None and model is not None and int(model.config.image_size) != image_size:
        raise InputError(f"image size {image_size} was asked for but the model given is built for "
                         f"{int(model.config.image_size)} px; build it at that size or leave image_size unset")


def tiny_test_config(image_size: int = 128) -> Sam2VideoConfig:
    """A 1.4 M-parameter SAM 2.1-shaped config for tests and speed-only benchmarks (64-256 px).

    Constraints of transformers' ``Sam2VideoModel``: memory channels must be 64 (the memory-attention layer
    hard-codes ``kv_in_dim=64``), the hidden size must be a multiple of 64 and larger than 64, and a
    global-attention block must not open a Hiera stage.
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
            # its own tensor: save_pretrained refuses two keys sharing storage that are not declared tied
            out["shared_image_embedding.positional_embedding"] = value.clone()
    if point_embeds:
        out["prompt_encoder.point_embed.weight"] = torch.cat([point_embeds[i] for i in sorted(point_embeds)], 0)
    return out


def detect_meta_size(state_dict: dict[str, torch.Tensor]) -> tuple[str, str]:
    """(size, version) of a Meta checkpoint of a released size, read off its patch-embedding width and block
    count; ``size`` is ``"custom"`` for any other Hiera (see :func:`meta_checkpoint_config`)."""
    hiera = hiera_from_state_dict(state_dict)
    size = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base-plus", (144, 48): "large"}.get(
        (hiera.embed_dim, sum(hiera.stages)), "custom")
    return size, meta_version(state_dict)


def meta_version(state_dict: dict[str, torch.Tensor]) -> str:
    """"2.1" or "2.0": only SAM 2.1 checkpoints carry the occlusion embedding ``no_obj_embed_spatial``."""
    return "2.1" if "no_obj_embed_spatial" in state_dict else "2.0"


@dataclass(frozen=True)
class HieraShape:
    """What a Meta checkpoint's weights say about its Hiera trunk: width, blocks per stage, the width of
    each stage, the background grid of the windowed position embedding and the first stage's window."""

    embed_dim: int
    stages: tuple[int, ...]
    dims: tuple[int, ...]
    background: tuple[int, int]
    first_window: int


def hiera_from_state_dict(state_dict: dict[str, torch.Tensor]) -> HieraShape:
    """Read the Hiera shape off the tensors (a stage opens at every block with a ``proj`` layer, which
    projects to the next stage's width)."""
    pre = "image_encoder.trunk."
    w = state_dict.get(pre + "patch_embed.proj.weight")
    if w is None:
        raise WeightsError("not a SAM 2 checkpoint: no image_encoder.trunk.patch_embed.proj.weight")
    block_key = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")
    blocks = sorted({int(m.group(1)) for k in state_dict if (m := block_key.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise WeightsError("not a SAM 2 checkpoint: the Hiera blocks are not numbered 0..N-1")
    starts = [0] + [i for i in blocks if i > 0 and f"{pre}blocks.{i}.proj.weight" in state_dict]
    stages = tuple(b - a for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True))
    dims = tuple(int(state_dict[f"{pre}blocks.{i}.attn.qkv.weight"].shape[0]) // 3 for i in starts)
    pos = state_dict.get(pre + "pos_embed")
    win = state_dict.get(pre + "pos_embed_window")
    if pos is None or win is None:
        raise WeightsError("not a SAM 2 checkpoint: no Hiera position embeddings (pos_embed, pos_embed_window)")
    return HieraShape(int(w.shape[0]), stages, dims, (int(pos.shape[-2]), int(pos.shape[-1])), int(win.shape[-1]))


_RELEASED_TRUNKS: dict[tuple[int, tuple[int, ...]], dict[str, Any]] = {
    # (embed_dim, stages) -> what the released yaml files say and the weights do not
    (96, (1, 2, 7, 2)): {"num_heads": 1, "global_att_blocks": [5, 7, 9], "window_spec": [8, 4, 14, 7]},
    (96, (1, 2, 11, 2)): {"num_heads": 1, "global_att_blocks": [7, 10, 13], "window_spec": [8, 4, 14, 7]},
    (112, (2, 3, 16, 3)): {"num_heads": 2, "global_att_blocks": [12, 16, 20], "window_spec": [8, 4, 14, 7]},
    (144, (2, 6, 36, 4)): {"num_heads": 2, "global_att_blocks": [23, 33, 43], "window_spec": [8, 4, 16, 8]},
}
_HIERA_DEFAULTS: dict[str, Any] = {
    # ``sam2.modeling.backbones.hieradet.Hiera.__init__`` defaults: what a yaml that omits a key means
    "embed_dim": 96, "num_heads": 1, "q_pool": 3, "q_stride": [2, 2], "stages": [2, 3, 16, 3], "dim_mul": 2.0,
    "head_mul": 2.0, "window_pos_embed_bkg_spatial_size": [14, 14], "window_spec": [8, 4, 14, 7],
    "global_att_blocks": [12, 16, 20],
}


def read_meta_model_yaml(path: str | Path) -> dict[str, Any]:
    """The ``model`` section of one of Meta's yaml configs (``configs/sam2.1/*.yaml``, or a training config's
    ``trainer.model``), with ``${a.b}`` references resolved. Only plain data is read; nothing is instantiated."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"model config not found: {p} (pass the yaml the checkpoint was trained with)")
    try:
        root = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read model config {p}: {_first_line(e)}") from None
    if not isinstance(root, dict):
        raise WeightsError(f"model config {p} is not a yaml mapping")
    model = root.get("model")
    if model is None and isinstance(root.get("trainer"), dict):
        model = root["trainer"].get("model")
    if not isinstance(model, dict):
        raise WeightsError(f"model config {p} has no `model:` section (nor `trainer: model:`); is it a SAM 2 yaml?")

    def resolve(v: Any, depth: int = 0) -> Any:
        if isinstance(v, dict):
            return {k: resolve(x, depth) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x, depth) for x in v]
        m = re.fullmatch(r"\$\{([^}]+)\}", v) if isinstance(v, str) else None
        if m is None:
            return v
        node: Any = root
        for part in m.group(1).split("."):
            if not isinstance(node, dict) or part not in node or depth > 8:
                raise WeightsError(f"model config {p}: cannot resolve {v}")
            node = node[part]
        return resolve(node, depth + 1)

    out: dict[str, Any] = resolve(model)
    return out


def meta_checkpoint_config(
    state_dict: dict[str, torch.Tensor], model_yaml: dict[str, Any] | None = None
) -> Sam2VideoConfig:
    """The transformers config of a Meta SAM 2.x checkpoint of any Hiera depth, width and input size.

    From the weights: version (2.0/2.1), Hiera width and blocks per stage, the stage widths, the window
    position-embedding grids, the number of memory-attention layers and their feed-forward width, the number
    of memories. From the model yaml (``model_yaml``, see :func:`read_meta_model_yaml`): head counts,
    global-attention blocks, window sizes and the input size, which no tensor shape records. Without a yaml,
    those are taken from the released size of the same shape (1024 px); a custom shape needs the yaml.
    """
    version = meta_version(state_dict)
    shape = hiera_from_state_dict(state_dict)
    trunk: dict[str, Any]
    if model_yaml is not None:
        trunk = {**_HIERA_DEFAULTS, **((model_yaml.get("image_encoder") or {}).get("trunk") or {})}
        trunk = {k: v for k, v in trunk.items() if not k.startswith("_")}
        image_size = int(model_yaml.get("image_size", 1024))
        said = (int(trunk["embed_dim"]), tuple(int(x) for x in trunk["stages"]))
        if said != (shape.embed_dim, shape.stages):
            raise WeightsError(
                f"the model config describes Hiera embed_dim {said[0]} with stages {list(said[1])} but the checkpoint "
                f"has embed_dim {shape.embed_dim} with stages {list(shape.stages)}; pass the yaml of this checkpoint")
        for key, want in (("q_pool", 3), ("q_stride", [2, 2]), ("dim_mul", 2.0), ("head_mul", 2.0)):
            if [float(x) for x in np.atleast_1d(trunk[key])] != [float(x) for x in np.atleast_1d(want)]:
                raise WeightsError(f"Hiera {key}={trunk[key]} is not supported (transformers' Sam2 Hiera fixes it "
                                   f"to {want})")
    else:
        known = _RELEASED_TRUNKS.get((shape.embed_dim, shape.stages))
        if known is None:
            raise WeightsError(
                f"custom SAM 2 Hiera (embed dim {shape.embed_dim}, blocks per stage {list(shape.stages)}): its head "
                "counts, global-attention blocks, window sizes and input size are not stored in the weights; give "
                "the model's yaml config (put it beside the checkpoint as <checkpoint name>.yaml, or pass "
                "--model-config PATH)")
        trunk = {**_HIERA_DEFAULTS, **known, "window_pos_embed_bkg_spatial_size": list(shape.background)}
        image_size = 1024
    if image_size % 32:
        raise WeightsError(f"image size must be a multiple of 32; got {image_size}")
    n = len(shape.stages)
    heads = [int(trunk["num_heads"] * 2**i) for i in range(n)]
    windows = [int(x) for x in trunk["window_spec"]]
    glob = [int(x) for x in trunk["global_att_blocks"]]
    if len(windows) != n:
        raise WeightsError(f"window_spec {windows} has {len(windows)} entries for {n} Hiera stages")
    if windows[0] != shape.first_window or list(shape.background) != [int(x) for x in
                                                                    trunk["window_pos_embed_bkg_spatial_size"]]:
        raise WeightsError(
            f"the model config's window_spec[0] {windows[0]} / background {trunk['window_pos_embed_bkg_spatial_size']} "
            f"do not match the checkpoint's position embeddings ({shape.first_window}, {list(shape.background)})")
    opens = set(np.cumsum([0, *shape.stages[:-1]]).tolist())
    if any(b in opens and b > 0 for b in glob):
        raise WeightsError(f"a global-attention block opens a Hiera stage ({glob}); transformers' Hiera cannot "
                           "represent that")
    hiera = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": shape.embed_dim,
        "embed_dim_per_stage": list(shape.dims),
        "num_attention_heads_per_stage": heads,
        "blocks_per_stage": list(shape.stages),
        "global_attention_blocks": glob,
        "window_size_per_stage": windows,
        "window_positional_embedding_background_size": list(shape.background),
    }
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"memory_attention\.layers\.(\d+)\.", k))}
    ffn = state_dict.get("memory_attention.layers.0.linear1.weight")
    tpos = state_dict.get("maskmem_tpos_enc")
    v21 = version == "2.1"
    config = Sam2VideoConfig(
        vision_config={"backbone_config": hiera, "backbone_channel_list": list(reversed(shape.dims))},
        enable_temporal_pos_encoding_for_object_pointers=v21,
        enable_occlusion_spatial_embedding=v21,
        memory_attention_num_layers=len(layers) or 4,
        memory_attention_feed_forward_hidden_size=int(ffn.shape[0]) if ffn is not None else 2048,
        num_maskmem=int(tpos.shape[0]) if tpos is not None else 7,
    )
    return with_image_size(config, image_size) if image_size != 1024 else config


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _torch_load(path: Path) -> Any:
    """``torch.load`` memory-mapped when the file allows it (zip format, what ``torch.save`` writes since 1.6):
    the tensors then live in the page cache, shared by every process that loads the same file and never
    copied into the process's own memory; legacy files are read normally."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e) and "zip" not in str(e):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)


def build_empty(config: Sam2VideoConfig) -> Sam2VideoModel:
    """A ``Sam2VideoModel`` whose parameters are allocated but not initialised (transformers'
    ``no_init_weights``: the random draws and ``init_weights`` are skipped, and untouched allocations cost no
    memory), for weights assigned right after. Buffers computed in the constructors (RoPE frequencies, position
    ids) are built as usual; persistent ones must come with the weights (strict loading checks it)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return Sam2VideoModel(config)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns before it fails; the error below says it in one line
                warnings.simplefilter("ignore")
                sd = _torch_load(path)
    except Exception as e:  # torch/safetensors raise many types for a bad file
        raise WeightsError(unreadable_message(path, e)) from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"checkpoint {path} holds no state dict of tensors")
    return sd


def sidecar_model_config(checkpoint: str | Path) -> Path | None:
    """``<checkpoint without suffix>.yaml`` beside a checkpoint, if there is one: where a custom or fine-tuned
    checkpoint's Meta model config is looked for when none is given."""
    p = Path(checkpoint).expanduser().with_suffix(".yaml")
    return p if p.is_file() else None


def load_meta_checkpoint(
    path: str | Path, model_config: str | Path | None = None, image_size: int | None = None
) -> Sam2VideoModel:
    """Build a ``Sam2VideoModel`` from a Meta ``.pt`` / ``.safetensors`` file (original keys) of any size.

    The architecture comes from the weights and, for what they do not record (heads, global-attention blocks,
    windows, input size), from Meta's yaml ``model_config``, else from ``<checkpoint>.yaml`` beside the file,
    else from the released size of the same shape (see :func:`meta_checkpoint_config`). ``image_size``
    overrides the input size (:func:`with_image_size`).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}")
    sd = _read_state_dict(p)
    if any(k.startswith("vision_encoder.") for k in sd):
        raise WeightsError(f"{p} has transformers key names; pass the folder that holds it and its config.json")
    yaml_path = Path(model_config).expanduser() if model_config is not None else sidecar_model_config(p)
    config = meta_checkpoint_config(sd, read_meta_model_yaml(yaml_path) if yaml_path is not None else None)
    if image_size is not None and image_size != config.image_size:
        config = with_image_size(config, image_size)
    version = meta_version(sd)
    model = build_empty(config)  # no random initialisation: every tensor is assigned from the checkpoint
    want = {k: v.dtype for k, v in model.state_dict().items()}
    converted = {k: v.to(want[k]) if k in want and v.dtype != want[k] else v  # a half-precision file -> float32
                 for k, v in convert_meta_state_dict(sd).items()}
    load_state_dict_strict(model, converted, what=f"checkpoint {p}",
                           expected=f"the SAM {version} architecture read from it (and its yaml)", assign=True)
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
    model_config: str | Path | None = None,
    image_size: int | None = None,
) -> Sam2VideoModel:
    """Load SAM 2.1 weights from, in order: ``checkpoint_path`` (a Meta file, or a transformers folder), then
    the Hub id (from the local cache; from the network only when ``download=True``). ``model_config``: Meta's
    yaml for a Meta file of a custom architecture (see :func:`load_meta_checkpoint`); ``image_size``: another
    input size than the checkpoint's (:func:`with_image_size`)."""
    if model_config is not None and (checkpoint_path is None or Path(checkpoint_path).expanduser().is_dir()):
        raise WeightsError("a model config (yaml) applies to a Meta .pt/.safetensors checkpoint only; pass "
                           "--checkpoint PATH to that file too")
    if checkpoint_path is not None:
        p = Path(checkpoint_path).expanduser()
        if p.is_dir():
            check_transformers_folder(p)
            model = _from_pretrained(str(p), cache_dir=None, local_only=True, what=f"folder {p}",
                                     image_size=image_size)
        elif p.is_file():
            model = load_meta_checkpoint(p, model_config, image_size)
        else:
            raise WeightsError(f"checkpoint not found: {p} (pass a sam2.1_hiera_*.pt file or a transformers folder)")
    else:
        model = _from_pretrained(hub_id, cache_dir=cache_dir, local_only=not download,
                                 what=f"{hub_id}", size=size, image_size=image_size)
    return model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]


def _from_pretrained(
    ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str, size: str | None = None,
    image_size: int | None = None,
) -> Sam2VideoModel:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our CLI draws its own progress; theirs would break one-line errors
    try:
        if not local_only:  # cached weights need no network; otherwise fail fast when the Hub is unreachable
            with contextlib.suppress(OSError, ValueError):
                return _from_pretrained_sized(ref, cache_dir=cache_dir, local_only=True, what=what,
                                              image_size=image_size)
            check_hub_reachable(ref)
        return _from_pretrained_sized(ref, cache_dir=cache_dir, local_only=local_only, what=what,
                                      image_size=image_size)
    except (OSError, ValueError) as e:
        if size is not None and local_only:
            meta = META_CHECKPOINT_NAMES.get(size, "sam2.1_hiera_<size>.pt")
            raise WeightsError(
                f"weights for {what} are not in the local cache; download them with --download (or "
                f"`huggingface-cli download {ref}`), or pass --checkpoint PATH to {meta} or a transformers folder"
            ) from None
        raise WeightsError(f"cannot load SAM 2 weights from {what}: {_first_line(e)}") from None


def _from_pretrained_sized(
    ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str, image_size: int | None
) -> Sam2VideoModel:
    """:func:`from_pretrained_strict`, at another input size than the stored config's when ``image_size`` is set."""
    config = None
    if image_size is not None:
        stored = Sam2VideoConfig.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only)
        config = stored if stored.image_size == image_size else with_image_size(stored, image_size)
    model: Sam2VideoModel = from_pretrained_strict(ref, cache_dir=cache_dir, local_only=local_only, what=what,
                                                   config=config)
    return model


def save_pretrained(model: Sam2VideoModel, folder: str | Path) -> None:
    """Save in transformers layout (config.json + model.safetensors)."""
    model.save_pretrained(str(folder))


def _is_norm_weight(name: str) -> bool:
    return "norm" in name and name.endswith("weight")


def redraw_constant_parameters(model: Any, gen: torch.Generator, *, object_bias: float,
                               is_norm_weight: Callable[[str], bool] = _is_norm_weight) -> None:
    """Make a freshly initialised SAM 2-family model non-degenerate, in place: every constant parameter (zero
    or one at transformers' init: biases, embeddings, norms) is redrawn from N(0, 0.02) -- norm weights, as
    ``is_norm_weight`` names them, from N(1, 0.02) -- in parameter order from ``gen``, and the object-score head
    is biased by ``object_bias`` so objects are judged present. Shared by the random SAM 2.1, EdgeTAM and SAM 3
    tracker models."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and float(p.std()) > 0:
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.02
            base = 1.0 if is_norm_weight(name) else 0.0
            p.copy_(base + noise)
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_bias)


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
    redraw_constant_parameters(model, gen, object_bias=object_bias)
    with torch.no_grad():
        if iou_spread > 0:
            out = model.mask_decoder.iou_prediction_head.proj_out
            out.weight.copy_(torch.randn(out.weight.shape, generator=gen) * iou_spread)
    return model
