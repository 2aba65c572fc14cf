"""The interactive session against Meta's ``SAM2VideoPredictor``, call for call (issue 16's must-show).

Each scenario is played on vidtrack's ``loader.open_session`` and on the official predictor (sam2 1.1.0,
unmodified) on the same calibrated 256 px checkpoint and the same real frames; the masks every call returns
(a click: its frame, every object; a propagation: every frame it yields) are compared. Bar: mean IoU >= 0.999
per step, and every frame the official side yields is yielded by vidtrack too.

(a) points on frame 0, then a corrective negative click on frame 0, then a propagation (14 frames);
(b) a box on frame 0, propagation, a corrective click on frame 8, propagation forward again and backward from
    the last frame -- with ``corrections_as_cond`` on (our default, Meta's ``add_all_frames_to_correct_as_cond``)
    and off (the yaml default, where the next propagation recomputes the corrected frame);
(c) two objects, the second first prompted on frame 5 (judo), propagation forward, then backward from 4;
plus clear_prompts / remove_object / reset against ``clear_all_prompts_in_frame`` / ``remove_object`` /
``reset_state``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from .conftest import davis_frames, davis_mask, judo_frames, judo_mask
from .harness import read_frames
from .session_harness import Step, compare_steps, run_official_steps, run_session_steps, summary

N = 14


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """The mask pixel nearest the mask's centroid (a click that lands on the object)."""
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return (float(xs[k]), float(ys[k]))


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def _outside(mask: np.ndarray) -> tuple[float, float]:
    """A background pixel inside the mask's box, near its top-right corner (a negative click)."""
    _, y1, x2, _ = (int(v) for v in _box(mask))
    for d in range(0, 60):
        x, y = x2 - 5 - d, y1 + 5 + d
        if not mask[y, x]:
            return (float(x), float(y))
    raise AssertionError("no background pixel found")


def scenario_a() -> tuple[Any, list[Step]]:
    m0 = davis_mask("car-shadow", 0)
    return davis_frames("car-shadow"), [
        Step("points", 0, 1, points=(_centre(m0),), labels=(1,)),
        Step("points", 0, 1, points=(_outside(m0),), labels=(0,)),
        Step("propagate"),
    ]


def scenario_b() -> tuple[Any, list[Step]]:
    m0, m8 = davis_mask("car-shadow", 0), davis_mask("car-shadow", 8)
    return davis_frames("car-shadow"), [
        Step("box", 0, 1, box=_box(m0)),
        Step("propagate"),
        Step("points", 8, 1, points=(_outside(m8),), labels=(0,)),
        Step("propagate"),
        Step("propagate", N - 1, reverse=True),
    ]


def scenario_c() -> tuple[Any, list[Step]]:
    return judo_frames(), [
        Step("points", 0, 1, points=(_centre(judo_mask(0, 1)),), labels=(1,)),
        Step("box", 5, 2, box=_box(judo_mask(5, 2))),
        Step("propagate"),
        Step("points", 5, 2, points=(_centre(judo_mask(5, 2)),), labels=(1,)),
        Step("propagate", 4, reverse=True),
    ]


def scenario_clear_remove_reset() -> tuple[Any, list[Step]]:
    """Three objects on judo; frame 5's prompts cleared after a propagation (a conditioning frame downgraded),
    a propagation, an object removed, a propagation, then reset and a new prompt."""
    return judo_frames(), [
        Step("points", 0, 1, points=(_centre(judo_mask(0, 1)),), labels=(1,)),
        Step("mask", 5, 2, mask=np.pad(judo_mask(5, 2), ((0, 0), (0, 1)))),  # the palette PNG is 853 px wide
        Step("box", 8, 3, box=_box(judo_mask(8, 3))),
        Step("propagate"),
        Step("points", 0, 2, points=(_centre(judo_mask(5, 2)),), labels=(1,)),
        Step("clear", 5, 2),
        Step("propagate"),
        Step("remove", obj=3),
        Step("propagate", 2),
        Step("reset"),
        Step("points", 3, 4, points=(_centre(judo_mask(0, 1)),), labels=(1,)),
        Step("propagate"),
    ]


SCENARIOS = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "clear-remove-reset": scenario_clear_remove_reset}


def _frames(frames_dir: Any) -> np.ndarray:
    return np.stack(read_frames(frames_dir, N))


def play(parity: Any, name: str, corrections_as_cond: bool = True) -> tuple[list[Step], Any]:
    frames_dir, steps = SCENARIOS[name]()
    official = run_official_steps(parity.predictor, frames_dir, N, steps, corrections_as_cond)
    with parity.loader.open_session(_frames(frames_dir), corrections_as_cond=corrections_as_cond) as session:
        ours = run_session_steps(session, steps)
    reports = compare_steps(steps, ours, official)
    return steps, reports


@pytest.mark.parametrize("name", ["a", "b", "c", "clear-remove-reset"])
def test_session_matches_meta_step_by_step(parity, name):
    steps, reports = play(parity, name)
    print(f"\nscenario {name}:\n{summary(reports)}")
    for r in reports:
        assert set(r.frames) <= set(r.ours_frames), f"{r.label}: vidtrack did not return frames " \
            f"{sorted(set(r.frames) - set(r.ours_frames))}"
        assert r.mean >= 0.999, summary(reports)
    propagations = [r for r, s in zip(reports, steps, strict=True) if s.kind == "propagate"]
    assert sum(len(r.frames) for r in propagations) >= 12


def test_corrections_without_cond_match_meta_default(parity):
    """Meta's yaml default (``add_all_frames_to_correct_as_cond=False``): the correction on frame 8 is returned,
    then the forward propagation recomputes frame 8 from memory and drops it -- vidtrack does the same."""
    _, reports = play(parity, "b", corrections_as_cond=False)
    print(f"\nscenario b, corrections not conditioning:\n{summary(reports)}")
    for r in reports:
        assert r.mean >= 0.999, summary(reports)
    frames_dir, steps = scenario_b()
    with parity.loader.open_session(_frames(frames_dir), corrections_as_cond=False) as session:
        ours = run_session_steps(session, steps)
    assert not np.array_equal(ours[2][8][1], ours[1][8][1])  # the click changed frame 8 ...
    assert np.array_equal(ours[3][8][1], ours[1][8][1])  # ... and the next propagation recomputed it away


def test_the_correction_changes_the_propagation(parity):
    """Teeth of scenario (b): the frames after the correction differ from the first propagation's (so the
    comparison above exercises the correction), and differ from Meta's run without the correction flag."""
    frames_dir, steps = scenario_b()
    with parity.loader.open_session(_frames(frames_dir)) as session:
        ours = run_session_steps(session, steps)
    first, second = ours[1], ours[3]
    changed = [f for f in range(9, N) if not np.array_equal(first[f][1], second[f][1])]
    assert len(changed) >= 3, changed
    # frame 8 itself: the corrected mask survives the second propagation (a conditioning frame now)
    assert np.array_equal(ours[2][8][1], second[8][1])


def test_ours_without_prev_logits_misses_the_bar(parity, monkeypatch):
    """Teeth: a session that forgets the previous low-res logits on a further click misses the bar on (a)."""
    from vidtrack.engines.sam2 import engine as engine_mod

    original = engine_mod.Sam2Session._prompted_frame

    def forgetful(self: Any, *args: Any, **kw: Any) -> Any:
        kw["prev_logits"] = None
        return original(self, *args, **kw)

    monkeypatch.setattr(engine_mod.Sam2Session, "_prompted_frame", forgetful)
    _, reports = play(parity, "a")
    print(f"\nscenario a without previous logits:\n{summary(reports)}")
    assert reports[1].mean < 0.999, summary(reports)


def test_frames_match_the_jpegs(parity):
    """Both sides read the same pixels (the session's frame(i) is the decoded JPEG)."""
    frames_dir, _ = scenario_a()
    with parity.loader.open_session(str(frames_dir)) as session:
        first = np.asarray(Image.open(sorted(frames_dir.glob("*.jpg"))[3]).convert("RGB"))
        assert np.array_equal(session.frame(3), first)
