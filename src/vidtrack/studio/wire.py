"""What the page receives: masks as uncompressed column-major runs, which a few lines of JavaScript paint.

COCO's compressed RLE string is a variable-length code that would need a decoder in the page; uncompressed
runs (``[zeros, ones, zeros, ...]`` over the mask read column by column, as COCO defines them) are a list of
integers proportional to the mask's outline, a few hundred numbers for a typical object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vidtrack.studio.project import hex_color
from vidtrack.types import TrackingFrame, TrackingMask


def mask_runs(mask: np.ndarray) -> list[int]:
    """COCO uncompressed counts of a boolean mask: run lengths over the column-major pixels, zeros first."""
    flat = np.asarray(mask, dtype=np.int8).ravel(order="F")
    if flat.size == 0:
        return []
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0, *runs] if flat[0] else runs)


def mask_json(m: TrackingMask, *, with_runs: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"object_id": m.object_id, "color": hex_color(m.object_id), "area": m.area,
                           "bbox": list(m.bbox), "confidence": round(m.confidence, 4),
                           "visibility": round(m.visibility, 4), "occluded": m.occluded}
    if with_runs:
        out["runs"] = mask_runs(m.mask)
    return out


def frame_json(frame: TrackingFrame | None, frame_idx: int) -> dict[str, Any]:
    """``{"frame_idx", "masks": [...]}``; an untracked frame has no masks."""
    masks = [] if frame is None else [mask_json(m) for m in frame.masks]
    return {"frame_idx": frame_idx, "masks": masks}
