"""One parity case, run through vidtrack and through Meta's predictor, and the comparison.

A :class:`Case` names real frames and prompts once; :func:`run_vidtrack` runs it through vidtrack's public
loader (the checkpoint converted by vidtrack's own code, Meta's frame resizing) and :func:`compare` puts
vidtrack's masks, chosen candidates and object-score signs beside the official run's
(:func:`calibration.run_official`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vidtrack import Prompt, TrackingConfig, create_tracking_loader

try:
    from .calibration import OfficialPrompt, OfficialRun, iou
except ImportError:  # imported as a top-level module (a script put tests/parity on sys.path)
    from calibration import OfficialPrompt, OfficialRun, iou  # type: ignore[no-redef]


@dataclass(frozen=True)
class Case:
    """Frames (the first ``num_frames`` JPEGs of ``frames_dir``), prompts in the order they are given, and how
    the official predictor propagates (one ``propagate_in_video(start_frame_idx, reverse)`` call)."""

    name: str
    frames_dir: Path
    num_frames: int
    prompts: tuple[OfficialPrompt, ...]
    reverse: bool = False
    start_frame_idx: int | None = None

    def vidtrack_prompts(self) -> list[Prompt]:
        out = []
        for p in self.prompts:
            if p.mask is not None:
                out.append(Prompt.from_mask(p.frame_idx, p.obj_id, p.mask))
            elif p.points is not None:
                out.append(Prompt.from_points(p.frame_idx, p.obj_id, np.asarray(p.points).tolist(),
                                              None if p.labels is None else np.asarray(p.labels).tolist(), box=p.box,
                                              box_fmt="xyxy"))
            else:
                assert p.box is not None
                out.append(Prompt.from_box(p.frame_idx, p.obj_id, p.box, fmt="xyxy"))
        return out


@dataclass
class VidtrackRun:
    """Same layout as :class:`calibration.OfficialRun` (masks, candidates, object-score logits per object)."""

    masks: dict[int, np.ndarray]
    candidates: dict[int, np.ndarray]
    object_logits: dict[int, np.ndarray]
    order: list[int] = field(default_factory=list)


def read_frames(frames_dir: Path, n: int) -> list[np.ndarray]:
    paths = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def load_vidtrack(checkpoint: str | Path, model: str = "sam2.1-tiny", **config: Any) -> Any:
    """vidtrack's loader on a Meta checkpoint (architecture from the weights and the yaml beside them), CPU,
    float32, Meta's PIL frame resizing."""
    cfg = TrackingConfig(device="cpu", dtype="float32", checkpoint_path=str(checkpoint), resize="official", **config)
    return create_tracking_loader(model, cfg).load()


def _recording_policy(policy: Any, chosen: dict[tuple[int, int], int]) -> Any:
    """Record the candidate the policy picks on each (object, frame), by wrapping this policy instance."""
    original = policy.choose_candidate

    def choose(track: Any, frame_idx: int, cands: Any) -> int:
        k = original(track, frame_idx, cands)
        chosen[(track.object_id, frame_idx)] = int(k) if cands.multimask else -1
        return k

    policy.choose_candidate = choose
    return policy


def run_vidtrack(loader: Any, case: Case, *, whole_video: bool = False) -> VidtrackRun:
    """Run ``case`` through vidtrack.

    Forward cases use :meth:`stream` (prompts on their frames), or :meth:`track_video` with
    ``whole_video=True``; reverse cases drive one engine session with ``reverse=True`` from the last frame down
    (what ``propagate_in_video(reverse=True)`` does). Candidates are -1 where the frame had a mask prompt or a
    single-mask decoder, -2 where the object was not tracked.
    """
    n = case.num_frames
    chosen: dict[tuple[int, int], int] = {}
    original_new_policy = loader.new_policy
    loader.new_policy = lambda: _recording_policy(original_new_policy(), chosen)
    ids = sorted({p.obj_id for p in case.prompts})
    frames_out: list[Any]
    try:
        prompts = case.vidtrack_prompts()
        if case.reverse:
            frames = read_frames(case.frames_dir, n)
            h, w = frames[0].shape[:2]
            session = loader.engine.new_session(loader.new_policy(), h, w, num_frames=n, reverse=True)
            start = n - 1 if case.start_frame_idx is None else case.start_frame_idx
            frames_out = []
            for f in range(start, -1, -1):
                outs, _ = session.step(f, frames[f], [p for p in prompts if p.frame_idx == f])
                frames_out.append((f, session.to_tracking_masks(outs)))
        elif whole_video:
            result = loader.track_video(str(case.frames_dir), prompts, end=n)
            frames_out = [(tf.frame_idx, tf.masks) for tf in result.frames]
        else:
            frames_out = [(tf.frame_idx, tf.masks) for tf in loader.stream(str(case.frames_dir), prompts, end=n)]
    finally:
        loader.new_policy = original_new_policy
    h, w = read_frames(case.frames_dir, 1)[0].shape[:2]
    masks = {o: np.zeros((n, h, w), bool) for o in ids}
    logits = {o: np.full(n, np.nan) for o in ids}
    cands = {o: np.full(n, -2, np.int64) for o in ids}
    order = []
    for f, tms in frames_out:
        order.append(f)
        for m in tms:
            masks[m.object_id][f] = m.mask
            v = min(max(m.visibility, 1e-12), 1 - 1e-12)
            logits[m.object_id][f] = float(np.log(v / (1 - v)))
            cands[m.object_id][f] = chosen.get((m.object_id, f), -1)
    return VidtrackRun(masks, cands, logits, order)


@dataclass
class ParityReport:
    """Per-frame IoU per object (frames both sides tracked), and the frames where the chosen candidate or the
    object-score sign differ."""

    case: str
    ious: dict[int, np.ndarray]
    candidate_mismatches: list[tuple[int, int, int, int]]  # (object, frame, ours, official)
    sign_mismatches: list[tuple[int, int, float, float]]
    frames_compared: int

    @property
    def all_ious(self) -> np.ndarray:
        return np.concatenate(list(self.ious.values()))

    @property
    def mean_iou(self) -> float:
        return float(self.all_ious.mean())

    @property
    def min_iou(self) -> float:
        return float(self.all_ious.min())

    def summary(self) -> str:
        return (f"{self.case}: {self.frames_compared} object-frames, mean IoU {self.mean_iou:.6f}, min "
                f"{self.min_iou:.6f}, candidate mismatches {self.candidate_mismatches[:4]}, sign mismatches "
                f"{self.sign_mismatches[:4]}")

    def assert_parity(self, mean_iou: float = 0.999, min_iou: float | None = None) -> None:
        """Mean IoU bar, optionally a per-frame floor, and no candidate or object-score sign mismatch."""
        assert self.mean_iou >= mean_iou, self.summary()
        if min_iou is not None:
            assert self.min_iou >= min_iou, self.summary()
        assert not self.candidate_mismatches, self.summary()
        assert not self.sign_mismatches, self.summary()


def compare(case: Case, ours: VidtrackRun, official: OfficialRun, frames: Sequence[int] | None = None) -> ParityReport:
    """Compare on every frame the official predictor yielded (or ``frames``): both sides must have run it."""
    ious: dict[int, np.ndarray] = {}
    cand_bad: list[tuple[int, int, int, int]] = []
    sign_bad: list[tuple[int, int, float, float]] = []
    fs = list(official.order) if frames is None else list(frames)
    missing = sorted(set(fs) - set(ours.order))
    assert not missing, f"{case.name}: vidtrack did not output frames {missing}"
    count = 0
    for o in official.masks:
        vals = []
        for f in fs:
            if official.candidates[o][f] == -2 and np.isnan(official.object_logits[o][f]) \
                    and not official.masks[o][f].any() and np.isnan(ours.object_logits[o][f]):
                continue  # the object is not tracked on this frame on either side
            vals.append(iou(ours.masks[o][f], official.masks[o][f]))
            count += 1
            c_ours, c_off = int(ours.candidates[o][f]), int(official.candidates[o][f])
            if c_off >= 0 and c_ours != c_off:
                cand_bad.append((o, f, c_ours, c_off))
            lo, lt = ours.object_logits[o][f], official.object_logits[o][f]
            if not np.isnan(lt) and (np.isnan(lo) or (lo > 0) != (lt > 0)):
                sign_bad.append((o, f, float(lo), float(lt)))
        ious[o] = np.array(vals)
    return ParityReport(case.name, ious, cand_bad, sign_bad, count)
