"""SAM 3 tracker weights: the Hub id, local transformers folders, and Meta's original ``.pt`` (converted here).

SAM 3 (Carion et al., 2025) ships one checkpoint, ``sam3.pt`` (gated on the Hub as ``facebook/sam3``), holding
the detector and the tracker. The tracker (``tracker.*``: memory encoder ``maskmem_backbone``, memory attention
``transformer.encoder``, SAM prompt encoder and mask decoder) reads the image features of the detector's
perception encoder ViT (``detector.backbone.vision_backbone.trunk``) through its own FPN neck
(``...vision_backbone.sam2_convs``). The tracker-only predictor that ``sam3.model_builder.build_tracker(
with_backbone=True)`` builds holds the same tensors without the two prefixes (``backbone.vision_backbone.*``
and the tracker's keys at the root). Both layouts are converted here, in our own code, to
``transformers.Sam3TrackerVideoModel``:

* the tracker's names are first brought to Meta's SAM 2 names (``transformer.encoder`` -> ``memory_attention``,
  ``maskmem_backbone`` -> ``memory_encoder``, the two-way transformer's ``mlp.lin1/lin2`` -> ``mlp.layers.0/1``),
  then converted by the SAM 2.1 rules (:func:`vidtrack.engines.sam2.weights.convert_meta_state_dict`);
* the ViT: ``qkv`` split into ``q/k/v``, the absolute position embedding loses its class-token row (the
  pretraining grid is tiled, as in the official ``tile_abs_pos``), the RoPE tables (``attn.freqs_cis``) are
  recomputed by transformers and dropped;
* the tracker neck ``sam2_convs.N`` -> ``vision_encoder.neck.fpn_layers.N`` (the detector's own neck
  ``convs.N`` and the rest of the detector are not used by the tracker and are skipped).

The architecture is read off the tensors: ViT width (patch embedding), depth (block count), MLP width, which
blocks attend globally (their RoPE table covers the whole grid, windowed ones cover a 24x24 window), memory
attention depth and memory slots. The head count is not recorded; it is width / 64 as in the released ViT-L.

Nothing here touches the network unless ``download=True``.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import torch
from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel

from vidtrack.engines.sam2.checkpoints import (
    _quiet_transformers,
    check_hub_reachable,
    check_load_report,
    check_transformers_folder,
    load_state_dict_strict,
)
from vidtrack.engines.sam2.weights import redraw_constant_parameters
from vidtrack.errors import WeightsError

SAM3_HUB_ID = "facebook/sam3"
SAM3_CHECKPOINT_NAME = "sam3.pt"
SAM3_MODEL_TYPES = frozenset({"sam3_tracker_video", "sam3_video"})
"""``config.json`` model types whose weights give a ``Sam3TrackerVideoModel`` (the tracker alone, or the whole
SAM 3 video model, whose tracker config transformers reads)."""

PATCH_SIZE = 14
HEAD_DIM = 64
WINDOW_SIZE = 24
VIT_LAYER_NORM_EPS = 1e-5
"""The official ViT's LayerNorms (``sam3/model/vitdet.py``: ``nn.LayerNorm`` with eps 1e-5); transformers'
``Sam3ViTConfig`` defaults to 1e-6, which moves the features of a converted checkpoint (by 1 % of their range
on our calibrated one)."""

# --- configs ---------------------------------------------------------------------------------------------


def sam3_tracker_config(
    *,
    vit_hidden: int = 1024,
    vit_layers: int = 32,
    vit_heads: int | None = None,
    vit_intermediate: int = 4736,
    global_attn: tuple[int, ...] = (7, 15, 23, 31),
    window_size: int = WINDOW_SIZE,
    memory_attention_layers: int = 4,
    num_maskmem: int = 7,
    image_size: int = 1008,
) -> Sam3TrackerVideoConfig:
    """A ``Sam3TrackerVideoConfig``; the defaults are the released SAM 3 tracker (ViT-L/14 at 1008 px)."""
    backbone = {
        "model_type": "sam3_vit_model",
        "hidden_size": vit_hidden,
        "intermediate_size": vit_intermediate,
        "num_hidden_layers": vit_layers,
        "num_attention_heads": vit_heads or max(vit_hidden // HEAD_DIM, 1),
        "global_attn_indexes": list(global_attn),
        "window_size": window_size,
        "layer_norm_eps": VIT_LAYER_NORM_EPS,
    }
    feat = image_size // PATCH_SIZE
    vision = {
        "model_type": "sam3_vision_model",
        "backbone_config": backbone,
        "backbone_feature_sizes": [[4 * feat, 4 * feat], [2 * feat, 2 * feat], [feat, feat]],
    }
    config = Sam3TrackerVideoConfig(vision_config=vision, memory_attention_num_layers=memory_attention_layers,
                                    num_maskmem=num_maskmem)
    if image_size != config.image_size:
        config.image_size = image_size  # the config's setter updates every size that depends on it
    vision_config: Any = config.vision_config
    vision_config.backbone_config.image_size = image_size
    return config


def tiny_test_config(image_size: int = 112) -> Sam3TrackerVideoConfig:
    """A small SAM 3 tracker for unit tests (ViT 2 blocks x 64 wide, one memory-attention layer); the tracker
    keeps SAM 3's widths (256 features, 64-channel memories). ``image_size`` must be a multiple of 14."""
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}; got {image_size}")
    return sam3_tracker_config(vit_hidden=64, vit_layers=2, vit_intermediate=128, global_attn=(1,), window_size=4,
                               memory_attention_layers=1, image_size=image_size)


# --- Meta checkpoint conversion ----------------------------------------------------------------------------

_TRACKER_RENAMES: list[tuple[str, str]] = [
    ("transformer.encoder.", "memory_attention."),
    ("maskmem_backbone.", "memory_encoder."),
    (".mlp.lin1.", ".mlp.layers.0."),
    (".mlp.lin2.", ".mlp.layers.1."),
]
_VIT = "backbone.vision_backbone.trunk."
_NECK = "backbone.vision_backbone.sam2_convs."
_NECK_LAYERS = {"dconv_2x2_0": "scale_layers.0", "dconv_2x2": "scale_layers.0", "maxpool_2x2": "scale_layers.0",
                "dconv_2x2_1": "scale_layers.2", "conv_1x1": "proj1", "conv_3x3": "proj2"}


def tracker_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tracker's tensors in the tracker-only layout, from either layout (see the module docstring):
    ``tracker.X`` -> ``X``, ``detector.backbone.vision_backbone.{trunk,sam2_convs}`` -> ``backbone...``; the
    detector's other tensors are dropped."""
    if not any(k.startswith("tracker.") for k in state_dict):
        return dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith("tracker."):
            out[k[len("tracker."):]] = v
        elif k.startswith("detector." + _VIT) or k.startswith("detector." + _NECK):
            out[k[len("detector."):]] = v
    return out


def _convert_vit(key: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
    rest = key[len(_VIT):]
    pre = "vision_encoder.backbone."
    if rest == "pos_embed":
        grid = value.shape[1]  # the pretraining grid, with the class token's row first when there is one
        side = round((grid - 1) ** 0.5)
        out[pre + "embeddings.position_embeddings"] = value[:, 1:] if side * side == grid - 1 else value
        return
    if rest.startswith("patch_embed.proj."):
        out[pre + "embeddings.patch_embeddings.projection." + rest[len("patch_embed.proj."):]] = value
        return
    if rest.startswith("ln_pre."):
        out[pre + "layer_norm." + rest[len("ln_pre."):]] = value
        return
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
    if m is None:
        raise WeightsError(f"unexpected ViT weight {key} in a SAM 3 checkpoint")
    i, name = m.group(1), m.group(2)
    layer = f"{pre}layers.{i}."
    if name == "attn.freqs_cis":
        return  # transformers computes the RoPE tables
    if name.startswith("attn.qkv."):
        q, k, v = value.chunk(3, dim=0)
        suffix = name[len("attn.qkv."):]
        for part, t in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            out[f"{layer}attention.{part}.{suffix}"] = t.clone()
        return
    for old, new in (("norm1.", "layer_norm1."), ("norm2.", "layer_norm2."), ("attn.proj.", "attention.o_proj."),
                     ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2.")):
        if name.startswith(old):
            out[layer + new + name[len(old):]] = value
            return
    raise WeightsError(f"unexpected ViT weight {key} in a SAM 3 checkpoint")


def convert_meta_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta SAM 3 ``state_dict`` (whole model or tracker only) -> ``Sam3TrackerVideoModel`` state dict."""
    from vidtrack.engines.sam2.weights import convert_meta_state_dict as convert_sam2

    sd = tracker_state_dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    tracker: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith(_VIT):
            _convert_vit(key, value, out)
        elif key.startswith(_NECK):
            m = re.fullmatch(r"(\d+)\.([a-z0-9_]+)\.(weight|bias)", key[len(_NECK):])
            if m is None or m.group(2) not in _NECK_LAYERS:
                raise WeightsError(f"unexpected neck weight {key} in a SAM 3 checkpoint")
            out[f"vision_encoder.neck.fpn_layers.{m.group(1)}.{_NECK_LAYERS[m.group(2)]}.{m.group(3)}"] = value
        elif key.startswith("backbone."):
            continue  # the detector's own neck (convs.N) and text encoder: not the tracker's
        else:
            for old, new in _TRACKER_RENAMES:
                key = key.replace(old, new)
            tracker[key] = value
    out.update(convert_sam2(tracker))
    return out


def meta_checkpoint_config(state_dict: dict[str, torch.Tensor], image_size: int | None = None
                           ) -> Sam3TrackerVideoConfig:
    """The architecture a Meta SAM 3 state dict holds (see the module docstring for what is read off it)."""
    sd = tracker_state_dict(state_dict)
    patch = sd.get(_VIT + "patch_embed.proj.weight")
    if patch is None or "maskmem_tpos_enc" not in sd:
        raise WeightsError("this checkpoint holds no SAM 3 tracker (no ViT patch embedding or no memory encoder); "
                           f"pass Meta's {SAM3_CHECKPOINT_NAME} or a transformers Sam3TrackerVideoModel folder")
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(re.escape(_VIT) + r"blocks\.(\d+)\.", k))})
    fc1 = sd[f"{_VIT}blocks.0.mlp.fc1.weight"]
    window_tokens = WINDOW_SIZE * WINDOW_SIZE
    glob = tuple(i for i in blocks
                 if (f := sd.get(f"{_VIT}blocks.{i}.attn.freqs_cis")) is not None and f.shape[0] != window_tokens)
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"transformer\.encoder\.layers\.(\d+)\.", k))}
    return sam3_tracker_config(
        vit_hidden=int(patch.shape[0]), vit_layers=len(blocks), vit_intermediate=int(fc1.shape[0]),
        global_attn=glob or (7, 15, 23, 31), memory_attention_layers=len(layers) or 4,
        num_maskmem=int(sd["maskmem_tpos_enc"].shape[0]), image_size=image_size or 1008)


def build_empty(config: Sam3TrackerVideoConfig) -> Sam3TrackerVideoModel:
    """A ``Sam3TrackerVideoModel`` with allocated, uninitialised parameters (weights are assigned next)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return Sam3TrackerVideoModel(config)


def load_meta_checkpoint(path: str | Path, image_size: int | None = None) -> Sam3TrackerVideoModel:
    """A ``Sam3TrackerVideoModel`` from Meta's ``sam3.pt`` (or a tracker-only state dict in Meta's names)."""
    from vidtrack.engines.sam2.weights import _read_state_dict

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}")
    sd = _read_state_dict(p)
    if any(k.startswith("vision_encoder.") or k.startswith("tracker_model.") for k in sd):
        raise WeightsError(f"{p} has transformers key names; pass the folder that holds it and its config.json")
    config = meta_checkpoint_config(sd, image_size)
    model = build_empty(config)
    want = {k: v.dtype for k, v in model.state_dict().items()}
    converted = {k: v.to(want[k]) if k in want and v.dtype != want[k] else v
                 for k, v in convert_meta_state_dict(sd).items()}
    load_state_dict_strict(model, converted, what=f"checkpoint {p}", expected="the SAM 3 tracker read from it",
                           assign=True)
    return model.eval()


def check_sam3_folder(folder: Path) -> None:
    """Refuse, before loading, a folder that is not a transformers SAM 3 (tracker) checkpoint."""
    check_transformers_folder(
        folder, SAM3_MODEL_TYPES, "the SAM 3 tracker",
        hint=f"pass Meta's {SAM3_CHECKPOINT_NAME} or a folder saved by Sam3TrackerVideoModel.save_pretrained")


def _from_pretrained(ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str,
                     image_size: int | None) -> Sam3TrackerVideoModel:
    extra: dict[str, Any] = {}
    if image_size is not None:
        config = Sam3TrackerVideoConfig.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only)
        if config.image_size != image_size:
            config.image_size = image_size
        extra["config"] = config
    with _quiet_transformers():
        loaded: Any = Sam3TrackerVideoModel.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only,
                                                            output_loading_info=True, **extra)
    model, info = loaded
    unexpected = [k for k in info.get("unexpected_keys", ()) if not k.startswith("detector_model.")]
    check_load_report(info.get("missing_keys", ()), unexpected, info.get("mismatched_keys", ()), what=what,
                      expected="Sam3TrackerVideoModel")
    return model


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def load_sam3_tracker_model(
    *,
    hub_id: str = SAM3_HUB_ID,
    checkpoint_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    image_size: int | None = None,
) -> Sam3TrackerVideoModel:
    """Load the SAM 3 tracker from ``checkpoint_path`` (Meta's ``.pt``/``.safetensors`` or a transformers
    folder) or else from ``hub_id`` (the local cache; the network only with ``download=True``). The Hub repo is
    gated: a user without access gets one line saying so and what to pass instead."""
    if checkpoint_path is not None:
        p = Path(checkpoint_path).expanduser()
        if p.is_dir():
            check_sam3_folder(p)
            try:
                model = _from_pretrained(str(p), cache_dir=None, local_only=True, what=f"folder {p}",
                                         image_size=image_size)
            except (OSError, ValueError) as e:
                raise WeightsError(f"cannot load the SAM 3 tracker from {p}: {_first_line(e)}") from None
        elif p.is_file():
            model = load_meta_checkpoint(p, image_size)
        else:
            raise WeightsError(f"checkpoint not found: {p} (pass Meta's {SAM3_CHECKPOINT_NAME} or a transformers "
                               "folder)")
    else:
        model = _load_hub(hub_id, cache_dir=cache_dir, download=download, image_size=image_size)
    return model.to(device=device, dtype=dtype).eval()  # type: ignore[call-arg]


def _load_hub(hub_id: str, *, cache_dir: str | Path | None, download: bool, image_size: int | None
              ) -> Sam3TrackerVideoModel:
    instead = f"pass --checkpoint PATH to Meta's {SAM3_CHECKPOINT_NAME} or a transformers folder"
    try:
        if download:
            with contextlib.suppress(OSError, ValueError):
                return _from_pretrained(hub_id, cache_dir=cache_dir, local_only=True, what=hub_id,
                                        image_size=image_size)
            check_hub_reachable(hub_id)
        return _from_pretrained(hub_id, cache_dir=cache_dir, local_only=not download, what=hub_id,
                                image_size=image_size)
    except (OSError, ValueError) as e:
        text = str(e).lower()
        if "gated" in text or "401" in text or "403" in text or "access" in text:
            raise WeightsError(f"{hub_id} is a gated repository your Hugging Face account cannot read (request "
                               f"access on its page and log in with `huggingface-cli login`), or {instead}") from None
        if not download:
            raise WeightsError(f"weights for {hub_id} are not in the local cache; download them with --download "
                               f"(the repository is gated: request access and log in first), or {instead}") from None
        raise WeightsError(f"cannot load the SAM 3 tracker from {hub_id}: {_first_line(e)}; or {instead}") from None


# --- random models for tests ---------------------------------------------------------------------------------


def random_sam3_tracker_model(config: Sam3TrackerVideoConfig, seed: int = 0, *, object_bias: float = 2.0
                              ) -> Sam3TrackerVideoModel:
    """A randomly initialised tracker whose outputs are not degenerate (constant tensors redrawn, the object
    score head biased towards "present"), as :func:`vidtrack.engines.sam2.weights.random_sam2_model`."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Sam3TrackerVideoModel(config).eval()
    redraw_constant_parameters(model, gen, object_bias=object_bias)
    return model
