"""Small readers and writers for evaluation data: DAVIS palette PNGs, SA-V per-object PNGs, box text files.

* A **label PNG** is one frame of a DAVIS-style folder: pixel value = object id, 0 = background, read by
  :func:`vidtrack.label_png.read_label_png` with ``non_palette="ids"``: palette (``P``) PNGs as their indices;
  DAVIS-2016 ground truth (8-bit greyscale 0/255, where 255 is *the object*, not void) as ids 0/1; other
  ``L``/``I;16`` images as ids; colour images refused (colours are not ids). See docs/EVALUATION.md.
* A **per-object PNG** (SA-V ``<video>/<obj>/<frame>.png``) is binary: every non-zero pixel is the object
  (:func:`vidtrack.label_png.read_object_png`).
* Written label PNGs use the DAVIS/PASCAL-VOC palette; overlapping masks are resolved with the lowest id on
  top, as SAM 2's ``vos_inference.py`` does (it paints ids in descending order).
* **Box files** hold one ``x,y,w,h`` row per frame, separated by commas, tabs or spaces (OTB mixes them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.export.atomic import atomic_write
from vidtrack.export.base import davis_palette  # one palette for writing and scoring
from vidtrack.label_png import read_label_png, read_object_png  # the one mask-PNG reader, re-exported

__all__ = [
    "compose_labels",
    "davis_palette",
    "read_boxes",
    "read_flags",
    "read_label_png",
    "read_object_png",
    "write_boxes",
    "write_label_png",
]


def compose_labels(masks: Mapping[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Label map from per-object masks; where masks overlap the lowest id wins (SAM 2 / DAVIS export)."""
    ids = sorted(masks)
    if ids and (ids[0] < 0 or ids[-1] > 65535):
        raise InputError(f"object ids must be in 0..65535 for a label map; got {ids[0]}..{ids[-1]}")
    out = np.zeros(shape, dtype=np.uint8 if not ids or ids[-1] < 256 else np.int32)
    for oid in reversed(ids):
        m = np.asarray(masks[oid], dtype=bool)
        if m.shape != tuple(shape):
            raise InputError(f"mask of object {oid} is {m.shape[1]}x{m.shape[0]} but the frame is "
                             f"{shape[1]}x{shape[0]} (WxH)")
        out[m] = oid
    return out


def write_label_png(path: str | Path, labels: np.ndarray) -> Path:
    """Write a DAVIS palette PNG (ids 0..255) atomically."""
    if labels.size and int(labels.max()) > 255:
        raise InputError(f"a palette PNG holds ids up to 255; got {int(labels.max())} (use the per-object layout)")
    img = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    img.putpalette(list(davis_palette()))
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return Path(path)


_SPLIT = re.compile(r"[,\s]+")


def read_boxes(path: str | Path) -> np.ndarray:
    """``(N, 4)`` float64 boxes ``x, y, w, h`` from a text file (comma, tab or space separated; ``nan`` kept)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read box file {p}: {e}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            vals = [float(v) for v in _SPLIT.split(text) if v]
        except ValueError:
            raise InputError(f"{p}:{n}: expected 4 numbers x,y,w,h; got {text!r}") from None
        if len(vals) != 4:
            raise InputError(f"{p}:{n}: expected 4 numbers x,y,w,h; got {len(vals)}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def read_flags(path: str | Path) -> np.ndarray:
    """Integer per-frame flags (LaSOT ``full_occlusion.txt``/``out_of_view.txt`` are one comma-separated line;
    GOT-10k ``absence.label``/``cover.label`` are one value per line)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"cannot read flag file {p}: {e}") from None
    try:
        return np.asarray([int(float(v)) for v in _SPLIT.split(text.strip()) if v], dtype=np.int64)
    except ValueError:
        raise InputError(f"{p}: expected integer flags separated by commas or new lines") from None


def write_boxes(path: str | Path, boxes: np.ndarray) -> Path:
    """One ``x,y,w,h`` line per frame (LaSOT / GOT-10k / TrackingNet result format), written atomically."""
    with atomic_write(path) as f:
        for row in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            f.write(",".join(f"{v:.10g}" for v in row) + "\n")
    return Path(path)
