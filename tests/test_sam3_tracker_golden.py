"""The SAM 3 tracker backend against Meta's ``Sam3TrackerPredictor`` (facebookresearch/sam3, ``sam3==0.1.4``).

The official package pins ``numpy<2`` and pulls the SAM 3 detector's dependencies, so it is not installed with
vidtrack; ``scripts/golden/sam3_tracker_official.py`` runs it beside the repository and records its masks in
``tests/golden/sam3_tracker_judo.json``: the calibrated random checkpoint of
``tests/golden/sam3_tracker_checkpoint.py`` (rebuilt here from its seed and pinned by its digest), 12 real
frames (Cutie judo), two objects prompted on frame 0, once by masks and once by boxes, at SAM 3's own input size
(1008 px, 72x72 memory grid). vidtrack runs the same through its public loader (``sam3-tracker``, Meta's PIL
frame resizing) and must match: mean IoU >= 0.999 over every object and frame (the issue's bar) and >= 0.9995 on
every object-frame. Measured: mask case mean 0.999996, min 0.999988; box case mean 0.999997, min 0.999982.

Why the per-frame bar: on this calibrated checkpoint the two SAM 3 specifics below move the masks of a few frames
without moving the mean under 0.999 (checked by hand on the mask case): the transformers order of the memory
encoder's resize (logits resized before the binarise/sigmoid rule): mean 0.999477, min 0.997555; SAM 2.1's
mask-prompt path (mask thresholded at the input size, logits +-10): mean 0.999697, min 0.997384. transformers'
default ViT LayerNorm eps (1e-6 instead of the official 1e-5) fails the mean bar too: 0.998514, min 0.998153.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.types import rle_decode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "golden"))
import sam3_tracker_checkpoint as ck  # noqa: E402

GOLDEN = ROOT / "tests" / "golden" / "sam3_tracker_judo.json"
DATA = Path(os.environ.get("VIDTRACK_DATA", ROOT.parent / "shared" / "data"))
JUDO = DATA / "cutie_judo"

pytestmark = pytest.mark.skipif(not (JUDO / "JPEGImages").is_dir(), reason=f"real frames not found at {JUDO}")


def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    return data


def prompts(case: str, box2: tuple[float, float, float, float]) -> list[Prompt]:
    """The prompts the official run was given (scripts/golden/sam3_tracker_official.py: judo_prompts)."""
    from PIL import Image

    m1 = np.array(Image.open(JUDO / "prompts" / "00000.png")) == 1
    if case == "mask":
        m2 = np.zeros_like(m1)
        x1, y1, x2, y2 = (int(v) for v in box2)
        m2[y1:y2, x1:x2] = True
        return [Prompt.from_mask(0, 1, m1), Prompt.from_mask(0, 2, m2)]
    ys, xs = np.nonzero(m1)
    box1 = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    return [Prompt.from_box(0, 1, box1, fmt="xyxy"), Prompt.from_box(0, 2, box2, fmt="xyxy")]


@pytest.fixture(scope="module")
def model() -> Any:
    g = golden()["checkpoint"]
    sd = ck.calibrated_state_dict(g["seed"], g["gains"])
    assert ck.state_digest(sd) == g["digest"], "the checkpoint recipe changed: regenerate the golden"
    return ck.model(g["seed"])


def run(model: Any, case: str, objects: list[int] | None = None) -> dict[int, np.ndarray]:
    g = golden()
    loader = create_tracking_loader("sam3-tracker", TrackingConfig(device="cpu", dtype="float32",
                                                                   resize="official", threads=1))
    loader.load(model)
    ps = [p for p in prompts(case, tuple(g["box2"])) if objects is None or p.object_id in objects]
    n = g["num_frames"]
    out: dict[int, np.ndarray] = {p.object_id: np.zeros((n, g["height"], g["width"]), bool) for p in ps}
    for tf in loader.stream(str(JUDO / "JPEGImages"), ps, end=n):
        for m in tf.masks:
            out[m.object_id][tf.frame_idx] = m.mask
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


@pytest.mark.parametrize("case", ["mask", "box"])
def test_matches_official_sam3_tracker(model: Any, case: str) -> None:
    g = golden()
    ours = run(model, case)
    ious = []
    for obj, rec in g["cases"][case].items():
        for f, r in enumerate(rec["masks"]):
            ious.append(iou(ours[int(obj)][f], rle_decode(r)))
    assert len(ious) == 2 * g["num_frames"] >= 24
    assert np.mean(ious) >= 0.999, f"{case}: mean IoU {np.mean(ious):.6f}, min {np.min(ious):.6f}"
    assert np.min(ious) >= 0.9995, f"{case}: mean IoU {np.mean(ious):.6f}, min {np.min(ious):.6f}"
