"""Per-object tracking state: the memory bank, held compactly and pruned after every frame.

What the official predictor keeps per object and frame is a bf16 memory feature map, an object pointer and
two scores; the spatial position encoding of memories is the same for every frame, so it is stored once per
session. Masks are not kept here at all: they are turned into RLE as soon as they are computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


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
    meta: dict[str, Any] = field(default_factory=dict)  # policy metadata (e.g. SAMURAI's kf_score)

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
    policy_state: Any = None
    reverse: bool = False

    @property
    def started(self) -> bool:
        return bool(self.cond)

    def record(self, frame_idx: int) -> FrameRecord | None:
        return self.non_cond.get(frame_idx) or self.cond.get(frame_idx)

    def nbytes(self) -> int:
        """Bytes of the bank, plus what the policy state holds when it reports it (``policy_state.nbytes()``:
        SAM2Long keeps its pathways' memories there rather than in ``non_cond``)."""
        n = sum(r.nbytes() for r in self.cond.values()) + sum(r.nbytes() for r in self.non_cond.values())
        extra = getattr(self.policy_state, "nbytes", None)
        return n + (int(extra()) if callable(extra) else 0)
