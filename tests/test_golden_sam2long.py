"""SAM2Long against a golden run of its official code (tests/golden/sam2long_car-shadow.json).

The golden was written by ``scripts/golden/regen.py`` from a Mark12Ding/SAM2Long checkout run beside the
repository (CPU, float32, paper settings P 3, delta_IoU 0.3, delta_conf 2, offline output; commit and command
are in the file; its key modulation hard-codes 64 x 64 memory tokens, so below 1024 px the runner replaces
that literal at run time) on a calibrated random checkpoint of a small SAM 2.1 architecture
(``tests/parity/calibration.py`` SMALL, 256 px), DAVIS car-shadow, 40 frames, ground-truth mask on frame 0. The
checkpoint is rebuilt from its recipe (``tests/golden/checkpoint.py``) and must match the recorded digest; no
SAM2Long code runs at test time.

How the golden gets its teeth (``test_golden_has_teeth``, on the golden data alone): the object logits stay
inside the uncertainty band (|o| <= 2) on every frame, so the diversity rule keeps three candidates with
different rounded IoUs and the three pathways carry different masks from frame 2 on. On the plain calibrated
checkpoint what a pathway remembers moves its predicted IoUs by ~1e-4 only, far less than the gap between
cumulative scores, so the best pathway never changes and back-tracking equals the greedy output. The golden's
checkpoint sharpens the mask decoder's token-to-image attention (q/k x40, output x10, seed 3): a pathway's
memory now moves its IoUs by up to ~0.02, and on frame 38 a branch of the second pathway overtakes (score gap
0.006 on frame 37), so the traced-back output of frame 37 is another candidate than that frame's best
(IoU 0.02 between the two).

The parity test runs vidtrack's ``sam2long-tiny`` (paper settings) with ``track_video`` (offline
back-tracking) and compares masks (mean IoU >= ``BAR``), every frame's kept (parent pathway, candidate) pairs
and cumulative scores. Plain SAM 2.1 on the same inputs must fail the mask comparison.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from golden import support  # tests/golden (tests/ is on sys.path)

os.environ.setdefault("OMP_NUM_THREADS", "1")

NAME = "sam2long_car-shadow"
BAR = 0.99  # issue 14's bar; the measured figures are in docs/PARITY.md


def backtracked(g: dict[str, Any]) -> list[tuple[int, float]]:
    """(frame, IoU of the output with that frame's best-pathway mask) where the traced-back best pathway
    went through another slot than the frame's best one and the masks differ."""
    out = {f["frame"]: f for f in g["frames"]}
    rows = []
    for r in g["tree"]:
        f = out[r["frame"]]
        if not r["first"] and f["best_lineage_slot"] != 0:
            v = support.iou(support.decode(f["mask"]), support.decode(r["greedy_mask"]))
            if v < 1.0:
                rows.append((r["frame"], v))
    return rows


def near_rounding_boundary(g: dict[str, Any], tol: float = 2e-5) -> list[int]:
    """Tree frames where some predicted IoU lies within ``tol`` of a 2-decimal rounding boundary (x.xx5):
    there the diversity rule's keys depend on float rounding noise (1e-6 between two faithful
    implementations), so the kept branches are not a property of the algorithm. Frame 8 of this golden has
    IoU 0.5150028 (official: key 0.52; vidtrack's value rounds to 0.51)."""
    return sorted({r["frame"] for r in g["tree"] if not r["first"] for run in r["runs"] for v in run["ious"]
                   if abs(abs(v) * 100 - np.floor(abs(v) * 100) - 0.5) < tol * 100})


def test_golden_has_teeth() -> None:
    g = support.golden(NAME)
    tree = [r for r in g["tree"] if not r["first"]]
    assert sum(r["distinct_masks"] > 1 for r in tree) >= 1, "the pathways never diverge on this golden"
    assert any(p != 0 for r in tree for p in r["parents"]), "no kept branch ever continues a lower pathway"
    assert backtracked(g), "back-tracking never changes the output on this golden"


def run(model: str, checkpoint: Path) -> dict[str, Any]:
    g = support.golden(NAME)
    frames, prompts = support.prompt_and_frames(g)
    options = {"record_choices": True} if model.startswith("sam2long") else {}
    loader = support.make_loader(model, checkpoint, **options)
    result = loader.track_video(str(frames), prompts, end=g["clip"]["num_frames"])
    choices = loader.last_session.tracks[1].policy_state.choices if options else []
    return {"masks": {tf.frame_idx: tf.mask_for(1).mask for tf in result.frames}, "choices": choices}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    checkpoint = support.build_checkpoint(NAME, tmp_path_factory.mktemp("golden-sam2long"))
    return {m: run(m, checkpoint) for m in ("sam2long-tiny", "sam2.1-tiny")}


def test_sam2long_matches_official_golden(runs: dict[str, dict[str, Any]]) -> None:
    g = support.golden(NAME)
    ours = runs["sam2long-tiny"]
    ious = support.mask_ious(g, ours["masks"])
    assert ious.mean() >= BAR, f"mean IoU {ious.mean():.6f}, min {ious.min():.6f} at frame {int(ious.argmin())}"
    skip = near_rounding_boundary(g)
    assert len(skip) <= 3, skip
    theirs = {r["frame"]: (list(zip(r["parents"], r["candidates"], strict=True)), r["scores"])
              for r in g["tree"] if not r["first"] and r["frame"] not in skip}
    mine = {c["frame"]: (list(zip(c["parents"], c["candidates"], strict=True)), c["scores"])
            for c in ours["choices"] if not c["first"] and c["frame"] not in skip}
    assert sorted(mine) == sorted(theirs)
    bad = [(f, mine[f][0], theirs[f][0]) for f in sorted(theirs) if mine[f][0] != theirs[f][0]]
    assert not bad, f"(parent, candidate) choices differ: {bad[:3]}"
    np.testing.assert_allclose([mine[f][1] for f in sorted(theirs)], [theirs[f][1] for f in sorted(theirs)],
                               atol=1e-3)


def test_vanilla_fails_sam2long_golden(runs: dict[str, dict[str, Any]]) -> None:
    ious = support.mask_ious(support.golden(NAME), runs["sam2.1-tiny"]["masks"])
    assert ious.mean() < BAR, f"plain SAM 2.1 passes the SAM2Long golden (mean IoU {ious.mean():.5f})"
