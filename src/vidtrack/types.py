"""Results and prompts: the values that cross the public API.

Masks are held as COCO run-length encodings (pycocotools, column-major) and decoded only when asked for,
so a result of 10,000 frames holds 10,000 short byte strings rather than 10,000 dense arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vidtrack.errors import InputError

RLE = dict[str, Any]
"""A COCO RLE: ``{"size": [height, width], "counts": str}`` (compressed counts, as pycocotools writes them)."""


def rle_encode(mask: np.ndarray) -> RLE:
    """Encode a 2-D boolean mask as a COCO RLE with string counts (JSON-ready)."""
    if mask.ndim != 2:
        raise InputError(f"a mask must be 2-D (height, width); got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: RLE) -> np.ndarray:
    """Decode a COCO RLE (string or bytes counts, or uncompressed list counts) to a boolean array."""
    counts = rle["counts"]
    if isinstance(counts, list):
        h, w = rle["size"]
        counts = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"]
    elif isinstance(counts, str):
        counts = counts.encode("ascii")
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def _rle_for_pycocotools(rle: RLE) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


class TrackingMask:
    """One object's mask on one frame.

    ``TrackingMask(mask, confidence, object_id)`` keeps working as the original module had it; the mask is
    encoded at once and decoded again on each access of :attr:`mask`.

    Attributes:
        object_id: the user's id of the object.
        confidence: predicted IoU of the chosen mask (SAM 2 family; 1.0 on a mask-prompted frame) or the
            detection confidence (YOLO).
        visibility: ``sigmoid(object score logit)`` for the SAM 2 family; 1.0 or 0.0 for YOLO.
        occluded: True when the tracker judged the object absent on this frame (SAM 2.1: logit <= 0;
            SAMURAI: logit <= -1). The mask is then empty.
    """

    __slots__ = ("_rle", "confidence", "object_id", "occluded", "visibility")

    def __init__(
        self,
        mask: np.ndarray | None = None,
        confidence: float = 1.0,
        object_id: int = 0,
        *,
        rle: RLE | None = None,
        visibility: float | None = None,
        occluded: bool = False,
    ) -> None:
        if (mask is None) == (rle is None):
            raise InputError("TrackingMask needs exactly one of `mask` (a 2-D array) or `rle`")
        self._rle: RLE = rle_encode(np.asarray(mask).astype(bool)) if mask is not None else dict(rle or {})
        self.confidence = float(confidence)
        self.object_id = int(object_id)
        self.visibility = float(visibility) if visibility is not None else (0.0 if occluded else 1.0)
        self.occluded = bool(occluded)

    @property
    def mask(self) -> np.ndarray:
        """The dense boolean mask (height, width), decoded on each access."""
        return rle_decode(self._rle)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        h, w = self._rle["size"]
        return int(h), int(w)

    @property
    def area(self) -> int:
        return int(mask_utils.area(_rle_for_pycocotools(self._rle)))

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Tight box ``(x, y, w, h)`` in pixels; all zeros for an empty mask."""
        x, y, w, h = mask_utils.toBbox(_rle_for_pycocotools(self._rle)).tolist()
        return float(x), float(y), float(w), float(h)

    def to_rle(self) -> RLE:
        """The COCO RLE ``{"size": [h, w], "counts": str}``, equal to pycocotools' encoding of the mask."""
        return {"size": list(self._rle["size"]), "counts": self._rle["counts"]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "rle": self.to_rle(),
            "bbox": list(self.bbox),
            "area": self.area,
            "confidence": self.confidence,
            "visibility": self.visibility,
            "occluded": self.occluded,
        }

    def __repr__(self) -> str:
        return (
            f"TrackingMask(object_id={self.object_id}, area={self.area}, confidence={self.confidence:.3f}, "
            f"visibility={self.visibility:.3f}, occluded={self.occluded})"
        )


@dataclass
class TrackingFrame:
    """Every tracked object's mask on one frame.

    ``frame_idx`` is the index of the frame in the source (with ``stride`` > 1 these are the source's own
    indices, not positions in the processed sequence). ``processing_time`` is wall seconds spent on this frame
    (all objects); ``timings`` splits it by stage where the engine measures stages.
    """

    frame_idx: int
    masks: list[TrackingMask] = field(default_factory=list)
    occlusions: dict[int, bool] = field(default_factory=dict)
    processing_time: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def mask_for(self, object_id: int) -> TrackingMask | None:
        return next((m for m in self.masks if m.object_id == object_id), None)

    @property
    def object_ids(self) -> list[int]:
        return [m.object_id for m in self.masks]


@dataclass
class TrackingResult:
    """A whole run: frames in frame order plus video size and timing totals."""

    frames: list[TrackingFrame]
    video_width: int
    video_height: int
    total_processing_time: float
    fps: float
    model: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[TrackingFrame]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def object_ids(self) -> list[int]:
        return sorted({m.object_id for f in self.frames for m in f.masks})

    def masks_of(self, object_id: int) -> dict[int, TrackingMask]:
        """frame_idx -> mask for one object."""
        out = {}
        for f in self.frames:
            m = f.mask_for(object_id)
            if m is not None:
                out[f.frame_idx] = m
        return out


def _xyxy(box: Sequence[float], fmt: str) -> tuple[float, float, float, float]:
    """``box`` in format ``fmt`` ("xywh" or "xyxy") as corners (x1, y1, x2, y2)."""
    if fmt not in ("xywh", "xyxy"):
        raise InputError(f"box format must be 'xywh' (x, y, width, height) or 'xyxy' (corners); got {fmt!r}")
    if len(box) != 4:
        raise InputError(f"a box needs 4 numbers; got {len(box)}")
    x1, y1, a, b = (float(v) for v in box)
    return (x1, y1, x1 + a, y1 + b) if fmt == "xywh" else (x1, y1, a, b)


@dataclass(frozen=True)
class Prompt:
    """A prompt for one object on one frame: a mask, or a box and/or points.

    Coordinates are in pixels of the original video frame. The stored ``box`` is ``(x1, y1, x2, y2)``. Every
    constructor that takes a box requires its format by name (``fmt="xywh"`` for ``(x, y, w, h)``, as the CLI and
    prompts.json write it; ``fmt="xyxy"`` for corners, as SAM's predictors take it): there is no default, so a
    box cannot be silently misread when code moves between the two conventions. ``labels`` are 1 (positive) or
    0 (negative).
    """

    frame_idx: int
    object_id: int
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    origin: str | None = field(default=None, compare=False)
    """Where the prompt came from (e.g. a mask file), named in error messages."""

    def at(self, frame_idx: int) -> Prompt:
        """The same prompt on another frame index (e.g. a position in a strided sequence)."""
        return replace(self, frame_idx=frame_idx)

    @classmethod
    def from_mask(cls, frame_idx: int, object_id: int, mask: np.ndarray, origin: str | None = None) -> Prompt:
        return cls(int(frame_idx), int(object_id), mask=np.asarray(mask).astype(bool), origin=origin)

    @classmethod
    def from_box(cls, frame_idx: int, object_id: int, box: Sequence[float], *, fmt: str) -> Prompt:
        """A box prompt; ``fmt`` is required: ``"xywh"`` (x, y, width, height) or ``"xyxy"`` (corners)."""
        return cls(int(frame_idx), int(object_id), box=_xyxy(box, fmt))

    @classmethod
    def from_points(
        cls,
        frame_idx: int,
        object_id: int,
        points: Sequence[Sequence[float]],
        labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
        *,
        box_fmt: str | None = None,
    ) -> Prompt:
        """Points (and optionally a box, whose ``box_fmt`` is then required: ``"xywh"`` or ``"xyxy"``)."""
        pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        lab = np.ones(len(pts), dtype=np.int32) if labels is None else np.asarray(labels, dtype=np.int32)
        if lab.shape != (len(pts),):
            raise InputError(f"got {len(pts)} points but {lab.size} labels; give one label (1 or 0) per point")
        if not np.isin(lab, (0, 1)).all():
            raise InputError("point labels must be 1 (positive) or 0 (negative)")
        if box is not None and box_fmt is None:
            raise InputError("a box given with points needs its format: box_fmt='xywh' or box_fmt='xyxy'")
        b = _xyxy(box, box_fmt) if box is not None and box_fmt is not None else None
        return cls(int(frame_idx), int(object_id), box=b, points=pts, labels=lab)

    @property
    def kind(self) -> str:
        if self.mask is not None:
            return "mask"
        if self.points is not None and len(self.points):
            return "points" if self.box is None else "box+points"
        return "box"

    def validate(self, height: int, width: int, *, source: str = "") -> Prompt:
        """Check this prompt against the frame size; returns it with a partially-outside box clipped.

        Raises :class:`InputError` for a mask of another size, an empty mask, a box or point outside the
        frame, or a prompt with nothing in it.
        """
        where = f" ({self.origin})" if self.origin else (f" ({source})" if source else "")
        tag = f"prompt for object {self.object_id} on frame {self.frame_idx}{where}"
        if self.mask is not None:
            if self.box is not None or self.points is not None:
                raise InputError(f"{tag}: give a mask, or a box/points, not both")
            if self.mask.ndim != 2:
                raise InputError(f"{tag}: mask must be 2-D, got shape {self.mask.shape}")
            if self.mask.shape != (height, width):
                mh, mw = self.mask.shape
                raise InputError(
                    f"{tag}: mask is {mw}x{mh} (WxH) but video frames are {width}x{height}; "
                    "pass a mask of the frame size (or resize it yourself: vidtrack never shifts a mask silently)"
                )
            if not self.mask.any():
                raise InputError(f"{tag}: mask is empty; an object needs at least one foreground pixel")
            return self
        if self.box is None and (self.points is None or len(self.points) == 0):
            raise InputError(f"{tag}: empty prompt; give a mask, a box or points")
        box = self.box
        if box is not None:
            x1, y1, x2, y2 = box
            if not all(math.isfinite(v) for v in box) or x2 <= x1 or y2 <= y1:
                raise InputError(f"{tag}: box {box} must have x2 > x1 and y2 > y1 (format x1,y1,x2,y2)")
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise InputError(f"{tag}: box {box} lies outside the {width}x{height} frame")
            box = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        if self.points is not None and len(self.points):
            p = self.points
            if not np.isfinite(p).all() or (p[:, 0] < 0).any() or (p[:, 1] < 0).any() or (
                p[:, 0] > width
            ).any() or (p[:, 1] > height).any():
                raise InputError(f"{tag}: a point lies outside the {width}x{height} frame")
        return replace(self, box=box) if box != self.box else self
