"""Weights: local transformers folders, the Hub cache layout, and Meta's original checkpoints.

No download is possible here, so each path is exercised by saving a randomly initialised model in that
layout and loading it back through the same code a user's call takes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import moving_shapes, shape_masks
from vidtrack import Prompt, TrackingConfig, WeightsError, create_tracking_loader
from vidtrack.engines.sam2.weights import (
    convert_meta_state_dict,
    detect_meta_size,
    load_meta_checkpoint,
    load_sam2_model,
    sam2_config,
)

META_KEYS = Path(__file__).parent / "fixtures" / "meta_keys_sam2.1_hiera_tiny.json"
"""Key names and shapes of Meta's SAM2Base for configs/sam2.1/sam2.1_hiera_t.yaml (471 tensors)."""


def _track(loader) -> list[str]:
    frames = moving_shapes(5)
    box, _ = shape_masks()
    res = loader.track_video(frames, [Prompt.from_mask(0, 1, box)])
    return [f.masks[0].to_rle()["counts"] for f in res.frames]


def test_local_transformers_folder_roundtrip(tiny_model, tiny_checkpoint_dir, sam2_loader):
    cfg = TrackingConfig(device="cpu", checkpoint_path=str(tiny_checkpoint_dir))
    loader = create_tracking_loader("sam2.1-tiny", cfg).load()
    for (k, a), (k2, b) in zip(loader.engine.model.state_dict().items(), tiny_model.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert _track(loader) == _track(sam2_loader)


def test_hub_id_loads_offline_from_the_cache(tiny_checkpoint_dir, tmp_path, sam2_loader, monkeypatch):
    # the Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/files}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--facebook--sam2.1-hiera-tiny"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in tiny_checkpoint_dir.iterdir():
        shutil.copy(f, snap / f.name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", cache_dir=str(tmp_path))).load()
    assert _track(loader) == _track(sam2_loader)


def test_missing_hub_weights_say_what_to_do(tmp_path):
    loader = create_tracking_loader("sam2.1-large", TrackingConfig(device="cpu", cache_dir=str(tmp_path)))
    with pytest.raises(WeightsError) as e:
        loader.load()
    msg = str(e.value)
    assert "facebook/sam2.1-hiera-large" in msg and "--download" in msg and "sam2.1_hiera_large.pt" in msg
    assert "\n" not in msg


def _random_meta_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = json.loads(META_KEYS.read_text())
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=gen) * 0.02 for k, v in shapes.items()}


def test_meta_checkpoint_conversion_is_complete_and_exact(tmp_path):
    sd = _random_meta_state_dict()
    assert detect_meta_size(sd) == ("tiny", "2.1")
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    model = load_meta_checkpoint(path)  # strict: raises on any missing or unexpected key
    hf = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params / 1e6 - 38.96) < 0.01  # the published size of sam2.1_hiera_tiny
    # spot checks that follow the rules independently of the converter
    assert torch.equal(hf["vision_encoder.backbone.patch_embed.projection.weight"],
                       sd["image_encoder.trunk.patch_embed.proj.weight"])
    assert torch.equal(hf["prompt_encoder.point_embed.weight"],
                       torch.cat([sd[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]))
    gauss = sd["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert torch.equal(hf["shared_image_embedding.positional_embedding"], gauss)
    assert torch.equal(hf["prompt_encoder.shared_embedding.positional_embedding"], gauss)
    assert torch.equal(hf["memory_encoder.mask_downsampler.final_conv.weight"],
                       sd["memory_encoder.mask_downsampler.encoder.12.weight"])
    assert torch.equal(hf["mask_decoder.iou_prediction_head.proj_out.weight"],
                       sd["sam_mask_decoder.iou_prediction_head.layers.2.weight"])
    assert torch.equal(hf["memory_temporal_positional_encoding"], sd["maskmem_tpos_enc"])
    # the converted model saves as a transformers folder and loads back the same (two keys sharing one tensor
    # made save_pretrained refuse it)
    from vidtrack.engines.sam2.weights import save_pretrained

    save_pretrained(model, tmp_path / "as-folder")
    again = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", checkpoint_path=str(
        tmp_path / "as-folder"))).load().engine.model.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(again.values(), hf.values(), strict=True))
    # a file without the {"model": ...} wrapper, and safetensors, load the same
    torch.save(sd, tmp_path / "bare.pt")
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "sam2.1_hiera_tiny.safetensors"))
    for other in ("bare.pt", "sam2.1_hiera_tiny.safetensors"):
        m2 = load_meta_checkpoint(tmp_path / other)
        assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), hf.values(), strict=True))


def test_meta_checkpoint_through_the_loader(tmp_path):
    sd = _random_meta_state_dict(1)
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", checkpoint_path=str(path)))
    loader.load()
    assert loader.engine.image_size == 1024 and loader.engine.model.config.num_maskmem == 7
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    mask = np.zeros((64, 96), bool)
    mask[10:40, 20:60] = True
    session = loader.engine.new_session(loader.new_policy(), 64, 96)
    outs, _ = session.step(0, frame, [Prompt.from_mask(0, 1, mask)])
    assert outs[0].low_res_logits.shape == (1, 1, 256, 256)


def test_converted_keys_cover_every_size():
    """Every size's config accepts the converted key set of a checkpoint of that size (shapes only)."""
    shapes = json.loads(META_KEYS.read_text())
    sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    conv = convert_meta_state_dict(sd)
    with torch.device("meta"):
        from transformers import Sam2VideoModel

        ref = Sam2VideoModel(sam2_config("tiny")).state_dict()
    assert set(conv) == set(ref)
    assert all(tuple(conv[k].shape) == tuple(ref[k].shape) for k in ref)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_unreadable_checkpoint(tmp_path, content):
    p = tmp_path / "broken.pt"
    p.write_bytes(content)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_sam2_model(size="tiny", hub_id="x", checkpoint_path=p)


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(WeightsError, match="checkpoint not found"):
        load_sam2_model(size="tiny", hub_id="x", checkpoint_path=tmp_path / "nope.pt")


def test_wrong_model_in_checkpoint(tmp_path):
    torch.save({"model": {"a.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a SAM 2 checkpoint"):
        load_meta_checkpoint(tmp_path / "other.pt")
