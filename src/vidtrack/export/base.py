"""What every writer shares: the streaming ``write``/``close`` protocol, frame checks, the DAVIS palette,
the overlap rule and object-id remapping.

Writers are streaming: ``write(frame)`` puts the frame on disk (or in a per-object spool file) at once, so
memory stays flat however long the video is; ``close()`` commits the output atomically (see
:mod:`vidtrack.export.atomic`). Used as a context manager, a writer commits on a clean exit and discards its
staged output when the block raises, so a failed export never replaces a good one.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.types import TrackingFrame, TrackingMask

OVERLAP_RULES = ("lowest-id", "highest-score")
"""How formats that hold one label per pixel (DAVIS palette PNG, MOTS) resolve pixels claimed by several objects.

* ``lowest-id`` (default): the object with the smallest id wins, as in SAM 2's ``tools/vos_inference.py``
  (``put_per_obj_mask`` paints ids in descending order), so our PNGs equal SAM 2's for the same masks.
* ``highest-score``: the object with the higher ``confidence`` wins; ties go to the smaller id.
"""


def davis_palette() -> bytes:
    """The standard DAVIS palette (PASCAL VOC bit-interleaved colour map), 256 RGB triples = 768 bytes.

    Same bytes as ``davis2017.utils.color_map`` and SAM 2's ``DAVIS_PALETTE``: index 1 is (128, 0, 0), 2 is
    (0, 128, 0), 3 is (128, 128, 0), ...
    """
    out = bytearray()
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += bytes((r, g, b))
    return bytes(out)


DAVIS_PALETTE = davis_palette()


def object_color(object_id: int) -> tuple[int, int, int]:
    """Display colour of an object: its DAVIS palette entry (ids 1..255), so overlays match the PNGs."""
    idx = object_id if 1 <= object_id <= 255 else (object_id % 255) + 1
    return DAVIS_PALETTE[3 * idx], DAVIS_PALETTE[3 * idx + 1], DAVIS_PALETTE[3 * idx + 2]


def save_palette_png(path: Path, index: np.ndarray) -> None:
    """Write a uint8 index image as a mode-``P`` PNG with the DAVIS palette."""
    h, w = index.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(index, dtype=np.uint8).tobytes())
    img.putpalette(DAVIS_PALETTE)
    img.save(path, format="PNG", compress_level=1)


def check_overlap(rule: str) -> str:
    if rule not in OVERLAP_RULES:
        raise InputError(f"unknown overlap rule {rule!r}; use one of {', '.join(OVERLAP_RULES)}")
    return rule


def paint_order(masks: Sequence[TrackingMask], rule: str) -> list[TrackingMask]:
    """Masks in painting order: each later mask overwrites the earlier ones, so the winner comes last."""
    if rule == "lowest-id":
        return sorted(masks, key=lambda m: -m.object_id)
    return sorted(masks, key=lambda m: (_score(m), -m.object_id))


def _score(m: TrackingMask) -> float:
    return m.confidence if math.isfinite(m.confidence) else -math.inf


def label_map(masks: Sequence[TrackingMask], height: int, width: int, rule: str,
              label_of: Callable[[TrackingMask], int], dtype: type = np.uint8) -> np.ndarray:
    """One label per pixel (0 = background), overlaps resolved by ``rule``."""
    out: np.ndarray = np.zeros((height, width), dtype=dtype)
    for m in paint_order(masks, rule):
        if m.area:
            out[m.mask] = label_of(m)
    return out


class IdMapper:
    """Object id -> label for formats with a limited label range (palette index 1..254, MOTS instance 0..999).

    Direct (default): the label is the object id, which must lie in ``[low, high]``. Remapped: labels
    ``low, low+1, ...`` in order of first appearance, at most ``high - low + 1`` objects.
    """

    def __init__(self, low: int, high: int, *, remap: bool, what: str, hint: str) -> None:
        self.low, self.high, self.remap = low, high, remap
        self.what, self.hint = what, hint
        self.labels: dict[int, int] = {}

    def __call__(self, object_id: int) -> int:
        label = self.labels.get(object_id)
        if label is not None:
            return label
        if self.remap:
            label = self.low + len(self.labels)
            if label > self.high:
                raise InputError(f"{self.what} holds at most {self.high - self.low + 1} objects; this result has "
                                 f"more. {self.hint}")
        else:
            if not self.low <= object_id <= self.high:
                raise InputError(f"object id {object_id} does not fit {self.what} (ids {self.low}..{self.high}); "
                                 "renumber with remap_ids=True (CLI: --remap-ids)")
            label = object_id
        self.labels[object_id] = label
        return label


class Writer(ABC):
    """A streaming, atomic writer of one export format.

    Call :meth:`write` once per frame in increasing ``frame_idx`` order (gaps allowed, e.g. with a stride),
    then :meth:`close` to commit. Nothing appears under ``path`` before ``close`` returns.

    Args:
        path: the output file or folder.
        width, height: the video frame size; every mask must be this size.
        fps: frame rate of the video (frames written per second of video), used by formats that need it.
    """

    format: ClassVar[str] = ""
    needs_images: ClassVar[bool] = False
    """True when :meth:`write` needs the video frame (the overlay MP4)."""

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise InputError(f"{self.format}: width and height must be positive; got {width}x{height}")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise InputError(f"{self.format}: fps must be a positive number; got {fps}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = float(fps) if fps is not None else None
        self.frames_written = 0
        self._last_idx: int | None = None
        self._closed = False

    # -- protocol -----------------------------------------------------------------------------------------

    def write(self, frame: TrackingFrame, image: np.ndarray | None = None) -> None:
        """Write one frame's masks (and, for the overlay, the RGB video frame ``image``, HxWx3 uint8)."""
        if self._closed:
            raise InputError(f"{self.format} writer for {self.path} is closed")
        self._check_frame(frame)
        if image is not None or self.needs_images:
            image = self._check_image(image, frame.frame_idx)
        try:
            self._write(frame, image)
        except BaseException:
            self.abort()
            raise
        self._last_idx = frame.frame_idx
        self.frames_written += 1

    def close(self) -> Path:
        """Finish and commit atomically; returns the output path. Idempotent."""
        if self._closed:
            return self.path
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard everything staged; the final path keeps what it had before. Idempotent."""
        if not self._closed:
            self._closed = True
            self._discard()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- for subclasses -----------------------------------------------------------------------------------

    @abstractmethod
    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None: ...

    @abstractmethod
    def _finish(self) -> None:
        """Write trailers and commit the staged output."""

    @abstractmethod
    def _discard(self) -> None:
        """Remove the staged output."""

    @classmethod
    def option_names(cls) -> list[str]:
        """Keyword options this writer takes besides path/width/height/fps."""
        params = inspect.signature(cls.__init__).parameters
        return [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n not in ("width", "height", "fps")]

    def _check_frame(self, frame: TrackingFrame) -> None:
        idx = frame.frame_idx
        if not isinstance(idx, int | np.integer) or idx < 0:
            raise InputError(f"{self.format}: frame_idx must be a non-negative integer; got {idx!r}")
        if self._last_idx is not None and idx <= self._last_idx:
            raise InputError(f"{self.format}: frames must be written in increasing frame order; got frame {idx} "
                             f"after frame {self._last_idx}")
        seen: set[int] = set()
        for m in frame.masks:
            if m.object_id in seen:
                raise InputError(f"{self.format}: object {m.object_id} appears twice on frame {idx}")
            seen.add(m.object_id)
            if m.size != (self.height, self.width):
                h, w = m.size
                raise InputError(f"{self.format}: mask of object {m.object_id} on frame {idx} is {w}x{h} (WxH) but "
                                 f"the video is {self.width}x{self.height}")

    def _check_image(self, image: np.ndarray | None, idx: int) -> np.ndarray:
        if image is None:
            raise InputError(f"{self.format} draws on the video frames: pass image= to write() (or source= to "
                             "export_result; CLI: --source VIDEO)")
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"{self.format}: frame {idx} must be an HxWx3 uint8 RGB array; got {arr.dtype} "
                             f"{arr.shape}")
        if arr.shape[:2] != (self.height, self.width):
            raise InputError(f"{self.format}: video frame {idx} is {arr.shape[1]}x{arr.shape[0]} but the masks are "
                             f"{self.width}x{self.height}; is it the video the result was tracked on?")
        return arr


def frame_file_stem(pattern: str, frame_idx: int) -> str:
    """``"{:05d}"`` -> ``00042``; refuses patterns that would leave the folder."""
    try:
        stem = pattern.format(frame_idx)
    except (IndexError, KeyError, ValueError) as e:
        raise InputError(f"frame name pattern {pattern!r} is not usable ({e}); use e.g. '{{:05d}}'") from None
    if not stem or "/" in stem or "\\" in stem or stem in (".", ".."):
        raise InputError(f"frame name pattern {pattern!r} gives {stem!r}, which is not a plain file name")
    return stem


def json_ready(options: dict[str, Any]) -> dict[str, Any]:
    """Keep only JSON scalar values (metadata may hold anything)."""
    return {k: v for k, v in options.items() if isinstance(v, str | int | float | bool | None)}
