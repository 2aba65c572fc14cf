"""The SAM 2.1 engine through the public API, on a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_shapes, shape_masks
from vidtrack import InputError, Prompt, TrackingConfig, create_tracking_loader
from vidtrack.errors import NotLoadedError
from vidtrack.policies import VanillaPolicy


def _official_prompt_frame_output(mask: np.ndarray, size: int) -> np.ndarray:
    """What Meta's predictor outputs on a mask-prompted frame, derived step by step: the mask resized to the
    model size (antialiased bilinear, >= 0.5), turned into +/-10 logits, downsampled 4x (antialiased), then
    resized to the video size and thresholded."""
    import torch.nn.functional as F

    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    m = (F.interpolate(m, size=(size, size), mode="bilinear", antialias=True) >= 0.5).float()
    low = F.interpolate(m * 20 - 10, size=(size // 4, size // 4), mode="bilinear", antialias=True)
    return (F.interpolate(low, size=mask.shape, mode="bilinear") > 0)[0, 0].numpy()


def _masks(result) -> dict[tuple[int, int], np.ndarray]:
    return {(f.frame_idx, m.object_id): m.mask for f in result for m in f.masks}


def test_track_with_original_signature(sam2_loader):
    frames = [Image.fromarray(f) for f in moving_shapes(12)]
    box, disc = shape_masks()
    result = sam2_loader.track(frames, [box, disc], [3, 7])
    assert len(result.frames) == 12
    assert (result.video_width, result.video_height) == (160, 96)
    assert result.object_ids == [3, 7]
    assert result.fps > 0 and result.total_processing_time > 0
    first = result.frames[0]
    # a mask prompt is its own output on the prompt frame (through the 256x256 low-res logits, as in the
    # official predictor, so edges may move by a pixel), and its confidence is 1
    np.testing.assert_array_equal(first.mask_for(3).mask, _official_prompt_frame_output(box, 128))
    assert first.mask_for(3).confidence == 1.0
    for f in result.frames:
        assert f.object_ids == [3, 7]
        assert set(f.occlusions) == {3, 7}
        assert f.processing_time > 0
        for m in f.masks:
            assert m.mask.shape == (96, 160)
            assert 0.0 <= m.visibility <= 1.0
            assert m.occluded == (m.visibility <= 0.5)
            if m.occluded:
                assert not m.mask.any()  # an absent object's logits are -1024 everywhere


def test_track_checks_arguments(tiny_model):
    loader = create_tracking_loader("sam2", TrackingConfig(device="cpu"))
    frames = moving_shapes(3)
    box, _ = shape_masks()
    with pytest.raises(RuntimeError, match="not loaded"):
        loader.track(frames, [box], [1])
    loader.load(model=tiny_model)
    with pytest.raises(ValueError, match="2 masks but 1 object ids"):
        loader.track(frames, [box, box], [1])
    with pytest.raises(ValueError, match="duplicate prompt for object 1"):
        loader.track(frames, [box, box], [1, 1])
    with pytest.raises(ValueError, match="mask is empty"):
        loader.track(frames, [np.zeros_like(box)], [1])
    with pytest.raises(ValueError, match="mask is 159x96"):
        loader.track(frames, [box[:, :159]], [1])
    loader.unload()
    with pytest.raises(NotLoadedError):
        loader.track(frames, [box], [1])


@pytest.mark.parametrize("semantics", ["official", "causal"])
def test_streaming_equals_whole_video(sam2_loader, semantics):
    """With every prompt on the first frame both semantics of track_video are the stream, mask for mask."""
    frames = moving_shapes(16)
    box, _disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_box(0, 2, (110, 55, 140, 80), fmt="xyxy")]
    streamed = list(sam2_loader.stream(frames, prompts))
    sam2_loader.config.semantics = semantics
    whole = sam2_loader.track_video(frames, prompts)
    assert whole.metadata["semantics"] == semantics
    assert [f.frame_idx for f in streamed] == list(range(16))
    for a, b in zip(streamed, whole.frames, strict=True):
        assert [m.to_rle() for m in a.masks] == [m.to_rle() for m in b.masks]
        assert [m.confidence for m in a.masks] == [m.confidence for m in b.masks]


class _NoPruning(VanillaPolicy):
    def prune(self, track, frame_idx):  # keep everything, like transformers' session
        return None


def test_pruning_is_exact_and_bounded(tiny_model):
    from vidtrack.engines.sam2.engine import Sam2Engine

    eng = Sam2Engine(tiny_model)
    frames = moving_shapes(40)
    box, disc = shape_masks()
    runs = {}
    for name, policy in (("pruned", VanillaPolicy()), ("kept", _NoPruning())):
        s = eng.new_session(policy, 96, 160)
        logits, sizes = [], []
        for i, f in enumerate(frames):
            prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)] if i == 0 else []
            outs, _ = s.step(i, f, prompts)
            logits.append(torch.cat([o.low_res_logits for o in outs]))
            sizes.append(s.state_nbytes())
        runs[name] = (torch.stack(logits), sizes)
    assert torch.equal(runs["pruned"][0], runs["kept"][0])
    pruned_sizes, kept_sizes = runs["pruned"][1], runs["kept"][1]
    assert pruned_sizes[19] == pruned_sizes[39]  # flat once the pointer window is full
    assert kept_sizes[39] > 1.8 * kept_sizes[19]  # the unpruned bank grows with the video


def test_state_after_1000_frames_equals_state_after_20():
    from vidtrack.engines.sam2.engine import Sam2Engine
    from vidtrack.engines.sam2.weights import random_sam2_model, tiny_test_config

    eng = Sam2Engine(random_sam2_model(tiny_test_config(64), seed=1))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:40] = True
    s = eng.new_session(VanillaPolicy(), 48, 64)
    sizes = {}
    for i in range(1000):
        f = np.roll(frame, i, axis=1)
        s.step(i, f, [Prompt.from_mask(0, 1, mask)] if i == 0 else [])
        if i + 1 in (20, 1000):
            sizes[i + 1] = s.state_nbytes()
            n_records = len(s.tracks[1].non_cond) + len(s.tracks[1].cond)
    assert sizes[20] == sizes[1000]
    assert n_records == 16  # the prompt frame + the 15-frame pointer window


def test_objects_are_tracked_independently(sam2_loader):
    frames = moving_shapes(10)
    box, disc = shape_masks()
    together = _masks(sam2_loader.track_video(frames, [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)]))
    alone1 = _masks(sam2_loader.track_video(frames, [Prompt.from_mask(0, 1, box)]))
    alone2 = _masks(sam2_loader.track_video(frames, [Prompt.from_mask(0, 2, disc)]))
    for (f, o), m in together.items():
        np.testing.assert_array_equal(m, (alone1 if o == 1 else alone2)[(f, o)])


def test_object_added_mid_video_is_tracked_backward_too(sam2_loader):
    """Causal semantics: a later prompt takes effect when reached; a backward pass fills the frames before."""
    sam2_loader.config.semantics = "causal"
    frames = moving_shapes(14)
    box, _disc = shape_masks()
    _yy, _xx = np.mgrid[:96, :160]
    late_mask = np.zeros((96, 160), bool)
    late_mask[60:80, 60:90] = True
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(6, 2, late_mask)]
    streamed = list(sam2_loader.stream(frames, prompts))
    assert [f.object_ids for f in streamed[:6]] == [[1]] * 6  # causal: object 2 is unknown before frame 6
    assert all(f.object_ids == [1, 2] for f in streamed[6:])
    whole = sam2_loader.track_video(frames, prompts)
    assert all(f.object_ids == [1, 2] for f in whole.frames)  # backward pass filled frames 0..5
    for a, b in zip(streamed, whole.frames, strict=True):  # forward results are untouched
        for m in a.masks:
            assert m.to_rle() == b.mask_for(m.object_id).to_rle()
    np.testing.assert_array_equal(whole.frames[6].mask_for(2).mask, _official_prompt_frame_output(late_mask, 128))

    # the backward pass equals tracking the reversed clip from the prompt frame
    rev = list(reversed(frames[:7]))
    ref = sam2_loader.track_video(rev, [Prompt.from_mask(0, 2, late_mask)])
    for k, f in enumerate(ref.frames[1:], start=1):
        assert f.mask_for(2).to_rle() == whole.frames[6 - k].mask_for(2).to_rle()

    only_late = sam2_loader.track_video(frames, [Prompt.from_mask(6, 2, late_mask)])
    assert all(f.object_ids == [2] for f in only_late.frames)  # the first prompt need not be on frame 0
    for a, b in zip(only_late.frames, whole.frames, strict=True):
        assert a.mask_for(2).to_rle() == b.mask_for(2).to_rle()

    no_back = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", backward=False, semantics="causal"))
    no_back.load(model=sam2_loader.engine.model)
    assert [f.object_ids for f in no_back.track_video(frames, prompts).frames[:6]] == [[1]] * 6


def test_box_and_point_prompts_and_later_prompts(sam2_loader):
    frames = moving_shapes(8)
    prompts = [
        Prompt.from_box(0, 1, (16, 27, 44, 49), fmt="xyxy"),
        Prompt.from_points(0, 2, [[130, 67]], [1]),
        Prompt.from_points(3, 3, [[60, 40], [5, 5]], [1, 0]),
        Prompt.from_box(5, 1, (20, 20, 70, 60), fmt="xyxy"),  # a second prompt for object 1: a new conditioning frame
    ]
    result = sam2_loader.track_video(frames, prompts)
    assert result.object_ids == [1, 2, 3]
    assert all(len(f.masks) == 3 for f in result.frames)
    s = sam2_loader.engine.new_session(sam2_loader.new_policy(), 96, 160)
    for i, f in enumerate(frames[:6]):
        s.step(i, f, [p for p in prompts if p.frame_idx == i])
    assert sorted(s.tracks[1].cond) == [0, 5]
    assert sorted(s.tracks[3].cond) == [3]


def test_prompt_validation_messages(sam2_loader):
    frames = moving_shapes(4)
    with pytest.raises(InputError, match="outside the 160x96 frame"):
        sam2_loader.track_video(frames, [Prompt.from_box(0, 1, (200, 10, 240, 50), fmt="xyxy")])
    with pytest.raises(InputError, match="point lies outside"):
        sam2_loader.track_video(frames, [Prompt.from_points(0, 1, [[500, 5]])])
    with pytest.raises(InputError, match="on frame 9, which is never processed"):
        sam2_loader.track_video(frames, [Prompt.from_box(9, 1, (10, 10, 40, 40), fmt="xyxy")])
    with pytest.raises(InputError, match="never reached"):  # length unknown in advance: checked at the end
        sam2_loader.track_video(iter(frames), [Prompt.from_box(9, 1, (10, 10, 40, 40), fmt="xyxy")])
    with pytest.raises(InputError, match="no prompts"):
        sam2_loader.track_video(frames, [])
    # a partially-outside box is clipped to the frame, not rejected
    result = sam2_loader.track_video(frames, [Prompt.from_box(0, 1, (-10, -10, 40, 40), fmt="xyxy")])
    assert len(result.frames) == 4


def test_live_tracker_accepts_prompts_at_any_time(sam2_loader):
    frames = moving_shapes(6)
    box, _disc = shape_masks()
    live = sam2_loader.open_stream(96, 160)
    live.add_prompt(Prompt.from_mask(0, 1, box))
    outs = [live.process(frames[0]), live.process(frames[1])]
    live.add_prompt(Prompt.from_points(2, 5, [[130, 67]]))
    outs += [live.process(f) for f in frames[2:]]
    assert [o.object_ids for o in outs] == [[1], [1], [1, 5], [1, 5], [1, 5], [1, 5]]
    streamed = list(sam2_loader.stream(frames, [Prompt.from_mask(0, 1, box), Prompt.from_points(2, 5, [[130, 67]])]))
    for a, b in zip(outs, streamed, strict=True):
        assert [m.to_rle() for m in a.masks] == [m.to_rle() for m in b.masks]


def test_stride_keeps_source_frame_indices(sam2_loader):
    frames = moving_shapes(10)
    box, _ = shape_masks()
    result = sam2_loader.track_video(frames, [Prompt.from_mask(2, 1, box)], stride=2, start=2)
    assert [f.frame_idx for f in result.frames] == [2, 4, 6, 8]
    with pytest.raises(InputError, match=r"frame 3, which is never processed.*frames 0\.\.8 \(step 2\)"):
        sam2_loader.track_video(frames, [Prompt.from_mask(3, 1, box)], stride=2)


def test_device_errors_are_clear():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cuda"))
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        create_tracking_loader("sam2.1-tiny", TrackingConfig(device="gpu0"))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'sam3-huge'"):
        create_tracking_loader("sam3-huge")


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("sam2", "sam2.1-tiny"), ("sam2.1", "sam2.1-tiny"), ("samurai", "samurai-large"), ("sam2long", "sam2long-large"),
     ("sam2-long", "sam2long-large"), ("sam2.1-large", "sam2.1-large"), ("SAM2.1-Base-Plus", "sam2.1-base-plus"),
     ("sam2.1_hiera_b+", "sam2.1-base-plus"), ("samurai-tiny", "samurai-tiny")],
)
def test_catalogue_names(name, canonical):
    from vidtrack.catalog import resolve_model

    assert resolve_model(name).name == canonical


def test_bfloat16_model_runs_end_to_end(tiny_model):
    """The dtype plumbing used on GPUs (bf16 weights, fp32 masks), checked on the CPU."""
    import copy

    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", dtype="bfloat16"))
    loader.load(model=copy.deepcopy(tiny_model))
    assert next(loader.engine.model.parameters()).dtype == torch.bfloat16
    frames = moving_shapes(6)
    box, _ = shape_masks()
    result = loader.track_video(frames, [Prompt.from_mask(0, 1, box), Prompt.from_points(0, 2, [[130, 67]])])
    assert [f.object_ids for f in result.frames] == [[1, 2]] * 6
    np.testing.assert_array_equal(result.frames[0].mask_for(1).mask, _official_prompt_frame_output(box, 128))


def test_policies_not_in_this_release_say_so(monkeypatch):
    from vidtrack import ModelNotFoundError
    from vidtrack.policies import POLICIES

    # sam2long is registered now; a catalogue policy that is not registered must still be refused clearly
    monkeypatch.delitem(POLICIES, "sam2long")
    with pytest.raises(ModelNotFoundError, match="sam2long-large: the sam2long memory policy is not available"):
        create_tracking_loader("sam2-long")
