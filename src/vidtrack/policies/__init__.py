"""Memory policies: SAM 2.1 (vanilla), SAMURAI and SAM2Long as small objects behind the engine's hooks."""

from __future__ import annotations

from typing import Any

from vidtrack.errors import InputError
from vidtrack.policies.base import Candidates, MemoryPolicy
from vidtrack.policies.sam2long import Sam2LongPolicy
from vidtrack.policies.samurai import SamuraiPolicy
from vidtrack.policies.vanilla import VanillaPolicy

POLICIES: dict[str, type[MemoryPolicy]] = {
    "vanilla": VanillaPolicy,
    "samurai": SamuraiPolicy,
    "sam2long": Sam2LongPolicy,
}


def make_policy(name: str, **options: Any) -> MemoryPolicy:
    """Build a policy by name; other issues register ``samurai`` and ``sam2long`` here."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise InputError(f"unknown memory policy {name!r}; available: {', '.join(sorted(POLICIES))}") from None
    return cls(**options)


__all__ = ["POLICIES", "Candidates", "MemoryPolicy", "Sam2LongPolicy", "SamuraiPolicy", "VanillaPolicy", "make_policy"]
