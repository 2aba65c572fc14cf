"""What the SAM 2 engine and the memory policies exchange.

The engine (:mod:`vidtrack.engines.sam2.engine`) runs the model and owns the memory bank; a policy decides
through the typed hooks of :class:`Policy`. The engine knows policies only through this module: the built-in
ones (:mod:`vidtrack.policies`, whose ``MemoryPolicy`` is SAM 2.1's behaviour) and a user's own plug in from
above, like any other.

One tracked frame of one object goes: the policy's memory reads (:class:`MemoryRead`, one per hypothesis) ->
the engine's batched memory attention and mask decoder (:class:`DecoderRun` per read) -> the policy's
:class:`Decision` (which (read, candidate) pairs survive, the output first) -> the engine gates each survivor,
builds its object pointer and record and encodes its memory (:class:`Kept`) -> the policy remembers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vidtrack.engines.sam2.state import FrameNote, FrameRecord, ObjectTrack, PolicyState
from vidtrack.types import TrackingMask

if TYPE_CHECKING:  # annotations only: checking a policy's name and options (CLI) must not import torch
    import torch

NO_OBJ_SCORE = -1024.0
"""Logit written over every pixel of an absent object's mask (as in the official code)."""


@dataclass
class ImageFeatures:
    """One frame's image-encoder output, in the layout the memory path wants."""

    vision_feats: list[torch.Tensor]  # per level (HW, 1, C); levels 0/1 already through conv_s0/conv_s1
    vision_pos: list[torch.Tensor]  # per level (HW, 1, C)
    high_res: list[torch.Tensor]  # levels 0 and 1 as (1, C, H, W) for the mask decoder

    @property
    def top(self) -> torch.Tensor:
        return self.vision_feats[-1]


@dataclass
class ObjectOutput:
    """One object's result on one frame."""

    object_id: int
    low_res_logits: torch.Tensor  # (1, 1, h, w), after the object-present gate
    iou: float
    object_score_logit: float
    occluded: bool
    is_prompt: bool


@dataclass
class StepTimings:
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


@dataclass
class MemoryRead:
    """What one hypothesis of one object attends to on one frame: (temporal slot, record) memory entries,
    (signed distance, record) pointer entries and optional SAM2Long key weights.

    ``max_ptrs`` overrides the session's pointer window for the pointers' temporal encoding (distances are
    divided by ``max_ptrs - 1``): DAM4SAM's official tracker streams, so its window grows with the frames seen.
    """

    memories: list[tuple[int, FrameRecord]]
    pointers: list[tuple[int, FrameRecord]]
    key_scale: KeyScale | None = None
    max_ptrs: int | None = None


@dataclass
class DecoderRun:
    """Memory attention + mask decoder output for one :class:`MemoryRead`, before any choice.

    ``masks`` (1, K, h, w) logits before the object-present gate, ``ious`` (1, K), ``tokens`` (1, K, C).
    """

    masks: torch.Tensor
    ious: torch.Tensor
    tokens: torch.Tensor
    object_score_logit: float


@dataclass
class KeyScale:
    """Per-entry weights on memory-attention keys: one (0-d) tensor per memory frame, then per object pointer,
    in the order of the entries of a :class:`MemoryRead`."""

    frames: list[torch.Tensor]
    pointers: list[torch.Tensor]


@dataclass
class Candidates:
    """The decoder's outputs for one object on one frame, before any choice is made.

    ``low_res_masks`` are (K, h, w) logits *before* the object-present gate; ``ious`` (K,) are the predicted
    IoUs; ``tokens`` (K, C) are the SAM output tokens (any of them can become the object pointer);
    ``object_score_logit`` is the object-present logit; ``multimask`` says whether K = 3 candidates were
    asked for (tracked frames and single-click prompts) or one (boxes, several clicks).
    """

    low_res_masks: torch.Tensor
    ious: torch.Tensor
    tokens: torch.Tensor
    object_score_logit: float
    multimask: bool
    image_size: int

    @classmethod
    def of_run(cls, run: DecoderRun, image_size: int) -> Candidates:
        """The candidates of one decoder run (a tracked frame)."""
        return cls(run.masks[0], run.ious[0], run.tokens[0], run.object_score_logit, run.masks.size(1) > 1,
                   image_size)


@dataclass
class Choice:
    """One survivor of a tracked frame: candidate ``candidate`` of the decoder run of read ``read``.

    ``iou`` overrides the predicted IoU the record and the output carry (default: the candidate's own);
    ``note`` is what the policy keeps beside the record (e.g. SAMURAI's Kalman score).
    """

    read: int
    candidate: int
    iou: float | None = None
    note: FrameNote | None = None


@dataclass
class Decision:
    """A policy's decision on one tracked frame of one object: the survivors, the output first.

    A policy that needs its own reasoning again when it remembers the survivors (SAM2Long: which pathway each
    survivor continues) returns a subclass carrying it; the engine hands the same object back to
    ``MemoryPolicy.remember``.
    """

    choices: list[Choice]


@dataclass
class Kept:
    """What the engine built for one :class:`Choice`: the gated output, the record (object pointer, scores,
    note; its memory is encoded right after ``remember``) and, when the policy asks for it
    (``keeps_branch_masks``), the video-resolution mask."""

    choice: Choice
    record: FrameRecord
    output: ObjectOutput
    mask: TrackingMask | None = None


@runtime_checkable
class Policy(Protocol):
    """A memory policy as the engine calls it; ``vidtrack.policies.MemoryPolicy`` implements every hook with
    SAM 2.1's behaviour (docs/CUSTOM_POLICY.md lists what each decides)."""

    object_score_threshold: float
    keeps_branch_masks: bool
    box_prompt_as_mask: bool

    def new_object_state(self, object_id: int) -> PolicyState: ...

    def choose_candidate(self, track: ObjectTrack, frame_idx: int, cands: Candidates) -> int: ...

    def frame_metadata(
        self, track: ObjectTrack, frame_idx: int, cands: Candidates, chosen: int
    ) -> FrameNote | None: ...

    def record_stored(self, track: ObjectTrack, rec: FrameRecord) -> None: ...

    def memory_reads(self, track: ObjectTrack, frame_idx: int, max_ptrs: int) -> list[MemoryRead]: ...

    def choose(self, track: ObjectTrack, frame_idx: int, runs: list[DecoderRun], image_size: int) -> Decision: ...

    def remember(
        self, track: ObjectTrack, frame_idx: int, decision: Decision, kept: list[Kept], max_ptrs: int
    ) -> None: ...

    def prune(self, track: ObjectTrack, frame_idx: int) -> None: ...

    def final_masks(self, track: ObjectTrack) -> dict[int, TrackingMask]: ...

    def result_metadata(self) -> dict[str, Any]: ...


PolicyFactory = Callable[..., Policy]
"""Builds a policy: called with ``num_maskmem=``, ``max_obj_ptrs=`` (the model's) and the policy options."""
