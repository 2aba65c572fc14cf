"""One-pass evaluation (OPE) of single-object box tracking: LaSOT, GOT-10k, TrackingNet, OTB.

Primitives are got10k-toolkit's (``got10k/utils/metrics.py`` and ``experiments/{otb,lasot,got10k}.py``,
GitHub master), which pytracking, OSTrack/SAMURAI and mmtracking agree with on ordinary frames
(docs/EVALUATION.md). Boxes are ``x, y, w, h`` in pixels.

* **IoU**: continuous boxes (``x2 = x + w``), ``inter / (union + eps)`` clipped to [0, 1]. pytracking's
  inclusive-pixel form (``x2 = x + w - 1``, sizes ``+ 1``) gives the same intersection and union.
* **Success curve** S(τ): fraction of frames with IoU **> τ** (strict), τ = ``linspace(0, 1, 21)``.
  **Success AUC** = mean of S over the 21 thresholds (not a trapezoid; S(1) = 0, so a perfect tracker gets
  20/21). **OP50 / OP75** = S(0.5), S(0.75).
* **Precision** P(d): fraction of frames whose centre error ``‖c_pred − c_gt‖`` is **<= d** px, d = 0..50,
  with centres ``xy + (wh − 1)/2``. **P@20** = P(20).
* **Normalised precision**: centre difference divided by the GT ``w, h`` (at least 1), thresholds
  ``linspace(0, 0.5, 51)``. Two numbers exist and are not comparable, so both are reported under their own
  names: ``norm_precision@0.20`` = the curve at 0.20 (pytracking, SAMURAI, OSTrack, mmtracking, the LaSOT
  and TrackingNet papers' tables), ``norm_precision_auc51`` = the mean over the 51 thresholds (got10k-toolkit's
  LaSOT experiment).
* **Sequences** count equally: per-sequence curves are averaged, then the scalars are read off the mean curve.
* **First frame**: the prediction is replaced by the ground truth (all toolkits; mmtracking's evaluator does
  not, hence ``replace_first_frame``).
* **Absent frames** (LaSOT ``full_occlusion | out_of_view``, GOT-10k ``absence``, or GT that is NaN or has
  ``w <= 0`` / ``h <= 0``): with ``absent="fail"`` (default; LaSOT MATLAB toolkit and pytracking) they fail at
  every threshold of all three curves but stay in the denominator; ``absent="drop"`` removes them from
  numerator and denominator (pytracking ``exclude_invalid_frames=True``). got10k-toolkit's LaSOT experiment
  only drops NaN ground truth and scores zero-size boxes as ordinary frames.
* **Empty predictions**: a NaN or zero/negative-size predicted box is replaced by the previous frame's box
  (LaSOT MATLAB toolkit, pytracking); ``carry_empty=False`` scores it as it is (got10k-toolkit).

**GOT-10k** AO / SR (``experiments/got10k.py``): both boxes are clipped to the image the way got10k does it
(``x, y`` clamped to ``[0, W]``/``[0, H]``, then ``w, h`` clamped to end inside; a box starting left of the
image keeps its width), frame 0 and frames with ``cover == 0`` are excluded, and the IoUs of **all frames of all
sequences (and repetitions) are pooled**, so long sequences weigh more. AO = mean IoU, SR_t = mean(IoU > t)
for t = 0.5, 0.75; its success curve has 101 thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vidtrack.errors import InputError

__all__ = [
    "NORM_PRECISION_THRESHOLDS",
    "PRECISION_THRESHOLDS",
    "SUCCESS_THRESHOLDS",
    "GOT10kSequenceResult",
    "OPESequenceResult",
    "box_iou",
    "center_error",
    "got10k_sequence",
    "normalized_center_error",
    "ope_sequence",
    "summarize_got10k",
    "summarize_ope",
]

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)
"""IoU thresholds of the success curve (got10k: ``linspace(0, 1, 21)``; compared with a strict ``>``)."""
PRECISION_THRESHOLDS = np.arange(0, 51)
"""Centre-error thresholds in pixels (``<=``)."""
NORM_PRECISION_THRESHOLDS = np.linspace(0, 0.5, 51)
"""Normalised centre-error thresholds (``<=``); index 20 is 0.20."""
GOT10K_THRESHOLDS = np.linspace(0, 1, 101)
"""IoU thresholds of GOT-10k's success curve."""


def _boxes(a: np.ndarray | Sequence[Sequence[float]], what: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float64, copy=True)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"{what} must be an (N, 4) array of x,y,w,h boxes; got shape {arr.shape}")
    return arr


def _clip_to_bound(rects: np.ndarray, bound: tuple[float, float]) -> np.ndarray:
    """got10k ``rect_iou(..., bound=(W, H))`` clipping, in place on a copy."""
    r = rects.copy()
    r[:, 0] = np.clip(r[:, 0], 0, bound[0])
    r[:, 1] = np.clip(r[:, 1], 0, bound[1])
    r[:, 2] = np.clip(r[:, 2], 0, bound[0] - r[:, 0])
    r[:, 3] = np.clip(r[:, 3], 0, bound[1] - r[:, 1])
    return r


def box_iou(a: np.ndarray, b: np.ndarray, bound: tuple[float, float] | None = None) -> np.ndarray:
    """Row-wise IoU of two ``(N, 4)`` ``x,y,w,h`` arrays, as got10k ``rect_iou`` (``bound=(W, H)`` clips)."""
    r1, r2 = _boxes(a, "boxes"), _boxes(b, "boxes")
    if r1.shape != r2.shape:
        raise InputError(f"box arrays differ in length: {len(r1)} and {len(r2)}")
    if bound is not None:
        r1, r2 = _clip_to_bound(r1, bound), _clip_to_bound(r2, bound)
    x1 = np.maximum(r1[:, 0], r2[:, 0])
    y1 = np.maximum(r1[:, 1], r2[:, 1])
    x2 = np.minimum(r1[:, 0] + r1[:, 2], r2[:, 0] + r2[:, 2])
    y2 = np.minimum(r1[:, 1] + r1[:, 3], r2[:, 1] + r2[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = r1[:, 2] * r1[:, 3] + r2[:, 2] * r2[:, 3] - inter
    with np.errstate(invalid="ignore"):
        return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def _centers(r: np.ndarray) -> np.ndarray:
    return r[:, :2] + (r[:, 2:] - 1) / 2


def center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance of box centres ``xy + (wh - 1)/2`` (got10k ``center_error``)."""
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    return np.sqrt(np.sum((_centers(p) - _centers(g)) ** 2, axis=-1))


def normalized_center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Centre distance with each axis divided by the GT width/height (at least 1), got10k master."""
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    return np.sqrt(np.sum(((_centers(p) - _centers(g)) / np.maximum(np.array([[1.0, 1.0]]), g[:, 2:])) ** 2, axis=-1))


@dataclass
class OPESequenceResult:
    """Curves of one sequence (fractions of its frames)."""

    name: str
    frames: int
    """Frames in the denominator (all frames, or those left after ``absent="drop"``)."""
    absent: int
    """Frames counted as absent/invalid ground truth."""
    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray

    @property
    def scores(self) -> dict[str, float]:
        return _scores(self.success_curve, self.precision_curve, self.norm_precision_curve)

    def to_row(self) -> dict[str, object]:
        return {"sequence": self.name, "frames": self.frames, "absent": self.absent, **self.scores}


def _scores(succ: np.ndarray, prec: np.ndarray, nprec: np.ndarray) -> dict[str, float]:
    return {
        "success_auc": float(np.mean(succ)),
        "OP50": float(succ[10]),
        "OP75": float(succ[15]),
        "precision@20": float(prec[20]),
        "norm_precision@0.20": float(nprec[20]),
        "norm_precision_auc51": float(np.mean(nprec)),
    }


def _carry_forward(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """LaSOT toolkit: from frame 1 on, a NaN or non-positive-size prediction takes the previous frame's box
    (when that frame's GT is not NaN)."""
    out = pred.copy()
    for i in range(1, len(out)):
        r = out[i]
        if (np.isnan(r).any() or r[2] <= 0 or r[3] <= 0) and not np.isnan(gt[i]).any():
            out[i] = out[i - 1]
    return out


def ope_sequence(
    pred: np.ndarray | Sequence[Sequence[float]],
    gt: np.ndarray | Sequence[Sequence[float]],
    *,
    absent: np.ndarray | Sequence[bool] | None = None,
    name: str = "",
    absent_policy: Literal["fail", "drop"] = "fail",
    replace_first_frame: bool = True,
    carry_empty: bool = True,
) -> OPESequenceResult:
    """Success, precision and normalised-precision curves of one sequence (see the module docstring).

    A prediction longer than the ground truth is cut (LaSOT monkey-17 has such results); a shorter one is an
    error, since a silently padded result would hide a crashed run.
    """
    p, g = _boxes(pred, f"{name or 'sequence'}: prediction"), _boxes(gt, f"{name or 'sequence'}: ground truth")
    if len(p) < len(g):
        raise InputError(f"{name or 'sequence'}: prediction has {len(p)} boxes but the ground truth {len(g)}; "
                         "write one box per frame")
    p = p[: len(g)]
    if len(g) == 0:
        raise InputError(f"{name or 'sequence'}: no ground-truth boxes")
    if carry_empty:
        p = _carry_forward(p, g)
    if replace_first_frame:
        p[0] = g[0]
    bad = np.isnan(g).any(axis=1) | ~(g[:, 2] > 0) | ~(g[:, 3] > 0)
    if absent is not None:
        a = np.asarray(absent, dtype=bool).ravel()
        if len(a) < len(g):
            raise InputError(f"{name or 'sequence'}: {len(a)} absent flags for {len(g)} frames")
        bad |= a[: len(g)]
    with np.errstate(invalid="ignore"):
        iou = box_iou(p, g)
        ce = center_error(p, g)
        nce = normalized_center_error(p, g)
    iou[bad] = -1.0
    ce[bad] = np.inf
    nce[bad] = np.inf
    if absent_policy == "drop":
        keep = ~bad
        iou, ce, nce = iou[keep], ce[keep], nce[keep]
    elif absent_policy != "fail":
        raise InputError(f"absent_policy must be 'fail' or 'drop'; got {absent_policy!r}")
    n = len(iou)
    if n == 0:
        raise InputError(f"{name or 'sequence'}: no frame left to evaluate (every frame is absent)")
    with np.errstate(invalid="ignore"):
        succ = np.greater(iou[:, None], SUCCESS_THRESHOLDS[None, :]).mean(axis=0)
        prec = np.less_equal(ce[:, None], PRECISION_THRESHOLDS[None, :]).mean(axis=0)
        nprec = np.less_equal(nce[:, None], NORM_PRECISION_THRESHOLDS[None, :]).mean(axis=0)
    return OPESequenceResult(name, n, int(bad.sum()), succ, prec, nprec)


def summarize_ope(results: Iterable[OPESequenceResult]) -> dict[str, float]:
    """Dataset scores: curves averaged over sequences (each sequence counts equally), scalars read off the
    mean curves, exactly as got10k ``ExperimentOTB/LaSOT.report`` orders the means."""
    res = list(results)
    if not res:
        return {k: math.nan for k in _scores(np.zeros(21), np.zeros(51), np.zeros(51))} | {"sequences": 0}
    succ = np.mean(np.stack([r.success_curve for r in res]), axis=0)
    prec = np.mean(np.stack([r.precision_curve for r in res]), axis=0)
    nprec = np.mean(np.stack([r.norm_precision_curve for r in res]), axis=0)
    return _scores(succ, prec, nprec) | {"sequences": len(res)}


@dataclass
class GOT10kSequenceResult:
    """The IoUs GOT-10k pools: every evaluated frame of every repetition of one sequence."""

    name: str
    ious: np.ndarray

    @property
    def scores(self) -> dict[str, float]:
        return _got_scores(self.ious)

    def to_row(self) -> dict[str, object]:
        return {"sequence": self.name, "frames": len(self.ious), **self.scores}


def _got_scores(ious: np.ndarray) -> dict[str, float]:
    if len(ious) == 0:
        return {"AO": math.nan, "SR0.5": math.nan, "SR0.75": math.nan}
    return {"AO": float(np.mean(ious)), "SR0.5": float(np.mean(ious > 0.5)), "SR0.75": float(np.mean(ious > 0.75))}


def got10k_sequence(
    preds: np.ndarray | Sequence[np.ndarray],
    gt: np.ndarray,
    *,
    cover: np.ndarray | Sequence[int] | None = None,
    resolution: tuple[float, float] | None = None,
    name: str = "",
) -> GOT10kSequenceResult:
    """IoUs of one GOT-10k sequence: frame 0 and ``cover == 0`` frames left out, boxes clipped to
    ``resolution=(W, H)`` (no clipping when None). ``preds`` is one ``(N, 4)`` array or a list of repetitions."""
    g = _boxes(gt, f"{name or 'sequence'}: ground truth")
    reps = [preds] if isinstance(preds, np.ndarray) and preds.ndim == 2 else list(preds)
    keep = np.ones(len(g) - 1, dtype=bool) if cover is None else np.asarray(cover).ravel()[1 : len(g)] > 0
    if len(keep) != len(g) - 1:
        raise InputError(f"{name or 'sequence'}: {len(keep) + 1} cover flags for {len(g)} frames")
    out = []
    for r in reps:
        p = _boxes(r, f"{name or 'sequence'}: prediction")
        if p.shape != g.shape:
            raise InputError(f"{name or 'sequence'}: prediction has {len(p)} boxes but the ground truth {len(g)}")
        out.append(box_iou(p[1:], g[1:], bound=resolution)[keep])
    return GOT10kSequenceResult(name, np.concatenate(out) if out else np.zeros(0))


def summarize_got10k(results: Iterable[GOT10kSequenceResult]) -> dict[str, Any]:
    """AO, SR0.5, SR0.75 over the IoUs of all frames of all sequences pooled (frame-weighted, as GOT-10k)."""
    res = list(results)
    ious = np.concatenate([r.ious for r in res]) if res else np.zeros(0)
    return _got_scores(ious) | {"frames": len(ious), "sequences": len(res)}


def got10k_success_curve(results: Iterable[GOT10kSequenceResult]) -> np.ndarray:
    """GOT-10k's 101-threshold success curve of the pooled IoUs."""
    ious = np.concatenate([r.ious for r in results])
    return np.greater(ious[:, None], GOT10K_THRESHOLDS[None, :]).mean(axis=0)
