"""SAMURAI policy: the Kalman filter, the candidate choice and the memory admission rules, with scripted
decoder outputs; then multi-object and bounded memory through the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import moving_shapes, shape_masks
from vidtrack import Prompt, TrackingConfig, create_tracking_loader, kalman
from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack
from vidtrack.policies.base import Candidates
from vidtrack.policies.samurai import SamuraiNote, SamuraiPolicy, mask_box

S = 64  # model size for scripted candidates; low-res masks are S/4


def test_filter_matches_filterpy():
    from filterpy.kalman import KalmanFilter

    z0 = kalman.xyxy_to_xyah((100, 120, 180, 260))
    ours = kalman.initiate(z0)
    ref = KalmanFilter(dim_x=8, dim_z=4)
    ref.F = np.eye(8)
    ref.F[:4, 4:] = np.eye(4)
    ref.H = np.eye(4, 8)
    ref.x = ours.mean.copy()
    h0 = z0[3]
    ref.P = np.diag(np.square([h0 / 10, h0 / 10, 1e-2, h0 / 10, h0 / 16, h0 / 16, 1e-5, h0 / 16]))
    np.testing.assert_allclose(ours.cov, ref.P)
    rng = np.random.default_rng(0)
    box = np.array([100.0, 120.0, 180.0, 260.0])
    for _ in range(25):
        h = ref.x[3]
        ref.Q = np.diag(np.square([h / 20, h / 20, 1e-2, h / 20, h / 160, h / 160, 1e-5, h / 160]))
        ref.predict()
        ours = kalman.predict(ours)
        np.testing.assert_allclose(ours.mean, ref.x, rtol=1e-9)
        np.testing.assert_allclose(ours.cov, ref.P, rtol=1e-9)
        box = box + rng.normal(3, 2, 4)
        z = kalman.xyxy_to_xyah(box)
        h = ref.x[3]
        ref.R = np.diag(np.square([h / 20, h / 20, 1e-1, h / 20]))
        ref.update(z)
        ours = kalman.update(ours, z)
        np.testing.assert_allclose(ours.mean, ref.x, rtol=1e-7)
        np.testing.assert_allclose(ours.cov, ref.P, rtol=1e-6, atol=1e-9)


def test_box_conversions_and_iou():
    assert tuple(kalman.xyxy_to_xyah((10, 20, 30, 60))) == (20, 40, 0.5, 40)
    assert tuple(kalman.xyxy_to_xyah((10, 20, 30, 20))) == (20, 20, 20.0, 1.0)  # zero height -> h = 1
    assert kalman.xyah_to_xyxy(np.array([20, 40, 0.5, 40])) == (10, 20, 30, 60)
    assert kalman.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert kalman.box_iou((0, 0, 10, 10), (0, 0, 0, 0)) == 0.0


def _cands(boxes: list[tuple[int, int, int, int]], ious: list[float], logit: float = 5.0) -> Candidates:
    """Three low-res candidates whose upsampled masks cover the given model-space boxes (S x S model)."""
    low = torch.full((len(boxes), S // 4, S // 4), -10.0)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        low[k, y1 // 4 : y2 // 4, x1 // 4 : x2 // 4] = 10.0
    return Candidates(low, torch.tensor(ious), torch.zeros(len(boxes), 8), logit, True, S)


def test_mask_box_reads_the_upsampled_mask():
    low = torch.full((S // 4, S // 4), -10.0)
    low[2:5, 3:9] = 10.0
    x1, y1, x2, y2 = mask_box(low, S)
    up = torch.nn.functional.interpolate(low[None, None], size=(S, S), mode="bilinear")[0, 0] > 0
    ys, xs = torch.nonzero(up, as_tuple=True)
    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())
    assert mask_box(torch.full((16, 16), -5.0), S) == (0, 0, 0, 0)


def _track(policy: SamuraiPolicy) -> ObjectTrack:
    t = ObjectTrack(1)
    t.policy_state = policy.new_object_state(1)
    return t


def test_warm_up_then_motion_aware_choice():
    pol = SamuraiPolicy(kf_score_weight=0.25)
    track = _track(pol)
    st = track.policy_state
    steady = (16, 16, 40, 40)
    jump = (0, 0, 12, 12)
    # frame 1 initialises, frames 2..15 update: the argmax-IoU candidate (index 1) is chosen throughout
    for f in range(1, 16):
        k = pol.choose_candidate(track, f, _cands([jump, steady, jump], [0.5, 0.9, 0.6]))
        assert k == 1 and track.policy_state.last_kf_score is None
    assert st.stable_frames == 15
    # stable: a candidate far from the predicted box loses despite a higher predicted IoU
    k = pol.choose_candidate(track, 16, _cands([jump, steady, jump], [0.95, 0.85, 0.6]))
    assert k == 1 and st.last_choice_was_kf
    assert st.last_kf_score == pytest.approx(1.0, abs=0.05)
    # ... but a small IoU gap does not beat a large one: 0.25 * kf_iou + 0.75 * pred_iou
    k = pol.choose_candidate(track, 17, _cands([jump, steady, jump], [0.99, 0.4, 0.6]))
    w_jump = 0.75 * 0.99 + 0.25 * kalman.box_iou(kalman.xyah_to_xyxy(st.kf.mean[:4]), jump)
    assert k == 0 and w_jump > 0.75 * 0.4 + 0.25 * 0.9


def test_low_iou_restarts_the_filter_and_warm_up_boundary():
    pol = SamuraiPolicy()
    track = _track(pol)
    st = track.policy_state
    box = (16, 16, 40, 40)
    pol.choose_candidate(track, 1, _cands([box] * 3, [0.2, 0.1, 0.1]))  # init ignores the threshold
    assert st.stable_frames == 1
    pol.choose_candidate(track, 2, _cands([box] * 3, [0.3, 0.1, 0.1]))  # not > 0.3: restart next frame
    assert st.stable_frames == 0
    pol.choose_candidate(track, 3, _cands([box] * 3, [0.31, 0.1, 0.1]))  # re-initialised
    assert st.stable_frames == 1
    for f in range(4, 18):
        pol.choose_candidate(track, f, _cands([box] * 3, [0.31, 0.1, 0.1]))
    assert st.stable_frames == 15  # warm-up done after 15 stable frames, the counter stops there
    pol.choose_candidate(track, 18, _cands([box] * 3, [0.3, 0.1, 0.1]))  # == 0.3 keeps it stable (< 0.3 resets)
    assert st.stable_frames == 15 and st.last_kf_score is not None
    pol.choose_candidate(track, 19, _cands([box] * 3, [0.29, 0.1, 0.1]))
    assert st.stable_frames == 0


def test_absent_object_has_empty_boxes():
    pol = SamuraiPolicy()
    track = _track(pol)
    pol.choose_candidate(track, 1, _cands([(16, 16, 40, 40)] * 3, [0.9, 0.1, 0.1], logit=-2.0))
    assert tuple(track.policy_state.kf.mean[:4]) == (0, 0, 0, 1)  # box (0,0,0,0) -> xyah with h = 1


def _rec(f: int, iou: float = 0.9, logit: float = 2.0, kf: float | None = None, cond: bool = False) -> FrameRecord:
    return FrameRecord(f, cond, torch.zeros(1, 8), logit, iou, torch.zeros(4, 1, 2), note=SamuraiNote(kf_score=kf))


def test_memory_admission_rules_and_rank_slots():
    pol = SamuraiPolicy()
    track = _track(pol)
    track.cond[0] = _rec(0, cond=True)
    pol.record_stored(track, track.cond[0])
    plan = {1: {}, 2: {}, 3: {"iou": 0.5}, 4: {"logit": 0.0}, 5: {"kf": 0.0}, 6: {"kf": 0.01}, 7: {}, 8: {"iou": 0.2},
            9: {}, 10: {}, 11: {}}
    for f, kw in plan.items():
        track.non_cond[f] = _rec(f, **kw)
        pol.record_stored(track, track.non_cond[f])
    # frame 1 (just after the prompt) is never admitted; 3 (iou not > 0.5), 4 (logit not > 0), 5 (kf not > 0),
    # 8 fail the thresholds
    assert list(track.policy_state.admitted) == [2, 6, 7, 9, 10, 11]
    mem = pol.memory_frames(track, 12)
    assert [(s, r.frame_idx) for s, r in mem] == [(6, 0), (5, 2), (4, 6), (3, 7), (2, 9), (1, 10), (0, 11)]
    # frame 12 fails: at frame 13 it is still used, as the previous frame, in slot 0
    track.non_cond[12] = _rec(12, iou=0.1)
    pol.record_stored(track, track.non_cond[12])
    mem = pol.memory_frames(track, 13)
    assert [(s, r.frame_idx) for s, r in mem] == [(6, 0), (5, 6), (4, 7), (3, 9), (2, 10), (1, 11), (0, 12)]


def test_admission_window_is_capped_at_15_and_pruned():
    pol = SamuraiPolicy()
    track = _track(pol)
    track.cond[0] = _rec(0, cond=True)
    pol.record_stored(track, track.cond[0])
    for f in range(1, 200):
        track.non_cond[f] = _rec(f, iou=0.9 if f < 50 else 0.1)  # admitted until 49, then nothing passes
        pol.record_stored(track, track.non_cond[f])
        pol.prune(track, f)
    assert list(track.policy_state.admitted) == list(range(35, 50))
    mem = pol.memory_frames(track, 200)
    assert [r.frame_idx for _, r in mem] == [0, 45, 46, 47, 48, 49, 199]  # old good frames + the previous one
    assert len(track.non_cond) <= 15 + 6  # pointer window + admitted memories: bounded


def test_samurai_objects_are_independent_and_memory_bounded(tiny_model):
    loader = create_tracking_loader("samurai-tiny", TrackingConfig(device="cpu")).load(model=tiny_model)
    assert loader.new_policy().kf_score_weight == 0.25
    assert create_tracking_loader("samurai").spec.policy_options["kf_score_weight"] == 0.15
    frames = moving_shapes(24)
    box, disc = shape_masks()

    def masks(prompts):
        return {(f.frame_idx, m.object_id): m.to_rle() for f in loader.track_video(frames, prompts) for m in f.masks}

    both = masks([Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)])
    one = masks([Prompt.from_mask(0, 1, box)])
    two = masks([Prompt.from_mask(0, 2, disc)])
    assert both == {**one, **two}
    s = loader.engine.new_session(loader.new_policy(), 96, 160)
    sizes = []
    for i in range(120):
        s.step(i, frames[i % 24], [Prompt.from_mask(0, 1, box)] if i == 0 else [])
        sizes.append(s.state_nbytes())
    track = s.tracks[1]
    assert track.policy_state.stable_frames == 15
    # bounded memory, hand-derived from SAMURAI's windows (every frame is admitted here): besides the prompt
    # frame, the pointer window of max_obj_ptrs - 1 = 15 tracked frames, the newest num_maskmem - 1 = 6 of them
    # with their spatial memory
    assert list(track.cond) == [0]
    assert sorted(track.non_cond) == list(range(105, 120))
    assert sorted(t for t, r in track.non_cond.items() if r.maskmem_features is not None) == list(range(114, 120))
    # flat: once the windows are full every frame holds the same bytes (a leak of even one pointer grows it)
    assert sizes[40:] == [sizes[40]] * 80
