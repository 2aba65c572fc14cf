"""Options of the YOLO11-seg backend, read from ``TrackingConfig.policy_options``.

Kept separate from the loader so option errors are reported (as :class:`InputError`) before ultralytics is
imported, and so the identity layer's knobs and the detector's knobs live in one checked place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from vidtrack.engines.yolo.identity import IdentityOptions
from vidtrack.errors import InputError


@dataclass
class YoloOptions:
    """Detector and identity settings.

    Attributes:
        classes: keep only these class ids (None: all). Also limits which objects auto mode tracks.
        conf: confidence for a detection to count as sure (stage-1 association, new tracks).
        low_conf: detections between ``low_conf`` and ``conf`` only extend objects seen on the previous frame
            (ByteTrack's second stage); the detector is run with this threshold.
        iou: NMS IoU threshold.
        imgsz: network input size (long side, multiple of 32).
        max_det: at most this many detections per frame.
        agnostic_nms: class-agnostic NMS (default: one object is one detection even when the model hesitates
            between classes; class-aware NMS made ids flicker in the reference measurements).
        retina_masks: let ultralytics build masks at frame size (slower at high resolution); otherwise the
            letterboxed masks are un-padded and resized by :func:`vidtrack.engines.yolo.masks.unletterbox`.
        half: FP16 inference (CUDA only).
        max_lost_frames: frames an unseen object is extrapolated before auto-mode tracks are dropped (prompted
            objects are never dropped, only re-attached when unambiguous).
        min_hits: frames a new auto-mode object must be seen before it gets an id.
        mask_weight: weight of mask IoU against box IoU in frame-to-frame association.
        match_thresh: minimum association similarity.
        prompt_iou: minimum IoU between a prompt and the detection it is matched to.
        appearance: compute colour-histogram embeddings for re-attachment after occlusion.
        appearance_thresh: minimum cosine similarity of embeddings to re-attach.
        reattach_distance: re-attachment gate, in object sizes, around the extrapolated position.
    """

    classes: list[int] | None = None
    conf: float = 0.25
    low_conf: float = 0.1
    iou: float = 0.7
    imgsz: int = 640
    max_det: int = 100
    agnostic_nms: bool = True
    retina_masks: bool = False
    half: bool = False
    max_lost_frames: int = 30
    min_hits: int = 2
    mask_weight: float = 0.5
    match_thresh: float = 0.2
    prompt_iou: float = 0.5
    appearance: bool = True
    appearance_thresh: float = 0.75
    reattach_distance: float = 1.5

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> YoloOptions:
        """Build from ``policy_options``; unknown keys and bad values raise :class:`InputError`."""
        known = {f.name for f in fields(cls)}
        opts = dict(options or {})
        unknown = sorted(set(opts) - known)
        if unknown:
            raise InputError(f"unknown YOLO option(s) {unknown}; known: {', '.join(sorted(known))}")
        out = cls(**opts)
        out.validate()
        return out

    def validate(self) -> None:
        if self.classes is not None:
            if isinstance(self.classes, int):
                self.classes = [self.classes]
            if not isinstance(self.classes, Sequence) or not all(
                isinstance(c, int) and c >= 0 for c in self.classes
            ):
                raise InputError(f"classes must be a list of non-negative class ids; got {self.classes!r}")
            self.classes = [int(c) for c in self.classes]
        for name in ("conf", "low_conf", "iou", "mask_weight", "match_thresh", "prompt_iou", "appearance_thresh"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                raise InputError(f"{name} must be a number in [0, 1]; got {v!r}")
        if self.low_conf > self.conf:
            raise InputError(f"low_conf ({self.low_conf}) must not exceed conf ({self.conf})")
        if not isinstance(self.imgsz, int) or self.imgsz < 32 or self.imgsz % 32:
            raise InputError(f"imgsz must be a multiple of 32 (>= 32); got {self.imgsz!r}")
        for name in ("max_det", "min_hits"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        if not isinstance(self.max_lost_frames, int) or self.max_lost_frames < 0:
            raise InputError(f"max_lost_frames must be an integer >= 0; got {self.max_lost_frames!r}")
        if not isinstance(self.reattach_distance, int | float) or self.reattach_distance <= 0:
            raise InputError(f"reattach_distance must be > 0; got {self.reattach_distance!r}")

    def identity_options(self) -> IdentityOptions:
        return IdentityOptions(
            high_conf=self.conf,
            low_conf=self.low_conf,
            new_track_conf=self.conf,
            match_thresh=self.match_thresh,
            mask_weight=self.mask_weight,
            max_lost_frames=self.max_lost_frames,
            min_hits=self.min_hits,
            prompt_iou=self.prompt_iou,
            appearance_thresh=self.appearance_thresh,
            reattach_distance=self.reattach_distance,
        )

    def predict_kwargs(self) -> dict[str, Any]:
        """Arguments for ``YOLO.predict``; fixed for a whole video (changing predictor keys rebuilds it)."""
        return {
            "conf": self.low_conf,
            "iou": self.iou,
            "imgsz": self.imgsz,
            "max_det": self.max_det,
            "classes": self.classes,
            "agnostic_nms": self.agnostic_nms,
            "retina_masks": self.retina_masks,
            "half": self.half,
            "verbose": False,
            "save": False,
        }
