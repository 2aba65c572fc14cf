"""YOLO11-seg backend (per-frame instance masks through ``ultralytics``, an optional extra)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from vidtrack.errors import DependencyError, VidtrackError

if TYPE_CHECKING:
    from vidtrack.api import TrackingConfig, TrackingModelLoader
    from vidtrack.catalog import ModelSpec


def create_yolo_loader(spec: ModelSpec, config: TrackingConfig) -> TrackingModelLoader:
    if importlib.util.find_spec("ultralytics") is None:
        raise DependencyError(
            f"{spec.name} needs the optional YOLO backend: pip install 'vidtrack[yolo]' (AGPL-3.0 ultralytics)"
        )
    raise VidtrackError(f"{spec.name}: the YOLO11-seg backend is not part of this release yet")
