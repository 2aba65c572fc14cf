"""vidtrack's SAM 2.1 engine against Meta's ``SAM2VideoPredictor`` on real frames, one calibrated checkpoint.

Each case: the official predictor and vidtrack run the same Meta ``.pt`` (a custom small Hiera that vidtrack
converts itself, reading the architecture from the weights and the model yaml beside them), the same frames
(Meta's PIL resize) and prompts. Bar: mean mask IoU >= 0.999 over every tracked object-frame and >= 0.999 on
each (the floor gives the tests teeth against errors that touch few frames: a pointer window one frame too
short moves frames 15-19 of the 20-frame case, to IoU 0.996, while the mean stays at 0.9993), and on every
frame the same chosen candidate (argmax of the predicted IoUs; frames with a mask prompt or a single-mask
decoder have none) and the same object-score sign. Why these figures mean something on random weights:
test_calibration.py (tiny perturbations die out, a dropped memory frame moves the masks).
"""

from __future__ import annotations

import numpy as np
import pytest

from .calibration import OfficialPrompt
from .conftest import davis_frames, davis_mask, judo_frames, judo_mask
from .harness import Case

N = 12  # frames per case
N_LONG = 20  # the mask case: long enough for the 16-pointer window to slide (frames 16-19)


def mask_case() -> Case:
    """GT mask of DAVIS car-shadow on frame 0: the mask-as-output path and its single-token pointer; 20 frames,
    so the object-pointer window (16) drops frames from frame 17 on."""
    return Case("car-shadow mask", davis_frames("car-shadow"), N_LONG,
                (OfficialPrompt(0, 1, mask=davis_mask("car-shadow", 0)),))


def box_case() -> Case:
    """Box prompt (the GT box of motocross-jump frame 0): two corner points, single-mask decoder with Meta's
    dynamic multimask fallback, memorised from the binarised mask."""
    ys, xs = np.nonzero(davis_mask("motocross-jump", 0))
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    return Case("motocross-jump box", davis_frames("motocross-jump"), N, (OfficialPrompt(0, 1, box=box),))


def points_case() -> Case:
    """A positive click inside the car and a negative one on the road (car-shadow frame 0)."""
    pts = np.array([[500.0, 189.0], [100.0, 400.0]], np.float32)
    return Case("car-shadow points+negative", davis_frames("car-shadow"), N,
                (OfficialPrompt(0, 1, points=pts, labels=np.array([1, 0], np.int32)),))


def one_click_case() -> Case:
    """One positive click: the prompted frame itself chooses among three candidates."""
    return Case("car-shadow one click", davis_frames("car-shadow"), N,
                (OfficialPrompt(0, 1, points=np.array([[500.0, 189.0]], np.float32), labels=np.array([1], np.int32)),))


def two_objects_case() -> Case:
    """Cutie judo: object 1 by its palette mask, object 2 by a box, both on frame 0 (per-object memory banks
    and pointers, one shared image encoding)."""
    return Case("judo two objects", judo_frames(), N,
                (OfficialPrompt(0, 1, mask=judo_mask(0, 1)), OfficialPrompt(0, 2, box=(620.0, 75.0, 700.0, 245.0))))


def reverse_case() -> Case:
    """GT mask on the last frame, propagated backwards (temporal slots and pointer offsets counted in the
    direction of travel)."""
    return Case("car-shadow reverse", davis_frames("car-shadow"), N,
                (OfficialPrompt(N - 1, 1, mask=davis_mask("car-shadow", N - 1)),), reverse=True)


CASES = {
    "mask": mask_case, "box": box_case, "points_negative": points_case, "one_click": one_click_case,
    "two_objects": two_objects_case, "reverse": reverse_case,
}


@pytest.mark.parametrize("name", list(CASES))
def test_sam21_matches_official(parity, name):
    case = CASES[name]()
    report = parity.report(case)
    print(report.summary())
    assert report.frames_compared >= N * len({p.obj_id for p in case.prompts}), report.summary()
    report.assert_parity(0.999, min_iou=0.999)


def test_sam20_checkpoint_matches_official(parity_v20):
    """A SAM 2.0 checkpoint (no occlusion embedding, no temporal encoding of pointers): vidtrack detects the
    version from the weights and must run it as Meta's SAM 2.0 config does."""
    case = mask_case()
    report = parity_v20.report(case)
    print(report.summary())
    assert parity_v20.loader.engine.model.config.enable_temporal_pos_encoding_for_object_pointers is False
    report.assert_parity(0.999, min_iou=0.999)
