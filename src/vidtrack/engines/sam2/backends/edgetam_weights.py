"""EdgeTAM weights: the transformers config, Hub ids / local transformers folders, and the official
``edgetam.pt`` converted by our own code.

The official checkpoint (facebookresearch/EdgeTAM, ``checkpoints/edgetam.pt``, ``{"model": state_dict}``) uses
SAM 2's key names for everything SAM 2 shares, so :func:`vidtrack.engines.sam2.weights.convert_meta_state_dict`
converts those; what EdgeTAM adds is renamed here:

* the RepViT trunk, ``image_encoder.trunk.body.*`` (a timm ``features_only`` model) -> transformers'
  ``vision_encoder.backbone.timm_model.*`` (the same timm module tree, so the rest of the key is unchanged);
* the memory-attention layers' feed-forward ``linear1``/``linear2`` -> ``mlp.up_proj``/``mlp.down_proj``;
* the spatial perceiver (official ``sam2/modeling/perceiver.py``): ``latents`` -> ``latents_1d``; each layer's
  cross-attention ``attn.{norm_x, norm_latents, to_q, to_kv, to_out}`` and self-attention
  ``self_attn.{norm, to_q, to_kv, to_out}`` -> ``layer_norm_input``/``layer_norm_latents``/``layer_norm_self``
  and ``{cross_attention, self_attention}.{q,k,v,o}_proj`` (the fused ``to_kv`` is split in two: keys first);
  the feed-forwards ``ff``/``self_ff`` ``(LayerNorm, Linear, GELU, Linear)`` -> ``mlp``/``self_mlp``
  ``{layer_norm, up_proj, down_proj}``; the final ``norm`` -> ``layer_norm``.

The architecture is fixed (one released size); only the input size may change (:func:`edgetam_config`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from vidtrack.catalog import EDGETAM_HUB_ID
from vidtrack.engines.sam2.checkpoints import check_load_report, check_transformers_folder, load_state_dict_strict
from vidtrack.engines.sam2.weights import redraw_constant_parameters
from vidtrack.errors import WeightsError

EDGETAM_CHECKPOINT_NAME = "edgetam.pt"

REPVIT = "repvit_m1"
"""timm architecture of the trunk (the official config names ``repvit_m1.dist_in1k``, the same network)."""


def edgetam_config(image_size: int = 1024) -> Any:
    """The transformers ``EdgeTamVideoConfig`` of the released model (official ``sam2/configs/edgetam.yaml``) at
    ``image_size`` (a multiple of 256: the perceiver splits the S/16 memory map into 16x16 windows)."""
    from transformers import EdgeTamVideoConfig, EdgeTamVisionConfig, TimmWrapperConfig

    check_edgetam_image_size(image_size)
    s = image_size
    trunk = TimmWrapperConfig(architecture=REPVIT,
                              model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
    return EdgeTamVideoConfig(
        vision_config=EdgeTamVisionConfig(
            backbone_config=trunk,
            backbone_channel_list=[384, 192, 96, 48],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=256,
        ),
        prompt_encoder_config={"image_size": s},
        # the mask decoder keeps transformers' defaults: dynamic multimask via stability (delta 0.05, threshold
        # 0.98), which the official build_sam2_video_predictor switches on (apply_postprocessing)
        image_size=s,
        enable_occlusion_spatial_embedding=False,  # no ``no_obj_embed_spatial`` in edgetam.yaml
        enable_temporal_pos_encoding_for_object_pointers=False,  # ``add_tpos_enc_to_obj_ptrs: false``
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_attention_rope_k_sizes=[16, 16],
    )


def check_edgetam_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 256 or image_size % 256:
        raise WeightsError(f"EdgeTAM's image size must be a multiple of 256 (256, 512, 768, 1024, ...): its "
                           f"perceiver cuts the S/16 memory map into 16x16 windows; got {image_size!r}")


def with_image_size(config: Any, image_size: int) -> Any:
    """The same EdgeTAM at another input size (the fields that depend on it, as :func:`edgetam_config` sets)."""
    from transformers import EdgeTamVideoConfig

    check_edgetam_image_size(image_size)
    s = image_size
    d = config.to_dict()
    d["image_size"] = s
    d["vision_config"]["backbone_feature_sizes"] = [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]
    d["prompt_encoder_config"]["image_size"] = s
    d["memory_attention_rope_feat_sizes"] = [s // 16, s // 16]
    return EdgeTamVideoConfig.from_dict(d)


def build_edgetam(config: Any, *, empty: bool = False) -> Any:
    """An ``EdgeTamVideoModel`` (``empty``: parameters allocated, not initialised, for weights assigned next)."""
    from transformers import EdgeTamVideoModel

    if not empty:
        return EdgeTamVideoModel(config).eval()
    from transformers.initialization import no_init_weights

    with no_init_weights():
        return EdgeTamVideoModel(config).eval()


# --- the official checkpoint -----------------------------------------------------------------------------------

_PERCEIVER = [
    (re.compile(r"^spatial_perceiver\.latents$"), "spatial_perceiver.latents_1d"),
    (re.compile(r"^spatial_perceiver\.norm\."), "spatial_perceiver.layer_norm."),
    (re.compile(r"\.attn\.norm_x\."), ".layer_norm_input."),
    (re.compile(r"\.attn\.norm_latents\."), ".layer_norm_latents."),
    (re.compile(r"\.self_attn\.norm\."), ".layer_norm_self."),
    (re.compile(r"\.attn\.to_q\."), ".cross_attention.q_proj."),
    (re.compile(r"\.attn\.to_out\."), ".cross_attention.o_proj."),
    (re.compile(r"\.self_attn\.to_q\."), ".self_attention.q_proj."),
    (re.compile(r"\.self_attn\.to_out\."), ".self_attention.o_proj."),
    (re.compile(r"\.(self_)?ff\.0\."), lambda m: f".{m.group(1) or ''}mlp.layer_norm."),
    (re.compile(r"\.(self_)?ff\.1\."), lambda m: f".{m.group(1) or ''}mlp.up_proj."),
    (re.compile(r"\.(self_)?ff\.3\."), lambda m: f".{m.group(1) or ''}mlp.down_proj."),
]
_KV = re.compile(r"^(spatial_perceiver\.layers\.\d+)\.(attn|self_attn)\.to_kv\.weight$")
_MEMATTN_FF = re.compile(r"^(memory_attention\.layers\.\d+)\.linear([12])\.")


def convert_edgetam_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official EdgeTAM ``state_dict`` -> ``EdgeTamVideoModel`` state dict (module docstring)."""
    from vidtrack.engines.sam2.weights import convert_meta_state_dict

    shared: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("image_encoder.trunk.body."):
            out["vision_encoder.backbone.timm_model." + key[len("image_encoder.trunk.body."):]] = value
        elif key.startswith("spatial_perceiver."):
            kv = _KV.match(key)
            if kv:
                which = "cross_attention" if kv.group(2) == "attn" else "self_attention"
                k, v = value.chunk(2, dim=0)
                out[f"{kv.group(1)}.{which}.k_proj.weight"] = k
                out[f"{kv.group(1)}.{which}.v_proj.weight"] = v
                continue
            new = key
            for pattern, repl in _PERCEIVER:
                new = pattern.sub(repl, new)  # type: ignore[call-overload]
            out[new] = value
        else:
            m = _MEMATTN_FF.match(key)
            if m:
                proj = "up_proj" if m.group(2) == "1" else "down_proj"
                out[f"{m.group(1)}.mlp.{proj}.{key[m.end():]}"] = value
            else:
                shared[key] = value
    out.update(convert_meta_state_dict(shared))
    return out


def is_edgetam_state_dict(state_dict: dict[str, Any]) -> bool:
    """An official EdgeTAM checkpoint: SAM 2 keys plus the spatial perceiver (transformers' or Meta's names)."""
    return any(k.startswith("spatial_perceiver.") for k in state_dict)


def load_edgetam_checkpoint(path: str | Path, image_size: int | None = None) -> Any:
    """``EdgeTamVideoModel`` from the official ``edgetam.pt`` (or a ``.safetensors`` of its state dict)."""
    from vidtrack.engines.sam2.weights import _read_state_dict

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"checkpoint not found: {p}")
    sd = _read_state_dict(p)
    if any(k.startswith("vision_encoder.") for k in sd):
        raise WeightsError(f"{p} has transformers key names; pass the folder that holds it and its config.json")
    if not is_edgetam_state_dict(sd):
        raise WeightsError(f"{p} is not an EdgeTAM checkpoint (no spatial perceiver); for SAM 2.1 weights use "
                           "--model sam2.1-<size>")
    model = build_edgetam(edgetam_config(image_size or 1024), empty=True)
    want = {k: v.dtype for k, v in model.state_dict().items()}
    converted = {k: v.to(want[k]) if k in want and v.dtype != want[k] else v
                 for k, v in convert_edgetam_state_dict(sd).items()}
    load_state_dict_strict(model, converted, what=f"checkpoint {p}", expected="the EdgeTAM architecture",
                           assign=True)
    return model.eval()


def _from_pretrained(ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str,
                     image_size: int | None) -> Any:
    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel
    from transformers.utils import logging as hf_logging

    from vidtrack.engines.sam2.checkpoints import _quiet_transformers

    hf_logging.disable_progress_bar()
    extra: dict[str, Any] = {}
    if image_size is not None:
        stored = EdgeTamVideoConfig.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only)
        extra["config"] = stored if stored.image_size == image_size else with_image_size(stored, image_size)
    with _quiet_transformers():
        loaded: Any = EdgeTamVideoModel.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only,
                                                        output_loading_info=True, **extra)
        model, info = loaded
    check_load_report(info.get("missing_keys", ()), info.get("unexpected_keys", ()),
                      info.get("mismatched_keys", ()), what=what, expected="EdgeTamVideoModel")
    return model


def load_edgetam_model(
    *,
    hub_id: str = EDGETAM_HUB_ID,
    checkpoint_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    image_size: int | None = None,
) -> Any:
    """EdgeTAM from, in order: ``checkpoint_path`` (the official ``edgetam.pt`` or a transformers folder), then the
    Hub id (local cache; the network only with ``download=True``)."""
    import importlib.util

    from vidtrack.engines.sam2.checkpoints import check_hub_reachable

    if importlib.util.find_spec("timm") is None:
        raise WeightsError("EdgeTAM's image encoder (RepViT) needs the timm package: pip install 'vidtrack[edgetam]'")
    if image_size is not None:
        check_edgetam_image_size(image_size)
    if checkpoint_path is not None:
        p = Path(checkpoint_path).expanduser()
        if p.is_dir():
            check_transformers_folder(p, {"edgetam_video"}, "EdgeTAM", hint="pass edgetam.pt or a folder saved by "
                                      "EdgeTamVideoModel.save_pretrained")
            model = _wrap(lambda: _from_pretrained(str(p), cache_dir=None, local_only=True, what=f"folder {p}",
                                                   image_size=image_size), f"folder {p}")
        elif p.is_file():
            model = load_edgetam_checkpoint(p, image_size)
        else:
            raise WeightsError(f"checkpoint not found: {p} (pass edgetam.pt or a transformers folder)")
    else:
        def hub() -> Any:
            return _from_pretrained(hub_id, cache_dir=cache_dir, local_only=True, what=hub_id,
                                    image_size=image_size)
        try:
            model = hub()
        except (OSError, ValueError):
            if not download:
                raise WeightsError(
                    f"weights for {hub_id} are not in the local cache; download them with --download (or "
                    f"`huggingface-cli download {hub_id}`), or pass --checkpoint PATH to {EDGETAM_CHECKPOINT_NAME} "
                    "or a transformers folder") from None
            check_hub_reachable(hub_id)
            model = _wrap(lambda: _from_pretrained(hub_id, cache_dir=cache_dir, local_only=False, what=hub_id,
                                                   image_size=image_size), hub_id)
    if str(model.config.model_type) != "edgetam_video":
        raise WeightsError(f"the weights loaded are a {model.config.model_type} model, not EdgeTAM")
    return model.to(device=device, dtype=dtype).eval()


def _wrap(load: Any, what: str) -> Any:
    try:
        return load()
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightsError(f"cannot load EdgeTAM weights from {what}: {first}") from None


def random_edgetam_model(config: Any, seed: int = 0, *, object_bias: float = 2.0) -> Any:
    """A randomly initialised EdgeTAM whose outputs are not degenerate (constant tensors redrawn around their
    init, the object-score head biased to "present"), for tests and speed-only benchmarks; as
    :func:`vidtrack.engines.sam2.weights.random_sam2_model` does for SAM 2.1."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_edgetam(config)
    redraw_constant_parameters(model, gen, object_bias=object_bias,
                               is_norm_weight=lambda name: ("norm" in name or name.endswith(".bn.weight"))
                               and name.endswith("weight"))
    return model
