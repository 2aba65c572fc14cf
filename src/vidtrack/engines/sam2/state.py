"""Per-object tracking state: the memory bank, held compactly and pruned after every frame.

What the official predictor keeps per object and frame is a bf16 memory feature map, an object pointer and
two scores; the spatial position encoding of memories is the same for every frame, so it is stored once per
session. Masks are not kept here at all: they are turned into RLE as soon as they are computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the policies import this module, and checking one must not import torch
    import torch


class FrameNote:
    """Base of what a memory policy notes beside one record (SAMURAI: the Kalman score that decides whether
    the frame may enter memory). A policy subclasses it with typed fields."""


class PolicyState:
    """Base of a memory policy's per-object state (one per session and object, never shared). A policy
    subclasses it with typed fields; ``nbytes`` reports tensors it holds outside the bank (SAM2Long's
    pathways), so the bound on state size covers them."""

    def nbytes(self) -> int:
        return 0


@dataclass
class FrameRecord:
    """What one object left in memory on one frame.

    ``maskmem_features`` is None once the frame has fallen out of every window that can still read its
    spatial memory (only the pointer and scores are then kept, for the pointer window).
    """

    frame_idx: int
    is_cond: bool
    obj_ptr: torch.Tensor  # (1, C)
    object_score_logit: float
    iou: float  # predicted IoU of the chosen candidate (1.0 for a mask prompt)
    maskmem_features: torch.Tensor | None = None  # (HW, 1, mem_dim) bf16
    note: FrameNote | None = None  # what the policy noted (e.g. SAMURAI's Kalman score)

    def nbytes(self) -> int:
        n = self.obj_ptr.numel() * self.obj_ptr.element_size()
        if self.maskmem_features is not None:
            n += self.maskmem_features.numel() * self.maskmem_features.element_size()
        return n


@dataclass
class ObjectTrack:
    """One object's memory bank in one session (one direction of propagation)."""

    object_id: int
    cond: dict[int, FrameRecord] = field(default_factory=dict)
    non_cond: dict[int, FrameRecord] = field(default_factory=dict)
    policy_state: PolicyState = field(default_factory=PolicyState)
    reverse: bool = False
    video_size: tuple[int, int] | None = None  # (height, width) of the frames, for policies that work at it

    @property
    def started(self) -> bool:
        return bool(self.cond)

    def record(self, frame_idx: int) -> FrameRecord | None:
        return self.non_cond.get(frame_idx) or self.cond.get(frame_idx)

    def nbytes(self) -> int:
        """Bytes of the bank plus what the policy state holds (SAM2Long keeps its pathways' memories there
        rather than in ``non_cond``)."""
        n = sum(r.nbytes() for r in self.cond.values()) + sum(r.nbytes() for r in self.non_cond.values())
        return n + self.policy_state.nbytes()
