"""Public API: configuration, the loader interface and the factory.

``create_tracking_loader(name, config)`` returns a :class:`TrackingModelLoader`; ``load()`` it, then either
``track(frames, initial_masks, object_ids)`` (the original module's call: a list of frames and first-frame
masks), ``track_video(source, prompts)`` (any source, prompts on any frame; by default Meta's semantics, where
every prompt is processed first, see ``TrackingConfig.semantics``), ``stream(source, prompts)`` (yields each
frame as soon as it is computed; causal: a prompt takes effect when its frame is reached) or
``open_stream(height, width)`` (push frames and prompts yourself, e.g. from a camera; causal).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from vidtrack.catalog import ModelSpec, resolve_model
from vidtrack.errors import InputError, ModelNotFoundError, NotLoadedError
from vidtrack.types import Prompt, TrackingFrame, TrackingResult


class TrackingFramework(StrEnum):
    """Tracker families."""

    SAM2 = "sam2"
    SAMURAI = "samurai"
    SAM2LONG = "sam2long"
    YOLO = "yolo"


@dataclass
class TrackingConfig:
    """How to build and run a tracker.

    Attributes:
        model_id: a catalogue name (``sam2.1-tiny``, ``samurai-large``...); when None the name given to
            :func:`create_tracking_loader` is used.
        framework: force a family (normally implied by the name).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        cache_dir: Hugging Face cache folder for Hub weights.
        checkpoint_path: a Meta ``sam2.1_hiera_*.pt``/``.safetensors`` file or a transformers-format folder.
        model_config: Meta's yaml model config of a Meta checkpoint of a custom architecture (fine-tuned at
            another input size, other Hiera depth/width): head counts, global-attention blocks, windows and the
            input size are only there. When None, ``<checkpoint name>.yaml`` beside the file is used if present,
            else the released size of the same shape at 1024 px.
        dtype: weight dtype, ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (float32 weights; on CUDA
            the model then runs under autocast, see ``autocast``).
        autocast: ``"auto"`` (with ``dtype="auto"`` on CUDA: bfloat16 on GPUs of compute capability >= 8.0,
            float16 on older ones; off on CPU, where bf16 is slower), ``"off"``, ``"bfloat16"`` or ``"float16"``.
        compile: ``torch.compile`` the image encoder, memory attention, mask decoder and memory encoder, with a
            warm-up clip at ``load()`` (minutes on first use; pays off on long videos and GPUs).
        encoder_ahead: run the image encoder one frame ahead of the memory path in a worker thread (a second
            CUDA stream on GPUs): ``"auto"`` (on for CUDA), ``"on"``, ``"off"``.
        download: allow fetching weights from the Hub (never done otherwise).
        resize: frame resizing, ``"transformers"`` (transformers' processor, default) or ``"official"`` (Meta's
            loader: PIL resize), see :mod:`vidtrack.engines.sam2.preprocess`.
        policy_options: overrides for the memory policy (e.g. ``{"kf_score_weight": 0.15}`` for SAMURAI).
        semantics: how :meth:`~TrackingModelLoader.track_video` and ``track`` treat prompts on several frames
            (docs/SEMANTICS.md). ``"official"`` (default): Meta's ``SAM2VideoPredictor`` order -- every prompt
            is processed first, tracking starts at the earliest prompted frame of any object, every frame of an
            object attends to all its prompted frames (also later ones). ``"causal"``: a prompt takes effect
            when its frame is reached, as in ``stream``/``open_stream`` (always causal). Both give the same
            masks when every prompt is on the first frame. SAM 2 family only.
        backward: frames before the earliest prompt. ``"official"``: also run Meta's reverse propagation from
            the frame before the earliest prompted frame down to the first frame. ``"causal"``: track objects
            first prompted after the first frame backward to the first frame.
        threads: CPU threads for torch; None uses ``OMP_NUM_THREADS`` if set, else the CPUs this process may use
            (affinity-aware, so a container or Ray worker limited to N CPUs uses N threads).
        max_batch: how many object hypotheses (objects, SAM2Long pathways) go through memory attention, the
            mask decoder and the memory encoder in one call; 1 runs them one at a time like the official code.
            None: 16 on GPUs; 1 on CPUs, where memory attention is compute-bound and batching measured slower
            (BENCHMARKS.md).
    """

    model_id: str | None = None
    framework: TrackingFramework | str | None = None
    device: str = "auto"
    cache_dir: str | None = None
    checkpoint_path: str | None = None
    model_config: str | None = None
    dtype: str = "auto"
    download: bool = False
    resize: str = "transformers"
    policy_options: dict[str, Any] = field(default_factory=dict)
    backward: bool = True
    semantics: str = "official"
    threads: int | None = None
    max_batch: int | None = None
    autocast: str = "auto"
    compile: bool = False
    encoder_ahead: str = "auto"


ProgressFn = Callable[[TrackingFrame], None]

SEMANTICS = ("official", "causal")
"""Values of :attr:`TrackingConfig.semantics` (docs/SEMANTICS.md)."""


class TrackingModelLoader(ABC):
    """The interface every tracker implements."""

    def __init__(self, spec: ModelSpec, config: TrackingConfig) -> None:
        self.spec = spec
        self.config = config

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

    @abstractmethod
    def stream(
        self,
        source: Any,
        prompts: Iterable[Prompt] = (),
        *,
        stride: int = 1,
        start: int = 0,
        end: int | None = None,
    ) -> Iterator[TrackingFrame]:
        """Track forward through ``source``, yielding each frame as soon as it is computed."""

    @abstractmethod
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
        """Track a whole video. Prompts on several frames follow ``config.semantics`` (default: Meta's
        predictor, every prompt first); frames before the earliest prompt follow ``config.backward``. The
        result's ``metadata["semantics"]`` says which semantics produced it."""

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
        if not self.is_loaded:
            raise NotLoadedError(f"{self.name} is not loaded; call load() first")
        ids = list(range(1, len(initial_masks) + 1)) if object_ids is None else [int(i) for i in object_ids]
        if len(ids) != len(initial_masks):
            raise InputError(f"got {len(initial_masks)} masks but {len(ids)} object ids; give one id per mask")
        if len(frames) == 0:
            raise InputError("no frames to track; pass at least one frame")
        prompts = [Prompt.from_mask(0, i, np.asarray(m)) for i, m in zip(ids, initial_masks, strict=True)]
        return self.track_video(list(frames), prompts)


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


def create_tracking_loader(model_name: str, config: TrackingConfig | None = None) -> TrackingModelLoader:
    """A loader for any catalogue name or alias (``sam2``, ``sam2.1-large``, ``samurai``, ``sam2long``,
    ``yolo11n-seg``...). Raises :class:`ModelNotFoundError` for unknown names."""
    config = config or TrackingConfig()
    spec = resolve_model(config.model_id or model_name)
    if config.framework is not None:
        fw = TrackingFramework(config.framework).value
        if fw != spec.family:
            raise ModelNotFoundError(f"model {spec.name} is a {spec.family} model, not {fw}")
    if spec.family == "yolo":
        from vidtrack.engines.yolo import create_yolo_loader

        return create_yolo_loader(spec, config)
    from vidtrack.engines.sam2.loader import Sam2Loader
    from vidtrack.policies import POLICIES

    if spec.policy not in POLICIES:
        raise ModelNotFoundError(
            f"{spec.name}: the {spec.family} memory policy is not available in this release; "
            f"use sam2.1-{spec.size} for plain SAM 2.1 tracking"
        )

    return Sam2Loader(spec, config)
