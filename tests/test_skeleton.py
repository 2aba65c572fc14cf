"""The one tracking skeleton (vidtrack.tracking): a ranged source passed in owns start/stride/end, and which
objects need a backward pass is counted from its first frame, not from frame 0."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from conftest import moving_shapes, shape_masks
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.sources import open_source


def _backward_frames(result) -> list[int]:
    return [tf.frame_idx for tf in result.frames if any(k.startswith("backward_") for k in tf.timings)]


def _masks(result) -> dict[tuple[int, int], str]:
    return {(tf.frame_idx, m.object_id): m.to_rle()["counts"] for tf in result.frames for m in tf.masks}


def test_ranged_source_counts_late_objects_from_its_first_frame(tiny_model):
    """The CLI ranges the source itself and passes it in: with ``--start 4`` and a prompt on frame 4 nothing is
    late (no backward pass); an object first prompted on frame 6 is followed back to frame 4, not to 0."""
    loader = create_tracking_loader(
        "sam2.1-tiny", TrackingConfig(device="cpu", dtype="float32", semantics="causal")
    ).load(model=tiny_model)
    frames = moving_shapes(10)
    box, disc = shape_masks()
    on_first = [Prompt.from_mask(4, 1, box)]
    ranged = loader.track_video(open_source(frames, start=4), on_first)
    assert [tf.frame_idx for tf in ranged.frames] == list(range(4, 10))
    assert _backward_frames(ranged) == []
    assert _masks(ranged) == _masks(loader.track_video(frames, on_first, start=4))

    late = [Prompt.from_mask(4, 1, box), Prompt.from_mask(6, 2, disc)]
    res = loader.track_video(open_source(frames, start=4), late)
    assert sorted(_backward_frames(res)) == [4, 5, 6]  # from the late prompt down to the source's first frame
    assert [sorted(m.object_id for m in tf.masks) for tf in res.frames] == [[1, 2]] * 6
    assert _masks(res) == _masks(loader.track_video(frames, late, start=4))
