"""Prompts on several frames: the official semantics (Meta's ``SAM2VideoPredictor``) and the causal one.

The memory each frame reads is checked against a transcription of the official loops
(``SAM2Base._prepare_memory_conditioned_features`` with ``memory_temporal_stride_for_eval=1`` and every
conditioning frame selected; ``SAM2VideoPredictor.propagate_in_video``), written here independently of the
engine. Parity of the masks with the official predictor itself is in tests/parity/test_multi_prompt_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import moving_shapes, shape_masks, write_video
from vidtrack import InputError, Prompt, TrackingConfig, create_tracking_loader
from vidtrack.policies import VanillaPolicy

H, W = 96, 160


def _late_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[60:80, 60:90] = True
    return m


def _loader(model, name: str = "sam2.1-tiny", **config):
    return create_tracking_loader(name, TrackingConfig(device="cpu", dtype="float32", **config)).load(model=model)


def _rles(result) -> dict[tuple[int, int], dict]:
    return {(f.frame_idx, m.object_id): m.to_rle() for f in result.frames for m in f.masks}


# --- what Meta's loops read -------------------------------------------------------------------------------
def meta_memory_read(
    f: int, cond: set[int], tracked: set[int], reverse: bool, num_maskmem: int, max_ptrs: int, num_frames: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(temporal-encoding index, frame) memory entries and (pointer distance, frame) pointer entries that
    ``_prepare_memory_conditioned_features`` uses for frame ``f`` of one object, given its conditioning frames
    and the frames it has already tracked (non-conditioning outputs) in this inference state."""
    sign = -1 if reverse else 1
    mems = [(num_maskmem - 1, c) for c in sorted(cond)]  # t_pos = 0 -> maskmem_tpos_enc[num_maskmem - 1]
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        prev = f - sign * t_rel
        if prev in tracked:
            mems.append((num_maskmem - t_pos - 1, prev))
    ptrs = [((f - t) * sign, t) for t in sorted(cond) if (t >= f if reverse else t <= f)]
    for t_diff in range(1, min(num_frames, max_ptrs)):
        t = f - sign * t_diff
        if t < 0 or t >= num_frames:
            break
        if t in tracked:
            ptrs.append((t_diff, t))
    return sorted(mems), sorted(ptrs)


class _Recording(VanillaPolicy):
    """SAM 2.1's policy, recording what each tracked frame reads (frame indices, not tensors)."""

    def __init__(self, log: list, **kw) -> None:
        super().__init__(**kw)
        self.log = log
        self._mems: list = []

    def memory_frames(self, track, frame_idx):
        out = super().memory_frames(track, frame_idx)
        self._mems = sorted((slot, r.frame_idx) for slot, r in out)
        return out

    def pointer_frames(self, track, frame_idx, max_ptrs):
        out = super().pointer_frames(track, frame_idx, max_ptrs)
        self.log.append((track.reverse, frame_idx, track.object_id, self._mems,
                         sorted((d, r.frame_idx) for d, r in out)))
        return out


def _recorded_run(loader, frames, prompts):
    log: list = []
    eng = loader.engine
    loader.new_policy = lambda: _Recording(log, num_maskmem=eng.num_maskmem, max_obj_ptrs=eng.max_obj_ptrs)
    return loader.track_video(frames, prompts), log


def _expected_log(prompts_by_obj: dict[int, set[int]], n: int, num_maskmem: int, max_ptrs: int):
    """Meta's order of work for ``propagate_in_video`` forward from the earliest prompt, then
    ``propagate_in_video(start_frame_idx=s - 1, reverse=True)`` on the same state."""
    s = min(min(c) for c in prompts_by_obj.values())
    tracked: dict[int, set[int]] = {o: set() for o in prompts_by_obj}
    out = []
    for reverse, order in ((False, range(s, n)), (True, range(s - 1, -1, -1))):
        for f in order:
            for o in sorted(prompts_by_obj):
                cond = prompts_by_obj[o]
                if f in cond:
                    continue  # the prompt's own output, computed first
                mems, ptrs = meta_memory_read(f, cond, tracked[o], reverse, num_maskmem, max_ptrs, n)
                out.append((reverse, f, o, mems, ptrs))
                tracked[o].add(f)
    return out


# --- tests ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sam2.1-tiny", "samurai-tiny", "sam2long-tiny"])
def test_prompts_on_the_first_frame_give_the_same_masks_in_both_semantics(tiny_model, name):
    frames = moving_shapes(10)
    box, disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc), Prompt.from_points(0, 3, [[80, 20]])]
    official = _loader(tiny_model, name).track_video(frames, prompts)
    causal = _loader(tiny_model, name, semantics="causal").track_video(frames, prompts)
    assert official.metadata["semantics"] == "official" and causal.metadata["semantics"] == "causal"
    assert _rles(official) == _rles(causal)
    assert len(_rles(official)) == 30


def test_official_memory_reads_are_meta_loops(tiny_model):
    """Object 1 prompted on frames 2 and 9 (a correction), object 2 first prompted on frame 6: every frame
    reads exactly what Meta's loops read -- all conditioning frames (also later ones) at the conditioning
    temporal slot, pointers only from those already passed, the previous tracked frames by distance -- in the
    forward pass from frame 2 and the reverse pass from frame 1."""
    frames = moving_shapes(24)
    box, _ = shape_masks()
    loader = _loader(tiny_model)
    prompts = [Prompt.from_mask(2, 1, box), Prompt.from_mask(9, 1, box), Prompt.from_mask(6, 2, _late_mask())]
    result, log = _recorded_run(loader, frames, prompts)
    eng = loader.engine
    expected = _expected_log({1: {2, 9}, 2: {6}}, 24, eng.num_maskmem, eng.max_obj_ptrs)
    assert log == expected
    assert [f.object_ids for f in result.frames] == [[1, 2]] * 24
    # the bank keeps every conditioning frame and no more than the windows of the rest
    tracks = loader.last_session.tracks
    assert sorted(tracks[1].cond) == [2, 9] and sorted(tracks[2].cond) == [6]
    assert all(len(t.non_cond) <= eng.max_obj_ptrs - 1 for t in tracks.values())
    assert all(sum(r.maskmem_features is not None for r in t.non_cond.values()) <= eng.num_maskmem - 1
               for t in tracks.values())


def test_causal_memory_reads_differ_from_meta(tiny_model):
    """The same prompts in causal mode do not read the later conditioning frames (the check above has teeth)."""
    frames = moving_shapes(12)
    box, _ = shape_masks()
    loader = _loader(tiny_model, semantics="causal", backward=False)
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(8, 1, box)]
    _, log = _recorded_run(loader, frames, prompts)
    expected = _expected_log({1: {0, 8}}, 12, loader.engine.num_maskmem, loader.engine.max_obj_ptrs)
    assert [x[1] for x in log] == [x[1] for x in expected]  # same frames tracked
    got = {x[1]: x[3] for x in log}
    want = {x[1]: x[3] for x in expected}
    assert all((6, 8) not in got[f] and (6, 8) in want[f] for f in range(1, 8))
    assert all(got[f] == want[f] for f in range(9, 12))


def test_object_first_prompted_later_is_tracked_forward_from_the_earliest_prompt(tiny_model):
    """Official: an object first prompted on frame 5 gets masks on frames 0-4 from the forward pass (reading
    its future prompt), with no backward pass at all; causal: nothing before frame 5 without the backward
    pass. Frames from the earliest prompt on do not depend on ``backward``."""
    frames = moving_shapes(12)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(5, 2, _late_mask())]
    official = _loader(tiny_model, backward=False).track_video(frames, prompts)
    assert [f.object_ids for f in official.frames] == [[1, 2]] * 12
    causal = _loader(tiny_model, semantics="causal", backward=False).track_video(frames, prompts)
    assert [f.object_ids for f in causal.frames] == [[1]] * 5 + [[1, 2]] * 7
    causal_back = _loader(tiny_model, semantics="causal").track_video(frames, prompts)
    # object 2 before its prompt comes from different computations in the two semantics
    assert any(official.frames[f].mask_for(2).to_rle() != causal_back.frames[f].mask_for(2).to_rle()
               for f in range(5))
    # the prompt frame's output is the prompt in both (no memory is used on it)
    assert official.frames[5].mask_for(2).to_rle() == causal.frames[5].mask_for(2).to_rle()
    with_back = _loader(tiny_model, backward=True).track_video(frames, prompts)
    assert _rles(with_back) == _rles(official)  # earliest prompt on frame 0: nothing to go back to


def test_frames_before_the_earliest_prompt_come_from_the_reverse_pass_only(tiny_model):
    frames = moving_shapes(12)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(4, 1, box), Prompt.from_mask(7, 2, _late_mask())]
    no_back = _loader(tiny_model, backward=False).track_video(frames, prompts)
    assert [f.object_ids for f in no_back.frames] == [[]] * 4 + [[1, 2]] * 8
    back = _loader(tiny_model).track_video(frames, prompts)
    assert [f.object_ids for f in back.frames] == [[1, 2]] * 12
    for a, b in zip(no_back.frames[4:], back.frames[4:], strict=True):
        assert [m.to_rle() for m in a.masks] == [m.to_rle() for m in b.masks]


@pytest.mark.parametrize("kind", ["iterator", "video"])
def test_prompted_frames_are_read_first_from_single_pass_and_file_sources(tiny_model, tmp_path, kind):
    """The source is read once: a one-shot iterator works and gives the list's masks; a video file too."""
    frames = moving_shapes(10)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(2, 1, box), Prompt.from_mask(6, 2, _late_mask()), Prompt.from_mask(8, 1, box)]
    loader = _loader(tiny_model)
    if kind == "iterator":
        ref = loader.track_video(frames, prompts)
        got = loader.track_video(iter(frames), prompts)
    else:
        from vidtrack.sources import open_source

        path = write_video(tmp_path / "v.mp4", frames)
        decoded = [f for _, f in open_source(str(path))]
        ref = loader.track_video(decoded, prompts)
        got = loader.track_video(str(path), prompts)
    assert _rles(got) == _rles(ref)
    assert [f.frame_idx for f in got.frames] == list(range(10))


@pytest.mark.parametrize("name", ["samurai-tiny", "sam2long-tiny"])
def test_memory_policies_run_with_later_prompts_in_both_semantics(tiny_model, name):
    frames = moving_shapes(12)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(2, 1, box), Prompt.from_mask(7, 1, box), Prompt.from_mask(5, 2, _late_mask())]
    for semantics in ("official", "causal"):
        loader = _loader(tiny_model, name, semantics=semantics)
        res = loader.track_video(frames, prompts)
        assert [f.object_ids for f in res.frames] == [[1, 2]] * 12, semantics
        assert res.metadata["semantics"] == semantics
    assert sorted(loader.last_session.tracks[1].cond) == [2, 7]


def test_stride_and_start_use_positions(tiny_model):
    frames = moving_shapes(14)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(4, 1, box), Prompt.from_mask(8, 2, _late_mask())]
    res = _loader(tiny_model).track_video(frames, prompts, stride=2, start=2)
    assert [f.frame_idx for f in res.frames] == [2, 4, 6, 8, 10, 12]
    assert [f.object_ids for f in res.frames] == [[1, 2]] * 6
    sub = _loader(tiny_model).track_video(frames[2::2], [p.at(p.frame_idx // 2 - 1) for p in prompts])
    assert [[m.to_rle() for m in f.masks] for f in res.frames] == [[m.to_rle() for m in f.masks] for f in sub.frames]


def test_bad_semantics_is_refused(tiny_model):
    with pytest.raises(InputError, match="semantics must be one of official, causal; got 'meta'"):
        create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", semantics="meta"))


def test_cli_semantics_flag(tiny_model, tiny_checkpoint_dir, tmp_path, capsys):
    import json

    from conftest import error_line, run_cli
    from vidtrack.export import read_rle_json

    frames = moving_shapes(8)
    video = write_video(tmp_path / "v.mp4", frames)
    prompts = [{"frame": 0, "object_id": 1, "box": [16, 27, 28, 22]},
               {"frame": 4, "object_id": 2, "points": [[120, 60]], "labels": [1]}]
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    common = ["--checkpoint", str(tiny_checkpoint_dir), "--prompts", str(tmp_path / "p.json"), "-q",
              "--device", "cpu", "--no-backward"]
    api = [Prompt.from_box(0, 1, (16, 27, 44, 49), fmt="xyxy"), Prompt.from_points(4, 2, [[120, 60]], [1])]
    for semantics in ("official", "causal"):
        flag = [] if semantics == "official" else ["--semantics", "causal"]  # official is the default
        code, _, err = run_cli(["track", str(video), *common, *flag, "--out", str(tmp_path / semantics)], capsys)
        assert code == 0, err
        got = read_rle_json(tmp_path / semantics / "masks.json")
        ref = _loader(tiny_model, semantics=semantics, backward=False).track_video(str(video), api)
        assert _rles(got) == _rles(ref)
    assert error_line(["track", str(video), *common, "--semantics", "meta", "--out", str(tmp_path / "x")],
                      capsys) == "error: --semantics must be one of official, causal; got 'meta'"


def test_encoder_ahead_over_replayed_frames(tiny_model):
    """The replayed (spilled) frames and the rest of the source go through the encoder-ahead worker alike."""
    frames = moving_shapes(10)
    box, _ = shape_masks()
    prompts = [Prompt.from_mask(3, 1, box), Prompt.from_mask(6, 2, _late_mask())]
    plain = _loader(tiny_model, encoder_ahead="off").track_video(frames, prompts)
    ahead = _loader(tiny_model, encoder_ahead="on").track_video(frames, prompts)
    assert _rles(ahead) == _rles(plain)
    assert "image_encoder" in ahead.frames[8].timings
