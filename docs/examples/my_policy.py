"""An example memory policy written outside vidtrack: SAM 2.1 with a shorter memory.

SAM 2.1 attends to every prompted frame and to the last 6 tracked frames (``num_maskmem - 1``). This policy
keeps the prompted frames and only the last ``window`` tracked frames, e.g. to see how much a tracker leans
on its recent memory. With ``window=6`` it is SAM 2.1 exactly.

Use it without editing vidtrack, with this folder on ``PYTHONPATH``::

    TrackingConfig(policy="my_policy:RecentMemoryPolicy", policy_options={"window": 3})

or pass the class itself: ``TrackingConfig(policy=RecentMemoryPolicy)``.
"""

from __future__ import annotations

from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack
from vidtrack.errors import InputError
from vidtrack.policies import MemoryPolicy


class RecentMemoryPolicy(MemoryPolicy):
    """Prompted frames plus the last ``window`` tracked frames in memory attention."""

    name = "recent-memory"

    def __init__(self, num_maskmem: int = 7, max_obj_ptrs: int = 16, *, window: int = 3) -> None:
        super().__init__(num_maskmem, max_obj_ptrs)
        if not 1 <= window <= num_maskmem - 1:
            raise InputError(f"window must be 1..{num_maskmem - 1}; got {window}")
        self.window = window

    def memory_frames(self, track: ObjectTrack, frame_idx: int) -> list[tuple[int, FrameRecord]]:
        # SAM 2.1's entries: prompted frames in the last slot, then frame t - k in slot k - 1
        entries = super().memory_frames(track, frame_idx)
        return [(slot, rec) for slot, rec in entries if rec.is_cond or slot < self.window]
