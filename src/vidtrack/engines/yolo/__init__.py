"""YOLO11-seg backend (per-frame instance masks through ``ultralytics``, an optional AGPL-3.0 extra).

Nothing here imports ultralytics at package import: :func:`create_yolo_loader` only checks that it can be
imported, and :mod:`vidtrack.engines.yolo.runtime` imports it (with the offline switches set) on ``load()``.
The identity layer (:mod:`.identity`) and the fixture generator (:mod:`.synthetic`) need numpy/scipy only.
"""

from __future__ import annotations

from vidtrack.catalog import ModelSpec
from vidtrack.config import TrackingConfig
from vidtrack.engines.yolo.runtime import missing, ultralytics_available
from vidtrack.tracking import TrackingModelLoader


def create_yolo_loader(spec: ModelSpec, config: TrackingConfig) -> TrackingModelLoader:
    """A :class:`~vidtrack.engines.yolo.loader.YoloLoader`, or :class:`DependencyError` saying how to install
    the extra when ultralytics is not importable."""
    if not ultralytics_available():
        raise missing(spec.name)
    from vidtrack.engines.yolo.loader import YoloLoader

    return YoloLoader(spec, config)
