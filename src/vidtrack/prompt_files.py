"""Prompts from files and command-line strings: mask PNGs, boxes, points and prompts.json.

A palette PNG with several indices means several objects (DAVIS convention: index = object id, 0 =
background, 255 = void and ignored). A greyscale/RGB PNG is one object: every non-zero pixel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.label_png import label_masks, read_label_png
from vidtrack.types import Prompt, rle_decode


def read_mask_png(path: str | Path) -> dict[int, np.ndarray]:
    """object id -> boolean mask. Palette (mode P) PNGs give one mask per non-zero index except 255 (void);
    any other PNG is one object, id 1 (rules: :mod:`vidtrack.label_png`)."""
    return label_masks(read_label_png(path, non_palette="one-object"))


def frame_from_filename(path: str | Path) -> int | None:
    """``00005.png`` -> 5 (DAVIS/SA-V prompt files are named by frame)."""
    stem = Path(path).stem
    return int(stem) if re.fullmatch(r"\d+", stem) else None


def mask_prompts(path: str | Path, frame_idx: int | None = None, object_id: int | None = None) -> list[Prompt]:
    masks = read_mask_png(path)
    if not masks:
        raise InputError(f"mask {path} is empty: no object pixels (palette index > 0 or non-zero grey)")
    frame = frame_idx if frame_idx is not None else (frame_from_filename(path) or 0)
    if object_id is not None:
        if len(masks) != 1:
            raise InputError(f"mask {path} holds {len(masks)} objects; --object-id needs a single-object mask")
        return [Prompt.from_mask(frame, object_id, next(iter(masks.values())), origin=str(path))]
    return [Prompt.from_mask(frame, oid, m, origin=str(path)) for oid, m in sorted(masks.items())]


def _numbers(text: str, n: int | None, what: str) -> list[float]:
    try:
        vals = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError:
        raise InputError(f"cannot parse {what} {text!r}: expected numbers separated by commas") from None
    if n is not None and len(vals) != n:
        raise InputError(f"{what} {text!r} needs {n} numbers, got {len(vals)}")
    return vals


def parse_box(text: str, frame_idx: int, object_id: int) -> Prompt:
    """``x,y,w,h`` in pixels (LaSOT/GOT convention)."""
    x, y, w, h = _numbers(text, 4, "box")
    if w <= 0 or h <= 0:
        raise InputError(f"box {text!r} must have positive width and height (format x,y,w,h)")
    return Prompt.from_box(frame_idx, object_id, (x, y, w, h), fmt="xywh")


def parse_points(text: str, frame_idx: int, object_id: int) -> Prompt:
    """``x,y[,label];x,y[,label];...`` with label 1 (positive, default) or 0 (negative)."""
    pts, labels = [], []
    for part in text.split(";"):
        if not part.strip():
            continue
        vals = _numbers(part, None, "point")
        if len(vals) not in (2, 3):
            raise InputError(f"point {part!r} must be x,y or x,y,label")
        pts.append(vals[:2])
        labels.append(int(vals[2]) if len(vals) == 3 else 1)
    if not pts:
        raise InputError(f"no points in {text!r}")
    return Prompt.from_points(frame_idx, object_id, pts, labels)


def load_prompts_json(path: str | Path) -> list[Prompt]:
    """A JSON list of prompts, each ``{"frame": F, "object_id": K, <one of>}``:

    * ``"mask": "file.png"`` (relative to the JSON file; a multi-object palette PNG without ``object_id``
      gives one prompt per index),
    * ``"rle": {"size": [H, W], "counts": ...}``,
    * ``"box": [x, y, w, h]`` (or ``"box_xyxy": [x1, y1, x2, y2]``), optionally with
    * ``"points": [[x, y], ...], "labels": [1, 0, ...]``.
    """
    p = Path(path)
    try:
        items: Any = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read prompts file {p}: {e}") from None
    if isinstance(items, dict):
        items = items.get("prompts", [])
    if not isinstance(items, list):
        raise InputError(f"prompts file {p} must hold a list of prompts")
    out: list[Prompt] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "frame" not in it:
            raise InputError(f"prompt #{i} in {p} needs at least a 'frame' key")
        frame = int(it["frame"])
        oid = it.get("object_id")
        if "mask" in it:
            out += mask_prompts(p.parent / it["mask"], frame, None if oid is None else int(oid))
            continue
        if oid is None:
            raise InputError(f"prompt #{i} in {p} needs an 'object_id'")
        oid = int(oid)
        if "rle" in it:
            out.append(Prompt.from_mask(frame, oid, rle_decode(it["rle"])))
            continue
        box: list[float] | None = None
        fmt = "xywh"
        if "box" in it:
            box = [float(v) for v in it["box"]]
        elif "box_xyxy" in it:
            box, fmt = [float(v) for v in it["box_xyxy"]], "xyxy"
        if "points" in it:
            out.append(Prompt.from_points(frame, oid, it["points"], it.get("labels"), box=box, box_fmt=fmt))
        elif box is not None:
            out.append(Prompt.from_box(frame, oid, box, fmt=fmt))
        else:
            raise InputError(f"prompt #{i} in {p} has no mask, rle, box or points")
    return out
