"""SAMURAI against a golden run of its official code (tests/golden/samurai_car-shadow.json).

The golden was written by ``scripts/golden/regen.py`` from a yangchris11/samurai checkout run beside the
repository (CPU, float32, hole filling off; commit and command are in the file) on a calibrated random
checkpoint of a small SAM 2.1 architecture (``tests/parity/calibration.py`` SMALL: 256 px, narrow Hiera, two
memory-attention layers), DAVIS car-shadow, 40 frames, ground-truth mask on frame 0. The checkpoint is rebuilt
here from its recipe (``tests/golden/checkpoint.py``) and must match the recorded state-dict digest; no
SAMURAI code runs at test time (Meta's ``sam2==1.1.0`` model class builds the checkpoint).

How the golden gets its teeth (``test_golden_has_teeth`` asserts them on the golden data alone): on the plain
calibrated checkpoint the three candidates' predicted IoUs differ by 0.03-0.1 and hardly move, so the Kalman
filter never overrides the argmax and no frame is refused. The golden's checkpoint scales the IoU head's
output layer by ``iou_gain`` 0.03, which puts the predicted IoUs within ~1e-3 of each other and of 0.5, as for
an ambiguous object; seed 6 keeps the mask on the car (box well inside the frame), so the candidates' boxes,
hence their KF IoUs, differ. 40 frames leave 24 past the 15-frame warm-up: from frame 23 on, the filter picks
a candidate other than the highest predicted IoU, whose IoU is below 0.5, so those frames are also refused
from memory while frames 2-22 were admitted (the memory window then stops being "the last 6 frames").

The parity test runs vidtrack's ``samurai-tiny`` (kf_score_weight 0.25, as the official tiny yaml) on the same
checkpoint, frames and prompt and compares masks (mean IoU >= ``BAR``), the chosen candidate, the memory
frames read and the refused frames on every frame, and the KF scores. Plain SAM 2.1 on the same inputs must
fail the mask comparison: the golden tells SAMURAI from SAM 2.1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from golden import support  # tests/golden (tests/ is on sys.path)

os.environ.setdefault("OMP_NUM_THREADS", "1")

NAME = "samurai_car-shadow"
BAR = 0.99  # issue 14's bar; measured: 0.999998 (min 0.99996) for SAMURAI, 0.64 for plain SAM 2.1


def kf_driven(g: dict[str, Any]) -> list[int]:
    """Frames past the warm-up where the chosen candidate is not the highest predicted IoU."""
    return [f["frame"] for f in g["frames"] if f.get("multimask") and f["stable_before"] >= 15
            and f["chosen"] != int(np.argmax(f["ious"]))]


def admitted(f: dict[str, Any]) -> bool:
    """SAMURAI's memory rule on one frame's official values: IoU > 0.5, object logit > 0, KF score > 0."""
    return (f["ious"][f["chosen"]] > 0.5 and f["object_score"] > 0.0
            and (f["kf_score"] is None or f["kf_score"] > 0.0))


def refused(g: dict[str, Any]) -> list[int]:
    return [f["frame"] for f in g["frames"] if "ious" in f and f["frame"] >= 2 and not admitted(f)]


def test_golden_has_teeth() -> None:
    g = support.golden(NAME)
    tracked = [f["frame"] for f in g["frames"] if "ious" in f and f["frame"] >= 2]
    assert len(kf_driven(g)) >= 1, "the Kalman filter never overrides the argmax on this golden"
    assert 1 <= len(refused(g)) < len(tracked), (refused(g), tracked)
    assert any(f["memory_frames"] != list(range(max(1, f["frame"] - 6), f["frame"]))
               for f in g["frames"] if "memory_frames" in f and f["frame"] > 8), "memory is always the last 6"


def run(model: str, checkpoint: Path) -> dict[str, Any]:
    """vidtrack streaming run of the golden's clip: per frame the mask and what the policy decided (chosen
    candidate, memory frames read, admitted to memory or not, KF score), recorded by wrapping the policy."""
    g = support.golden(NAME)
    frames, prompts = support.prompt_and_frames(g)
    loader = support.make_loader(model, checkpoint)
    rec: dict[str, dict[int, Any]] = {"chosen": {}, "memory": {}, "admitted": {}, "kf": {}}
    make = loader.new_policy

    def new_policy() -> Any:
        policy = make()
        choose, memory, stored, meta = (policy.choose_candidate, policy.memory_frames, policy.record_stored,
                                        policy.frame_metadata)

        def choose_candidate(track: Any, frame_idx: int, cands: Any) -> int:
            k = choose(track, frame_idx, cands)
            if cands.multimask:
                rec["chosen"][frame_idx] = int(k)
            return k

        def memory_frames(track: Any, frame_idx: int) -> Any:
            out = memory(track, frame_idx)
            rec["memory"][frame_idx] = sorted(r.frame_idx for _, r in out if not r.is_cond)
            return out

        def record_stored(track: Any, r: Any) -> None:
            stored(track, r)
            if not r.is_cond and hasattr(track.policy_state, "admitted"):
                rec["admitted"][r.frame_idx] = r.frame_idx in track.policy_state.admitted

        def frame_metadata(track: Any, frame_idx: int, cands: Any, chosen: int) -> Any:
            m = meta(track, frame_idx, cands, chosen)
            rec["kf"][frame_idx] = m.get("kf_score")
            return m

        policy.choose_candidate, policy.memory_frames = choose_candidate, memory_frames
        policy.record_stored, policy.frame_metadata = record_stored, frame_metadata
        return policy

    loader.new_policy = new_policy
    stream = loader.stream(str(frames), prompts, end=g["clip"]["num_frames"])
    return {"masks": {tf.frame_idx: tf.mask_for(1).mask for tf in stream}, **rec}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    checkpoint = support.build_checkpoint(NAME, tmp_path_factory.mktemp("golden-samurai"))
    return {m: run(m, checkpoint) for m in ("samurai-tiny", "sam2.1-tiny")}


def test_samurai_matches_official_golden(runs: dict[str, dict[str, Any]]) -> None:
    g = support.golden(NAME)
    ours = runs["samurai-tiny"]
    ious = support.mask_ious(g, ours["masks"])
    tracked = [f for f in g["frames"] if "ious" in f]
    assert ious.mean() >= BAR, f"mean IoU {ious.mean():.6f}, min {ious.min():.6f} at frame {int(ious.argmin())}"
    assert ours["chosen"] == {f["frame"]: f["chosen"] for f in tracked}
    assert ours["memory"] == {f["frame"]: f["memory_frames"] for f in tracked}
    assert sorted(f for f, ok in ours["admitted"].items() if f >= 2 and not ok) == refused(g)
    kf_theirs = {f["frame"]: f["kf_score"] for f in tracked if f["kf_score"] is not None}
    assert {f for f, v in ours["kf"].items() if v is not None} == set(kf_theirs)
    np.testing.assert_allclose([ours["kf"][f] for f in kf_theirs], list(kf_theirs.values()), atol=1e-4)


def test_vanilla_fails_samurai_golden(runs: dict[str, dict[str, Any]]) -> None:
    ious = support.mask_ious(support.golden(NAME), runs["sam2.1-tiny"]["masks"])
    assert ious.mean() < BAR, f"plain SAM 2.1 passes the SAMURAI golden (mean IoU {ious.mean():.5f})"
