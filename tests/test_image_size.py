"""``TrackingConfig.image_size``: the SAM 2 model built at another input size from the same weights (the parity
of such a run with Meta's predictor built at that size is in tests/parity/test_image_size_parity.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.cli_options import TrackerOptions
from vidtrack.errors import InputError

META_KEYS = Path(__file__).parent / "fixtures" / "meta_keys_sam2.1_hiera_tiny.json"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    shapes = json.loads(META_KEYS.read_text())
    gen = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {k: torch.randn(v, generator=gen) * 0.02 for k, v in shapes.items()}}, path)
    return path


@pytest.mark.parametrize("size", [256, 352])
def test_sizes_derived_from_image_size(checkpoint, size):
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", checkpoint_path=str(checkpoint),
                                                                  image_size=size)).load()
    eng = loader.engine
    cfg = eng.model.config
    assert eng.image_size == size == cfg.prompt_encoder_config.image_size
    assert eng.feat_sizes == [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    assert list(cfg.memory_attention_rope_feat_sizes) == [size // 16] * 2
    assert eng.low_res_size == (size // 4, size // 4)
    frame = np.random.default_rng(0).integers(0, 255, (72, 96, 3), dtype=np.uint8)
    session = eng.new_session(loader.new_policy(), 72, 96)
    for i in range(3):
        prompt = [Prompt.from_box(0, 1, (10.0, 10.0, 60.0, 50.0), fmt="xyxy")]
        outs, _ = session.step(i, frame, prompt if i == 0 else [])
        assert outs[0].low_res_logits.shape == (1, 1, size // 4, size // 4)


@pytest.mark.parametrize("bad", [500, 16, 0, -64, 512.0])
def test_bad_image_size_is_one_error_before_loading(bad):
    with pytest.raises(InputError, match="multiple of 32"):
        create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", checkpoint_path="/nonexistent.pt",
                                                             image_size=bad))


@pytest.mark.parametrize(("model", "good", "bad"), [
    ("sam2.1-tiny", 512, 504),     # Hiera: multiples of 32
    ("edgetam", 512, 640),         # EdgeTAM's perceiver: multiples of 256
    ("sam3-tracker", 1008, 1024),  # SAM 3's ViT: 14 px patches
])
def test_image_size_rule_is_the_model_familys(model, good, bad):
    """Each family's own rule, from the catalogue name, before any weights are read (the loader and the
    command line share it): SAM 3's own 1008 px is not a multiple of 32, EdgeTAM's 640 is not one of 256."""
    config = lambda size: TrackingConfig(device="cpu", checkpoint_path="/nonexistent.pt", image_size=size)  # noqa: E731
    create_tracking_loader(model, config(good))  # accepted: nothing is loaded yet
    backend = create_tracking_loader(model, config(None)).spec.backend
    with pytest.raises(InputError, match=f"multiple of .* for {backend}"):
        create_tracking_loader(model, config(bad))
    opts = TrackerOptions(image_size=bad)
    with pytest.raises(InputError, match="--image-size must be a multiple"):
        opts.check(model)
    TrackerOptions(image_size=good).check(model)
