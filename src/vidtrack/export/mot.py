"""Text formats of the tracking benchmarks: MOTS masks (``mots-txt``), MOT boxes (``mot-txt``) and single-object
boxes (``box-txt``).

``mots-txt`` (MOTS Challenge / KITTI MOTS, read by TrackEval and CVAT), one line per object per frame::

    time_frame obj_id class_id img_height img_width rle

* ``obj_id = class_id * 1000 + instance`` (the MOTS convention; 10000 is an ignore region, never written).
  The instance is our object id, so ids must be 0..999 (or pass ``remap_ids=True``: instances 1, 2, ... in
  order of first appearance). ``class_id`` defaults to 2, "pedestrian" in both MOTS Challenge and KITTI MOTS,
  the class TrackEval evaluates by default; pass ``class_id=1`` for KITTI cars.
* Non-overlapping by construction: MOTS evaluators reject overlapping masks, so each frame is first turned into
  one label per pixel with the same rule as ``davis-png`` (:data:`OVERLAP_RULES`, default ``lowest-id``),
  then each object's remaining pixels are encoded. Objects left empty get no line.
* ``time_frame`` is 1-based by default (MOTS Challenge: TrackEval reads timestep ``t`` as ``str(t + 1)``);
  ``frame_base=0`` writes the 0-based frames of KITTI MOTS.
* ``rle`` is the pycocotools compressed counts string.

``mot-txt`` (MOTChallenge, TrackEval, motmetrics, CVAT), one line per object per frame where its mask is not
empty: ``frame,id,x,y,w,h,conf,-1,-1,-1`` with 1-based ``frame`` (``frame_idx + 1``), the tight box of the mask
(top-left, width, height in pixels) and ``conf`` the object's confidence.

``box-txt`` (LaSOT, GOT-10k, TrackingNet, pytracking/SAMURAI scripts): one ``x,y,w,h`` line per written frame
for a single object. A frame where the object is absent or its mask is empty gets ``0,0,0,0``: pytracking
raises on NaN but replaces a zero-size prediction with the previous box, and LaSOT marks absent targets the
same way. ``absent="nan"`` writes ``nan,nan,nan,nan`` instead (got10k-toolkit skips NaN rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from vidtrack.errors import InputError
from vidtrack.export.atomic import AtomicFile
from vidtrack.export.base import IdMapper, Writer, check_overlap, paint_order
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult, rle_encode

IGNORE_ID = 10000


def _num(v: float) -> str:
    """Integers without a decimal point (mask boxes are whole pixels), other values to 0.01 px."""
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


class MotsTxtWriter(Writer):
    """``mots-txt`` writer.

    Options:
        class_id: the MOTS class of every object (default 2, pedestrian).
        overlap: ``lowest-id`` (default) or ``highest-score``.
        frame_base: 1 (MOTS Challenge, default) or 0 (KITTI MOTS).
        remap_ids: number instances 1..N by first appearance (needed for ids outside 0..999).
    """

    format = "mots-txt"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None, class_id: int = 2,
                 overlap: str = "lowest-id", frame_base: int = 1, remap_ids: bool = False) -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        if not 1 <= int(class_id) <= 9:
            raise InputError(f"mots-txt: class_id must be 1..9 (obj_id = class_id*1000 + instance); got {class_id}")
        if frame_base not in (0, 1):
            raise InputError(f"mots-txt: frame_base must be 0 or 1; got {frame_base}")
        self.class_id, self.frame_base = int(class_id), int(frame_base)
        self.overlap = check_overlap(overlap)
        self.ids = IdMapper(1 if remap_ids else 0, 999, remap=remap_ids, what="a MOTS instance number",
                            hint="MOTS ids hold 999 instances per class.")
        self._out = AtomicFile(self.path)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        masks = [m for m in frame.masks if m.area]
        for m in masks:
            self.ids(m.object_id)
        order = paint_order(masks, self.overlap)
        labels = np.zeros((self.height, self.width), np.int32)
        for k, m in enumerate(order, 1):
            labels[m.mask] = k
        t = frame.frame_idx + self.frame_base
        lines = []
        for k, m in sorted(enumerate(order, 1), key=lambda km: km[1].object_id):
            own = labels == k
            n = int(own.sum())
            if not n:
                continue
            counts = m.to_rle()["counts"] if n == m.area else rle_encode(own)["counts"]  # untouched: reuse
            obj = self.class_id * 1000 + self.ids(m.object_id)
            lines.append(f"{t} {obj} {self.class_id} {self.height} {self.width} {counts}\n")
        self._out.file.write("".join(lines))
        self._out.file.flush()  # frame by frame to the OS: Python's text buffer stays empty

    def _finish(self) -> None:
        self._out.commit()

    def _discard(self) -> None:
        self._out.abort()


class MotTxtWriter(Writer):
    """``mot-txt`` writer: ``frame,id,x,y,w,h,conf,-1,-1,-1`` with 1-based frames."""

    format = "mot-txt"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None) -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self._out = AtomicFile(self.path)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        lines = []
        for m in sorted(frame.masks, key=lambda m: m.object_id):
            if not m.area:
                continue
            x, y, w, h = m.bbox
            lines.append(f"{frame.frame_idx + 1},{m.object_id},{_num(x)},{_num(y)},{_num(w)},{_num(h)},"
                         f"{m.confidence:.4f},-1,-1,-1\n")
        self._out.file.write("".join(lines))
        self._out.file.flush()

    def _finish(self) -> None:
        self._out.commit()

    def _discard(self) -> None:
        self._out.abort()


class BoxTxtWriter(Writer):
    """``box-txt`` writer: one ``x,y,w,h`` line per frame for one object.

    Options:
        object_id: the object to write; None (default) means the only object of the result (a second object
            appearing raises :class:`InputError`).
        absent: ``zeros`` (default, ``0,0,0,0``) or ``nan``, for frames where the object has no mask.
    """

    format = "box-txt"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None,
                 object_id: int | None = None, absent: str = "zeros") -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        if absent not in ("zeros", "nan"):
            raise InputError(f"box-txt: absent must be 'zeros' or 'nan'; got {absent!r}")
        self.object_id = object_id
        self._fixed = object_id is not None
        self._absent = "0,0,0,0\n" if absent == "zeros" else "nan,nan,nan,nan\n"
        self._out = AtomicFile(self.path)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        if not self._fixed:
            for oid in frame.object_ids:
                if self.object_id is None:
                    self.object_id = oid
                elif oid != self.object_id:
                    raise InputError(f"box-txt holds one object but the result has objects {self.object_id} and "
                                     f"{oid}; pass object_id= (CLI: --object-id), or use mot-txt")
        m = frame.mask_for(self.object_id) if self.object_id is not None else None
        if m is None or not m.area:
            self._out.file.write(self._absent)
        else:
            self._out.file.write(",".join(_num(v) for v in m.bbox) + "\n")
        self._out.file.flush()

    def _finish(self) -> None:
        self._out.commit()

    def _discard(self) -> None:
        self._out.abort()


def read_mots_txt(path: str | Path, *, frame_base: int = 1) -> TrackingResult:
    """Read a MOTS txt file. Object ids are the instance numbers (``obj_id % 1000``) when every class shares
    one instance range without clashes, else the full ``obj_id``; ignore regions (10000) are skipped. Only
    frames with at least one line appear."""
    frames: dict[int, TrackingFrame] = {}
    size: tuple[int, int] | None = None
    try:
        with open(path, encoding="utf-8") as fh:
            rows = []
            for lineno, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 6:
                    raise InputError(f"{path} line {lineno}: expected 'time_frame obj_id class_id height width rle'")
                t, obj, _cls, h, w = (int(v) for v in parts[:5])
                if obj == IGNORE_ID:
                    continue
                if size is None:
                    size = (h, w)
                elif (h, w) != size:
                    raise InputError(f"{path} line {lineno}: size {w}x{h} differs from {size[1]}x{size[0]}")
                rows.append((t - frame_base, obj, parts[5]))
    except OSError as e:
        raise InputError(f"cannot read MOTS txt {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise InputError(f"cannot read MOTS txt {path}: {e}") from None
    if size is None:
        raise InputError(f"{path} holds no masks")
    pairs = {(t, obj % 1000) for t, obj, _ in rows}
    short = len(pairs) == len({(t, obj) for t, obj, _ in rows})
    for t, obj, counts in rows:
        oid = obj % 1000 if short else obj
        rle = {"size": [size[0], size[1]], "counts": counts}
        try:
            mask_utils.area({"size": rle["size"], "counts": counts.encode("ascii")})
        except Exception as e:  # pycocotools raises plain exceptions on corrupt strings
            raise InputError(f"{path}: corrupt RLE for object {obj} on frame {t}: {e}") from None
        fr = frames.setdefault(t, TrackingFrame(t))
        fr.masks.append(TrackingMask(rle=rle, object_id=oid))
        fr.occlusions[oid] = False
    ordered = [frames[t] for t in sorted(frames)]
    for fr in ordered:
        fr.masks.sort(key=lambda m: m.object_id)
    return TrackingResult(ordered, size[1], size[0], 0.0, 0.0)
