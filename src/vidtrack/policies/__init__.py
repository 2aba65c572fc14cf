"""Memory policies: SAM 2.1 (vanilla), SAMURAI and SAM2Long as small objects behind the engine's hooks.

A policy is chosen by ``TrackingConfig.policy`` (default: the one the model name implies), given as a
built-in name, a :class:`MemoryPolicy` subclass or any factory returning one, or an import path
``"package.module:Factory"`` (a user's own policy, no edit to this package; docs/CUSTOM_POLICY.md).
"""

from __future__ import annotations

import importlib
from typing import Any

from vidtrack.engines.sam2.contract import Candidates, Policy, PolicyFactory
from vidtrack.errors import InputError
from vidtrack.policies.base import MemoryPolicy
from vidtrack.policies.dam4sam import Dam4SamPolicy
from vidtrack.policies.sam2long import Sam2LongPolicy
from vidtrack.policies.samurai import SamuraiPolicy
from vidtrack.policies.vanilla import VanillaPolicy

POLICIES: dict[str, type[MemoryPolicy]] = {
    "vanilla": VanillaPolicy,
    "samurai": SamuraiPolicy,
    "sam2long": Sam2LongPolicy,
    "dam4sam": Dam4SamPolicy,
}
"""The built-in policies by name (what the catalogue's model names imply)."""


def resolve_policy(policy: str | PolicyFactory) -> PolicyFactory:
    """A factory for a built-in name, an import path ``"package.module:Factory"`` or a factory itself.

    Raises :class:`InputError` (one line, what to pass instead) for an unknown name, a module that cannot be
    imported, a missing attribute or something that cannot be called.
    """
    if not isinstance(policy, str):
        if not callable(policy):
            raise InputError(f"policy must be a name, an import path or a callable; got {policy!r}")
        return policy
    if policy in POLICIES:
        return POLICIES[policy]
    module_name, sep, attr = policy.partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"unknown memory policy {policy!r}; use one of {', '.join(sorted(POLICIES))} or an "
                         "import path package.module:Factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import policy module {module_name!r} ({e}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise InputError(f"policy module {module_name!r} has no callable {attr!r}")
    return factory


def make_policy(policy: str | PolicyFactory, **options: Any) -> Policy:
    """Build a policy from a name, import path or factory with the given options."""
    return check_policy(resolve_policy(policy)(**options), policy)


def check_policy(built: object, made_by: object) -> Policy:
    """``built`` if it has every hook of the engine's :class:`Policy` (a ``MemoryPolicy`` subclass does)."""
    if not isinstance(built, Policy):
        raise InputError(f"policy {made_by!r} built a {type(built).__name__}, not a memory policy (subclass "
                         "vidtrack.policies.MemoryPolicy)")
    return built


__all__ = ["POLICIES", "Candidates", "Dam4SamPolicy", "MemoryPolicy", "Policy", "PolicyFactory", "Sam2LongPolicy",
           "SamuraiPolicy", "VanillaPolicy", "check_policy", "make_policy", "resolve_policy"]
