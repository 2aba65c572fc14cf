"""The interactive session's own behaviour on the tiny random model (parity with Meta: tests/parity).

Reuse equals recomputation, cancellation leaves a consistent session, the feature cache and the RAM part of
the record store stay within their bounds (spilled records read back give the same masks), every policy runs
in a session under the documented rule, bad input fails with one InputError before any work.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from conftest import moving_shapes, shape_masks
from vidtrack import TrackingConfig, create_tracking_loader
from vidtrack.engines.sam2 import interactive
from vidtrack.errors import InputError
from vidtrack.policies.base import MemoryPolicy
from vidtrack.types import Prompt

os.environ.setdefault("OMP_NUM_THREADS", "1")

T = 10


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack(moving_shapes(T))


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def _masks(tfs: Any) -> dict[tuple[int, int], np.ndarray]:
    return {(tf.frame_idx, m.object_id): m.mask for tf in tfs for m in tf.masks}


def _all(session: Any) -> dict[tuple[int, int], np.ndarray]:
    return _masks(session.result().frames)


def _two_objects(session: Any) -> None:
    a, b = shape_masks()
    session.add_prompt(0, 1, box=_box(a))
    session.add_prompt(0, 2, mask=b)


def _correct(session: Any) -> None:
    a, _ = shape_masks()
    ys, xs = np.nonzero(a)
    session.add_prompt(5, 1, points=[[float(xs.max()), float(ys.max())]], labels=[0])


def test_reuse_gives_the_same_masks_as_recomputing(sam2_loader, frames, monkeypatch):
    """After a correction on object 1, object 2 is not recomputed; the masks equal those of a session that
    recomputes everything (reuse switched off). A second propagation with nothing changed computes nothing."""
    with sam2_loader.open_session(frames) as s:
        _two_objects(s)
        list(s.propagate())
        assert s.frames_computed == 2 * (T - 1) and s.frames_reused == 0
        _correct(s)
        list(s.propagate())
        assert s.frames_reused == T - 1  # object 2, every tracked frame
        assert s.frames_computed == 2 * (T - 1) + (T - 2)  # object 1 again, frame 5 now conditioning
        misses = s.features.misses
        again = list(s.propagate())
        assert s.frames_computed == 2 * (T - 1) + (T - 2) and s.features.misses == misses
        reused = _all(s)
        again_masks = _masks(again)
        assert again_masks.keys() == reused.keys()
        assert all(np.array_equal(again_masks[k], reused[k]) for k in reused)
    monkeypatch.setattr(interactive, "_policy_reuses", lambda policy, reference: False)
    with sam2_loader.open_session(frames) as s:
        _two_objects(s)
        list(s.propagate())
        _correct(s)
        list(s.propagate())
        assert s.frames_reused == 0
        fresh = _all(s)
    assert fresh.keys() == reused.keys()
    for k in fresh:
        assert np.array_equal(fresh[k], reused[k]), k


def test_cancelled_propagation_leaves_a_consistent_session(sam2_loader, frames):
    with sam2_loader.open_session(frames) as s:
        _two_objects(s)
        gen = s.propagate()
        seen = [next(gen) for _ in range(3)]
        with pytest.raises(InputError, match="propagation is running"):
            s.add_prompt(2, 3, box=(1, 1, 20, 20))
        gen.close()
        assert [tf.frame_idx for tf in seen] == [0, 1, 2]
        assert s.frame_result(2) is not None and s.frame_result(3) is None
        list(s.propagate())
        after_cancel = _all(s)
    with sam2_loader.open_session(frames) as s:
        _two_objects(s)
        list(s.propagate())
        straight = _all(s)
    assert after_cancel.keys() == straight.keys()
    for k in straight:
        assert np.array_equal(after_cancel[k], straight[k]), k


def test_feature_cache_and_record_store_stay_bounded(sam2_loader, frames):
    """3 frames of features at most; the store keeps 4 record groups in RAM and spills the rest to work_dir;
    a correction reading spilled records gives the masks of a session that kept everything in RAM."""
    results = []
    for ram_items in (4, 1000):
        s = sam2_loader.open_session(frames, feature_cache_frames=3)
        s.store.ram_items = ram_items
        _two_objects(s)
        list(s.propagate())
        assert len(s.features) <= 3
        one = interactive.features_nbytes(s.features._items[s.features.frames()[0]])
        assert s.features.nbytes() <= 3 * one
        if ram_items == 4:
            assert len(s.store._ram) <= 4 and s.store.disk_bytes > 0
            assert any(s.work_dir.rglob("*.bin"))
        _correct(s)
        list(s.propagate())
        if ram_items == 4:
            assert s.store.reads > 0  # the correction and the second pass read spilled records back
        results.append(_all(s))
        work = s.work_dir
        s.close()
        assert not work.exists()
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        assert np.array_equal(results[0][k], results[1][k]), k


@pytest.mark.parametrize("model", ["samurai-tiny", "sam2long-tiny"])
def test_policies_restart_from_the_conditioning_frames_at_each_propagation(tiny_model, frames, model):
    """The rule for policies without interactive semantics (docs/SESSION.md): a propagation builds the policy
    state afresh from the conditioning frames. So a session's propagation from a prompt on frame 0 equals the
    whole-video run of the same policy (SAM2Long's offline revision included), and propagating twice gives the
    same masks again (no state carried over)."""
    loader = create_tracking_loader(model, TrackingConfig(device="cpu", dtype="float32")).load(model=tiny_model)
    a, b = shape_masks()
    whole = loader.track_video(frames, [Prompt.from_box(0, 1, _box(a), fmt="xyxy"), Prompt.from_mask(0, 2, b)])
    with loader.open_session(frames) as s:
        _two_objects(s)
        first = {}
        for tf in s.propagate():
            first.update(_masks([tf]))  # revised frames come again at the end: the last one counts
        second = {}
        for tf in s.propagate():
            second.update(_masks([tf]))
        assert not interactive._policy_reuses(s._policy_factory(), s._reference)
    ref = _masks(whole.frames)
    assert first.keys() == ref.keys() == second.keys()
    for k in ref:
        assert np.array_equal(first[k], ref[k]), k
        assert np.array_equal(second[k], ref[k]), k


def test_a_user_policy_runs_in_a_session(tiny_model, frames):
    class Smallest(MemoryPolicy):
        """Picks the candidate with the lowest predicted IoU (a stateless policy that is not SAM 2.1's)."""

        name = "smallest"

        def choose_candidate(self, track: Any, frame_idx: int, cands: Any) -> int:
            return int(cands.ious.argmin().item()) if cands.multimask else 0

    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", dtype="float32", policy=Smallest))
    loader.load(model=tiny_model)
    with loader.open_session(frames) as s:
        _two_objects(s)
        assert len(list(s.propagate())) == T
        assert not interactive._policy_reuses(s._policy_factory(), s._reference)
        list(s.propagate())
        assert s.frames_reused == 0


def test_both_directions_and_default_start(sam2_loader, frames):
    a, _ = shape_masks()
    with sam2_loader.open_session(frames) as s:
        s.add_prompt(4, 1, box=_box(a))
        assert s.plan() == list(range(4, T))
        fwd = [tf.frame_idx for tf in s.propagate()]
        assert fwd == list(range(4, T))  # Meta: from the earliest prompted frame
        assert s.plan("both", start=6, max_frames=2) == [6, 7, 8, 6, 5, 4]
        both = [tf.frame_idx for tf in s.propagate("both", start=6, max_frames=2)]
        assert both == [6, 7, 8, 6, 5, 4]  # max_frame_num_to_track=2: start and 2 more, each way
        assert [tf.frame_idx for tf in s.propagate("backward")] == [4, 3, 2, 1, 0]
        assert s.plan("backward", start=0) == []  # Meta skips a reverse pass from frame 0


def test_prompts_are_listed_and_accumulate(sam2_loader, frames):
    a, _ = shape_masks()
    ys, xs = np.nonzero(a)
    with sam2_loader.open_session(frames) as s:
        s.add_prompt(0, 1, box=_box(a))
        s.add_prompt(0, 1, points=[[float(xs.mean()), float(ys.mean())]], labels=[1])
        assert s._objects[1].points[0][0] is not None and len(s._objects[1].points[0][1]) == 1  # box kept
        s.add_prompt(0, 1, points=[[1.0, 1.0]], labels=[0], clear_old_points=True)
        assert s._objects[1].points[0][0] is None and len(s._objects[1].points[0][1]) == 1
        assert [p.kind for p in s.prompts] == ["box", "points", "points"]
        s.clear_prompts(0, 1)
        assert s.prompts == [] and s.frame_result(0) is None
        with pytest.raises(InputError, match="no prompt left"):
            s.propagate()


@pytest.mark.parametrize("call, match", [
    (lambda s: s.add_prompt(T, 1, box=(1, 1, 5, 5)), "frame 10 does not exist"),
    (lambda s: s.add_prompt(0, 1), "empty prompt"),
    (lambda s: s.add_prompt(0, 1, points=[[1, 1]]), "need labels"),
    (lambda s: s.add_prompt(0, 1, points=[[1, 1]], labels=[2]), "labels must be 1"),
    (lambda s: s.add_prompt(0, 1, mask=np.ones((5, 5), bool)), "mask is 5x5"),
    (lambda s: s.propagate(), "no objects"),
    (lambda s: s.propagate("sideways"), "direction must be"),
    (lambda s: s.remove_object(9), "no object 9"),
    (lambda s: s.frame(-1), "frame -1 does not exist"),
])
def test_bad_input_is_one_input_error(sam2_loader, frames, call, match):
    with sam2_loader.open_session(frames) as s, pytest.raises(InputError, match=match):
        call(s)


def test_loaders_without_a_session_say_so():
    loader = create_tracking_loader("yolo11n-seg", TrackingConfig(device="cpu"))
    with pytest.raises(InputError, match="no interactive session"):
        loader.open_session(np.zeros((2, 8, 8, 3), np.uint8))
