"""Random access to frames (vidtrack.frame_access): every frame equals what sequential reading gives."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from conftest import moving_shapes, write_video
from vidtrack.errors import InputError
from vidtrack.frame_access import open_frames
from vidtrack.sources import open_source


def _sequential(video: object) -> list[np.ndarray]:
    with open_source(video) as src:
        return [f for _, f in src]


def test_video_file_any_order_equals_sequential_decoding(tmp_path):
    path = write_video(tmp_path / "v.mp4", moving_shapes(60))
    ref = _sequential(str(path))
    order = list(range(59, -1, -1)) + random.Random(0).sample(range(60), 30) + list(range(60))
    with open_frames(path, cache_bytes=5 * ref[0].nbytes) as fa:  # a small cache: most reads seek
        assert (fa.num_frames, fa.height, fa.width) == (60, *ref[0].shape[:2])
        for i in order:
            assert np.array_equal(fa.frame(i), ref[i]), i
        assert len(fa._cache) <= 5


def test_folder_and_array(tmp_path):
    frames = moving_shapes(6)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i}.png")
    with open_frames(tmp_path) as fa:
        assert [np.array_equal(fa.frame(i), frames[i]) for i in (5, 0, 3)] == [True] * 3
    arr = np.stack(frames)
    with open_frames(arr) as fa:
        got = fa.frame(2)
        assert np.array_equal(got, frames[2]) and not got.flags.writeable
        assert arr.flags.writeable  # the caller's array is never frozen


@pytest.mark.parametrize("video, match", [
    ("/nonexistent/v.mp4", "video not found"),
    (42, "cannot open int"),
    (np.zeros((2, 8, 8), np.float32), "uint8"),
])
def test_bad_videos(video, match):
    with pytest.raises(InputError, match=match):
        open_frames(video)


def test_bad_index():
    with open_frames(np.zeros((3, 8, 8, 3), np.uint8)) as fa, pytest.raises(InputError, match=r"frames 0\.\.2"):
        fa.frame(3)
