"""The memory-policy interface: the hooks through which SAMURAI and SAM2Long change SAM 2.1.

The engine owns the model calls and the memory bank; a policy decides, per object:

* which of the decoder's candidate masks becomes the output (``choose_candidate``),
* the object-present gate (``object_score_threshold``: SAM 2.1 uses logit > 0, SAMURAI > -1),
* which past frames enter memory attention and with which temporal slot (``memory_frames``),
* which past frames contribute object pointers (``pointer_frames``),
* per-frame metadata kept beside each memory (``frame_metadata``),
* which records may be forgotten (``prune``), so memory stays bounded at any video length.

Multi-hypothesis policies (SAM2Long) ask for several memory reads per object (``memory_reads``), get every
read's decoder output back in ``track_frame`` (the engine batches the reads of all objects through memory
attention and the decoder, and the records to memorise through the memory encoder), and may revise their
outputs once the video ends (``final_masks``). The defaults (None / nothing) leave the engine's own
single-hypothesis step, so vanilla SAM 2.1 and SAMURAI never go through these hooks.

Policy state lives in ``ObjectTrack.policy_state`` (created by ``new_object_state``), i.e. per (session,
object): nothing is shared between objects or videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack

if TYPE_CHECKING:
    from vidtrack.engines.sam2.engine import (
        DecoderRun,
        ImageFeatures,
        MemoryRead,
        ObjectOutput,
        Sam2Session,
        StepTimings,
    )
    from vidtrack.types import TrackingMask


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


class MemoryPolicy:
    """Vanilla SAM 2.1 behaviour; subclasses override the hooks they change."""

    name = "vanilla"
    object_score_threshold: float = 0.0

    def __init__(self, num_maskmem: int = 7, max_obj_ptrs: int = 16) -> None:
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs

    # --- state ---------------------------------------------------------------------------------------------
    def new_object_state(self, object_id: int) -> Any:
        return None

    # --- per-frame choices ---------------------------------------------------------------------------------
    def choose_candidate(self, track: ObjectTrack, frame_idx: int, cands: Candidates) -> int:
        """Index of the candidate to output and memorise: argmax predicted IoU."""
        return int(torch.argmax(cands.ious).item()) if cands.multimask else 0

    def frame_metadata(self, track: ObjectTrack, frame_idx: int, cands: Candidates, chosen: int) -> dict[str, Any]:
        return {}

    def record_stored(self, track: ObjectTrack, rec: FrameRecord) -> None:
        """Called once the frame's record is in the bank (e.g. to admit it to a running memory window)."""

    # --- memory read ---------------------------------------------------------------------------------------
    def memory_frames(self, track: ObjectTrack, frame_idx: int) -> list[tuple[int, FrameRecord]]:
        """(temporal slot, record) pairs for memory attention.

        Slot ``num_maskmem - 1`` marks a conditioning (prompted) frame; slot ``k - 1`` marks the frame k
        steps back in the direction of propagation (``memory_temporal_positional_encoding[slot]``).
        """
        out = [(self.num_maskmem - 1, r) for r in track.cond.values()]
        sign = -1 if track.reverse else 1
        for k in range(self.num_maskmem - 1, 0, -1):  # oldest first, like the official loop
            rec = track.non_cond.get(frame_idx - sign * k)
            if rec is not None and rec.maskmem_features is not None:
                out.append((k - 1, rec))
        return out

    def pointer_frames(
        self, track: ObjectTrack, frame_idx: int, max_ptrs: int
    ) -> list[tuple[int, FrameRecord]]:
        """(signed temporal distance, record) pairs whose object pointers enter memory attention.

        Conditioning frames in the past (in the direction of propagation), then up to ``max_ptrs - 1``
        previous non-conditioning frames.
        """
        sign = -1 if track.reverse else 1
        out = [
            ((frame_idx - t) * sign, r)
            for t, r in track.cond.items()
            if (t >= frame_idx if track.reverse else t <= frame_idx)
        ]
        for k in range(1, max_ptrs):
            t = frame_idx - sign * k
            if t < 0:
                break
            rec = track.non_cond.get(t)
            if rec is not None:
                out.append((k, rec))
        return out

    # --- whole-step override (multi-hypothesis policies) ---------------------------------------------------
    def memory_reads(self, session: Sam2Session, track: ObjectTrack, frame_idx: int) -> list[MemoryRead] | None:
        """The memory reads (hypotheses) to run for this object on a tracked frame. None (the default) is the
        engine's single read from :meth:`memory_frames` / :meth:`pointer_frames`; a list hands the decoder runs
        of every read to :meth:`track_frame`. The engine batches all reads of all objects of a frame."""
        return None

    def track_frame(
        self, session: Sam2Session, track: ObjectTrack, frame_idx: int, feats: ImageFeatures,
        runs: list[DecoderRun], timings: StepTimings,
    ) -> tuple[ObjectOutput, list[tuple[FrameRecord, torch.Tensor]]]:
        """Turn the decoder runs of :meth:`memory_reads` into this frame's output and the records to memorise,
        as (record, low-res mask logits) pairs; the engine encodes their memories in one batch and sets
        ``maskmem_features``. Only called when :meth:`memory_reads` returned a list."""
        raise NotImplementedError(f"{type(self).__name__}.memory_reads returned reads but track_frame is missing")

    def final_masks(self, session: Sam2Session, track: ObjectTrack) -> dict[int, TrackingMask]:
        """After the last frame: frame index -> mask replacing what was streamed for this object (non-causal
        policies). Default: nothing is revised."""
        return {}

    def result_metadata(self) -> dict[str, Any]:
        """Extra ``TrackingResult.metadata`` entries describing how the policy produced its masks."""
        return {}

    # --- forgetting ----------------------------------------------------------------------------------------
    def prune(self, track: ObjectTrack, frame_idx: int) -> None:
        """Drop what no future frame can read: spatial memories beyond the memory window and records beyond
        the pointer window. Conditioning frames are kept (every later frame attends to them)."""
        sign = -1 if track.reverse else 1
        horizon = max(self.max_obj_ptrs - 1, self.num_maskmem - 1)
        for t in list(track.non_cond):
            age = (frame_idx - t) * sign  # 0 = this frame; the next frame sees it at distance age + 1
            if age + 1 > horizon:
                del track.non_cond[t]
            elif age + 1 > self.num_maskmem - 1:
                track.non_cond[t].maskmem_features = None
