"""An annotated H.264 MP4 (``overlay-mp4``): the video with coloured masks, ids and optionally boxes and scores.

Made to play in a browser as written: H.264 (libx264) in MP4, ``yuv420p``, the ``moov`` index moved to the
front (``movflags=+faststart``) so playback starts before the download ends. 4:2:0 needs even dimensions and
libx264 refuses odd ones, so an odd width or height is padded by one black column or row at the right or
bottom (never rescaled: the masks stay pixel-aligned with the picture). The decoded video is therefore
``(W + W % 2) x (H + H % 2)``.

Colours are each object's DAVIS palette colour (the same as in ``davis-png``): masks are blended in with
``alpha`` and outlined in full colour; overlaps are drawn lowest id on top, as ``davis-png`` resolves them.

Atomicity: PyAV writes a hidden temporary file beside the target (``+faststart`` rewrites it at the end),
which is renamed onto the target in :meth:`close`.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidtrack.errors import InputError
from vidtrack.export.atomic import AtomicFile
from vidtrack.export.base import Writer, object_color, paint_order
from vidtrack.types import TrackingFrame

DEFAULT_FPS = 30.0


def _edge(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside ``m`` (a 1-px inner outline)."""
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def _font(height: int) -> Any:
    size = max(10, min(48, height // 28))
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError, TypeError):  # no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_overlay(image: np.ndarray, frame: TrackingFrame, *, alpha: float = 0.5, boxes: bool = True,
                   labels: bool = True, scores: bool = False, font: Any = None) -> np.ndarray:
    """Draw ``frame``'s masks on an RGB ``image`` (HxWx3 uint8); returns a new array of the same size."""
    out = np.array(image, dtype=np.uint8, copy=True)
    present = [m for m in paint_order(frame.masks, "lowest-id") if m.area]
    for m in present:
        mask = m.mask
        rgb = np.array(object_color(m.object_id), np.float32)
        region = out[mask].astype(np.float32)
        out[mask] = (region * (1.0 - alpha) + rgb * alpha + 0.5).astype(np.uint8)
        out[_edge(mask)] = rgb.astype(np.uint8)
    if not present or not (boxes or labels):
        return out
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    font = font if font is not None else _font(out.shape[0])
    for m in reversed(present):  # lowest id last, on top
        color = object_color(m.object_id)
        x, y, w, h = m.bbox
        if boxes:
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=color, width=max(1, out.shape[0] // 240))
        if labels:
            text = f"{m.object_id}" + (f" {m.confidence:.2f}" if scores else "")
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 4, bottom - top + 4
            ty = y - th if y - th >= 0 else y
            draw.rectangle((x, ty, x + tw, ty + th), fill=color)
            draw.text((x + 2 - left, ty + 2 - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


class OverlayMp4Writer(Writer):
    """``overlay-mp4`` writer; :meth:`write` needs the RGB video frame as ``image``.

    Options:
        fps: frame rate of the output (default the source's, else 30).
        alpha: mask opacity (0..1, default 0.5).
        boxes, labels, scores: draw boxes (default on), id labels (on), confidences in the labels (off).
        crf, preset: libx264 quality (default 20) and speed (``veryfast``).
    """

    format = "overlay-mp4"
    needs_images = True

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None, alpha: float = 0.5,
                 boxes: bool = True, labels: bool = True, scores: bool = False, crf: int = 20,
                 preset: str = "veryfast") -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"overlay-mp4: alpha must be in 0..1; got {alpha}")
        self.alpha, self.boxes, self.labels, self.scores = float(alpha), bool(boxes), bool(labels), bool(scores)
        self.out_width, self.out_height = self.width + self.width % 2, self.height + self.height % 2
        self._font = _font(self.height)
        self._file = AtomicFile(self.path, open_file=False)
        rate = Fraction(self.fps or DEFAULT_FPS).limit_denominator(1001)
        try:
            self._container: Any = av.open(str(self._file.tmp_path), mode="w", format="mp4",
                                           options={"movflags": "+faststart"})
            self._stream: Any = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = self.out_width, self.out_height
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(int(crf)), "preset": str(preset)}
        except Exception:
            self._discard()
            raise

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        assert image is not None  # checked by Writer.write
        drawn = render_overlay(image, frame, alpha=self.alpha, boxes=self.boxes, labels=self.labels,
                               scores=self.scores, font=self._font)
        if drawn.shape[:2] != (self.out_height, self.out_width):
            drawn = np.pad(drawn, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)))
        vf = av.VideoFrame.from_ndarray(drawn, format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def _finish(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._file.commit()

    def _discard(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):  # a half-set-up muxer may fail on its trailer; the file goes
                container.close()
        self._file.abort()
