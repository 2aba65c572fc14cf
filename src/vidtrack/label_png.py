"""The one reader of mask PNGs: prompt masks (``--mask``), DAVIS / SA-V folders read back, evaluation ground truth.

Rules, the same for every caller:

* **Palette** (``P``) and 1-bit (``1``) PNGs are read as their indices: pixel value = object id, 0 = background.
  Index 255 is DAVIS's *void* (unlabelled border): :func:`label_masks` skips it unless told otherwise.
* **Other modes** depend on what the file is expected to hold (``non_palette``):

  - ``"ids"`` (ground truth of a VOS benchmark): greyscale ``L`` and 16-bit ``I;16`` values are object ids,
    except an ``L`` image whose only values are 0 and 255, which is DAVIS-2016 binary ground truth where 255
    is *the object*: it is read as ids 0/1 (the DAVIS-2017 toolkit reads such a file as all void, which is
    wrong for DAVIS-2016). Colour images are refused: colours are not ids.
  - ``"one-object"`` (a prompt mask, another tool's output): any non-palette image is one object, id 1:
    every pixel with a non-zero grey or colour channel (an alpha channel is ignored).

* A size check (``size=``) raises a one-line :class:`~vidtrack.errors.InputError` naming the file and both
  sizes; unreadable files raise :class:`~vidtrack.errors.InputError` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from vidtrack.errors import InputError

__all__ = ["VOID", "NonPalette", "label_masks", "open_png", "read_label_png", "read_object_png"]

VOID = 255
"""DAVIS's void label in palette PNGs (ignored by the DAVIS evaluator, never an object)."""

NonPalette = Literal["ids", "one-object"]

_INT_MODES = ("I", "I;16", "I;16B", "I;16L")


def open_png(path: str | Path) -> Image.Image:
    """Open and decode an image, or raise :class:`InputError` naming the file."""
    p = Path(path)
    try:
        img = Image.open(p)
        img.load()
    except FileNotFoundError:
        raise InputError(f"mask file not found: {p}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read mask {p}: {e}") from None
    return img


def _nonzero(img: Image.Image) -> np.ndarray:
    """Pixels with a non-zero grey or colour channel (alpha ignored), as uint8 0/1."""
    arr = np.asarray(img)
    if arr.ndim == 3:
        if img.mode in ("LA", "La"):
            arr = arr[..., :1]
        elif img.mode in ("RGBA", "RGBa", "RGBX"):
            arr = arr[..., :3]
        return np.asarray(arr.any(axis=-1), dtype=np.uint8)
    return np.asarray(arr != 0, dtype=np.uint8)


def read_label_png(path: str | Path, *, non_palette: NonPalette = "ids",
                   size: tuple[int, int] | None = None, size_of: str = "the other masks") -> np.ndarray:
    """A label map (``uint8``, or ``int32`` for 16-bit ids) from a mask PNG; see the module docstring.

    Args:
        path: the PNG.
        non_palette: how a non-palette image is read: ``"ids"`` (ground truth) or ``"one-object"``.
        size: expected ``(height, width)``; a different size raises :class:`InputError`.
        size_of: what ``size`` is the size of, for that error ("the other masks", "the video").
    """
    p = Path(path)
    img = open_png(p)
    labels: np.ndarray
    if img.mode in ("P", "1"):
        labels = np.asarray(img).astype(np.uint8)
    elif non_palette == "one-object":
        labels = _nonzero(img)
    elif img.mode == "L":
        labels = np.asarray(img)
        values = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
        if values.size and set(values.tolist()) <= {0, 255} and 255 in values:
            labels = (labels == 255).view(np.uint8)  # DAVIS-2016 binary ground truth: 255 is the object
    elif img.mode in _INT_MODES:
        labels = np.asarray(img).astype(np.int32)
    else:
        raise InputError(
            f"{p} is a {img.mode} image; label masks must be palette (P) or greyscale PNGs whose values are object "
            "ids (convert colour masks to a palette PNG)"
        )
    if size is not None and labels.shape != tuple(size):
        raise InputError(f"{p} is {labels.shape[1]}x{labels.shape[0]} but {size_of} are {size[1]}x{size[0]} (WxH)")
    return labels


def read_object_png(path: str | Path, *, size: tuple[int, int] | None = None,
                    size_of: str = "the other masks") -> np.ndarray:
    """A boolean mask from a per-object PNG (SA-V ``<video>/<obj>/<frame>.png``) of any mode: every non-zero
    pixel (palette index, grey value or colour) is the object."""
    return read_label_png(path, non_palette="one-object", size=size, size_of=size_of) > 0


def label_masks(labels: np.ndarray, *, void: int | None = VOID) -> dict[int, np.ndarray]:
    """object id -> boolean mask for every non-zero label except ``void`` (``None``: 255 is an object too)."""
    ids = [int(v) for v in np.unique(labels) if v != 0 and v != void]
    return {i: labels == i for i in ids}
