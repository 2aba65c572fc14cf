"""Multi-object mask tracking metrics: HOTA (DetA, AssA, LocA), CLEAR on masks (MOTSA, sMOTSA) and IDF1.

A transcription of TrackEval's ``metrics/hota.py``, ``clear.py`` and ``identity.py`` (PyPI ``trackeval``
1.3.0, the numpy-2 fork of JonathonLuiten/TrackEval; docs/EVALUATION.md), fed the way its MOTS datasets feed
it: a detection is an object with a non-empty mask on a frame, similarity is mask IoU (pycocotools on RLE),
ids are relabelled to be contiguous per sequence. The tests check equality with ``trackeval`` itself.

* **HOTA**: for α in ``arange(0.05, 0.99, 0.05)`` (19 values), per frame a Hungarian match maximising
  ``global_alignment_score × similarity``; a match with similarity >= α is a TP. DetA_α = TP/(TP+FN+FP),
  AssA_α = mean over TPs of ``TPA/(TPA+FNA+FPA)`` of their (gt id, pred id) pair, HOTA_α = √(DetA_α·AssA_α).
  Reported HOTA, DetA, AssA, LocA are **means over α**; sequences combine by summing TP/FN/FP and weighting
  AssA by TP.
* **CLEAR** at IoU 0.5: matching keeps the previous frame's pairs first (minimising ID switches), then
  maximises IoU. MOTA on masks is **MOTSA** = (TP − FP − IDSW)/(TP + FN); sMOTA = **sMOTSA** =
  (Σ IoU of TPs − FP − IDSW)/(TP + FN); MOTP = mean IoU of TPs. Sequences combine by summing counts.
* **Identity**: IDF1 = IDTP/(IDTP + ½IDFP + ½IDFN) with a global one-to-one id assignment at IoU >= 0.5.

Not included: MOTS ignore regions and distractor classes (the MOTS Challenge ``10000`` id); TrackEval refuses
overlapping masks, these functions accept them (SA-V objects may overlap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from vidtrack.errors import DependencyError

__all__ = [
    "HOTA_ALPHAS",
    "MOTAccumulator",
    "combine_mot",
    "mask_iou_matrix",
]

HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)
_EPS = np.finfo("float").eps


def _lsa(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # pragma: no cover - scipy ships with the dev and eval extras
        raise DependencyError("HOTA/CLEAR need scipy; install it with: pip install 'vidtrack[eval]'") from e
    r, c = linear_sum_assignment(cost)
    return np.asarray(r), np.asarray(c)


def _rle(m: Any) -> dict[str, Any]:
    if isinstance(m, dict):
        counts = m["counts"]
        return {"size": list(m["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.encode(np.asfortranarray(np.asarray(m, dtype=np.uint8)))


def mask_iou_matrix(gt: Iterable[Any], pred: Iterable[Any]) -> np.ndarray:
    """IoU of every gt mask (rows) with every predicted mask (columns); masks are boolean arrays or COCO RLEs.
    pycocotools computes it, as TrackEval does."""
    g = [_rle(m) for m in gt]
    p = [_rle(m) for m in pred]
    if not g or not p:
        return np.zeros((len(g), len(p)))
    return np.asarray(mask_utils.iou(g, p, [False] * len(p)), dtype=np.float64).reshape(len(g), len(p))


@dataclass
class _Frame:
    gt_ids: np.ndarray
    pred_ids: np.ndarray
    sim: np.ndarray


@dataclass
class MOTAccumulator:
    """Collects one sequence frame by frame (only ids and the small IoU matrices are kept), then computes
    HOTA, CLEAR and Identity as TrackEval does for that sequence.

    >>> acc = MOTAccumulator("seq")
    >>> acc.add_masks({1: gt_mask_a, 2: gt_mask_b}, {7: pred_mask})   # empty masks are not detections
    >>> acc.compute()["HOTA"]
    """

    name: str = ""
    frames: list[_Frame] = field(default_factory=list)

    def add(self, gt_ids: Iterable[int], pred_ids: Iterable[int], similarity: np.ndarray) -> None:
        """One frame: the ids present and their similarity matrix (rows gt, columns pred)."""
        g = np.asarray(list(gt_ids), dtype=np.int64)
        p = np.asarray(list(pred_ids), dtype=np.int64)
        s = np.asarray(similarity, dtype=np.float64).reshape(len(g), len(p))
        self.frames.append(_Frame(g, p, s))

    def add_masks(self, gt: Mapping[int, Any], pred: Mapping[int, Any]) -> None:
        """One frame from ``{id: mask or RLE}`` dicts; objects with empty masks are left out."""
        def present(d: Mapping[int, Any]) -> dict[int, Any]:
            out = {}
            for k, m in d.items():
                r = _rle(m)
                if mask_utils.area(r) > 0:
                    out[int(k)] = r
            return out

        g, p = present(gt), present(pred)
        gi, pi = sorted(g), sorted(p)
        self.add(gi, pi, mask_iou_matrix([g[i] for i in gi], [p[i] for i in pi]))

    # -- TrackEval's data dict ------------------------------------------------------------------------
    def _data(self) -> dict[str, Any]:
        gt_u = np.unique(np.concatenate([f.gt_ids for f in self.frames] + [np.zeros(0, np.int64)]))
        pr_u = np.unique(np.concatenate([f.pred_ids for f in self.frames] + [np.zeros(0, np.int64)]))
        gmap = {int(v): i for i, v in enumerate(gt_u)}
        pmap = {int(v): i for i, v in enumerate(pr_u)}
        return {
            "gt_ids": [np.array([gmap[int(i)] for i in f.gt_ids], dtype=np.int64) for f in self.frames],
            "tracker_ids": [np.array([pmap[int(i)] for i in f.pred_ids], dtype=np.int64) for f in self.frames],
            "similarity_scores": [f.sim for f in self.frames],
            "num_gt_ids": len(gt_u),
            "num_tracker_ids": len(pr_u),
            "num_gt_dets": int(sum(len(f.gt_ids) for f in self.frames)),
            "num_tracker_dets": int(sum(len(f.pred_ids) for f in self.frames)),
            "num_timesteps": len(self.frames),
        }

    def compute(self) -> dict[str, Any]:
        """The raw per-sequence results (counts and per-α arrays) plus the summary numbers."""
        data = self._data()
        res: dict[str, Any] = {"hota": _hota(data), "clear": _clear(data), "identity": _identity(data)}
        return res | _summary(res)


def _hota(data: dict[str, Any]) -> dict[str, Any]:
    n_a = len(HOTA_ALPHAS)
    res: dict[str, Any] = {k: np.zeros(n_a) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP", "AssA", "AssRe", "AssPr",
                                                         "LocA")}
    if data["num_tracker_dets"] == 0:
        res["HOTA_FN"] = data["num_gt_dets"] * np.ones(n_a)
        res["LocA"] = np.ones(n_a)
        return _hota_final(res)
    if data["num_gt_dets"] == 0:
        res["HOTA_FP"] = data["num_tracker_dets"] * np.ones(n_a)
        res["LocA"] = np.ones(n_a)
        return _hota_final(res)

    potential = np.zeros((data["num_gt_ids"], data["num_tracker_ids"]))
    gt_count = np.zeros((data["num_gt_ids"], 1))
    tr_count = np.zeros((1, data["num_tracker_ids"]))
    for g, t, sim in zip(data["gt_ids"], data["tracker_ids"], data["similarity_scores"], strict=True):
        denom = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
        sim_iou = np.zeros_like(sim)
        ok = denom > 0 + _EPS
        sim_iou[ok] = sim[ok] / denom[ok]
        potential[g[:, np.newaxis], t[np.newaxis, :]] += sim_iou
        gt_count[g] += 1
        tr_count[0, t] += 1
    global_align = potential / (gt_count + tr_count - potential)
    matches = [np.zeros_like(potential) for _ in HOTA_ALPHAS]
    for g, t, sim in zip(data["gt_ids"], data["tracker_ids"], data["similarity_scores"], strict=True):
        if len(g) == 0:
            res["HOTA_FP"] += len(t)
            continue
        if len(t) == 0:
            res["HOTA_FN"] += len(g)
            continue
        score = global_align[g[:, np.newaxis], t[np.newaxis, :]] * sim
        rows, cols = _lsa(-score)
        for a, alpha in enumerate(HOTA_ALPHAS):
            ok = sim[rows, cols] >= alpha - _EPS
            ar, ac = rows[ok], cols[ok]
            n = len(ar)
            res["HOTA_TP"][a] += n
            res["HOTA_FN"][a] += len(g) - n
            res["HOTA_FP"][a] += len(t) - n
            if n > 0:
                res["LocA"][a] += sum(sim[ar, ac])
                matches[a][g[ar], t[ac]] += 1
    for a in range(n_a):
        m = matches[a]
        tp = np.maximum(1, res["HOTA_TP"][a])
        res["AssA"][a] = np.sum(m * (m / np.maximum(1, gt_count + tr_count - m))) / tp
        res["AssRe"][a] = np.sum(m * (m / np.maximum(1, gt_count))) / tp
        res["AssPr"][a] = np.sum(m * (m / np.maximum(1, tr_count))) / tp
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["HOTA_TP"])
    return _hota_final(res)


def _hota_final(res: dict[str, Any]) -> dict[str, Any]:
    tp, fn, fp = res["HOTA_TP"], res["HOTA_FN"], res["HOTA_FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    return res


def _clear(data: dict[str, Any], threshold: float = 0.5) -> dict[str, Any]:
    res: dict[str, Any] = {k: 0 for k in ("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag")}
    res["MOTP_sum"] = 0.0
    res["CLR_Frames"] = data["num_timesteps"]
    if data["num_tracker_dets"] == 0 or data["num_gt_dets"] == 0:
        # TrackEval returns early here without computing the ratios, which stay 0 (even MOTA with only FPs)
        res["CLR_FN"] = data["num_gt_dets"] if data["num_tracker_dets"] == 0 else 0
        res["ML"] = data["num_gt_ids"] if data["num_tracker_dets"] == 0 else 0
        res["CLR_FP"] = data["num_tracker_dets"] if data["num_tracker_dets"] else 0
        return res | {k: 0.0 for k in ("MOTA", "MOTP", "sMOTA", "MODA", "CLR_Re", "CLR_Pr")}
    n_gt = data["num_gt_ids"]
    gt_count = np.zeros(n_gt)
    gt_matched = np.zeros(n_gt)
    gt_frag = np.zeros(n_gt)
    prev_tracker = np.nan * np.zeros(n_gt)
    prev_step_tracker = np.nan * np.zeros(n_gt)
    for g, t, sim in zip(data["gt_ids"], data["tracker_ids"], data["similarity_scores"], strict=True):
        if len(g) == 0:
            res["CLR_FP"] += len(t)
            continue
        if len(t) == 0:
            res["CLR_FN"] += len(g)
            gt_count[g] += 1
            continue
        score = (t[np.newaxis, :] == prev_step_tracker[g[:, np.newaxis]]).astype(np.float64)
        score = 1000 * score + sim
        score[sim < threshold - _EPS] = 0
        rows, cols = _lsa(-score)
        ok = score[rows, cols] > 0 + _EPS
        rows, cols = rows[ok], cols[ok]
        mg, mt = g[rows], t[cols]
        prev_m = prev_tracker[mg]
        res["IDSW"] += int(np.sum(~np.isnan(prev_m) & np.not_equal(mt, prev_m)))
        gt_count[g] += 1
        gt_matched[mg] += 1
        not_prev = np.isnan(prev_step_tracker)
        prev_tracker[mg] = mt
        prev_step_tracker[:] = np.nan
        prev_step_tracker[mg] = mt
        gt_frag += np.logical_and(not_prev, ~np.isnan(prev_step_tracker))
        n = len(mg)
        res["CLR_TP"] += n
        res["CLR_FN"] += len(g) - n
        res["CLR_FP"] += len(t) - n
        if n > 0:
            res["MOTP_sum"] += sum(sim[rows, cols])
    ratio = gt_matched[gt_count > 0] / gt_count[gt_count > 0]
    res["MT"] = int(np.sum(np.greater(ratio, 0.8)))
    res["PT"] = int(np.sum(np.greater_equal(ratio, 0.2))) - res["MT"]
    res["ML"] = n_gt - res["MT"] - res["PT"]
    res["Frag"] = int(np.sum(np.subtract(gt_frag[gt_frag > 0], 1)))
    return _clear_final(res)


def _clear_final(res: dict[str, Any]) -> dict[str, Any]:
    tp, fn, fp, idsw = res["CLR_TP"], res["CLR_FN"], res["CLR_FP"], res["IDSW"]
    res["MOTA"] = (tp - fp - idsw) / np.maximum(1.0, tp + fn)
    res["MOTP"] = res["MOTP_sum"] / np.maximum(1.0, tp)
    res["sMOTA"] = (res["MOTP_sum"] - fp - idsw) / np.maximum(1.0, tp + fn)
    res["MODA"] = (tp - fp) / np.maximum(1.0, tp + fn)
    res["CLR_Re"] = tp / np.maximum(1.0, tp + fn)
    res["CLR_Pr"] = tp / np.maximum(1.0, tp + fp)
    return res


def _identity(data: dict[str, Any], threshold: float = 0.5) -> dict[str, Any]:
    res: dict[str, Any] = {"IDTP": 0, "IDFN": 0, "IDFP": 0}
    if data["num_tracker_dets"] == 0:
        res["IDFN"] = data["num_gt_dets"]
        return _identity_final(res)
    if data["num_gt_dets"] == 0:
        res["IDFP"] = data["num_tracker_dets"]
        return _identity_final(res)
    n_g, n_t = data["num_gt_ids"], data["num_tracker_ids"]
    potential = np.zeros((n_g, n_t))
    gt_count = np.zeros(n_g)
    tr_count = np.zeros(n_t)
    for g, t, sim in zip(data["gt_ids"], data["tracker_ids"], data["similarity_scores"], strict=True):
        mg, mt = np.nonzero(np.greater_equal(sim, threshold))
        potential[g[mg], t[mt]] += 1
        gt_count[g] += 1
        tr_count[t] += 1
    fp_mat = np.zeros((n_g + n_t, n_g + n_t))
    fn_mat = np.zeros((n_g + n_t, n_g + n_t))
    fp_mat[n_g:, :n_t] = 1e10
    fn_mat[:n_g, n_t:] = 1e10
    for i in range(n_g):
        fn_mat[i, :n_t] = gt_count[i]
        fn_mat[i, n_t + i] = gt_count[i]
    for j in range(n_t):
        fp_mat[:n_g, j] = tr_count[j]
        fp_mat[j + n_g, j] = tr_count[j]
    fn_mat[:n_g, :n_t] -= potential
    fp_mat[:n_g, :n_t] -= potential
    rows, cols = _lsa(fn_mat + fp_mat)
    res["IDFN"] = int(fn_mat[rows, cols].sum())
    res["IDFP"] = int(fp_mat[rows, cols].sum())
    res["IDTP"] = int(gt_count.sum() - res["IDFN"])
    return _identity_final(res)


def _identity_final(res: dict[str, Any]) -> dict[str, Any]:
    tp, fn, fp = res["IDTP"], res["IDFN"], res["IDFP"]
    res["IDR"] = tp / np.maximum(1.0, tp + fn)
    res["IDP"] = tp / np.maximum(1.0, tp + fp)
    res["IDF1"] = tp / np.maximum(1.0, tp + 0.5 * fp + 0.5 * fn)
    return res


def _summary(res: Mapping[str, Any]) -> dict[str, float]:
    h, c, i = res["hota"], res["clear"], res["identity"]
    return {
        "HOTA": float(np.mean(h["HOTA"])),
        "DetA": float(np.mean(h["DetA"])),
        "AssA": float(np.mean(h["AssA"])),
        "LocA": float(np.mean(h["LocA"])),
        "MOTSA": float(c["MOTA"]),
        "sMOTSA": float(c["sMOTA"]),
        "MOTSP": float(c["MOTP"]),
        "IDSW": int(c["IDSW"]),
        "IDF1": float(i["IDF1"]),
    }


def combine_mot(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine per-sequence :meth:`MOTAccumulator.compute` results as TrackEval ``combine_sequences`` does."""
    rs = list(results)
    h: dict[str, Any] = {k: sum(r["hota"][k] for r in rs) for k in ("HOTA_TP", "HOTA_FN", "HOTA_FP")}
    tp = np.maximum(1.0, h["HOTA_TP"])
    for k in ("AssRe", "AssPr", "AssA"):
        h[k] = sum(r["hota"][k] * r["hota"]["HOTA_TP"] for r in rs) / tp
    loca = sum(r["hota"]["LocA"] * r["hota"]["HOTA_TP"] for r in rs)
    h["LocA"] = np.maximum(1e-10, loca) / np.maximum(1e-10, h["HOTA_TP"])
    h = _hota_final(h)
    c: dict[str, Any] = {k: sum(r["clear"][k] for r in rs)
                         for k in ("CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag", "CLR_Frames",
                                   "MOTP_sum")}
    c = _clear_final(c)
    i: dict[str, Any] = {k: sum(r["identity"][k] for r in rs) for k in ("IDTP", "IDFN", "IDFP")}
    i = _identity_final(i)
    res = {"hota": h, "clear": c, "identity": i}
    return res | _summary(res)
