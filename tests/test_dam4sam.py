"""DAM4SAM's policy: the read rule hand-derived on scripted banks (invisible frames, anchors), its geometry
against independent implementations, objects independent of each other, bounded memory over 1,000 frames,
and every prompt kind on any frame. Parity with the official tracker is tests/test_golden_dam4sam.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from conftest import error_line, moving_shapes, shape_masks, write_video
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack
from vidtrack.policies.dam4sam import (
    Dam4SamNote,
    Dam4SamPolicy,
    largest_component,
    reveals_distractor,
    vot_box,
    vot_box_iou,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rec(f: int, *, cond: bool = False, visible: bool = True) -> FrameRecord:
    return FrameRecord(f, cond, torch.zeros(1, 4), 1.0, 0.9, maskmem_features=torch.zeros(4, 1, 2),
                       note=Dam4SamNote(visible=visible))


def _bank(pol: Dam4SamPolicy, upto: int, invisible: set[int] = frozenset(), anchors: set[int] = frozenset()
          ) -> ObjectTrack:
    track = ObjectTrack(1, policy_state=pol.new_object_state(1))
    track.cond[0] = _rec(0, cond=True)
    pol.record_stored(track, track.cond[0])
    for f in range(1, upto):
        r = _rec(f, cond=f in anchors, visible=f not in invisible)
        (track.cond if f in anchors else track.non_cond)[f] = r
    return track


def _read(pol: Dam4SamPolicy, track: ObjectTrack, t: int) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    read = pol.memory_reads(track, t, 16)[0]
    drm = [r.frame_idx for s, r in read.memories if s == pol.num_maskmem - 1]
    ram = [(s, r.frame_idx) for s, r in read.memories if s != pol.num_maskmem - 1]
    return drm, ram, [d for d, _ in read.pointers]


def test_read_rule_hand_derived() -> None:
    pol = Dam4SamPolicy()
    # no anchors: DRM = frame 0; 6 RAM slots: t-1, then the stride-5 grid below it (22 -> 20, 15, 10, 5; 0 is
    # never RAM); RAM oldest first, the newest in slot 0; pointers: frame 0 at distance 23, then t-1 ... t-15
    drm, ram, ptr = _read(pol, _bank(pol, 23), 23)
    assert drm == [0] and ram == [(4, 5), (3, 10), (2, 15), (1, 20), (0, 22)]
    assert ptr == [23, *range(1, 16)] and pol.memory_reads(_bank(pol, 23), 23, 16)[0].max_ptrs == 16
    # invisible 22, 21, 20, 10: slot 0 walks back one frame (to 19), the grid from 19: 15, then 10 is invisible
    # and the slot steps back by 5 (to 5); then the grid reaches 0 and the RAM ends. Pointers skip the
    # invisible frames (distances 1, 2, 3 and 13)
    drm, ram, ptr = _read(pol, _bank(pol, 23, invisible={22, 21, 20, 10}), 23)
    assert drm == [0] and ram == [(2, 5), (1, 15), (0, 19)]
    assert ptr == [23, *range(4, 13), 14, 15]
    # anchors 2, 8, 14, 20, 21 at t = 22: DRM = the newest before t-1 (20), frame 0, then the closest others
    # except t-1 (14, 8); 2 is left out. RAM: 7 - 4 = 3 slots: t-1 = 21 (an anchor, visible), the grid from
    # 21: 20 is an anchor (not a non-conditioning frame) -> 15, then 10
    drm, ram, ptr = _read(pol, _bank(pol, 22, anchors={2, 8, 14, 20, 21}), 22)
    assert drm == [20, 0, 14, 8] and ram == [(2, 10), (1, 15), (0, 21)]
    # pointers: the DRM read (distances 2, 22, 8, 14), then t-1 ... t-15 without the DRM frames read (20 at
    # distance 2, 14 at 8, 8 at 14); the unselected anchor 21 counts
    assert ptr == [2, 22, 8, 14, 1, *range(3, 8), *range(9, 14), 15]
    # the pointer window grows with the frames seen (the official tracker streams): at frame 3 it is 4 frames
    # (normalised by 3); frame 0 comes once, as a DRM frame
    read = pol.memory_reads(_bank(pol, 3), 3, 16)[0]
    assert read.max_ptrs == 4 and [d for d, _ in read.pointers] == [3, 1, 2]
    assert Dam4SamPolicy(growing_pointer_window=False).memory_reads(_bank(pol, 3), 3, 16)[0].max_ptrs == 16


def test_read_rule_counts_from_the_first_prompt_and_in_reverse() -> None:
    pol = Dam4SamPolicy()
    ahead = _bank(pol, 23)
    back = ObjectTrack(1, policy_state=pol.new_object_state(1), reverse=True)
    back.cond[100] = _rec(100, cond=True)
    pol.record_stored(back, back.cond[100])
    for f in range(1, 23):
        back.non_cond[100 - f] = _rec(100 - f)
    assert [f for _, f in _read(pol, ahead, 23)[1]] == [5, 10, 15, 20, 22]
    assert [100 - f for _, f in _read(pol, back, 77)[1]] == [5, 10, 15, 20, 22]


def test_prune_keeps_what_a_future_read_selects() -> None:
    pol = Dam4SamPolicy()
    anchors = {6, 12, 18, 24, 30, 36}
    track = _bank(pol, 60, anchors=anchors, invisible={59, 58, 57})
    track.policy_state.anchors = sorted(anchors)
    before = {t: _read(pol, track, t) for t in (60,)}
    pol.prune(track, 59)
    # anchors: the newest 4 are kept (6 and 12 can never be selected again and are out of the pointer window)
    assert sorted(f for f in track.cond) == [0, 18, 24, 30, 36]
    # the same read after pruning
    assert _read(pol, track, 60) == before[60]
    # spatial memories kept: the newest visible frame (56), the visible grid frames (55, 50, 45, 40, 35, 25:
    # 30 is an anchor) and this frame; records kept only inside the 15-frame pointer window
    kept = sorted(t for t, r in track.non_cond.items() if r.maskmem_features is not None)
    assert kept == [25, 35, 40, 45, 50, 55, 56, 59]
    assert sorted(track.non_cond) == [25, 35, 40, *range(45, 60)]


def test_geometry_matches_independent_implementations() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    for _ in range(30):
        m = rng.random((40, 57)) < 0.35
        if not m.any():
            continue
        labels, _ = ndimage.label(m, structure=np.ones((3, 3)))
        areas = np.bincount(labels.ravel())[1:]
        expect = labels == 1 + int(np.argmax(areas))  # labels in raster order of first pixel, first max wins
        np.testing.assert_array_equal(largest_component(m), expect)
    # vot-toolkit boxes are one pixel narrower than the mask: width = right - left
    m = np.zeros((10, 12), bool)
    m[2:5, 3:7] = True
    assert vot_box(m) == (3, 2, 3, 2)
    m2 = m.copy()
    m2[6, 9] = True
    assert vot_box(m2) == (3, 2, 6, 4)
    assert vot_box_iou(vot_box(m), vot_box(m2)) == 0.25  # 6 / 24 pixels, what calculate_overlaps gives
    assert vot_box_iou((5, 5, 0, 0), (5, 5, 0, 0)) == 1.0  # degenerate boxes count as identical


def test_distractor_test() -> None:
    chosen = np.zeros((60, 80), bool)
    chosen[20:40, 20:40] = True
    near = chosen.copy()
    near[20:40, 40:43] = True  # a sliver: the box barely grows
    far = chosen.copy()
    far[20:40, 60:75] = True  # a second blob: the box grows a lot
    assert not reveals_distractor(chosen, [near, chosen.copy()], 0.7)
    assert reveals_distractor(chosen, [near, far], 0.7)
    split = far.copy()
    split[0:2, 0:2] = True  # a smaller extra component is ignored: only the largest part counts
    assert reveals_distractor(chosen, [split], 0.7)


@pytest.fixture(scope="module")
def loader(tiny_model):
    return create_tracking_loader("dam4sam-tiny", TrackingConfig(device="cpu", policy_options={
        "anchor_iou_threshold": 0.0, "distractor_box_iou": 1.0})).load(model=tiny_model)


def test_objects_are_independent(loader) -> None:
    frames = moving_shapes(24)
    box, _ = shape_masks()

    def masks(prompts):
        return {(f.frame_idx, m.object_id): m.to_rle() for f in loader.track_video(frames, prompts) for m in f.masks}

    both = masks([Prompt.from_mask(0, 1, box), Prompt.from_box(0, 2, (110, 57, 141, 78), fmt="xyxy")])
    one = masks([Prompt.from_mask(0, 1, box)])
    two = masks([Prompt.from_box(0, 2, (110, 57, 141, 78), fmt="xyxy")])
    assert both == {**one, **two}


def test_prompt_kinds_on_any_frame(loader) -> None:
    """Points, a box and a mask, each on its own frame, in one run; the box becomes a mask (its output then
    carries a mask prompt's confidence, 1.0) while the clicks stay clicks (the decoder's predicted IoU)."""
    frames = moving_shapes(16)
    box, _ = shape_masks()
    prompts = [Prompt.from_points(0, 1, [(30, 38)], [1]), Prompt.from_box(5, 2, (110, 57, 141, 78), fmt="xyxy"),
               Prompt.from_mask(9, 3, box)]
    conf = {}
    for model in ("dam4sam-tiny", "sam2.1-tiny"):
        cfg = TrackingConfig(device="cpu", semantics="causal")
        result = create_tracking_loader(model, cfg).load(model=loader.engine.model).track_video(frames, prompts)
        assert [sorted(m.object_id for m in f.masks) for f in result.frames] == [[1, 2, 3]] * 16
        conf[model] = {m.object_id: m.confidence for f in result.frames for m in f.masks
                       if (f.frame_idx, m.object_id) in ((0, 1), (5, 2), (9, 3))}
    assert conf["dam4sam-tiny"][2] == 1.0 and conf["dam4sam-tiny"][3] == 1.0
    assert conf["dam4sam-tiny"][1] < 1.0 and conf["sam2.1-tiny"][2] < 1.0


def test_memory_flat_over_1000_streamed_frames(loader) -> None:
    frames = moving_shapes(24)
    box, _ = shape_masks()
    s = loader.engine.new_session(loader.new_policy(), 96, 160)
    sizes = []
    for i in range(1000):
        s.step(i, frames[i % 24], [Prompt.from_mask(0, 1, box)] if i == 0 else [])
        sizes.append(s.state_nbytes())
    track = s.tracks[1]
    st = track.policy_state
    assert st.last_added is not None and st.last_added > 900, "anchors stop being added: the test is void"
    assert len(track.cond) <= 1 + 4 + 3  # the prompt, the newest 4 anchors, anchors still in the pointer window
    assert len(track.non_cond) <= 15
    assert max(sizes[500:]) <= max(sizes[100:500])  # no growth with video length
    assert len(st.sizes) == 300


def test_bad_options_are_one_error_line(tmp_path, capsys) -> None:
    video = write_video(tmp_path / "v.mp4", moving_shapes(4))
    base = ["track", str(video), "--model", "dam4sam-tiny", "--box", "16,27,28,22", "--out", str(tmp_path / "o")]
    assert "ram_stride must be >= 1" in error_line([*base, "--policy-option", "ram_stride=0"], capsys)
    assert "does not take these options" in error_line([*base, "--policy-option", "bogus=1"], capsys)


def test_runs_in_the_interactive_session(loader) -> None:
    """Box on frame 0 (turned into a mask: confidence 1), propagate, a correction click on frame 10, propagate."""
    s = loader.open_session(np.stack(moving_shapes(20)))
    first = s.add_prompt(0, 1, box=(16, 27, 44, 49))
    assert first.masks[0].confidence == 1.0
    assert len(list(s.propagate())) == 20
    s.add_prompt(10, 1, points=np.array([[60, 38]]), labels=np.array([1]))
    assert [len(f.masks) for f in s.propagate()] == [1] * 20
    s.close()
