"""Shared by tests/test_golden_samurai.py and tests/test_golden_sam2long.py: the golden files, the rebuilt
checkpoint, vidtrack loaders on it, mask decoding and IoU. Not a test module (loaded by path)."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vidtrack import Prompt, TrackingConfig, create_tracking_loader

GOLDEN = Path(__file__).resolve().parent
DATA = GOLDEN.parents[2] / "shared" / "data"


def load_module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"golden_{name}", GOLDEN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@cache
def golden(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def decode(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_ious(g: dict[str, Any], masks: dict[int, np.ndarray]) -> np.ndarray:
    """Per-frame IoU of vidtrack's masks with the golden's official masks, every frame of the clip."""
    return np.array([iou(masks[f["frame"]], decode(f["mask"])) for f in g["frames"]])


def build_checkpoint(name: str, folder: Path) -> Path:
    """Rebuild the golden's checkpoint (.pt + Meta's composed yaml beside it, which vidtrack reads); skip
    without Meta's sam2 (it builds the model), pycocotools or the real frames."""
    pytest.importorskip("sam2", reason="Meta's sam2==1.1.0 builds the golden checkpoint (README: dev install)")
    pytest.importorskip("pycocotools")
    if not (DATA / "davis2016").is_dir():
        pytest.skip(f"real test data not found at {DATA} (only present beside the project checkout)")
    from omegaconf import OmegaConf

    mod = load_module("checkpoint")
    cal = mod.calibration()
    ck = golden(name)["checkpoint"]
    sd = mod.golden_state_dict(arch=cal.SMALL, **ck["recipe"])
    assert mod.state_digest(sd) == ck["state_digest"], (
        "the rebuilt checkpoint differs from the one the golden was recorded on (PyTorch's random streams or "
        "tests/parity/calibration.py changed): regenerate with scripts/golden/regen.py")
    path = mod.save(sd, folder / "golden.pt")
    path.with_suffix(".yaml").write_text(OmegaConf.to_yaml(cal.compose_config(cal.SMALL)))
    return path


def prompt_and_frames(g: dict[str, Any]) -> tuple[Path, list[Prompt]]:
    clip = g["clip"]
    frames = DATA / "davis2016" / "JPEGImages" / "480p" / clip["sequence"]
    mask = np.asarray(Image.open(DATA / clip["prompt"]["mask"])) > 0
    return frames, [Prompt.from_mask(clip["prompt"]["frame"], clip["prompt"]["obj_id"], mask)]


def make_loader(model: str, checkpoint: Path, **options: Any) -> Any:
    """vidtrack on the checkpoint (its own conversion), CPU float32, Meta's PIL resizing."""
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=str(checkpoint), resize="official",
                         policy_options=options)
    return create_tracking_loader(model, cfg).load()
