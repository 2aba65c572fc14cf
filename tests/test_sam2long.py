"""SAM2Long policy: the tree step on scripted candidates (expansion, scoring, top-P, diversity rule, ties), key
modulation weights, per-pathway memory selection; then the engine: scaled-key attention, offline / online
modes, multi-object, de-duplicated pathways and bounded memory on a long stream."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch

from conftest import moving_shapes, shape_masks
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.engines.sam2.contract import DecoderRun, Kept
from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack
from vidtrack.errors import InputError
from vidtrack.policies import POLICIES, make_policy
from vidtrack.policies.sam2long import (
    Node,
    Pathway,
    Sam2LongObjectState,
    Sam2LongPolicy,
    Trace,
    rank_weights,
    select_branches,
)
from vidtrack.types import TrackingMask, rle_encode


def _picks(branches):
    return [(b.parent, b.candidate) for b in branches]


# --- the tree step --------------------------------------------------------------------------------------------
def test_expansion_scores_are_cumulative_log_iou():
    branches, uncertain = select_branches([-1.0, -2.0], [[0.9, 0.5, 0.1], [0.8, 0.7, 0.0]], [5.0, 5.0], 2, 2.0)
    assert not uncertain
    assert _picks(branches) == [(0, 0), (0, 1)]
    assert branches[0].score == pytest.approx(-1.0 + math.log(0.9 + 1e-5))
    assert branches[1].score == pytest.approx(-1.0 + math.log(0.5 + 1e-5))
    # an IoU of 0 is finite thanks to the epsilon
    branches, _ = select_branches([0.0], [[0.0, 0.0, 0.0]], [5.0], 1, 2.0)
    assert branches[0].score == pytest.approx(math.log(1e-5))


def test_top_p_across_pathways_when_certain():
    # pathway 1 is behind by 0.5 but its best candidate still beats pathway 0's second one
    branches, uncertain = select_branches(
        [0.0, -0.5, -3.0], [[0.9, 0.2, 0.1], [0.95, 0.9, 0.3], [0.99, 0.99, 0.99]], [3.0, -4.0, 2.5], 3, 2.0
    )
    assert not uncertain  # max |logit| = 4 > 2
    assert _picks(branches) == [(0, 0), (1, 0), (1, 1)]
    assert [b.score for b in branches] == sorted((b.score for b in branches), reverse=True)


def test_identical_pathways_keep_duplicates_in_pathway_order_when_certain():
    # before the first uncertain frame all pathways are the same: top-P is the same branch P times
    row = [0.6, 0.8, 0.7]
    branches, _ = select_branches([0.0] * 3, [row] * 3, [5.0] * 3, 3, 2.0)
    assert _picks(branches) == [(0, 1), (1, 1), (2, 1)]


def test_ties_keep_pathway_then_candidate_order():
    # two equal IoUs in every (identical) pathway: stable order (p, j)
    branches, _ = select_branches([0.0] * 3, [[0.8, 0.8, 0.1]] * 3, [5.0] * 3, 3, 2.0)
    assert _picks(branches) == [(0, 0), (0, 1), (1, 0)]
    branches, _ = select_branches([-1.0, -1.0], [[0.5, 0.4], [0.5, 0.4]], [5.0, 5.0], 3, 2.0)
    assert _picks(branches) == [(0, 0), (1, 0), (0, 1)]


def test_uncertain_step_forces_distinct_rounded_ious():
    # |logit| <= 2 everywhere: keys round(iou, 2) must differ; 0.801 and 0.804 collide at 0.80
    rows = [[0.801, 0.804, 0.5], [0.3, 0.2, 0.1], [0.3, 0.2, 0.1]]
    branches, uncertain = select_branches([0.0, -1.0, -1.0], rows, [1.5, 1.0, -1.0], 3, 2.0)
    assert uncertain
    # score order: (0,1) .804, (0,0) .801 [key taken], (0,2) .5, (1,0) .3, ...
    assert _picks(branches) == [(0, 1), (0, 2), (1, 0)]
    # certain: the plain top 3 keeps the near-duplicate
    branches, uncertain = select_branches([0.0, -1.0, -1.0], rows, [2.5, 1.0, -1.0], 3, 2.0)
    assert not uncertain and _picks(branches) == [(0, 1), (0, 0), (0, 2)]


def test_uncertain_keys_are_signed_by_object_presence():
    # same IoU from a pathway that sees the object (logit > 0) and one that does not: different keys
    branches, uncertain = select_branches([0.0, 0.0], [[0.7, 0.1], [0.7, 0.1]], [0.5, -0.5], 2, 2.0)
    assert uncertain
    assert _picks(branches) == [(0, 0), (1, 0)]
    # when certain the same inputs just take the top two (a duplicate of the same IoU is fine)
    branches, _ = select_branches([0.0, 0.0], [[0.7, 0.1], [0.7, 0.1]], [0.5, -2.5], 2, 2.0)
    assert _picks(branches) == [(0, 0), (1, 0)]
    branches, _ = select_branches([0.0, 0.0], [[0.7, 0.6], [0.7, 0.1]], [3.0, 3.0], 2, 2.0)
    assert _picks(branches) == [(0, 0), (1, 0)]


def test_uncertain_with_too_few_distinct_keys_adds_each_missing_pathways_best():
    # identical pathways: only one distinct key; pathways 1 and 2 each add their own best branch
    branches, uncertain = select_branches([0.0] * 3, [[0.5, 0.5, 0.5]] * 3, [1.0] * 3, 3, 2.0)
    assert uncertain
    assert _picks(branches) == [(0, 0), (1, 0), (2, 0)]
    # a third distinct key anywhere in the ranking is preferred to a filler
    branches, _ = select_branches(
        [0.0, -5.0, -5.0], [[0.9, 0.3, 0.3], [0.9, 0.3, 0.3], [0.2, 0.2, 0.2]], [1.0, 1.0, 1.0], 3, 2.0
    )
    assert _picks(branches) == [(0, 0), (0, 1), (2, 0)]
    # two distinct keys, both from pathway 0: pathway 1 (the first unrepresented) adds its best branch
    branches, _ = select_branches([0.0, -1.0, -2.0], [[0.9, 0.5, 0.5]] * 3, [1.0, 1.0, 1.0], 3, 2.0)
    assert _picks(branches) == [(0, 0), (0, 1), (1, 0)]


def test_uncertainty_threshold_is_inclusive():
    branches, uncertain = select_branches([0.0], [[0.5, 0.5, 0.4]], [2.0], 2, 2.0)
    assert uncertain and _picks(branches) == [(0, 0), (0, 2)]
    branches, uncertain = select_branches([0.0], [[0.5, 0.5, 0.4]], [2.0001], 2, 2.0)
    assert not uncertain and _picks(branches) == [(0, 0), (0, 1)]


def test_rank_weights():
    w = rank_weights([10.0, -1.0, 3.0])
    assert torch.allclose(w, torch.tensor([1.05, 0.95, 1.0]))
    w = rank_weights([10.0, 0.5, 0.5, 2.0, -3.0])  # ties in input order
    assert torch.allclose(w, torch.tensor([1.05, 0.975, 1.0, 1.025, 0.95]))
    assert rank_weights([10.0]).tolist() == [pytest.approx(0.95)]


# --- memory selection ---------------------------------------------------------------------------------------
def _node(frame: int, iou: float, logit: float, parent: Node | None, max_ptrs: int = 16, thr: float = 0.3) -> Node:
    rec = FrameRecord(frame, False, torch.full((1, 8), float(frame)), logit, iou,
                      maskmem_features=torch.zeros(4, 1, 2, dtype=torch.bfloat16))
    admitted = parent.admitted if parent is not None else ()
    n = Node(rec, admitted)
    if iou > thr and logit > 0:
        n.admitted = (*admitted, n)[-(max_ptrs - 1):]
    return n


def test_pathway_memory_admission_window_and_pointer_off_by_one():
    pol = Sam2LongPolicy(num_maskmem=7, max_obj_ptrs=16)
    track = ObjectTrack(1)
    track.cond[0] = FrameRecord(0, True, torch.zeros(1, 8), 10.0, 1.0, torch.zeros(4, 1, 2, dtype=torch.bfloat16))
    head = None
    for f in range(1, 12):
        bad = f in (3, 4, 10) or f == 11
        head = _node(f, 0.1 if f in (3, 10, 11) else 0.9, -1.0 if f == 4 else 2.0, head)
        assert (head in head.admitted) is not bad
    mem, ptrs, ms, ps = pol.pathway_memory(track, 12, head, 16)
    # admitted: 1 2 5 6 7 8 9; the previous frame 11 is always added -> newest 6 of [.., 11]
    assert [(s, r.frame_idx) for s, r in mem] == [(6, 0), (5, 5), (4, 6), (3, 7), (2, 8), (1, 9), (0, 11)]
    assert ms == [10.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    # pointers: prompt frame at its true distance, then valid[-1], valid[-2], ... by rank, oldest (1) skipped
    assert [(d, r.frame_idx) for d, r in ptrs] == [(12, 0), (1, 11), (2, 9), (3, 8), (4, 7), (5, 6), (6, 5),
                                                  (7, 2)]
    assert ps[0] == 10.0 and len(ps) == len(ptrs)
    # frame s + 1 (no head yet): the prompt frame only
    mem, ptrs, _, _ = pol.pathway_memory(track, 1, None, 16)
    assert [r.frame_idx for _, r in mem] == [0] and [d for d, _ in ptrs] == [1]


def _tree_frame(pol: Sam2LongPolicy, track: ObjectTrack, f: int, rows: list[list[float]], logits: list[float]
                ) -> None:
    """One tracked frame through the production hooks (memory_reads, choose, remember, prune), with scripted
    decoder outputs: ``rows[i]`` / ``logits[i]`` are the IoUs / object logit of distinct head i's run."""
    reads = pol.memory_reads(track, f, 16)
    runs = [DecoderRun(torch.zeros(1, len(rows[i]), 2, 2), torch.tensor([rows[i]]), torch.zeros(1, len(rows[i]), 8),
                       logits[i]) for i in range(len(reads))]
    decision = pol.choose(track, f, runs, 64)
    kept = []
    for c in decision.choices:
        run = runs[c.read]
        iou = c.iou if c.iou is not None else float(run.ious[0, c.candidate])
        rec = FrameRecord(f, False, torch.zeros(1, 8), run.object_score_logit, iou,
                          maskmem_features=torch.zeros(4, 1, 2, dtype=torch.bfloat16))
        kept.append(Kept(c, rec, None))  # type: ignore[arg-type]  # the output is the engine's, unused here
    pol.remember(track, f, decision, kept, 16)
    pol.prune(track, f)


def _tree_track(pol: Sam2LongPolicy) -> ObjectTrack:
    track = ObjectTrack(1)
    track.policy_state = pol.new_object_state(1)
    track.cond[0] = FrameRecord(0, True, torch.zeros(1, 8), 10.0, 1.0, torch.zeros(4, 1, 2, dtype=torch.bfloat16))
    pol.record_stored(track, track.cond[0])
    return track


def test_admitted_list_is_capped_and_dead_lineages_are_freed():
    """Production admission (choose + remember + prune), not a re-implementation: a lineage's admitted list is
    its last max_obj_ptrs - 1 = 15 admitted frames (IoU > threshold and logit > 0), and no node outside the
    live pathways' admitted lists and heads stays reachable (a lineage dropped by the tree is freed)."""
    pol = Sam2LongPolicy(num_pathways=1, mode="online")
    track = _tree_track(pol)
    alive: dict[int, weakref.ref] = {}
    rejected = {10, 20, 33}  # low IoU (10, 33) or object absent (20): not admitted
    for f in range(1, 40):
        iou = 0.1 if f in (10, 33) else 0.9
        _tree_frame(pol, track, f, [[iou, 0.05, 0.05]], [-1.0 if f == 20 else 5.0])
        alive[f] = weakref.ref(pol.state(track).pathways[0].head)
    head = pol.state(track).pathways[0].head
    expected = [f for f in range(1, 40) if f not in rejected][-15:]  # hand-derived: the last 15 admitted
    assert [n.rec.frame_idx for n in head.admitted] == expected
    gc.collect()
    assert sorted(f for f, ref in alive.items() if ref() is not None) == sorted({*expected, 39})

    # two pathways: an uncertain frame splits them, then certain frames keep both branches of pathway 0 only
    pol = Sam2LongPolicy(num_pathways=2, mode="online", uncertainty=2.0)
    track = _tree_track(pol)
    _tree_frame(pol, track, 1, [[0.9, 0.5, 0.2]], [5.0])  # frame s + 1: one shared step
    _tree_frame(pol, track, 2, [[0.9, 0.6, 0.2]], [0.5])  # uncertain: two distinct candidates survive
    a, b = (pw.head for pw in pol.state(track).pathways)
    assert a is not b and (a.rec.iou, b.rec.iou) == pytest.approx((0.9, 0.6))
    dropped = weakref.ref(b)
    del b
    _tree_frame(pol, track, 3, [[0.9, 0.8, 0.1], [0.2, 0.1, 0.1]], [5.0, 5.0])  # certain: both from pathway 0
    assert all(pw.head.admitted[-2] is a for pw in pol.state(track).pathways)
    gc.collect()
    assert dropped() is None  # the dead lineage is freed


def test_final_masks_trace_back_the_best_pathway():
    pol = Sam2LongPolicy(mode="offline")
    track = ObjectTrack(1)
    st = Sam2LongObjectState()
    track.policy_state = st

    def tm(v: int) -> TrackingMask:
        return TrackingMask(rle=rle_encode(np.full((2, 2), bool(v))), confidence=v, object_id=1)

    a1 = Trace(1, tm(1), None)
    a2, b2 = Trace(2, tm(2), a1), Trace(2, tm(20), a1)
    a3 = Trace(3, tm(3), b2)  # the best pathway at the end descends from b2, not a2
    rec = FrameRecord(3, False, torch.zeros(1, 8), 1.0, 0.9)
    st.pathways = [Pathway(Node(rec, (), a3), -1.0)]
    out = pol.final_masks(track)
    assert {f: m.confidence for f, m in out.items()} == {1: 1, 2: 20, 3: 3}
    assert Sam2LongPolicy(mode="online").final_masks(track) == {}
    del a2


def test_options_presets_and_registration():
    assert POLICIES["sam2long"] is Sam2LongPolicy
    p = make_policy("sam2long", num_pathways=3, iou_threshold=0.3, uncertainty=2.0)
    assert (p.num_pathways, p.iou_threshold, p.uncertainty, p.mode) == (3, 0.3, 2.0, "offline")
    p = make_policy("sam2long", iou_threshold=0.3, uncertainty=2.0, preset="official")
    assert (p.iou_threshold, p.uncertainty) == (0.1, 2.0)
    p = make_policy("sam2long", preset="official-cli", mode="online")
    assert (p.iou_threshold, p.uncertainty, p.mode) == (0.3, 1.0, "online")
    with pytest.raises(InputError):
        make_policy("sam2long", mode="later")
    with pytest.raises(InputError):
        make_policy("sam2long", preset="best")


# --- through the engine ---------------------------------------------------------------------------------------
def _loader(model, **options):
    loader = create_tracking_loader(
        "sam2long-tiny", TrackingConfig(device="cpu", dtype="float32", policy_options=options)
    )
    return loader.load(model=model)


def test_scaled_key_attention_with_unit_weights_equals_the_model(tiny_model):
    from vidtrack.engines.sam2.engine import KeyScale, MemoryRead, Sam2Engine

    eng = Sam2Engine(tiny_model)
    frames = moving_shapes(2)
    feats0 = eng.encode_image(eng.preprocess(frames[0]))
    feats1 = eng.encode_image(eng.preprocess(frames[1]))
    box, _ = shape_masks()
    hi = torch.from_numpy(box).float()[None, None]
    hi = torch.nn.functional.interpolate(hi, size=(eng.image_size, eng.image_size)) * 20 - 10
    mem = eng.encode_memory(feats0, hi, torch.tensor([[5.0]]), True)
    recs = [FrameRecord(0, True, torch.randn(1, eng.hidden_dim), 5.0, 1.0, mem),
            FrameRecord(1, False, torch.randn(1, eng.hidden_dim), 1.0, 0.8, mem.clone() * 0.5)]
    memories = [(6, recs[0]), (0, recs[1])]
    pointers = [(1, recs[0]), (1, recs[1])]
    with torch.inference_mode():
        ref = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers)], 16)
        ones = KeyScale([torch.tensor(1.0)] * 2, [torch.tensor(1.0)] * 2)
        same = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers, ones)], 16)
        other = KeyScale([torch.tensor(1.05), torch.tensor(0.95)], [torch.tensor(1.05), torch.tensor(0.95)])
        diff = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers, other)], 16)
    torch.testing.assert_close(same, ref, rtol=0, atol=1e-6)
    assert (diff - ref).abs().max() > 1e-6


def test_offline_and_online_modes_multi_object(tiny_model):
    frames = moving_shapes(10)
    box, disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)]
    results = {}
    for mode in ("offline", "online"):
        loader = _loader(tiny_model, mode=mode, record_choices=True)
        res = loader.track_video(frames, prompts)
        assert res.metadata["sam2long"]["mode"] == mode
        assert res.metadata["policy"] == "sam2long"
        assert [sorted(m.object_id for m in f.masks) for f in res.frames] == [[1, 2]] * 10
        session = loader.last_session
        for oid in (1, 2):
            st = session.tracks[oid].policy_state
            assert len(st.pathways) == 3
            assert st.runs < st.runs_naive  # identical pathways were computed once
            assert st.choices[0]["first"] and st.choices[0]["distinct_runs"] == 1
        results[mode] = res
    # same tree in both modes: the last frame (best pathway now) agrees; earlier frames may be revised
    for oid in (1, 2):
        a = results["offline"].frames[-1].mask_for(oid)
        b = results["online"].frames[-1].mask_for(oid)
        assert np.array_equal(a.mask, b.mask)
        assert np.array_equal(results["offline"].frames[0].mask_for(oid).mask,
                              results["online"].frames[0].mask_for(oid).mask)  # prompt frame


def test_single_certain_pathway_offline_equals_online(tiny_model):
    frames = moving_shapes(8)
    box, _ = shape_masks()
    out = {}
    for mode in ("offline", "online"):
        loader = _loader(tiny_model, mode=mode, num_pathways=1, uncertainty=-1.0)
        out[mode] = loader.track_video(frames, [Prompt.from_mask(0, 1, box)])
    for a, b in zip(out["offline"].frames, out["online"].frames, strict=True):
        assert np.array_equal(a.mask_for(1).mask, b.mask_for(1).mask)


def test_stream_yields_online_masks_and_late_prompt_backward(tiny_model):
    """The stream yields each frame's online mask (the best pathway's, as it is computed): not empty, the
    prompt's own frame close to the prompt, equal in both modes (offline mode only revises afterwards) and
    equal to a whole online run. An object prompted later (causal semantics) is followed back to frame 0 by the
    backward pass: its masks there equal an independent run over the reversed frames from its prompt."""
    frames = moving_shapes(8)
    box, disc = shape_masks()
    online = list(_loader(tiny_model, mode="online").stream(frames, [Prompt.from_mask(0, 1, box)]))
    offline = list(_loader(tiny_model, mode="offline").stream(frames, [Prompt.from_mask(0, 1, box)]))
    whole = _loader(tiny_model, mode="online").track_video(frames, [Prompt.from_mask(0, 1, box)])
    assert [f.frame_idx for f in online] == list(range(8))
    for a, b, c in zip(online, offline, whole.frames, strict=True):
        mask = a.mask_for(1).mask
        assert mask.any()
        assert np.array_equal(mask, b.mask_for(1).mask) and np.array_equal(mask, c.mask_for(1).mask)
    first = online[0].mask_for(1).mask
    assert (first & box).sum() / (first | box).sum() > 0.9

    loader = _loader(tiny_model, mode="offline")
    loader.config.semantics = "causal"
    res = loader.track_video(frames, [Prompt.from_mask(0, 1, box), Prompt.from_mask(4, 2, disc)])
    assert [sorted(m.object_id for m in f.masks) for f in res.frames] == [[1, 2]] * 8
    reversed_run = _loader(tiny_model, mode="offline").track_video(frames[4::-1], [Prompt.from_mask(0, 2, disc)])
    for pos, f in enumerate(reversed_run.frames):  # position pos of the reversed run is frame 4 - pos
        assert f.mask_for(2).mask.any()
        assert np.array_equal(res.frames[4 - pos].mask_for(2).mask, f.mask_for(2).mask)


def test_reprompt_restarts_the_tree(tiny_model):
    """Causal semantics: the second prompt is reached during tracking and restarts the tree there."""
    frames = moving_shapes(8)
    box, _ = shape_masks()
    loader = _loader(tiny_model, mode="offline", record_choices=True)
    loader.config.semantics = "causal"
    res = loader.track_video(frames, [Prompt.from_mask(0, 1, box), Prompt.from_mask(4, 1, box)])
    st = loader.last_session.tracks[1].policy_state
    assert [c["frame"] for c in st.choices if c["first"]] == [1, 5]
    assert len(st.finished) == 1
    assert all(f.mask_for(1) is not None for f in res.frames)


def test_online_memory_is_flat_on_a_long_stream(tiny_model):
    """2,000 frames at 64 px, online mode: state size bounded after warm-up (no growth with video length)."""
    from vidtrack.engines.sam2.weights import random_sam2_model, tiny_test_config

    model = random_sam2_model(tiny_test_config(64), seed=0)
    loader = create_tracking_loader(
        "sam2long-tiny", TrackingConfig(device="cpu", dtype="float32", policy_options={"mode": "online"})
    ).load(model=model)
    h, w = 48, 64
    rng = np.random.default_rng(0)
    bg = rng.integers(20, 60, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    tracker = loader.open_stream(h, w)
    sizes, live = [], []
    for t in range(2000):
        f = bg.copy()
        cx = 16 + (t % 32)
        f[(np.abs(xx - cx) < 7) & (np.abs(yy - 20) < 6)] = (220, 50, 50)
        if t == 0:
            tracker.add_prompt(Prompt.from_mask(0, 1, (np.abs(xx - cx) < 7) & (np.abs(yy - 20) < 6)))
        tracker.process(f)
        sizes.append(tracker.session.state_nbytes())
        live.append(len(tracker.session.tracks[1].policy_state.live_nodes()))
    st = tracker.session.tracks[1].policy_state
    track = tracker.session.tracks[1]
    node = st.pathways[0].head
    mem_b = node.rec.maskmem_features.numel() * 2
    ptr_b = node.rec.obj_ptr.numel() * node.rec.obj_ptr.element_size()
    bound = track.cond[0].nbytes() + 3 * 16 * ptr_b + 3 * 7 * mem_b  # P x (16 pointers, 7 spatial memories)
    assert max(sizes) <= bound, (max(sizes), bound)
    assert max(sizes[1000:]) <= max(sizes[100:1000])  # no growth with video length
    assert max(live) <= 3 * 16  # P pathways x (15 admitted + head)
    assert len(track.non_cond) == 0
    assert st.choices == [] and st.finished == []
