"""DAM4SAM against golden runs of its official tracker (tests/golden/dam4sam_car-shadow*.json).

The goldens were written by ``scripts/golden/regen_dam4sam.py`` from a jovanavidenovic/DAM4SAM checkout run
beside the repository (``DAM4SAMTracker.initialize`` with a box, then ``track`` frame by frame; CPU, float32,
hole filling off; commit and command are in the file) on a calibrated random checkpoint
(``tests/golden/dam4sam_checkpoint.py``: the IoU head's bias +1.5, so the chosen IoU passes DAM4SAM's 0.8
reliability threshold), DAVIS car-shadow, 40 frames, box prompt = the ground-truth box of frame 0. The
checkpoint is rebuilt here from its recipe and must match the recorded state-dict digest; no DAM4SAM code runs
at test time.

What the golden exercises (``test_golden_has_teeth`` asserts it on the golden data alone): the box becomes a
mask (``estimate_mask_from_box``); seven frames become DRM anchors (every 6th frame: the 5-frame gap); the DRM
read fills up to the first frame plus three anchors, older anchors drop out of it, the frame right after an
anchor reads it as RAM, not DRM; the RAM shrinks from 6 to 3 slots and steps back on the stride-5 grid,
skipping anchors; pointers come from the DRM frames read and the visible frames of the last 15.

The parity tests run vidtrack's ``dam4sam-tiny`` on the same checkpoint, frames and prompt, and compare on
every frame the mask (mean IoU), the DRM frames read, the RAM frames read, the pointer distances and the frames
added to DRM. Two goldens of the same run: ``dam4sam_car-shadow`` on frames resized once to the model's
256 x 256, so that neither side resizes them (bar ``BAR``: what remains is the algorithm), and
``dam4sam_car-shadow_native`` on the video's 854 x 480 frames, where the tracker resizes float pixels with
torchvision and vidtrack uint8 pixels (``resize="transformers"``, the closer of its two): up to one grey level
apart, hence ``BAR_NATIVE``. Plain SAM 2.1 and SAMURAI on the same inputs must fail even the looser bar.

The 1024 px golden (the released hiera-tiny shape, seed 7, native frames; 10-20 minutes per side on the
shared machine) runs only with ``VIDTRACK_GOLDEN_1024=1``: measured mean IoU 0.99940 (min 0.99691, frame 0:
the box-to-mask frame), DRM anchors 2, 8, 14 on both sides, DRM reads, RAM reads (stride grid on 33 frames)
and pointers equal on 39/39 frames, IoUs within 2.6e-6, logits 1.3e-5.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from golden import support  # tests/golden (tests/ is on sys.path)

os.environ.setdefault("OMP_NUM_THREADS", "1")

NAME = "dam4sam_car-shadow"  # frames at the model's size: neither side resizes them
NAME_NATIVE = "dam4sam_car-shadow_native"  # the video's 854 x 480 frames, each side resizing its own way
NAME_1024 = "dam4sam_car-shadow_1024"
BAR = 0.999  # measured 0.999997 (docs/POLICIES.md); with the pointer window fixed at 16 instead: 0.99795
BAR_NATIVE = 0.99  # measured 0.9917: the two resizers differ by up to one grey level
IOU_ATOL = 1e-6  # predicted IoUs, model-size frames: measured 1.2e-7 (anchors memorised unbinarised: 1.7e-6)
SCORE_ATOL = 3e-6  # object logits, model-size frames: measured 2.4e-7 (anchors memorised unbinarised: 6.9e-6)


def build_checkpoint(name: str, folder: Any) -> Any:
    """Rebuild the golden's checkpoint (.pt + Meta's composed yaml beside it, which vidtrack reads)."""
    pytest.importorskip("sam2", reason="Meta's sam2==1.1.0 builds the golden checkpoint (README: dev install)")
    pytest.importorskip("pycocotools")
    if not (support.DATA / "davis2016").is_dir():
        pytest.skip(f"real test data not found at {support.DATA} (only present beside the project checkout)")
    from omegaconf import OmegaConf

    mod = support.load_module("dam4sam_checkpoint")
    ck = support.golden(name)["checkpoint"]
    sd = mod.state_dict(**ck["recipe"])
    assert mod.CK.state_digest(sd) == ck["state_digest"], (
        "the rebuilt checkpoint differs from the one the golden was recorded on (PyTorch's random streams or "
        "tests/parity/calibration.py changed): regenerate with scripts/golden/regen_dam4sam.py")
    path = mod.CK.save(sd, folder / "golden.pt")
    arch = mod.architecture(ck["recipe"]["architecture_name"])
    path.with_suffix(".yaml").write_text(OmegaConf.to_yaml(mod.CK.calibration().compose_config(arch)))
    return path


def frames_of(name: str, folder: Any) -> Any:
    """The golden's frames: the sequence's JPEGs, or those resized to the model's size (checked by digest)."""
    clip = support.golden(name)["clip"]
    frames = support.DATA / "davis2016" / "JPEGImages" / "480p" / clip["sequence"]
    if clip.get("frame_size") is None:
        return frames
    digest = support.load_module("dam4sam_checkpoint").frames_at(frames, clip["num_frames"], clip["frame_size"],
                                                                 folder / "frames")
    assert digest == clip["frames_digest"], "Pillow resized the frames differently from the golden's run"
    return folder / "frames"


def run(model: str, checkpoint: Any, name: str, frames: Any) -> dict[str, Any]:
    """vidtrack streaming run: per frame the mask and, for DAM4SAM, what its reads hold (DRM = conditioning
    slot, RAM = the others, pointer distances) and which frames it filed as anchors, recorded by wrapping the
    policy instance's production hooks."""
    from vidtrack import Prompt, TrackingConfig, create_tracking_loader

    g = support.golden(name)
    clip = g["clip"]
    prompts = [Prompt.from_box(0, 1, clip["prompt"]["box_xyxy"], fmt="xyxy")]
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=str(checkpoint), resize="transformers")
    loader = create_tracking_loader(model, cfg).load()
    rec: dict[str, Any] = {"drm": {}, "ram": {}, "ptr": {}, "added": [], "ious": {}, "score": {}}
    make = loader.new_policy

    def new_policy() -> Any:
        policy = make()
        reads, remember, choose = policy.memory_reads, policy.remember, policy.choose
        cond_slot = policy.num_maskmem - 1

        def memory_reads(track: Any, frame_idx: int, max_ptrs: int) -> Any:
            out = reads(track, frame_idx, max_ptrs)
            rec["drm"][frame_idx] = [r.frame_idx for s, r in out[0].memories if s == cond_slot]
            rec["ram"][frame_idx] = sorted(r.frame_idx for s, r in out[0].memories if s != cond_slot)
            rec["ptr"][frame_idx] = [d for d, _ in out[0].pointers]
            return out

        def remember_(track: Any, frame_idx: int, decision: Any, kept: Any, max_ptrs: int) -> None:
            remember(track, frame_idx, decision, kept, max_ptrs)
            if kept[0].record.is_cond:
                rec["added"].append(frame_idx)

        def choose_(track: Any, frame_idx: int, runs: Any, image_size: int) -> Any:
            rec["ious"][frame_idx] = [float(v) for v in runs[0].ious[0]]
            rec["score"][frame_idx] = runs[0].object_score_logit
            return choose(track, frame_idx, runs, image_size)

        policy.memory_reads, policy.remember, policy.choose = memory_reads, remember_, choose_
        return policy

    loader.new_policy = new_policy
    stream = loader.stream(str(frames), prompts, end=clip["num_frames"])
    rec["masks"] = {tf.frame_idx: tf.mask_for(1).mask for tf in stream}
    return rec


def added(g: dict[str, Any]) -> list[int]:
    return [f["frame"] for f in g["frames"] if f["drm_added"]]


def test_golden_has_teeth() -> None:
    g = support.golden(NAME)
    tracked = [f for f in g["frames"] if "ram_read" in f]
    assert len(added(g)) >= 2, "fewer than two DRM additions: the distractor-aware memory is not exercised"
    assert max(len(f["drm_read"]) for f in tracked) == 4, "the DRM read never fills up (first frame + 3)"
    assert any(set(added(g)) - set(f["drm_read"]) - {f["frame"] - 1} for f in tracked if f["frame"] > 30), (
        "no anchor ever drops out of the DRM read")
    assert any(f["frame"] - 1 in added(g) and f["frame"] - 1 in f["ram_read"] for f in tracked), (
        "no frame reads the anchor it follows as RAM")
    strided = [f for f in tracked if 5 in np.diff(f["ram_read"]).tolist()]
    assert strided, "the RAM never steps on the stride-5 grid"
    assert any(f["ram_read"] != list(range(max(1, f["frame"] - 6), f["frame"])) for f in tracked if f["frame"] > 8)
    assert min(len(f["ram_read"]) for f in tracked if f["frame"] > 20) == 3, "the RAM never shrinks to 3 slots"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("golden-dam4sam")
    checkpoint = build_checkpoint(NAME, tmp)
    frames = frames_of(NAME, tmp)
    out = {m: run(m, checkpoint, NAME, frames) for m in ("dam4sam-tiny", "sam2.1-tiny", "samurai-tiny")}
    out["native"] = run("dam4sam-tiny", checkpoint, NAME_NATIVE, frames_of(NAME_NATIVE, tmp))
    return out


def check_parity(g: dict[str, Any], ours: dict[str, Any], bar: float) -> None:
    ious = support.mask_ious(g, ours["masks"])
    tracked = [f for f in g["frames"] if "ram_read" in f]
    assert ious.mean() >= bar, f"mean IoU {ious.mean():.6f}, min {ious.min():.6f} at frame {int(ious.argmin())}"
    assert ours["added"] == added(g)
    assert ours["drm"] == {f["frame"]: f["drm_read"] for f in tracked}
    assert ours["ram"] == {f["frame"]: sorted(f["ram_read"]) for f in tracked}
    assert ours["ptr"] == {f["frame"]: f["pointer_distances"] for f in tracked}


def test_dam4sam_matches_official_golden(runs: dict[str, dict[str, Any]]) -> None:
    g, ours = support.golden(NAME), runs["dam4sam-tiny"]
    check_parity(g, ours, BAR)
    # the decoder's outputs, frame by frame: the continuous check that catches what the masks barely show
    # (an anchor memorised from its sigmoid mask instead of the binarised one moves the IoU by 6e-5 only)
    tracked = [f for f in g["frames"] if "ious" in f]
    np.testing.assert_allclose([ours["ious"][f["frame"]] for f in tracked], [f["ious"] for f in tracked],
                               rtol=0, atol=IOU_ATOL)
    np.testing.assert_allclose([ours["score"][f["frame"]] for f in tracked], [f["object_score"] for f in tracked],
                               rtol=0, atol=SCORE_ATOL)


def test_dam4sam_matches_official_golden_on_video_resolution_frames(runs: dict[str, dict[str, Any]]) -> None:
    assert support.golden(NAME_NATIVE)["checkpoint"] == support.golden(NAME)["checkpoint"]
    check_parity(support.golden(NAME_NATIVE), runs["native"], BAR_NATIVE)


@pytest.mark.parametrize("model", ["sam2.1-tiny", "samurai-tiny"])
def test_other_policies_fail_dam4sam_golden(runs: dict[str, dict[str, Any]], model: str) -> None:
    ious = support.mask_ious(support.golden(NAME), runs[model]["masks"])
    assert ious.mean() < BAR_NATIVE, f"{model} passes the DAM4SAM golden (mean IoU {ious.mean():.5f})"


@pytest.mark.skipif(os.environ.get("VIDTRACK_GOLDEN_1024") != "1",
                    reason="1024 px hand-run size (10-20 min on one thread): set VIDTRACK_GOLDEN_1024=1")
def test_dam4sam_matches_official_golden_1024(tmp_path: Any) -> None:
    if not (support.GOLDEN / f"{NAME_1024}.json").is_file():
        pytest.skip("no 1024 px golden recorded")
    ours = run("dam4sam-tiny", build_checkpoint(NAME_1024, tmp_path), NAME_1024, frames_of(NAME_1024, tmp_path))
    check_parity(support.golden(NAME_1024), ours, BAR_NATIVE)
