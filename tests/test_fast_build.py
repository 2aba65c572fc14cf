"""Model build from a Meta checkpoint without a random initialisation (weights assigned in place, memory-mapped
file): the same model as the stock build (random init, then the weights copied in), strict as before."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from transformers import Sam2VideoModel

from vidtrack.engines.sam2.weights import (
    convert_meta_state_dict,
    load_meta_checkpoint,
    meta_checkpoint_config,
)
from vidtrack.errors import WeightsError

META_KEYS = Path(__file__).parent / "fixtures" / "meta_keys_sam2.1_hiera_tiny.json"


def _meta_state_dict(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    shapes = json.loads(META_KEYS.read_text())
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v, generator=gen) * 0.02).to(dtype) for k, v in shapes.items()}


def _stock_build(sd: dict[str, torch.Tensor]) -> Sam2VideoModel:
    """What load_meta_checkpoint did before: a randomly initialised model, then the weights copied in."""
    model = Sam2VideoModel(meta_checkpoint_config(sd))
    model.load_state_dict(convert_meta_state_dict({k: v.float() for k, v in sd.items()}), strict=False)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    sd = _meta_state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return sd, path


def test_build_without_init_equals_stock_build(saved):
    """Every parameter and buffer (persistent or not: RoPE frequencies, position ids) equal, and an image
    encoded identically."""
    sd, path = saved
    fast, stock = load_meta_checkpoint(path), _stock_build(sd)
    a = dict(fast.named_parameters(remove_duplicate=False)) | dict(fast.named_buffers(remove_duplicate=False))
    b = dict(stock.named_parameters(remove_duplicate=False)) | dict(stock.named_buffers(remove_duplicate=False))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fa = fast.get_image_features(x, return_dict=True).fpn_hidden_states
        fb = stock.get_image_features(x, return_dict=True).fpn_hidden_states
    assert all(torch.equal(u, v) for u, v in zip(fa, fb, strict=True))


def test_half_precision_checkpoint_builds_float32(tmp_path):
    sd = _meta_state_dict(2, torch.bfloat16)
    torch.save({"model": sd}, tmp_path / "half.pt")
    model = load_meta_checkpoint(tmp_path / "half.pt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    w = model.state_dict()["vision_encoder.backbone.patch_embed.projection.weight"]
    assert torch.equal(w, sd["image_encoder.trunk.patch_embed.proj.weight"].float())


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_strict_loading_kept(tmp_path, change):
    """Without a random initialisation a missing weight would be left as uninitialised memory: it must still
    be an error, as must a weight the architecture has no place for."""
    sd = _meta_state_dict(3)
    if change == "missing":
        sd.pop("memory_attention.layers.0.linear1.bias")
    else:
        sd["memory_attention.layers.0.extra.weight"] = torch.zeros(3)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=change):
        load_meta_checkpoint(tmp_path / "bad.pt")
