"""The tracker contract and the one tracking skeleton every backend shares.

:class:`TrackingModelLoader` is what every tracker is to a user; it implements ``stream``, ``track_video``,
``track``, the backward pass, timing and result assembly once. A backend supplies a :class:`Runner` per video
(its tracker in one direction, stepped frame by frame) through :meth:`TrackingModelLoader.new_runner`.

Two indices, never mixed: ``frame_idx`` is a frame's index in the source (what prompts and
:class:`~vidtrack.types.TrackingFrame` carry; a ranged or strided source yields e.g. 10, 12, 14...), ``pos`` is
its position in the processed sequence (0, 1, 2...; what runners and sessions step through). Prompts are
handed to a runner re-indexed to ``pos``.

Two orders of work over prompts on several frames (docs/SEMANTICS.md):

* **causal** (``stream``; ``track_video`` for backends without the other order, or with
  ``semantics="causal"``): forward from the first frame, a prompt taking effect when its frame is reached;
  with ``config.backward``, objects first prompted after the source's first frame are then followed back to
  it by a reverse runner;
* **prompts first** (Meta's ``SAM2VideoPredictor``, backends whose :meth:`TrackingModelLoader.prompts_first`
  is true): every prompted frame is processed first (:meth:`Runner.add_prompts`), then forward from the
  earliest prompted frame over every frame (prompted ones replayed), then, with ``config.backward``, a
  reverse runner continuing the forward one's state from the frame before the earliest prompt down to the
  first frame.

It sits below the backends and the public API (``vidtrack.api`` re-exports it and keeps the factory).
"""

from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidtrack.catalog import ModelSpec
from vidtrack.config import TrackingConfig
from vidtrack.errors import InputError, NotLoadedError
from vidtrack.sources import FrameSource, open_source
from vidtrack.types import Prompt, TrackingFrame, TrackingMask, TrackingResult

ProgressFn = Callable[[TrackingFrame], None]


@dataclass
class StepResult:
    """One runner step: the masks of the objects it computed on that frame and the seconds per stage."""

    masks: list[TrackingMask]
    stages: dict[str, float] = field(default_factory=dict)


class Runner(ABC):
    """A backend's tracker over one video in one direction, stepped by position (``pos``).

    The skeleton tells a forward step to ``keep`` a frame that a later pass reads again (a backward pass, or
    the replay of prompted frames); such a pass steps with ``frame=None`` and the runner uses what it kept
    (pixels spilled to disk for SAM 2, detections for YOLO). A runner holds such resources until
    :meth:`close`.
    """

    def feed(self, frames: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, object]]:
        """The frames as this runner wants them read, as ``(frame_idx, frame, ahead)``: ``ahead`` is handed
        back to :meth:`step` (SAM 2: image features computed one frame ahead in a worker). Default: as read."""
        return ((i, f, None) for i, f in frames)

    @abstractmethod
    def step(
        self, pos: int, frame: np.ndarray | None, prompts: list[Prompt], *, ahead: object = None,
        keep: bool = False,
    ) -> StepResult:
        """Track the frame at ``pos`` (``frame`` None: the one kept at ``pos``), applying ``prompts`` (already
        at ``pos``). ``keep``: a later pass reads this frame again."""

    def add_prompts(self, pos: int, frame: np.ndarray, prompts: list[Prompt], *, keep: bool = False) -> StepResult:
        """Prompts-first order: process this frame's prompts before any tracking (only for backends whose
        loader's ``prompts_first()`` can be true)."""
        raise NotImplementedError(f"{type(self).__name__} tracks causally only")

    def kept(self, pos: int) -> np.ndarray:
        """The frame kept at ``pos`` (prompts-first order: prompted frames are replayed)."""
        raise NotImplementedError(f"{type(self).__name__} tracks causally only")

    @abstractmethod
    def reverse(self, num_frames: int) -> Runner:
        """The runner of the backward pass after this forward one, stepping down over its kept frames."""

    def revisions(self) -> dict[int, list[TrackingMask]]:
        """After the last step: pos -> masks replacing those objects' streamed masks (non-causal trackers,
        e.g. SAM2Long offline). Default: none."""
        return {}

    def close(self) -> None:  # noqa: B027 -- nothing to release by default
        """Release what the runner kept (temporary files)."""


class TrackingModelLoader(ABC):
    """The interface every tracker implements; the tracking skeleton, written once for every backend."""

    def __init__(self, spec: ModelSpec, config: TrackingConfig) -> None:
        self.spec = spec
        self.config = config
        self.last_runner: Runner | None = None  # the last video's forward runner (inspection; unload frees it)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    @abstractmethod
    def is_loaded(self) -> bool: ...

    @abstractmethod
    def load(self) -> TrackingModelLoader:
        """Load weights (idempotent). Returns self so ``loader.load().track(...)`` reads naturally."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model and any cached state."""

    # --- what a backend supplies ---------------------------------------------------------------------------
    @abstractmethod
    def new_runner(self, height: int, width: int, num_frames: int | None, *, prompted: bool,
                   prompts_first: bool) -> Runner:
        """A forward runner for one video of ``height`` x ``width`` (``num_frames`` when known); ``prompted``:
        whether any prompt was given; ``prompts_first``: the runner will get :meth:`Runner.add_prompts`."""

    requires_prompts: bool = True
    """False for backends that track every detection without prompts (YOLO's auto mode)."""

    def open_session(self, video: Any, *, work_dir: Any = None, feature_cache_frames: int = 16,
                     corrections_as_cond: bool = True) -> Any:
        """An interactive session on ``video`` (prompt a frame, see its masks, propagate, correct, propagate
        again: docs/SESSION.md). Only trackers that can refine a prompt and re-run from any frame have one
        (SAM 2.1 and the policies on it); the others raise :class:`InputError`."""
        raise InputError(f"{self.name} has no interactive session (click, correct, re-propagate); use a SAM 2.1 "
                         "tracker such as sam2.1-tiny, samurai or sam2long (vidtrack models lists them)")

    def prompts_first(self) -> bool:
        """Whether ``track_video`` processes every prompt first (Meta's order). Default: causal."""
        return False

    def result_metadata(self, prompts: list[Prompt], backward: bool) -> dict[str, Any]:
        """``TrackingResult.metadata`` of ``track_video`` (``backward``: whether a backward pass ran)."""
        return {}

    def check_loaded(self) -> None:
        if not self.is_loaded:
            raise NotLoadedError(f"{self.name} is not loaded; call load() first")

    # --- the skeleton --------------------------------------------------------------------------------------
    def stream(
        self,
        source: Any,
        prompts: Iterable[Prompt] = (),
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[TrackingFrame]:
        """Track forward through ``source``, yielding each frame as soon as it is computed (causal: a prompt
        takes effect when its frame is reached). ``source`` may be an open, ranged :class:`FrameSource`."""
        self.check_loaded()
        plist = check_prompts(prompts)
        src = open_source(source, stride=stride, start=start, end=end)
        return self._forward(src, plist, None, keep_until=-1)

    def track_video(
        self,
        source: Any,
        prompts: Iterable[Prompt] = (),
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
        progress: ProgressFn | None = None,
    ) -> TrackingResult:
        """Track a whole video. Prompts on several frames follow the backend's order (SAM 2: ``config.semantics``,
        by default Meta's, every prompt first); frames before the earliest prompt follow ``config.backward``.
        ``source`` may be an open, ranged :class:`FrameSource`: its first frame is the video's first frame."""
        self.check_loaded()
        started = time.perf_counter()
        plist = check_prompts(prompts)
        src = open_source(source, stride=stride, start=start, end=end)
        height, width = src.probe_size()
        if self.prompts_first():
            frames, backward = self._track_prompts_first(src, plist, height, width, progress)
        else:
            frames, backward = self._track_causal(src, plist, height, width, progress)
        return finish_result(frames, width, height, self.name, started, **self.result_metadata(plist, backward))

    def track(
        self,
        frames: Sequence[Any],
        initial_masks: Sequence[np.ndarray],
        object_ids: Sequence[int] | None = None,
    ) -> TrackingResult:
        """The original module's call: frames (PIL images or arrays) and one first-frame mask per object.

        Raises ``ValueError`` (:class:`InputError`) when the numbers of masks and ids differ, and
        ``RuntimeError`` (:class:`NotLoadedError`) when the model is not loaded.
        """
        self.check_loaded()
        ids = list(range(1, len(initial_masks) + 1)) if object_ids is None else [int(i) for i in object_ids]
        if len(ids) != len(initial_masks):
            raise InputError(f"got {len(initial_masks)} masks but {len(ids)} object ids; give one id per mask")
        if len(frames) == 0:
            raise InputError("no frames to track; pass at least one frame")
        prompts = [Prompt.from_mask(0, i, np.asarray(m)) for i, m in zip(ids, initial_masks, strict=True)]
        return self.track_video(list(frames), prompts)

    def _forward(
        self, src: FrameSource, prompts: list[Prompt], runner: Runner | None, *, keep_until: int
    ) -> Iterator[TrackingFrame]:
        """The causal forward pass: each frame stepped with the prompts on it; frames up to source index
        ``keep_until`` are kept for the backward pass. Closes the source, and the runner when it made it."""
        if self.requires_prompts and not prompts:
            src.close()
            raise InputError("no prompts: give at least one mask, box or points prompt")
        schedule = PromptSchedule(prompts, src)
        own = runner is None
        pos = 0
        frame_idx = -1
        try:
            height, width = src.probe_size()
            if runner is None:
                runner = self.new_runner(height, width, src.num_frames, prompted=bool(prompts),
                                         prompts_first=False)
                self.last_runner = runner
            t_wait = time.perf_counter()
            for frame_idx, frame, ahead in runner.feed(iter(src)):
                wait = time.perf_counter() - t_wait  # decoding (and, ahead, what the worker did not hide)
                if frame.shape[:2] != (height, width):
                    raise InputError(f"frame {frame_idx} of {src.name} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"not {width}x{height} like the first frame; every frame of a video must "
                                     "have the same size")
                here = [p.validate(height, width, source=src.name).at(pos) for p in schedule.at(frame_idx)]
                t0 = time.perf_counter()
                out = runner.step(pos, frame, here, ahead=ahead, keep=frame_idx <= keep_until)
                elapsed = time.perf_counter() - t0
                yield _frame(frame_idx, out.masks, elapsed, {"decode": wait, **out.stages})
                pos += 1
                t_wait = time.perf_counter()
        finally:
            src.close()
            if own and runner is not None:
                runner.close()
        if pos == 0:
            raise InputError(f"no frames in {src.name}")
        schedule.check_all_reached(frame_idx)

    def _track_causal(
        self, src: FrameSource, prompts: list[Prompt], height: int, width: int, progress: ProgressFn | None
    ) -> tuple[list[TrackingFrame], bool]:
        """The stream, collected; then, with ``config.backward``, objects first prompted after the source's
        first frame are tracked back to it in one reverse pass. Returns the frames and whether it ran."""
        first = src.first_index
        late = ({o: f for o, f in first_prompt_frames(prompts).items() if f > first}
                if self.config.backward else {})
        runner = self.new_runner(height, width, src.num_frames, prompted=bool(prompts), prompts_first=False)
        self.last_runner = runner
        frames: list[TrackingFrame] = []
        try:
            for tf in self._forward(src, prompts, runner, keep_until=max(late.values(), default=-1)):
                frames.append(tf)
                if progress is not None:
                    progress(tf)
            _apply_revisions(frames, runner.revisions(), lambda pos, oid: True)
            if late:
                self._backward(runner, frames, prompts, late, height, width)
        finally:
            runner.close()
        return frames, bool(late)

    def _backward(
        self, forward: Runner, frames: list[TrackingFrame], prompts: list[Prompt], late: dict[int, int],
        height: int, width: int,
    ) -> None:
        """Track objects first prompted after the first frame back to the first frame, in one reverse pass.

        Each such object is conditioned on its first prompt (reached while going backward); its masks are
        added on the frames before that prompt. Tracking backward from a prompt equals tracking the reversed
        clip forward from it (tested).
        """
        pos_of = {tf.frame_idx: pos for pos, tf in enumerate(frames)}
        firsts = [p.validate(height, width) for p in prompts if late.get(p.object_id) == p.frame_idx]
        runner = forward.reverse(len(frames))
        try:
            for pos in range(max(pos_of[f] for f in late.values()), -1, -1):
                tf = frames[pos]
                here = [p.at(pos) for p in firsts if p.frame_idx == tf.frame_idx]
                t0 = time.perf_counter()
                out = runner.step(pos, None, here)
                before = [m for m in out.masks if pos < pos_of[late[m.object_id]]]  # before its first prompt
                _merge(tf, before, time.perf_counter() - t0, {f"backward_{k}": v for k, v in out.stages.items()})
            _apply_revisions(frames, runner.revisions(), lambda pos, oid: pos < pos_of[late[oid]])
        finally:
            runner.close()

    def _track_prompts_first(
        self, src: FrameSource, prompts: list[Prompt], height: int, width: int, progress: ProgressFn | None
    ) -> tuple[list[TrackingFrame], bool]:
        """Meta's ``SAM2VideoPredictor`` order of work (docs/SEMANTICS.md):

        1. every prompt is processed first (``add_new_mask`` / ``add_new_points_or_box``, then
           ``propagate_in_video_preflight``). The source is read once, up to the last prompted frame; the
           frames needed again (from the earliest prompted frame ``s`` on, and before it with ``backward``)
           are kept by the runner;
        2. ``propagate_in_video``: forward from ``s`` to the end, every object tracked from ``s`` (also those
           first prompted later); the kept frames are replayed, then the source is read on;
        3. with ``backward`` and ``s`` after the first frame: ``propagate_in_video(start_frame_idx=s - 1,
           reverse=True)`` on the same state, from ``s - 1`` down to the first frame.
        """
        if not prompts:
            raise InputError("no prompts: give at least one mask, box or points prompt")
        backward = self.config.backward
        schedule = PromptSchedule(prompts, src)
        first_src = min(p.frame_idx for p in prompts)
        last_src = max(p.frame_idx for p in prompts)
        runner = self.new_runner(height, width, src.num_frames, prompted=True, prompts_first=True)
        self.last_runner = runner
        frames: list[TrackingFrame] = []
        it = iter(src)
        try:
            # 1. prompts first: read up to the last prompted frame, keeping what will be read again
            frame_idx = -1
            for frame_idx, frame in it:
                pos = len(frames)
                here = [p.validate(height, width, source=src.name).at(pos) for p in schedule.at(frame_idx)]
                t0 = time.perf_counter()
                out = runner.add_prompts(pos, frame, here, keep=backward or frame_idx >= first_src)
                frames.append(_frame(frame_idx, out.masks, time.perf_counter() - t0, dict(out.stages)))
                if frame_idx >= last_src:
                    break
            if not frames:
                raise InputError(f"no frames in {src.name}")
            schedule.check_all_reached(frame_idx)
            s = next(pos for pos, tf in enumerate(frames) if tf.frame_idx == first_src)
            if s > 0 and not backward and progress is not None:
                for tf in frames[:s]:  # nothing will be computed for these
                    progress(tf)

            # 2. forward from the earliest prompted frame
            replay = ((frames[pos].frame_idx, runner.kept(pos)) for pos in range(s, len(frames)))
            pos = s
            t_wait = time.perf_counter()
            for frame_idx, frame, ahead in runner.feed(itertools.chain(replay, it)):
                wait = time.perf_counter() - t_wait
                t0 = time.perf_counter()
                out = runner.step(pos, frame, [], ahead=ahead)
                elapsed = time.perf_counter() - t0
                stages = {"decode": wait, **out.stages}
                if pos < len(frames):  # a replayed frame: it may hold prompted objects' masks already
                    tf = frames[pos]
                    _merge(tf, out.masks, elapsed, stages)
                else:
                    tf = _frame(frame_idx, out.masks, elapsed, stages)
                    frames.append(tf)
                if progress is not None:
                    progress(tf)
                pos += 1
                t_wait = time.perf_counter()
            _apply_revisions(frames, runner.revisions(), lambda pos, oid: pos >= s)

            # 3. backward from s - 1, continuing the forward pass's state
            if backward and s > 0:
                rev = runner.reverse(len(frames))
                try:
                    for pos in range(s - 1, -1, -1):
                        tf = frames[pos]
                        t0 = time.perf_counter()
                        out = rev.step(pos, None, [])
                        _merge(tf, out.masks, time.perf_counter() - t0,
                               {f"backward_{k}": v for k, v in out.stages.items()})
                        if progress is not None:
                            progress(tf)
                    _apply_revisions(frames, rev.revisions(), lambda pos, oid: pos < s)
                finally:
                    rev.close()
        finally:
            src.close()
            runner.close()
        return frames, backward


def _frame(frame_idx: int, masks: list[TrackingMask], seconds: float, stages: dict[str, float]) -> TrackingFrame:
    return TrackingFrame(frame_idx, masks, {m.object_id: m.occluded for m in masks}, seconds, stages)


def _merge(tf: TrackingFrame, masks: list[TrackingMask], seconds: float, stages: dict[str, float]) -> None:
    """Add one pass's masks and time to a frame that already exists (prompted objects, or the other pass)."""
    for m in masks:
        tf.masks.append(m)
        tf.occlusions[m.object_id] = m.occluded
    tf.masks.sort(key=lambda m: m.object_id)
    tf.processing_time += seconds
    for k, v in stages.items():
        tf.timings[k] = tf.timings.get(k, 0.0) + v


def _apply_revisions(
    frames: list[TrackingFrame], revised: dict[int, list[TrackingMask]], allowed: Callable[[int, int], bool]
) -> None:
    """Replace streamed masks by a runner's final ones (keyed by position in ``frames``)."""
    for pos, masks in revised.items():
        tf = frames[pos]
        for m in masks:
            if not allowed(pos, m.object_id):
                continue
            tf.masks = [x for x in tf.masks if x.object_id != m.object_id] + [m]
            tf.masks.sort(key=lambda x: x.object_id)
            tf.occlusions[m.object_id] = m.occluded


def check_prompts(prompts: Iterable[Prompt]) -> list[Prompt]:
    """Reject duplicate (frame, object) pairs and non-Prompt items; returns the prompts sorted by frame."""
    out = list(prompts)
    seen: set[tuple[int, int]] = set()
    for p in out:
        if not isinstance(p, Prompt):
            raise InputError(f"prompts must be vidtrack.Prompt objects; got {type(p).__name__}")
        if p.frame_idx < 0:
            raise InputError(f"prompt for object {p.object_id} has a negative frame index {p.frame_idx}")
        key = (p.frame_idx, p.object_id)
        if key in seen:
            raise InputError(f"duplicate prompt for object {p.object_id} on frame {p.frame_idx}; object ids must "
                             "be unique per frame")
        seen.add(key)
    return sorted(out, key=lambda p: (p.frame_idx, p.object_id))


def first_prompt_frames(prompts: Iterable[Prompt]) -> dict[int, int]:
    """Object id -> the frame of its first prompt (objects first prompted after the first frame are the ones
    a backward pass has to follow)."""
    first: dict[int, int] = {}
    for p in prompts:
        first[p.object_id] = min(first.get(p.object_id, p.frame_idx), p.frame_idx)
    return first


class PromptSchedule:
    """Prompts grouped by source frame, checked against what a source will yield.

    Both backends use it: a prompt on a frame the source will never yield (past the end, or skipped by the
    stride) is refused before any work when the source's frame indices are known in advance, and otherwise
    when the stream ends (:meth:`check_all_reached`).
    """

    def __init__(self, prompts: Iterable[Prompt], src: Any) -> None:
        self.source_name = str(getattr(src, "name", "the source"))
        planned = src.planned_indices() if hasattr(src, "planned_indices") else None
        self._by_frame: dict[int, list[Prompt]] = {}
        for p in prompts:
            if planned is not None and p.frame_idx not in planned:
                last = planned[-1] if planned else planned.start
                raise InputError(
                    f"prompt for object {p.object_id} is on frame {p.frame_idx}, which is never processed: "
                    f"{self.source_name} yields frames {planned.start}..{last} (step {planned.step}); put the "
                    "prompt on one of those frames"
                )
            self._by_frame.setdefault(p.frame_idx, []).append(p)
        self._seen: set[int] = set()

    def at(self, frame_idx: int) -> list[Prompt]:
        """The prompts on this source frame (marks the frame as reached)."""
        here = self._by_frame.get(frame_idx, [])
        if here:
            self._seen.add(frame_idx)
        return here

    def check_all_reached(self, last_frame: int) -> None:
        missed = sorted(set(self._by_frame) - self._seen)
        if missed:
            raise InputError(
                f"prompts on frame(s) {missed[:5]} were never reached: {self.source_name} ended at frame "
                f"{last_frame} (with a stride only some frames are processed)"
            )


def finish_result(
    frames: list[TrackingFrame], width: int, height: int, model: str, started: float, **metadata: Any
) -> TrackingResult:
    total = time.perf_counter() - started
    return TrackingResult(
        frames=frames,
        video_width=width,
        video_height=height,
        total_processing_time=total,
        fps=len(frames) / total if total > 0 else 0.0,
        model=model,
        metadata=metadata,
    )


