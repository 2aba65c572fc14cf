"""One interactive scenario, played on vidtrack's session and on Meta's ``SAM2VideoPredictor``, step by step.

A scenario is a list of steps (clicks, boxes, masks, propagations, clears, removals). Each side records what
every step returned: a click returns its frame's masks of every object, a propagation every frame it yielded.
:func:`compare_steps` gives the mean and minimum IoU per step over every (frame, object) the official side
returned (an object the official side returns as all -1024 is an empty mask; vidtrack's missing mask too).

The official predictor runs unmodified; only its memory-attention call is wrapped on the instance to cast its
bfloat16 memories to float32 on the CPU (``calibration.run_official`` explains why), and
``add_all_frames_to_correct_as_cond`` is set on the instance when a scenario asks for it (a constructor
argument of Meta's class, as ``hydra_overrides_extra=["++model.add_all_frames_to_correct_as_cond=true"]``
would set it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from .calibration import _wrapped, frame_folder, iou
except ImportError:  # imported as a top-level module (a script put tests/parity on sys.path)
    from calibration import _wrapped, frame_folder, iou  # type: ignore[no-redef]

StepOut = dict[int, dict[int, np.ndarray]]  # frame -> object id -> mask


@dataclass(frozen=True)
class Step:
    """``kind``: points | box | mask | propagate | clear | remove | reset."""

    kind: str
    frame: int | None = None
    obj: int | None = None
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    clear_old_points: bool = False
    reverse: bool = False
    max_frames: int | None = None

    def label(self) -> str:
        if self.kind == "propagate":
            return f"propagate {'backward' if self.reverse else 'forward'} from {self.frame}"
        return f"{self.kind} f{self.frame} o{self.obj}"


def _upcast_attention(orig: Any) -> Any:
    def f(curr: Any, memory: Any, curr_pos: Any = None, memory_pos: Any = None, num_obj_ptr_tokens: int = 0) -> Any:
        dtype = curr[0].dtype if isinstance(curr, list) else curr.dtype
        return orig(curr, memory.to(dtype), curr_pos, None if memory_pos is None else memory_pos.to(dtype),
                    num_obj_ptr_tokens)

    return f


def run_official_steps(predictor: Any, frames_dir: Path, num_frames: int, steps: Sequence[Step],
                       corrections_as_cond: bool) -> list[StepOut]:
    outs: list[StepOut] = []
    old_flag = predictor.add_all_frames_to_correct_as_cond
    predictor.add_all_frames_to_correct_as_cond = corrections_as_cond
    stack = contextlib.ExitStack()
    try:
        with stack, frame_folder(frames_dir, num_frames) as folder, torch.inference_mode():
            stack.enter_context(_wrapped(predictor.memory_attention, "forward", _upcast_attention))
            state = predictor.init_state(str(folder))

            def as_out(f: int, ids: Sequence[int], masks: torch.Tensor) -> dict[int, np.ndarray]:
                return {int(o): (masks[i, 0] > 0).cpu().numpy() for i, o in enumerate(ids)}

            for s in steps:
                if s.kind in ("points", "box"):
                    f, ids, m = predictor.add_new_points_or_box(
                        state, s.frame, s.obj,
                        points=None if s.points is None else np.asarray(s.points, np.float32),
                        labels=None if s.labels is None else np.asarray(s.labels, np.int32),
                        box=None if s.box is None else np.asarray(s.box, np.float32),
                        clear_old_points=s.clear_old_points or s.box is not None)
                    outs.append({int(f): as_out(f, ids, m)})
                elif s.kind == "mask":
                    f, ids, m = predictor.add_new_mask(state, s.frame, s.obj, s.mask)
                    outs.append({int(f): as_out(f, ids, m)})
                elif s.kind == "propagate":
                    out: StepOut = {}
                    for f, ids, m in predictor.propagate_in_video(state, start_frame_idx=s.frame,
                                                                  max_frame_num_to_track=s.max_frames,
                                                                  reverse=s.reverse):
                        out[int(f)] = as_out(f, ids, m)
                    outs.append(out)
                elif s.kind == "clear":
                    f, ids, m = predictor.clear_all_prompts_in_frame(state, s.frame, s.obj)
                    outs.append({int(f): as_out(f, ids, m)})
                elif s.kind == "remove":
                    predictor.remove_object(state, s.obj)
                    outs.append({})
                elif s.kind == "reset":
                    predictor.reset_state(state)
                    outs.append({})
                else:
                    raise ValueError(s.kind)
    finally:
        predictor.add_all_frames_to_correct_as_cond = old_flag
    return outs


def run_session_steps(session: Any, steps: Sequence[Step]) -> list[StepOut]:
    outs: list[StepOut] = []

    def as_out(tf: Any) -> dict[int, np.ndarray]:
        return {m.object_id: m.mask for m in tf.masks}

    for s in steps:
        if s.kind in ("points", "box"):
            tf = session.add_prompt(s.frame, s.obj, points=s.points, labels=s.labels, box=s.box,
                                    clear_old_points=s.clear_old_points)
            outs.append({tf.frame_idx: as_out(tf)})
        elif s.kind == "mask":
            tf = session.add_prompt(s.frame, s.obj, mask=s.mask)
            outs.append({tf.frame_idx: as_out(tf)})
        elif s.kind == "propagate":
            out: StepOut = {}
            for tf in session.propagate("backward" if s.reverse else "forward", start=s.frame,
                                        max_frames=s.max_frames):
                out[tf.frame_idx] = as_out(tf)
            outs.append(out)
        elif s.kind == "clear":
            tf = session.clear_prompts(s.frame, s.obj)
            outs.append({tf.frame_idx: as_out(tf)})
        elif s.kind == "remove":
            session.remove_object(s.obj)
            outs.append({})
        elif s.kind == "reset":
            session.reset()
            outs.append({})
        else:
            raise ValueError(s.kind)
    return outs


@dataclass
class StepReport:
    label: str
    frames: list[int]
    ours_frames: list[int]
    ious: np.ndarray  # one per (frame, object) the official side returned

    @property
    def mean(self) -> float:
        return float(self.ious.mean()) if self.ious.size else 1.0

    @property
    def min(self) -> float:
        return float(self.ious.min()) if self.ious.size else 1.0


def compare_steps(steps: Sequence[Step], ours: Sequence[StepOut], official: Sequence[StepOut]) -> list[StepReport]:
    reports = []
    for s, o, m in zip(steps, ours, official, strict=True):
        vals = []
        for f, objs in m.items():
            for oid, ref in objs.items():
                mine = o.get(f, {}).get(oid)
                vals.append(iou(np.zeros_like(ref) if mine is None else mine, ref))
        reports.append(StepReport(s.label(), sorted(m), sorted(o), np.array(vals)))
    return reports


def summary(reports: Sequence[StepReport]) -> str:
    return "\n".join(f"  {r.label}: {len(r.frames)} frames, {r.ious.size} object-frames, mean IoU {r.mean:.6f}, "
                     f"min {r.min:.6f}" for r in reports)


def steps_iter(reports: Sequence[StepReport]) -> Iterator[tuple[str, float, float]]:
    for r in reports:
        yield r.label, r.mean, r.min
