"""The memory-policy interface: the hooks through which SAMURAI and SAM2Long change SAM 2.1.

The engine owns the model calls and the memory bank: it gates masks, builds object pointers and records and
encodes memories. A policy decides, per object, through typed hooks (the types are in
:mod:`vidtrack.engines.sam2.contract`):

* which memories each hypothesis reads on a tracked frame (``memory_reads``; by default one read made of
  ``memory_frames`` with their temporal slots and ``pointer_frames``),
* which (read, candidate) pairs survive, the output first (``choose``; by default the one read's candidate
  picked by ``choose_candidate``, also used on prompted frames),
* the object-present gate (``object_score_threshold``: SAM 2.1 uses logit > 0, SAMURAI > -1),
* what it notes beside each record (``frame_metadata``, a typed :class:`FrameNote`),
* where the survivors' records go (``remember``; by default the object's bank, then ``record_stored``),
* which records may be forgotten (``prune``), so memory stays bounded at any video length,
* the masks it revises once the video ends (``final_masks``, non-causal policies).

Multi-hypothesis policies (SAM2Long) return several reads; the engine batches the reads of all objects
through memory attention and the decoder, and every survivor through the memory encoder.

Policy state is a typed :class:`PolicyState` in ``ObjectTrack.policy_state`` (created by
``new_object_state``), i.e. per (session, object): nothing is shared between objects or videos.

A policy is any subclass of :class:`MemoryPolicy`; ``TrackingConfig.policy`` takes one by name, as a class or
factory, or as an import path ``"package.module:Factory"`` (docs/examples/my_policy.py).
"""

from __future__ import annotations

from typing import Any

from vidtrack.engines.sam2.contract import Candidates, Choice, Decision, DecoderRun, Kept, MemoryRead
from vidtrack.engines.sam2.state import FrameNote, FrameRecord, ObjectTrack, PolicyState
from vidtrack.types import TrackingMask


class MemoryPolicy:
    """Vanilla SAM 2.1 behaviour; subclasses override the hooks they change."""

    name = "vanilla"
    object_score_threshold: float = 0.0

    def __init__(self, num_maskmem: int = 7, max_obj_ptrs: int = 16) -> None:
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs

    # --- state ---------------------------------------------------------------------------------------------
    def new_object_state(self, object_id: int) -> PolicyState:
        return PolicyState()

    # --- per-frame choices ---------------------------------------------------------------------------------
    def choose_candidate(self, track: ObjectTrack, frame_idx: int, cands: Candidates) -> int:
        """Index of the candidate to output and memorise: argmax predicted IoU."""
        return int(cands.ious.argmax().item()) if cands.multimask else 0

    def frame_metadata(self, track: ObjectTrack, frame_idx: int, cands: Candidates, chosen: int) -> FrameNote | None:
        """What to keep beside this frame's record (read back in ``record_stored``, ``prune``...)."""
        return None

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

    # --- one tracked frame -----------------------------------------------------------------------------------
    def memory_reads(self, track: ObjectTrack, frame_idx: int, max_ptrs: int) -> list[MemoryRead]:
        """The memory reads (hypotheses) to run for this object on a tracked frame: by default one, made of
        :meth:`memory_frames` and :meth:`pointer_frames`. The engine batches all reads of all objects."""
        return [MemoryRead(self.memory_frames(track, frame_idx), self.pointer_frames(track, frame_idx, max_ptrs))]

    def choose(self, track: ObjectTrack, frame_idx: int, runs: list[DecoderRun], image_size: int) -> Decision:
        """Which (read, candidate) pairs survive this frame, the output first; ``runs`` are the decoder runs of
        :meth:`memory_reads`, in order. Default: the single read's candidate from :meth:`choose_candidate`."""
        cands = Candidates.of_run(runs[0], image_size)
        k = self.choose_candidate(track, frame_idx, cands)
        return Decision([Choice(0, k, note=self.frame_metadata(track, frame_idx, cands, k))])

    keeps_branch_masks: bool = False
    """Whether :meth:`remember` wants every survivor's video-resolution mask (``Kept.mask``)."""

    box_prompt_as_mask: bool = False
    """Whether a box-only prompt is first turned into a mask prompt (one single-mask decoder pass, upsampled to
    the video and thresholded), as DAM4SAM's official tracker initialises from a box."""

    def remember(
        self, track: ObjectTrack, frame_idx: int, decision: Decision, kept: list[Kept], max_ptrs: int
    ) -> None:
        """File the survivors' records (built by the engine, one per choice of ``decision``; their memories are
        encoded right after). Default: the output's record enters the object's bank."""
        rec = kept[0].record
        track.non_cond[frame_idx] = rec
        self.record_stored(track, rec)

    def final_masks(self, track: ObjectTrack) -> dict[int, TrackingMask]:
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
