"""``supervision.Detections`` per frame, for the Roboflow/Ultralytics ecosystem (optional ``supervision``).

Each object with a non-empty mask becomes one detection: ``mask`` (N, H, W) bool, ``xyxy`` the tight box in
continuous pixel coordinates (``x, y, x + w, y + h`` of the COCO box: the right/bottom edges are exclusive),
``confidence``, ``tracker_id`` = object id and ``class_id`` (0 unless given), plus ``data["visibility"]`` and
``data["occluded"]``. So ``sv.MaskAnnotator(color_lookup=sv.ColorLookup.TRACK)`` colours by object. Note that
supervision's video helpers yield BGR frames while vidtrack uses RGB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vidtrack.errors import DependencyError
from vidtrack.types import TrackingFrame, TrackingResult


def _supervision() -> Any:
    try:
        import supervision
    except ImportError:
        raise DependencyError("supervision is not installed; pip install supervision") from None
    return supervision


def to_detections(frame: TrackingFrame, *, height: int | None = None, width: int | None = None,
                  class_ids: Mapping[int, int] | None = None, include_empty: bool = False) -> Any:
    """One frame as ``supervision.Detections``.

    Args:
        height, width: the frame size, needed only to shape the mask array of a frame without objects.
        class_ids: object id -> class id (default 0 for every object).
        include_empty: keep objects whose mask is empty (absent/occluded) as zero-size detections.
    """
    sv = _supervision()
    masks = [m for m in sorted(frame.masks, key=lambda m: m.object_id) if include_empty or m.area]
    if not masks:
        shape = (0, height or 0, width or 0)
        return sv.Detections(xyxy=np.zeros((0, 4), np.float32), mask=np.zeros(shape, bool),
                             confidence=np.zeros(0, np.float32), class_id=np.zeros(0, int),
                             tracker_id=np.zeros(0, int))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (m.bbox for m in masks)], np.float32)
    return sv.Detections(
        xyxy=boxes,
        mask=np.stack([m.mask for m in masks]),
        confidence=np.array([m.confidence for m in masks], np.float32),
        class_id=np.array([(class_ids or {}).get(m.object_id, 0) for m in masks], int),
        tracker_id=np.array([m.object_id for m in masks], int),
        data={"visibility": np.array([m.visibility for m in masks], np.float32),
              "occluded": np.array([m.occluded for m in masks], bool)},
    )


def iter_detections(result: TrackingResult, **options: Any) -> Iterator[tuple[int, Any]]:
    """``(frame_idx, Detections)`` for every frame of a result, decoded one frame at a time."""
    for f in result.frames:
        yield f.frame_idx, to_detections(f, height=result.video_height, width=result.video_width, **options)
