"""The YOLO identity layer on scripted detections (no ultralytics, no model): crossings, occlusions,
re-appearance, objects entering and leaving, prompts of every kind."""

from __future__ import annotations

import numpy as np
import pytest

from vidtrack.engines.yolo import synthetic as S
from vidtrack.engines.yolo.identity import Detections, IdentityOptions, IdentityTracker, Patch, patch_iou
from vidtrack.types import Prompt


def run(video: S.SyntheticVideo, *, prompts: dict[int, list[Prompt]] | None = None, auto: bool = False,
        options: IdentityOptions | None = None) -> list[dict[int, int | None]]:
    """Per frame: reported id -> ground-truth id of the detection it got (None: reported as not visible)."""
    tr = IdentityTracker(options, height=video.height, width=video.width, prompted=not auto)
    if prompts is None and not auto:
        prompts = {0: [Prompt.from_mask(0, oid, m) for oid, m in video.full_masks[0].items() if m.any()]}
    out = []
    for t, d in enumerate(video.detections):
        states = tr.step(d, (prompts or {}).get(t, []))
        out.append({s.object_id: (video.truth[t][s.detection] if s.detection is not None else None)
                    for s in states})
    return out


def wrong_labels(labels: list[dict[int, int | None]]) -> int:
    return sum(1 for frame in labels for oid, truth in frame.items() if truth is not None and truth != oid)


# --- building blocks ---------------------------------------------------------------------------------------
def test_patch_iou_equals_dense_iou_with_shifts():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = np.zeros((40, 50), bool)
        b = np.zeros((40, 50), bool)
        a[rng.integers(0, 20) : rng.integers(21, 40), rng.integers(0, 25) : rng.integers(26, 50)] = True
        b[rng.integers(0, 20) : rng.integers(21, 40), rng.integers(0, 25) : rng.integers(26, 50)] = True
        a &= rng.random(a.shape) < 0.8
        dy, dx = (int(v) for v in rng.integers(-5, 6, 2))
        shifted = np.roll(np.roll(np.pad(a, 10), dy, 0), dx, 1)  # on a larger canvas: shifts are not clipped
        bb = np.pad(b, 10)
        dense = (shifted & bb).sum() / (shifted | bb).sum()
        assert patch_iou(Patch.from_mask(a), Patch.from_mask(b), dy, dx) == pytest.approx(dense)
    assert patch_iou(Patch.from_mask(np.zeros((5, 5), bool)), Patch.from_mask(np.ones((5, 5), bool))) == 0.0
    m = np.zeros((30, 40), bool)
    m[3:9, 5:20] = True
    assert np.array_equal(Patch.from_mask(m).to_mask(30, 40), m)


def test_scenes_are_deterministic():
    a, b = S.crossing(), S.crossing()
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    assert a.truth == b.truth
    assert all(np.array_equal(x.boxes, y.boxes) for x, y in zip(a.detections, b.detections, strict=True))


# --- prompted mode -----------------------------------------------------------------------------------------
def test_crossing_keeps_ids():
    v = S.crossing()
    hidden = [t for t, ids in enumerate(v.truth) if ids == [1]]
    assert hidden, "the scene must hide object 2 completely for some frames"
    labels = run(v)
    assert wrong_labels(labels) == 0  # no id switch, not even for a frame
    after = [t for t in range(max(hidden) + 4, len(v.truth))]
    assert all(labels[t] == {1: 1, 2: 2} for t in after)
    # while hidden, object 2 is reported as occluded (not given the front object's mask)
    assert all(labels[t][2] is None for t in hidden)


def test_full_occlusion_ids_restored():
    v = S.occlusion()
    hidden = {oid: [t for t, ids in enumerate(v.truth) if oid not in ids] for oid in (1, 2)}
    assert all(len(h) >= 8 for h in hidden.values())
    labels = run(v)
    assert wrong_labels(labels) == 0
    for oid, frames in hidden.items():
        assert all(labels[t][oid] is None for t in frames)
        back = [t for t in range(max(frames) + 1, len(v.truth)) if oid in v.truth[t]]
        # re-attached within a few frames of re-appearing (slivers at the wall edge are too small at first)
        assert all(labels[t][oid] == oid for t in back[4:])
    assert all(frame[3] == 3 for frame in labels)


def test_user_ids_survive_gaps_longer_than_max_lost():
    v = S.missed_then_back(gap=(10, 30))
    labels = run(v, options=IdentityOptions(max_lost_frames=5))
    assert wrong_labels(labels) == 0
    assert all(labels[t][1] is None for t in range(10, 30))
    assert all(labels[t][1] == 1 for t in range(30, len(v.truth)))


def test_no_id_stealing_by_new_objects():
    v = S.distractor()
    labels = run(v)
    assert wrong_labels(labels) == 0  # neither the nearby other-coloured disc nor the far look-alike took id 1
    assert set(labels[20]) == {1}  # only the user's object is reported in prompted mode
    assert all(labels[t][1] == 1 for t in range(35, len(v.truth)))


def test_box_and_point_prompts_and_late_prompt():
    v = S.occlusion()
    d0 = v.detections[0]
    box2 = tuple(float(x) for x in d0.boxes[v.truth[0].index(2)])
    m3 = v.full_masks[0][3]
    ys, xs = np.nonzero(m3)
    prompts = {
        0: [Prompt.from_box(0, 20, box2, fmt="xyxy"), Prompt.from_points(0, 30, [[xs.mean(), ys.mean()]])],
        5: [Prompt.from_mask(5, 10, v.full_masks[5][1])],  # object 1 first prompted on frame 5
    }
    labels = run(v, prompts=prompts)
    assert set(labels[0]) == {20, 30}
    assert labels[0] == {20: 2, 30: 3}
    assert all(10 not in labels[t] for t in range(5))
    assert labels[5][10] == 1 and labels[60][10] == 1 and labels[60][20] == 2 and labels[60][30] == 3


def test_unmatched_mask_prompt_is_reported_then_reattached():
    v = S.missed_then_back(gap=(0, 5))  # object 1 not detected on frames 0..4
    prompts = {0: [Prompt.from_mask(0, 7, v.full_masks[0][1])]}
    tr = IdentityTracker(height=v.height, width=v.width, prompted=True)
    states = tr.step(v.detections[0], prompts[0])
    assert len(states) == 1 and states[0].detection is None and states[0].prompt_mask is not None
    assert np.array_equal(states[0].prompt_mask.to_mask(v.height, v.width), v.full_masks[0][1])
    for t in range(1, 5):
        (s,) = tr.step(v.detections[t])
        assert s.object_id == 7 and not s.visible
    (s,) = tr.step(v.detections[5])
    assert s.detection is not None and v.truth[5][s.detection] == 1


def test_reprompt_moves_an_id():
    v = S.crossing()
    prompts = {0: [Prompt.from_mask(0, 1, v.full_masks[0][1])], 10: [Prompt.from_mask(10, 1, v.full_masks[10][2])]}
    labels = run(v, prompts=prompts)
    assert labels[5][1] == 1 and labels[10][1] == 2 and labels[12][1] == 2


# --- auto mode ---------------------------------------------------------------------------------------------
def test_auto_mode_new_ids_for_entering_objects():
    v = S.enter_leave()
    labels = run(v, auto=True, options=IdentityOptions(max_lost_frames=5))
    assert wrong_labels([{k: None for k in f} for f in labels]) == 0
    mapping: dict[int, set[int]] = {}
    for frame in labels:
        for oid, truth in frame.items():
            if truth is not None:
                mapping.setdefault(truth, set()).add(oid)
    assert mapping == {1: {1}, 2: {2}, 3: {3}}  # one id per object, given in order of appearance
    gone = [t for t, ids in enumerate(v.truth) if 1 not in ids and t > 10]
    assert labels[gone[0]].get(1, "absent") is None  # just left: reported as not visible for a while ...
    assert 1 not in labels[gone[0] + 6]  # ... then dropped (max_lost_frames=5)


def test_auto_mode_gap_limit():
    v = S.missed_then_back(gap=(15, 27))
    short = run(v, auto=True, options=IdentityOptions(max_lost_frames=20))
    long = run(v, auto=True, options=IdentityOptions(max_lost_frames=5))
    ids_short = {oid for f in short for oid, truth in f.items() if truth == 1}
    ids_long = {oid for f in long for oid, truth in f.items() if truth == 1}
    assert len(ids_short) == 1
    assert len(ids_long) == 2  # lost longer than the buffer: a new object for auto mode


def test_auto_mode_tentative_tracks_need_two_hits():
    m = np.zeros((50, 50), bool)
    m[10:20, 10:20] = True
    tr = IdentityTracker(height=50, width=50)
    assert [s.object_id for s in tr.step(Detections.from_masks([m], [0.9]))] == [1]  # first frame: at once
    m2 = np.zeros((50, 50), bool)
    m2[30:40, 30:40] = True
    assert [s.object_id for s in tr.step(Detections.from_masks([m, m2], [0.9, 0.9]))] == [1]  # tentative
    assert [s.object_id for s in tr.step(Detections.from_masks([m, m2], [0.9, 0.9]))] == [1, 2]
    # a one-frame false positive never gets an id
    m3 = np.zeros((50, 50), bool)
    m3[40:48, 0:8] = True
    tr.step(Detections.from_masks([m, m2, m3], [0.9, 0.9, 0.9]))
    assert [s.object_id for s in tr.step(Detections.from_masks([m, m2], [0.9, 0.9]))] == [1, 2]
    assert tr.object_ids == [1, 2]


def test_low_confidence_detections_only_extend_tracks():
    m = np.zeros((50, 50), bool)
    m[10:20, 10:20] = True
    tr = IdentityTracker(height=50, width=50)
    tr.step(Detections.from_masks([m], [0.9]))
    (s,) = tr.step(Detections.from_masks([m], [0.15]))  # unsure: still the same object
    assert s.object_id == 1 and s.detection == 0 and s.confidence == pytest.approx(0.15)
    far = np.zeros((50, 50), bool)
    far[35:45, 35:45] = True
    states = tr.step(Detections.from_masks([m, far], [0.9, 0.15]))
    assert [s.object_id for s in states] == [1]
    tr.step(Detections.from_masks([m, far], [0.9, 0.15]))
    assert tr.object_ids == [1]  # a low-confidence detection never starts a track
