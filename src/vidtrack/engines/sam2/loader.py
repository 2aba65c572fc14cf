"""The SAM 2 family behind :class:`TrackingModelLoader`: weights, policy, streaming and backward passes."""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidtrack.api import (
    SEMANTICS,
    ProgressFn,
    PromptSchedule,
    TrackingConfig,
    TrackingModelLoader,
    check_prompts,
    finish_result,
    first_prompt_frames,
)
from vidtrack.catalog import ModelSpec
from vidtrack.engines.sam2.checkpoints import spec_for_weights
from vidtrack.engines.sam2.engine import Sam2Engine, Sam2Session
from vidtrack.engines.sam2.runtime import EncoderAhead, apply_cpu_threads, compile_model, resolve_precision
from vidtrack.engines.sam2.state import FrameRecord
from vidtrack.engines.sam2.weights import load_sam2_model
from vidtrack.errors import InputError, NotLoadedError
from vidtrack.policies import make_policy
from vidtrack.sources import FrameSource, open_source
from vidtrack.types import Prompt, TrackingFrame, TrackingMask, TrackingResult


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return dev


class LiveTracker:
    """Push frames one by one and add prompts at any time (cameras, custom pipelines).

    ``add_prompt`` applies to the next frame processed (its ``frame_idx`` must be that frame's index).
    """

    def __init__(self, session: Sam2Session, model_name: str) -> None:
        self.session = session
        self.model_name = model_name
        self._pending: list[Prompt] = []
        self.frame_idx = 0

    def add_prompt(self, prompt: Prompt) -> None:
        self._pending.append(prompt)

    def process(self, frame: np.ndarray, frame_idx: int | None = None) -> TrackingFrame:
        idx = self.frame_idx if frame_idx is None else frame_idx
        prompts = [p.at(self.frame_idx) for p in self._pending]
        self._pending.clear()
        t0 = time.perf_counter()
        outputs, timings = self.session.step(self.frame_idx, frame, prompts)
        masks = self.session.to_tracking_masks(outputs)
        self.frame_idx += 1
        return TrackingFrame(idx, masks, {m.object_id: m.occluded for m in masks}, time.perf_counter() - t0,
                             dict(timings.stages))


class Sam2Loader(TrackingModelLoader):
    """SAM 2.1, SAMURAI and SAM2Long: one engine, the policy named by the catalogue entry."""

    def __init__(self, spec: ModelSpec, config: TrackingConfig) -> None:
        super().__init__(spec, config)
        self.engine: Sam2Engine | None = None
        self.last_session: Sam2Session | None = None
        self.device = resolve_device(config.device)
        self.dtype, self.autocast_dtype = resolve_precision(config.dtype, config.autocast, self.device)
        if config.encoder_ahead not in ("auto", "on", "off"):
            raise InputError(f"encoder_ahead must be auto, on or off; got {config.encoder_ahead!r}")
        # auto: on a GPU the encoder overlaps the memory path on a second stream; on a CPU both would compete
        # for the same cores, so it is opt-in there
        self.encoder_ahead = config.encoder_ahead == "on" or (
            config.encoder_ahead == "auto" and self.device.type == "cuda")
        if config.resize not in ("transformers", "official"):
            raise InputError(f"resize must be 'transformers' or 'official'; got {config.resize!r}")
        _check_semantics(config.semantics)

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self.engine is not None

    def load(self, model: Any | None = None) -> Sam2Loader:
        """Load the weights; ``model`` may be an already-built ``Sam2VideoModel`` (tests, custom configs)."""
        if self.engine is not None:
            return self
        if self.device.type == "cpu" or self.config.threads:
            apply_cpu_threads(self.config.threads)
        if model is None:
            model = load_sam2_model(
                size=self.spec.size,
                hub_id=self.spec.hub_id,
                checkpoint_path=self.config.checkpoint_path,
                model_config=self.config.model_config,
                cache_dir=self.config.cache_dir,
                download=self.config.download,
                device=self.device,
                dtype=self.dtype,
            )
            self.spec = spec_for_weights(self.spec, model)  # name what runs: the size is read from the weights
        else:
            model = model.to(device=self.device, dtype=self.dtype)
        if self.config.compile:
            compile_model(model)
        engine = Sam2Engine(model, device=self.device, resize=self.config.resize,  # type: ignore[arg-type]
                            max_batch=self.config.max_batch, autocast_dtype=self.autocast_dtype)
        if self.config.compile:
            engine.warmup()
        self.engine = engine
        return self

    def unload(self) -> None:
        self.engine = None
        self.last_session = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _engine(self) -> Sam2Engine:
        if self.engine is None:
            raise NotLoadedError(f"{self.name} is not loaded; call load() first")
        return self.engine

    def new_policy(self) -> Any:
        eng = self._engine()
        options = {**self.spec.policy_options, **self.config.policy_options}
        return make_policy(self.spec.policy, num_maskmem=eng.num_maskmem, max_obj_ptrs=eng.max_obj_ptrs, **options)

    def open_stream(self, height: int, width: int) -> LiveTracker:
        """A push-style tracker for frames of ``height`` x ``width`` (unknown length)."""
        session = self._engine().new_session(self.new_policy(), height, width)
        return LiveTracker(session, self.name)

    # --- forward streaming -------------------------------------------------------------------------------
    def stream(
        self,
        source: Any,
        prompts: Iterable[Prompt] = (),
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[TrackingFrame]:
        src = open_source(source, stride=stride, start=start, end=end)
        return self._forward(src, check_prompts(prompts), frame_cache=None)

    def _forward(
        self, src: FrameSource, prompts: list[Prompt], frame_cache: _FrameCache | None
    ) -> Iterator[TrackingFrame]:
        eng = self._engine()
        if not prompts:
            raise InputError("no prompts: give at least one mask, box or points prompt")
        schedule = PromptSchedule(prompts, src)
        height, width = src.probe_size()
        session = eng.new_session(self.new_policy(), height, width, num_frames=src.num_frames)
        self.last_session = session  # for inspection (state size); bounded, released by unload()
        pos = 0
        frames: Iterable[tuple[int, np.ndarray, Any, float]] = (
            EncoderAhead(eng, iter(src)) if self.encoder_ahead else ((i, f, None, 0.0) for i, f in src)
        )
        try:
            t_wait = time.perf_counter()
            for frame_idx, frame, feats, enc_s in frames:
                wait = time.perf_counter() - t_wait  # decoding (and, ahead, what the encoder did not hide)
                here = [p.at(pos) for p in schedule.at(frame_idx)]
                t0 = time.perf_counter()
                outputs, timings = session.step(pos, frame, here, features=feats)
                masks = session.to_tracking_masks(outputs)
                elapsed = time.perf_counter() - t0
                if frame_cache is not None:
                    frame_cache.offer(pos, frame_idx, frame)
                stages = {"decode": wait, **timings.stages}
                if feats is not None:  # encoder time spent in the worker, overlapped with the previous frame
                    stages["image_encoder"] = enc_s
                yield TrackingFrame(frame_idx, masks, {m.object_id: m.occluded for m in masks}, elapsed, stages)
                pos += 1
                t_wait = time.perf_counter()
        finally:
            src.close()
        if pos == 0:
            raise InputError(f"no frames in {src.name}")
        schedule.check_all_reached(frame_idx)

    # --- whole video -------------------------------------------------------------------------------------
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
        started = time.perf_counter()
        semantics = _check_semantics(self.config.semantics)
        plist = check_prompts(prompts)
        src = open_source(source, stride=stride, start=start, end=end)
        height, width = src.probe_size()
        if semantics == "official":
            frames = self._track_official(src, plist, height, width, progress)
        else:
            frames = self._track_causal(src, plist, start, height, width, progress)
        extra = self.last_session.policy.result_metadata() if self.last_session is not None else {}
        return finish_result(frames, width, height, self.name, started, policy=self.spec.policy,
                             semantics=semantics, backward=self.config.backward, **extra)

    def _track_causal(
        self, src: FrameSource, plist: list[Prompt], start: int, height: int, width: int,
        progress: ProgressFn | None,
    ) -> list[TrackingFrame]:
        """Prompts take effect when their frame is reached (the stream, collected); with ``backward``, objects
        first prompted after the first frame are then tracked back to it in one reverse pass."""
        first_prompt = first_prompt_frames(plist)
        late = {o: f for o, f in first_prompt.items() if f > start}  # first prompted after the first frame
        frames: list[TrackingFrame] = []
        with _FrameCache(max(late.values(), default=-1) if self.config.backward else -1) as cache:
            for tf in self._forward(src, plist, frame_cache=cache):
                frames.append(tf)
                if progress is not None:
                    progress(tf)
            session = self.last_session
            if session is not None:  # non-causal policies (SAM2Long offline) revise streamed masks here
                _apply_revisions(frames, session.final_masks(), lambda pos, oid: True)
            if self.config.backward:
                self._backward(frames, plist, late, cache, height, width)
        return frames

    def _track_official(
        self, src: FrameSource, prompts: list[Prompt], height: int, width: int, progress: ProgressFn | None
    ) -> list[TrackingFrame]:
        """Meta's ``SAM2VideoPredictor`` order of work (docs/SEMANTICS.md):

        1. every prompt is processed first, as an initial conditioning frame without memory, and memorised
           (``add_new_mask`` / ``add_new_points_or_box``, then ``propagate_in_video_preflight``). The source is
           read once, up to the last prompted frame; the frames that will be needed again (from the earliest
           prompted frame ``s`` on, and before it when ``backward``) are spilled to a temporary file, never
           held in RAM;
        2. ``propagate_in_video``: forward from ``s`` to the end, every object tracked from ``s`` (also those
           first prompted later), each attending to all its conditioning frames; the spilled frames are
           replayed, then the source is read on;
        3. with ``backward`` and ``s`` after the first frame: ``propagate_in_video(start_frame_idx=s - 1,
           reverse=True)`` on the same state, i.e. backward from ``s - 1`` to the first frame reading the
           conditioning frames and the memories the forward pass stored for ``s .. s + 14`` (kept aside as it
           passed them: at most 15 records per object).
        """
        eng = self._engine()
        if not prompts:
            raise InputError("no prompts: give at least one mask, box or points prompt")
        schedule = PromptSchedule(prompts, src)
        session = eng.new_session(self.new_policy(), height, width, num_frames=src.num_frames)
        self.last_session = session
        first_src = min(p.frame_idx for p in prompts)
        last_src = max(p.frame_idx for p in prompts)
        frames: list[TrackingFrame] = []
        it = iter(src)
        try:
            with _FrameCache(last_src, first_src if not self.config.backward else None) as cache:
                # 1. prompts first: read up to the last prompted frame, spilling what will be read again
                frame_idx = -1
                for frame_idx, frame in it:
                    pos = len(frames)
                    cache.offer(pos, frame_idx, frame)
                    here = [p.at(pos) for p in schedule.at(frame_idx)]
                    t0 = time.perf_counter()
                    outputs, timings = session.add_prompts(pos, frame, here)
                    masks = session.to_tracking_masks(outputs)
                    frames.append(TrackingFrame(frame_idx, masks, {m.object_id: m.occluded for m in masks},
                                                time.perf_counter() - t0, dict(timings.stages)))
                    if frame_idx >= last_src:
                        break
                if not frames:
                    raise InputError(f"no frames in {src.name}")
                schedule.check_all_reached(frame_idx)
                s = min(min(t.cond) for t in session.tracks.values())  # the earliest prompted position
                if s > 0 and not self.config.backward and progress is not None:
                    for tf in frames[:s]:  # nothing will be computed for these
                        progress(tf)

                # 2. forward from the earliest prompted frame
                replay = ((frames[pos].frame_idx, cache.get(pos)) for pos in range(s, len(frames)))
                seed = self._forward_official(session, s, itertools.chain(replay, it), frames, progress,
                                              keep_for_reverse=self.config.backward and s > 0)
                _apply_revisions(frames, session.final_masks(), lambda pos, oid: pos >= s)

                # 3. backward from s - 1, on the forward pass's state
                if self.config.backward and s > 0:
                    self._reverse_official(session, seed, s, frames, cache, progress)
        finally:
            src.close()
        return frames

    def _forward_official(
        self,
        session: Sam2Session,
        s: int,
        source: Iterator[tuple[int, np.ndarray]],
        frames: list[TrackingFrame],
        progress: ProgressFn | None,
        keep_for_reverse: bool,
    ) -> dict[int, dict[int, FrameRecord]]:
        """Step 2 of :meth:`_track_official`; returns, per object, the non-conditioning records of positions
        ``s .. s + max_ptrs - 2`` as they were when stored (what a reverse pass from ``s - 1`` reads)."""
        eng = self._engine()
        seed: dict[int, dict[int, FrameRecord]] = {}
        frames_in: Iterable[tuple[int, np.ndarray, Any, float]] = (
            EncoderAhead(eng, source) if self.encoder_ahead else ((i, f, None, 0.0) for i, f in source)
        )
        pos = s
        t_wait = time.perf_counter()
        for frame_idx, frame, feats, enc_s in frames_in:
            wait = time.perf_counter() - t_wait
            t0 = time.perf_counter()
            outputs, timings = session.step(pos, frame, features=feats)
            masks = session.to_tracking_masks(outputs)
            elapsed = time.perf_counter() - t0
            stages = {"decode": wait, **timings.stages}
            if feats is not None:
                stages["image_encoder"] = enc_s
            if pos < len(frames):  # a replayed frame: it may hold prompted objects' masks already
                tf = frames[pos]
                _merge(tf, masks, elapsed, stages)
            else:
                tf = TrackingFrame(frame_idx, masks, {m.object_id: m.occluded for m in masks}, elapsed, stages)
                frames.append(tf)
            if keep_for_reverse and pos - s < session.max_ptrs - 1:
                for oid, track in session.tracks.items():
                    rec = track.non_cond.get(pos)
                    if rec is not None:  # a copy: later pruning drops the original's spatial memory
                        kept = dataclasses.replace(rec)
                        if pos - s >= eng.num_maskmem - 1:  # read backward for its pointer only
                            kept.maskmem_features = None
                        seed.setdefault(oid, {})[pos] = kept
            if progress is not None:
                progress(tf)
            pos += 1
            t_wait = time.perf_counter()
        return seed

    def _reverse_official(
        self,
        forward: Sam2Session,
        seed: dict[int, dict[int, FrameRecord]],
        s: int,
        frames: list[TrackingFrame],
        cache: _FrameCache,
        progress: ProgressFn | None,
    ) -> None:
        """Step 3 of :meth:`_track_official`: Meta's reverse propagation from ``s - 1`` down to the first frame."""
        eng = self._engine()
        session = eng.new_session(self.new_policy(), forward.height, forward.width, num_frames=len(frames),
                                  reverse=True)
        for oid, ftrack in sorted(forward.tracks.items()):
            session.seed_object(oid, ftrack.cond, seed.get(oid, {}))
        for pos in range(s - 1, -1, -1):
            tf = frames[pos]
            t0 = time.perf_counter()
            outputs, timings = session.step(pos, cache.get(pos))
            masks = session.to_tracking_masks(outputs)
            _merge(tf, masks, time.perf_counter() - t0, {f"backward_{k}": v for k, v in timings.stages.items()})
            if progress is not None:
                progress(tf)
        _apply_revisions(frames, session.final_masks(), lambda pos, oid: pos < s)

    def _backward(
        self,
        frames: list[TrackingFrame],
        prompts: list[Prompt],
        late: dict[int, int],
        cache: _FrameCache,
        height: int,
        width: int,
    ) -> None:
        """Track objects first prompted after the first frame back to the first frame, in one reverse pass.

        Each such object is conditioned on its first prompt (reached while going backward); objects prompted
        on the first frame need no backward pass. Tracking backward from a prompt equals tracking the reversed
        clip forward from it (tested).
        """
        if not late:
            return
        eng = self._engine()
        pos_of = {tf.frame_idx: i for i, tf in enumerate(frames)}
        first_prompts = {(p.frame_idx, p.object_id): p for p in prompts if late.get(p.object_id) == p.frame_idx}
        start_pos = max(pos_of[f] for f in late.values())
        session = eng.new_session(self.new_policy(), height, width, num_frames=len(frames), reverse=True)
        for pos in range(start_pos, -1, -1):
            tf = frames[pos]
            here = [p.at(pos) for (f, _), p in first_prompts.items() if f == tf.frame_idx]
            t0 = time.perf_counter()
            outputs, timings = session.step(pos, cache.get(pos), here)
            new = [m for m in session.to_tracking_masks(outputs)
                   if pos < pos_of[late[m.object_id]]]  # frames before the object's first prompt
            for m in new:
                tf.masks.append(m)
                tf.occlusions[m.object_id] = m.occluded
            tf.masks.sort(key=lambda m: m.object_id)
            tf.processing_time += time.perf_counter() - t0
            for k, v in timings.stages.items():
                tf.timings[f"backward_{k}"] = tf.timings.get(f"backward_{k}", 0.0) + v
        _apply_revisions(frames, session.final_masks(), lambda pos, oid: pos < pos_of[late[oid]])


def _check_semantics(value: str) -> str:
    if value not in SEMANTICS:
        raise InputError(f"semantics must be one of {', '.join(SEMANTICS)}; got {value!r}")
    return value


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
    """Replace streamed masks by a session's final ones (session frame index = position in ``frames``)."""
    for pos, masks in revised.items():
        tf = frames[pos]
        for m in masks:
            if not allowed(pos, m.object_id):
                continue
            tf.masks = [x for x in tf.masks if x.object_id != m.object_id] + [m]
            tf.masks.sort(key=lambda x: x.object_id)
            tf.occlusions[m.object_id] = m.occluded


class _FrameCache:
    """Frames needed again (by a backward pass, or replayed after the prompts were processed first), spilled
    to a temporary file (never held in RAM).

    Only source frames ``first .. last`` are kept (``first`` None: from the start); nothing when ``last`` is
    before the first frame. Positions are those of the processed sequence.
    """

    def __init__(self, last_source_frame: int, first_source_frame: int | None = None) -> None:
        self.last = last_source_frame
        self.first = first_source_frame
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._file: Any = None
        self._shape: tuple[int, ...] | None = None
        self._first_pos: int | None = None
        self._count = 0

    def __enter__(self) -> _FrameCache:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._dir is not None:
            self._dir.cleanup()

    def offer(self, pos: int, frame_idx: int, frame: np.ndarray) -> None:
        if frame_idx > self.last or (self.first is not None and frame_idx < self.first):
            return
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="vidtrack-frames-")
            self._file = open(Path(self._dir.name) / "frames.u8", "w+b")  # noqa: SIM115
            self._shape = frame.shape
            self._first_pos = pos
        assert self._first_pos is not None and pos == self._first_pos + self._count and self._file is not None
        self._file.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self._count += 1

    def get(self, pos: int) -> np.ndarray:
        assert self._file is not None and self._shape is not None and self._first_pos is not None
        assert self._first_pos <= pos < self._first_pos + self._count, f"frame at position {pos} was not kept"
        n = int(np.prod(self._shape))
        self._file.flush()
        self._file.seek((pos - self._first_pos) * n)
        return np.frombuffer(bytearray(self._file.read(n)), dtype=np.uint8).reshape(self._shape)
