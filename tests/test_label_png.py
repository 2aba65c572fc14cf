"""The one mask-PNG reader (vidtrack.label_png) and its three callers: prompt masks, DAVIS/SA-V folders read
back, evaluation ground truth. Each PNG is built here with PIL in a known mode; the expected labels are the
pixel values written, so the tests do not depend on the reader's own output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.eval.io import read_label_png as eval_read_label_png
from vidtrack.export import read_davis_png, read_sav_png
from vidtrack.label_png import VOID, label_masks, read_label_png, read_object_png
from vidtrack.prompt_files import read_mask_png

H, W = 6, 8


def ids() -> np.ndarray:
    a = np.zeros((H, W), np.uint8)
    a[1:3, 1:4] = 1
    a[3:5, 4:7] = 2
    a[0, :] = VOID
    return a


def save(path, arr, mode):
    if mode == "P":
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [200] * (253 * 3))
    elif mode == "I;16":
        img = Image.fromarray(arr.astype(np.uint16))
        assert img.mode.startswith("I;16")
    else:
        img = Image.fromarray(arr)
        assert img.mode == mode
    img.save(path)
    return path


def test_palette_gives_indices_and_void_is_skipped(tmp_path):
    f = save(tmp_path / "p.png", ids(), "P")
    for mode in ("ids", "one-object"):
        assert (read_label_png(f, non_palette=mode) == ids()).all()  # type: ignore[arg-type]
    masks = label_masks(read_label_png(f))
    assert sorted(masks) == [1, 2]
    assert (masks[2] == (ids() == 2)).all()
    assert sorted(label_masks(read_label_png(f), void=None)) == [1, 2, 255]
    # the three callers agree on palette files: void (255) is never an object
    assert sorted(read_mask_png(f)) == [1, 2]
    assert (eval_read_label_png(f) == ids()).all()
    (tmp_path / "d").mkdir()
    save(tmp_path / "d" / "00003.png", ids(), "P")
    frame = read_davis_png(tmp_path / "d").frames[0]
    assert frame.frame_idx == 3 and [m.object_id for m in frame.masks] == [1, 2]


def test_davis2016_greyscale_0_255_is_object_1_for_ground_truth(tmp_path):
    a = np.where(ids() == 1, 255, 0).astype(np.uint8)
    f = save(tmp_path / "g.png", a, "L")
    lab = read_label_png(f)
    assert lab.dtype == np.uint8 and set(np.unique(lab).tolist()) == {0, 1}
    assert (lab == (ids() == 1)).all()


def test_greyscale_ids_for_ground_truth_but_one_object_for_prompts(tmp_path):
    a = ids().copy()
    a[0, :] = 0
    f = save(tmp_path / "l.png", a, "L")
    assert (read_label_png(f, non_palette="ids") == a).all()
    one = read_label_png(f, non_palette="one-object")
    assert (one == (a > 0)).all()
    assert list(read_mask_png(f)) == [1] and (read_mask_png(f)[1] == (a > 0)).all()


def test_16_bit_ids(tmp_path):
    a = np.zeros((H, W), np.int32)
    a[2, 2] = 1000
    a[4, 5] = 3
    f = save(tmp_path / "i.png", a, "I;16")
    lab = read_label_png(f)
    assert lab.dtype == np.int32 and (lab == a).all()


def test_colour_refused_as_ground_truth_and_one_object_elsewhere(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[1, 1] = (1, 0, 0)  # a dark colour: still a non-zero pixel (a grey conversion would round it to 0)
    rgb[3:5, 2:4] = (0, 200, 10)
    f = save(tmp_path / "c.png", rgb, "RGB")
    with pytest.raises(InputError, match="RGB image"):
        read_label_png(f)
    expected = rgb.any(axis=-1)
    assert (read_object_png(f) == expected).all()
    assert (read_mask_png(f)[1] == expected).all()


def test_alpha_channel_is_not_an_object(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 3] = 255  # opaque black background
    rgba[2:4, 2:4, :3] = 255
    f = save(tmp_path / "a.png", rgba, "RGBA")
    expected = np.zeros((H, W), bool)
    expected[2:4, 2:4] = True
    assert (read_object_png(f) == expected).all()


def test_size_check_and_unreadable_files(tmp_path):
    f = save(tmp_path / "p.png", ids(), "P")
    with pytest.raises(InputError, match=r"p.png is 8x6 but the video are 9x6"):
        read_label_png(f, size=(6, 9), size_of="the video")
    assert read_label_png(f, size=(H, W)).shape == (H, W)
    with pytest.raises(InputError, match="not found"):
        read_label_png(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read mask"):
        read_object_png(tmp_path / "bad.png")
    # folder readers: every file of a sequence must have one size
    (tmp_path / "d").mkdir()
    save(tmp_path / "d" / "00000.png", ids(), "P")
    save(tmp_path / "d" / "00001.png", np.zeros((H + 1, W), np.uint8), "P")
    with pytest.raises(InputError, match=r"00001\.png is 8x7 but earlier masks are 8x6"):
        read_davis_png(tmp_path / "d")
    (tmp_path / "s" / "001").mkdir(parents=True)
    (tmp_path / "s" / "002").mkdir()
    save(tmp_path / "s" / "001" / "00000.png", (ids() == 1).astype(np.uint8), "P")
    save(tmp_path / "s" / "002" / "00000.png", np.zeros((H, W + 2), np.uint8), "P")
    with pytest.raises(InputError, match="is 10x6 but the other masks are 8x6"):
        read_sav_png(tmp_path / "s")
