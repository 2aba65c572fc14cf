"""SAM 2.1's own memory policy: argmax-IoU candidate, logit > 0 gate, the last 6 frames plus every prompted
frame in memory, pointers from the last 15 frames. All of it is the base class's behaviour."""

from __future__ import annotations

from vidtrack.policies.base import MemoryPolicy


class VanillaPolicy(MemoryPolicy):
    name = "vanilla"
