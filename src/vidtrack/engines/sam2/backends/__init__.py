"""Model families the SAM 2 engine drives, one :class:`Backend` each (docs/BACKENDS.md).

:func:`backend_for` picks the backend from the model's ``config.model_type``; :func:`register_backend` adds a
family (a backend module registers itself when imported; the built-in ones are imported lazily so that using
one family never imports another's code).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from vidtrack.engines.sam2.backends.base import Backend

__all__ = ["Backend", "backend_for", "register_backend"]

_REGISTRY: dict[str, type[Backend]] = {t: Backend for t in Backend.model_types}

_BUILT_IN = {
    "edgetam_video": "vidtrack.engines.sam2.backends.edgetam",
    "sam3_tracker_video": "vidtrack.engines.sam2.backends.sam3_tracker",
}
"""model_type -> the module that registers its backend (imported on first use)."""


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make ``cls`` the backend of every ``model_type`` it lists (usable as a class decorator)."""
    for t in cls.model_types:
        _REGISTRY[t] = cls
    return cls


def backend_class(model_type: str) -> type[Backend]:
    cls = _REGISTRY.get(model_type)
    if cls is None and model_type in _BUILT_IN:
        importlib.import_module(_BUILT_IN[model_type])
        cls = _REGISTRY.get(model_type)
    if cls is None:
        known = ", ".join(sorted(set(_REGISTRY) | set(_BUILT_IN)))
        raise ValueError(f"no tracking backend for model_type {model_type!r}; known: {known}")
    return cls


def backend_for(model: Any, device: torch.device) -> Backend:
    """The backend that drives ``model`` (a transformers video model) on ``device``."""
    return backend_class(str(model.config.model_type))(model, device)
