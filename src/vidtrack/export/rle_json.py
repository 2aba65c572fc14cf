"""COCO-RLE JSON: every frame, every object, with scores; what ``vidtrack track`` writes by default.

Layout::

    {"info": {"format": "vidtrack-rle-json", "version": 1, "model": ..., "width": W, "height": H, ...},
     "frames": [{"frame_idx": 0, "processing_time": s,
                 "objects": [{"object_id": 1, "rle": {"size": [H, W], "counts": "..."},
                              "bbox": [x, y, w, h], "area": n, "confidence": c,
                              "visibility": v, "occluded": false}, ...]}, ...]}

RLEs are pycocotools' compressed strings (column-major), readable by ``pycocotools.mask.decode``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidtrack.errors import InputError
from vidtrack.export.atomic import atomic_write
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

FORMAT = "vidtrack-rle-json"


def result_to_dict(result: TrackingResult, **info: Any) -> dict[str, Any]:
    return {
        "info": {
            "format": FORMAT,
            "version": 1,
            "model": result.model,
            "width": result.video_width,
            "height": result.video_height,
            "num_frames": len(result.frames),
            "object_ids": result.object_ids,
            "total_processing_time": result.total_processing_time,
            "fps": result.fps,
            **{k: v for k, v in result.metadata.items() if isinstance(v, str | int | float | bool | None)},
            **info,
        },
        "frames": [
            {
                "frame_idx": f.frame_idx,
                "processing_time": f.processing_time,
                "objects": [m.to_dict() for m in f.masks],
            }
            for f in result.frames
        ],
    }


def write_rle_json(result: TrackingResult, path: str | Path, **info: Any) -> Path:
    """Write atomically; returns the path."""
    with atomic_write(path) as f:
        json.dump(result_to_dict(result, **info), f, separators=(",", ":"))
    return Path(path)


def read_rle_json(path: str | Path) -> TrackingResult:
    """Read a file written by :func:`write_rle_json` back into a :class:`TrackingResult`."""
    try:
        data = json.loads(Path(path).read_text())
        info = data["info"]
        frames = [
            TrackingFrame(
                frame_idx=int(fr["frame_idx"]),
                masks=[
                    TrackingMask(rle=o["rle"], confidence=o["confidence"], object_id=o["object_id"],
                                 visibility=o["visibility"], occluded=o["occluded"])
                    for o in fr["objects"]
                ],
                occlusions={int(o["object_id"]): bool(o["occluded"]) for o in fr["objects"]},
                processing_time=float(fr.get("processing_time", 0.0)),
            )
            for fr in data["frames"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read RLE JSON {path}: {type(e).__name__}: {e}") from None
    return TrackingResult(frames, int(info["width"]), int(info["height"]),
                          float(info.get("total_processing_time", 0.0)), float(info.get("fps", 0.0)),
                          model=str(info.get("model", "")))
