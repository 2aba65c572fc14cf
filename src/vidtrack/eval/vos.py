"""Video object segmentation metrics: J (region), F (boundary), J&F, recall and decay.

Every per-frame number here is the DAVIS one, transcribed from ``davis2017-evaluation`` (``db_eval_iou``,
``f_measure``, ``_seg2bmap``, ``db_statistics``) and identical to what ``vos-benchmark`` and SAM 2's SA-V
evaluator compute (docs/EVALUATION.md); the tests check equality with ``vos-benchmark`` to 1e-6:

* **J** = ``|P ∩ G| / |P ∪ G|``, and 1 when both masks are empty.
* **F**: boundaries from ``_seg2bmap`` (a pixel is on the boundary when it differs from its east, south or
  south-east neighbour), each dilated with a disk of radius ``ceil(0.008 · ‖(H, W)‖)`` (8 px at 854×480,
  skimage's ``disk``). Precision = ``|B_P ∩ dil(B_G)| / |B_P|``, recall = ``|B_G ∩ dil(B_P)| / |B_G|``,
  F = 2PR/(P+R) or 0. Empty boundaries: both empty gives F = 1, one empty gives F = 0 (P=1,R=0 or P=0,R=1).
* **Recall** = fraction of evaluated frames with value > 0.5; **decay** = mean of the first quarter minus
  mean of the last quarter (bins from ``linspace(1, N, 5)``, overlapping at their edges as in davis2017).
  davis2017 casts the bin indices to ``uint8``, which wraps past 255 frames and yields NaN or garbage for
  long videos; we use 64-bit indices, so decay is correct at any length and equal below 256 frames.
* **Aggregation**: each object's frame mean is one sample; J-Mean, F-Mean (and recall, decay) are means over
  all objects of all sequences, so a sequence weighs in proportion to its number of objects (davis2017 and
  vos-benchmark both do this). ``J&F = (J-Mean + F-Mean) / 2``. Values are fractions in [0, 1]
  (vos-benchmark prints them ×100).

Two named protocols decide which frames and objects count (:data:`DAVIS`, :data:`SAV`); see
:class:`VOSProtocol`. Evaluation streams over frames: only one frame of ground truth and prediction is in
memory at a time, and only a list of floats per object is kept (no ``(objects, T, H, W)`` float64 tensor).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from vidtrack.errors import InputError

__all__ = [
    "DAVIS",
    "PROTOCOLS",
    "SAV",
    "FrameMasks",
    "ObjectScores",
    "VOSProtocol",
    "boundary_f",
    "db_statistics",
    "dilate",
    "disk",
    "evaluate_vos_sequence",
    "region_j",
    "seg2bmap",
    "summarize_vos",
    "tolerance_radius",
]

BOUNDARY_TH = 0.008
"""Boundary tolerance as a fraction of the image diagonal (DAVIS)."""


# --------------------------------------------------------------------------------------------------
# Per-frame metrics
# --------------------------------------------------------------------------------------------------


def tolerance_radius(height: int, width: int, bound_th: float = BOUNDARY_TH) -> int:
    """Radius in pixels of the boundary tolerance disk: ``ceil(bound_th · ‖(H, W)‖₂)``.

    ``bound_th >= 1`` is taken as a radius in pixels, as davis2017's ``f_measure`` does. The expression is the
    reference's own (``np.ceil(th * np.linalg.norm(shape))``) so that rounding matches to the last bit.
    """
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk(radius)`` (strict radius): ``x² + y² <= r²`` on a ``(2r+1)²`` grid, uint8."""
    r = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(r, r)
    return np.asarray(x**2 + y**2 <= radius**2, dtype=np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Binary boundary map of a mask, as davis2017's ``_seg2bmap`` for an output of the input's size.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour (so the boundary
    sits half a pixel toward the origin); the last row compares only east, the last column only south, and
    the bottom-right pixel is never a boundary.
    """
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _dilate_numpy(binary: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by :func:`disk` without OpenCV: the disk is a stack of horizontal runs (one per row offset),
    each applied with prefix sums; exact, and equal to ``cv2.dilate`` with its default constant border."""
    h, w = binary.shape
    prefix = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(binary, axis=1, out=prefix[:, 1:])
    xs = np.arange(w)
    out = np.zeros((h, w), dtype=bool)
    runs: dict[int, np.ndarray] = {}
    for dy in range(-min(radius, h - 1), min(radius, h - 1) + 1):
        half = math.isqrt(radius * radius - dy * dy)
        run = runs.get(half)
        if run is None:  # any(binary[y, x-half : x+half+1])
            lo = np.clip(xs - half, 0, w)
            hi = np.clip(xs + half + 1, 0, w)
            run = runs[half] = (prefix[:, hi] - prefix[:, lo]) > 0
        if dy >= 0:  # out[y] |= run[y + dy]
            out[: h - dy] |= run[dy:]
        else:
            out[-dy:] |= run[: h + dy]
    return out


def dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by ``disk(radius)``: ``cv2.dilate`` when OpenCV is installed (``vidtrack[eval]``), an
    exact numpy equivalent otherwise. Returns a boolean array."""
    try:
        import cv2
    except ImportError:
        return _dilate_numpy(np.asarray(binary, dtype=bool), radius)
    return cv2.dilate(np.asarray(binary, dtype=np.uint8), disk(radius)).astype(bool)


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard index of two boolean masks; 1.0 when both are empty (DAVIS)."""
    inter = int(np.count_nonzero(pred & gt))
    union = int(np.count_nonzero(pred | gt))
    return 1.0 if union == 0 else inter / union


def boundary_f(pred: np.ndarray, gt: np.ndarray, radius: int | None = None, bound_th: float = BOUNDARY_TH) -> float:
    """Boundary F-measure of two boolean masks with the DAVIS tolerance (see the module docstring).

    Both boundaries are dilated only inside the bounding box of the two boundaries grown by the radius, which
    gives the same counts as dilating the whole frame (every boundary pixel lies in that box).
    """
    if radius is None:
        radius = tolerance_radius(gt.shape[0], gt.shape[1], bound_th=bound_th)
    pb = seg2bmap(pred)
    gb = seg2bmap(gt)
    n_fg = int(np.count_nonzero(pb))
    n_gt = int(np.count_nonzero(gb))
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        rows = np.flatnonzero((pb | gb).any(axis=1))
        cols = np.flatnonzero((pb | gb).any(axis=0))
        y0, y1 = max(int(rows[0]) - radius, 0), min(int(rows[-1]) + radius + 1, gt.shape[0])
        x0, x1 = max(int(cols[0]) - radius, 0), min(int(cols[-1]) + radius + 1, gt.shape[1])
        pbc, gbc = pb[y0:y1, x0:x1], gb[y0:y1, x0:x1]
        precision = int(np.count_nonzero(pbc & dilate(gbc, radius))) / float(n_fg)
        recall = int(np.count_nonzero(gbc & dilate(pbc, radius))) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values, as davis2017 ``db_statistics``.

    Mean ignores NaNs; recall is the fraction of frames with value > 0.5; decay is the mean of the first of
    four bins minus the mean of the last. The bin edges are ``round(linspace(1, N, 5) + 1e-10) - 1`` as in
    davis2017 but kept as int64, so sequences longer than 255 frames give the right decay instead of a
    ``uint8`` overflow. An empty input gives NaNs.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.nanmean(v > 0.5))
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


# --------------------------------------------------------------------------------------------------
# Frames and protocols
# --------------------------------------------------------------------------------------------------


class FrameMasks:
    """The objects of one frame: a label map (one id per pixel, 0 = background, e.g. a DAVIS palette PNG) or
    separate boolean masks keyed by id (SA-V per-object PNGs, vidtrack results; these may overlap)."""

    __slots__ = ("_ids", "_labels", "_masks", "shape")

    def __init__(
        self,
        labels: np.ndarray | None = None,
        masks: Mapping[int, np.ndarray] | None = None,
        shape: tuple[int, int] | None = None,
    ) -> None:
        if (labels is None) == (masks is None):
            raise ValueError("FrameMasks needs exactly one of labels or masks")
        self._labels = None if labels is None else np.asarray(labels)
        self._masks = None if masks is None else {int(k): np.asarray(v, dtype=bool) for k, v in masks.items()}
        if self._labels is not None:
            if self._labels.ndim != 2:
                raise InputError(f"a label map must be 2-D; got shape {self._labels.shape}")
            self.shape: tuple[int, int] = (int(self._labels.shape[0]), int(self._labels.shape[1]))
        else:
            assert self._masks is not None
            shapes = {m.shape for m in self._masks.values()}
            if shape is None:
                if len(shapes) != 1:
                    raise InputError("FrameMasks from masks needs a shape when there are no masks or they differ")
                shape = next(iter(shapes))
            elif shapes and shapes != {tuple(shape)}:
                raise InputError(f"masks of shapes {sorted(shapes)} on a frame of shape {tuple(shape)}")
            assert shape is not None
            self.shape = (int(shape[0]), int(shape[1]))
        self._ids: frozenset[int] | None = None

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> FrameMasks:
        return cls(masks={}, shape=shape)

    @property
    def is_label_map(self) -> bool:
        return self._labels is not None

    @property
    def labels(self) -> np.ndarray | None:
        return self._labels

    @property
    def ids(self) -> frozenset[int]:
        """Ids with at least one pixel (0 is background in a label map and never listed)."""
        if self._ids is None:
            if self._labels is not None:
                lab = self._labels
                if lab.dtype.kind == "u" or (lab.size and lab.min() >= 0):
                    present = np.flatnonzero(np.bincount(lab.ravel().astype(np.int64, copy=False)))
                else:  # pragma: no cover - negative labels are not produced by our readers
                    present = np.unique(lab)
                self._ids = frozenset(int(i) for i in present if i != 0)
            else:
                assert self._masks is not None
                self._ids = frozenset(k for k, m in self._masks.items() if m.any())
        return self._ids

    def mask(self, object_id: int) -> np.ndarray:
        """Boolean mask of one object (all False when it is not on this frame)."""
        if self._labels is not None:
            return self._labels == object_id
        assert self._masks is not None
        m = self._masks.get(object_id)
        return np.zeros(self.shape, dtype=bool) if m is None else m

    def max_label(self) -> int:
        """Largest id present (0 when none); DAVIS counts objects as ``1..max`` of the first frame."""
        return max(self.ids, default=0)


@dataclass(frozen=True)
class VOSProtocol:
    """Which frames and objects a VOS evaluation counts.

    Attributes:
        name: ``"davis"`` or ``"sav"`` (or your own).
        objects: ``"first_frame"`` (davis2017 semi-supervised): the objects are ids ``1..max`` of the first
            annotated frame, every evaluated frame counts for each of them, and an object that first appears
            later is an error (davis2017 exits; use the SA-V protocol for YouTube-VOS, MOSE, LVOS and SA-V).
            ``"appearance"`` (vos-benchmark / SA-V): objects are the running union of ids seen in the ground
            truth or the prediction; an object counts from the first evaluated frame on which it appears in
            either; ids that never appear in the ground truth of an evaluated frame are dropped from the result.
        skip_first_last: leave out the first and the last annotated frame (of the sequence, or of each object
            folder in the per-object layout). True for DAVIS semi-supervised and SA-V val/test.
        void_label: a ground-truth and prediction label that is never an object (255 in DAVIS, where it marks
            void; void pixels are *not* masked out, as in davis2017 semi-supervised). None: 255 is an ordinary
            id, as in vos-benchmark.
        bound_th: the boundary tolerance (fraction of the diagonal, or pixels when >= 1).
    """

    name: str
    objects: Literal["first_frame", "appearance"]
    skip_first_last: bool = True
    void_label: int | None = None
    bound_th: float = BOUNDARY_TH


DAVIS = VOSProtocol("davis", "first_frame", skip_first_last=True, void_label=255)
"""davis2017-evaluation semi-supervised: objects from frame 0, first and last frames skipped, 255 is void."""

SAV = VOSProtocol("sav", "appearance", skip_first_last=True, void_label=None)
"""SA-V / vos-benchmark: late-appearing objects, sparse annotations, per-object layout, first/last skipped."""

PROTOCOLS: dict[str, VOSProtocol] = {"davis": DAVIS, "sav": SAV}


@dataclass
class ObjectScores:
    """One object's per-frame J and F over the evaluated frames of one sequence."""

    sequence: str
    object_id: int
    frames: list[Hashable] = field(default_factory=list)
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)

    @property
    def j_stats(self) -> tuple[float, float, float]:
        """(mean, recall, decay) of J."""
        return db_statistics(self.j)

    @property
    def f_stats(self) -> tuple[float, float, float]:
        """(mean, recall, decay) of F."""
        return db_statistics(self.f)

    @property
    def j_mean(self) -> float:
        return self.j_stats[0]

    @property
    def f_mean(self) -> float:
        return self.f_stats[0]

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2

    def to_row(self) -> dict[str, object]:
        jm, jr, jd = self.j_stats
        fm, fr, fd = self.f_stats
        return {"sequence": self.sequence, "object": self.object_id, "frames": len(self.j), "J&F": (jm + fm) / 2,
                "J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


def summarize_vos(objects: Iterable[ObjectScores]) -> dict[str, float]:
    """Dataset numbers: each statistic is the mean over all objects of all sequences (davis2017 and
    vos-benchmark); ``J&F = (J-Mean + F-Mean) / 2``."""
    objs = list(objects)
    if not objs:
        return {"J&F": math.nan, "J-Mean": math.nan, "J-Recall": math.nan, "J-Decay": math.nan,
                "F-Mean": math.nan, "F-Recall": math.nan, "F-Decay": math.nan, "objects": 0, "sequences": 0}
    js = np.array([o.j_stats for o in objs], dtype=np.float64)
    fs = np.array([o.f_stats for o in objs], dtype=np.float64)
    jm, jr, jd = (float(np.mean(js[:, i])) for i in range(3))
    fm, fr, fd = (float(np.mean(fs[:, i])) for i in range(3))
    return {"J&F": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd, "F-Mean": fm, "F-Recall": fr,
            "F-Decay": fd, "objects": len(objs), "sequences": len({o.sequence for o in objs})}


FrameReader = Callable[[Hashable], FrameMasks]


def _check_late(name: str, frame: Hashable, late: set[int] | frozenset[int]) -> None:
    if late:
        raise InputError(
            f"{name}: object(s) {sorted(late)} first appear on frame {frame}, after the first annotated frame; the "
            "DAVIS protocol needs every object on the first frame (use the SA-V protocol, --rules sav, for "
            "late-appearing objects)"
        )


def evaluate_vos_sequence(
    name: str,
    frames: Sequence[Hashable],
    read_gt: FrameReader,
    read_pred: FrameReader,
    protocol: VOSProtocol = DAVIS,
    *,
    object_frames: Mapping[int, Sequence[Hashable]] | None = None,
    on_frame: Callable[[Hashable, FrameMasks, FrameMasks], None] | None = None,
) -> list[ObjectScores]:
    """Score one sequence, reading one frame of ground truth and prediction at a time.

    Args:
        name: sequence name (carried into the results).
        frames: the annotated frames in order (file stems, indices...); ground truth exists for each.
        read_gt, read_pred: return the :class:`FrameMasks` of a frame.
        protocol: :data:`DAVIS`, :data:`SAV` or your own :class:`VOSProtocol`.
        object_frames: per-object layout (SA-V): object id -> that object's annotated frames. Each object then
            has its own first/last frame to skip, and prediction-only ids are ignored (SA-V evaluates the
            ground-truth object folders). None: every object shares ``frames``.
        on_frame: called with every frame read (all annotated frames, skipped ones included), e.g. to feed a
            HOTA accumulator from the same reads.

    Returns:
        One :class:`ObjectScores` per reported object, in id order.
    """
    frames = list(frames)
    if not frames:
        return []
    skip = protocol.skip_first_last
    voids = frozenset() if protocol.void_label is None else frozenset({protocol.void_label})

    def evaluated(seq: Sequence[Hashable]) -> list[Hashable]:
        return list(seq[1:-1]) if skip else list(seq)

    per_object_eval: dict[int, set[Hashable]] | None = None
    if object_frames is not None:
        per_object_eval = {int(o): set(evaluated(list(fr))) for o, fr in object_frames.items()}
    shared_eval = set(evaluated(frames))
    to_read = frames if on_frame is not None else [
        fr for fr in frames
        if (fr in shared_eval if per_object_eval is None else any(fr in s for s in per_object_eval.values()))
    ]

    scores: dict[int, ObjectScores] = {}
    seen_in_gt: set[int] = set()
    fixed: list[int] | None = None
    if protocol.objects == "first_frame":
        if object_frames is not None:
            first: dict[Hashable, FrameMasks] = {}
            fixed = []
            for o, ofr in sorted(object_frames.items()):
                if ofr:
                    if ofr[0] not in first:
                        first[ofr[0]] = read_gt(ofr[0])
                    if o in first[ofr[0]].ids:
                        fixed.append(int(o))
        else:
            fixed = list(range(1, max(read_gt(frames[0]).ids - voids, default=0) + 1))
        scores = {o: ObjectScores(name, o) for o in fixed}
    radius: int | None = None

    for fr in to_read:
        gt = read_gt(fr)
        pred = read_pred(fr)
        if pred.shape != gt.shape:
            raise InputError(
                f"{name}: prediction for frame {fr} is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                f"{gt.shape[1]}x{gt.shape[0]} (WxH); predictions must have the annotation size"
            )
        if on_frame is not None:
            on_frame(fr, gt, pred)
        if radius is None:
            radius = tolerance_radius(gt.shape[0], gt.shape[1], bound_th=protocol.bound_th)

        gt_ids, pred_ids = gt.ids - voids, pred.ids - voids
        active_here: Iterable[int]
        if per_object_eval is None:
            if fr not in shared_eval:
                continue
            if fixed is not None:
                _check_late(name, fr, gt_ids - set(fixed))
                active_here = fixed
            else:
                seen_in_gt |= gt_ids
                for o in gt_ids | pred_ids:
                    if o not in scores:
                        scores[o] = ObjectScores(name, o)
                active_here = sorted(scores)
        else:
            candidates = [o for o, s in per_object_eval.items() if fr in s]
            if fixed is not None:
                _check_late(name, fr, {o for o in candidates if o in gt_ids} - set(fixed))
                active_here = [o for o in candidates if o in scores]
            else:
                gt_here = {o for o in candidates if o in gt_ids}
                seen_in_gt |= gt_here
                for o in candidates:
                    if o not in scores and (o in gt_here or o in pred_ids):
                        scores[o] = ObjectScores(name, o)
                active_here = [o for o in candidates if o in scores]

        for o in active_here:
            pm, gm = pred.mask(o), gt.mask(o)
            s = scores[o]
            s.frames.append(fr)
            s.j.append(region_j(pm, gm))
            s.f.append(boundary_f(pm, gm, radius=radius))

    if fixed is None:
        return [scores[o] for o in sorted(scores) if o in seen_in_gt]
    return [scores[o] for o in sorted(scores)]
