"""COCO-RLE JSON (``rle-json``, what ``vidtrack track`` writes by default) and JSON Lines (``rle-jsonl``).

``rle-json`` layout (one document)::

    {"frames": [{"frame_idx": 0, "processing_time": s,
                 "objects": [{"object_id": 1, "rle": {"size": [H, W], "counts": "..."},
                              "bbox": [x, y, w, h], "area": n, "confidence": c,
                              "visibility": v, "occluded": false}, ...]}, ...],
     "info": {"format": "vidtrack-rle-json", "version": 1, "model": ..., "width": W, "height": H,
              "num_frames": n, "object_ids": [...], "total_processing_time": s, "fps": f, ...}}

``info`` comes after ``frames`` because the writer streams: the frame count, the object ids and the timing
totals are known only at the end. (Files of the first release put ``info`` first; JSON key order carries no
meaning and :func:`read_rle_json` reads both.) ``info["fps"]`` is processing throughput (frames per second of
compute), as it always was; the video frame rate, when known, is ``info["video_fps"]``.

``rle-jsonl`` is one JSON object per line, one line per object per frame, every line the same shape::

    {"frame_idx": 0, "object_id": 1, "rle": {...}, "bbox": [x, y, w, h], "area": n, "confidence": c,
     "visibility": v, "occluded": false}

so it loads straight into ``pandas.read_json(lines=True)`` or ``jq``, and can be read while still growing.
Frames without objects have no line.

RLEs are pycocotools' compressed strings (column-major), equal to
``pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.export.atomic import AtomicFile
from vidtrack.export.base import Writer, json_ready
from vidtrack.types import RLE, TrackingFrame, TrackingMask, TrackingResult

FORMAT = "vidtrack-rle-json"
_SEP = (",", ":")


def result_info(result: TrackingResult, **info: Any) -> dict[str, Any]:
    """The ``info`` fields a whole result contributes (model, timing, scalar metadata), plus ``info``."""
    return {
        "model": result.model,
        "total_processing_time": result.total_processing_time,
        "fps": result.fps,
        **json_ready(result.metadata),
        **info,
    }


def result_to_dict(result: TrackingResult, **info: Any) -> dict[str, Any]:
    """The whole ``rle-json`` document as a dict (for callers that want it in memory)."""
    return {
        "info": {
            "format": FORMAT,
            "version": 1,
            "width": result.video_width,
            "height": result.video_height,
            "num_frames": len(result.frames),
            "object_ids": result.object_ids,
            **result_info(result, **info),
        },
        "frames": [_frame_record(f) for f in result.frames],
    }


def _frame_record(f: TrackingFrame) -> dict[str, Any]:
    return {"frame_idx": int(f.frame_idx), "processing_time": float(f.processing_time),
            "objects": [m.to_dict() for m in f.masks]}


class RleJsonWriter(Writer):
    """``rle-json``: streams each frame's record into the temporary file as it arrives.

    Options:
        info: extra ``info`` fields (``model``, ``source``...); they override the computed ones, so a caller
            holding a whole result can pass its exact ``total_processing_time`` and ``fps``.
    """

    format = "rle-json"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None,
                 info: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self._info = dict(info or {})
        self._out = AtomicFile(self.path)
        self._out.file.write('{"frames":[')
        self._ids: set[int] = set()
        self._time = 0.0

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        sep = "," if self.frames_written else ""
        self._out.file.write(sep + json.dumps(_frame_record(frame), separators=_SEP))
        self._out.file.flush()  # to the OS frame by frame: Python's text buffer stays empty, memory flat
        self._ids.update(frame.object_ids)
        self._time += float(frame.processing_time)

    def _finish(self) -> None:
        info: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "model": "",
            "width": self.width,
            "height": self.height,
            "num_frames": self.frames_written,
            "object_ids": sorted(self._ids),
            "total_processing_time": self._time,
            "fps": self.frames_written / self._time if self._time > 0 else 0.0,
        }
        if self.fps is not None:
            info["video_fps"] = self.fps
        info.update(self._info)
        self._out.file.write('],"info":' + json.dumps(info, separators=_SEP) + "}\n")
        self._out.commit()

    def _discard(self) -> None:
        self._out.abort()


class RleJsonlWriter(Writer):
    """``rle-jsonl``: one line per object per frame, appended as frames arrive."""

    format = "rle-jsonl"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None) -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self._out = AtomicFile(self.path)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        lines = [json.dumps({"frame_idx": int(frame.frame_idx), **m.to_dict()}, separators=_SEP) + "\n"
                 for m in frame.masks]
        self._out.file.write("".join(lines))
        self._out.file.flush()  # readable while it grows (tail -f), and Python's text buffer stays empty

    def _finish(self) -> None:
        self._out.commit()

    def _discard(self) -> None:
        self._out.abort()


def write_rle_json(result: TrackingResult, path: str | Path, **info: Any) -> Path:
    """Write a whole result as ``rle-json``, atomically; returns the path. ``info`` adds fields to ``info``."""
    with RleJsonWriter(path, width=result.video_width, height=result.video_height,
                       info=result_info(result, **info)) as w:
        for f in result.frames:
            w.write(f)
    return Path(path)


def write_rle_jsonl(result: TrackingResult, path: str | Path) -> Path:
    """Write a whole result as ``rle-jsonl``, atomically; returns the path."""
    with RleJsonlWriter(path, width=result.video_width, height=result.video_height) as w:
        for f in result.frames:
            w.write(f)
    return Path(path)


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def _mask_from_record(o: Mapping[str, Any]) -> TrackingMask:
    occluded = bool(o.get("occluded", False))
    vis = o.get("visibility")
    conf = o.get("confidence", 1.0)
    return TrackingMask(rle=normalize_rle(o["rle"]), confidence=1.0 if conf is None else float(conf),
                        object_id=int(o["object_id"]), visibility=None if vis is None else float(vis),
                        occluded=occluded)


def normalize_rle(rle: Mapping[str, Any]) -> RLE:
    """Any COCO RLE (compressed str/bytes or uncompressed list counts) -> ``{"size", "counts": str}``."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        counts = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise TypeError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    return {"size": [h, w], "counts": counts}


def result_from_dict(data: Mapping[str, Any]) -> TrackingResult:
    """An ``rle-json`` document (already parsed) -> :class:`TrackingResult`."""
    info = data["info"]
    frames = []
    for fr in data["frames"]:
        masks = [_mask_from_record(o) for o in fr["objects"]]
        frames.append(TrackingFrame(frame_idx=int(fr["frame_idx"]), masks=masks,
                                    occlusions={m.object_id: m.occluded for m in masks},
                                    processing_time=float(fr.get("processing_time", 0.0))))
    meta = {k: v for k, v in info.items() if k not in _CORE_INFO}
    return TrackingResult(frames, int(info["width"]), int(info["height"]),
                          float(info.get("total_processing_time", 0.0)), float(info.get("fps", 0.0)),
                          model=str(info.get("model", "")), metadata=meta)


_CORE_INFO = {"format", "version", "model", "width", "height", "num_frames", "object_ids",
              "total_processing_time", "fps"}


def read_rle_json(path: str | Path) -> TrackingResult:
    """Read an ``rle-json`` file (from :func:`write_rle_json` or :class:`RleJsonWriter`)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return result_from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read RLE JSON {path}: {type(e).__name__}: {e}") from None


def iter_rle_jsonl(path: str | Path) -> Iterator[TrackingFrame]:
    """Stream an ``rle-jsonl`` file as frames (consecutive lines of one ``frame_idx`` form a frame).

    Reads one line at a time, so a file of any length is read in flat memory.
    """
    current: TrackingFrame | None = None
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    idx = int(rec["frame_idx"])
                    m = _mask_from_record(rec)
                except (ValueError, KeyError, TypeError) as e:
                    raise InputError(f"cannot read {path} line {lineno}: {type(e).__name__}: {e}") from None
                if current is not None and idx != current.frame_idx:
                    yield current
                    current = None
                if current is None:
                    current = TrackingFrame(idx)
                current.masks.append(m)
                current.occlusions[m.object_id] = m.occluded
    except OSError as e:
        raise InputError(f"cannot read RLE JSON Lines {path}: {e.strerror or e}") from None
    if current is not None:
        yield current


def read_rle_jsonl(path: str | Path, *, width: int | None = None, height: int | None = None) -> TrackingResult:
    """Read an ``rle-jsonl`` file; the frame size comes from the RLEs unless given."""
    frames = list(iter_rle_jsonl(path))
    if width is None or height is None:
        sizes = {m.size for f in frames for m in f.masks}
        if not sizes:
            raise InputError(f"{path} holds no masks, so its frame size is unknown; pass width= and height=")
        if len(sizes) > 1:
            raise InputError(f"{path} mixes mask sizes {sorted(sizes)}; one file must hold one video")
        height, width = sizes.pop()
    return TrackingResult(frames, int(width), int(height), 0.0, 0.0)
