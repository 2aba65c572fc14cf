"""HOTA / DetA / AssA, MOTSA / sMOTSA and IDF1 for multi-object mask tracking, checked against TrackEval
itself (PyPI ``trackeval`` 1.3.0, run on MOTS-format files) and against values derived by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vidtrack.eval import MOTAccumulator, combine_mot

H, W = 60, 80


def _rect(y: int, x: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
    return m


def _synthetic(seq: int) -> tuple[list[dict[int, np.ndarray]], list[dict[int, np.ndarray]]]:
    """Per-frame {id: mask} of ground truth and tracker; masks never overlap within one side.

    gt 1 is followed by tracker 11 then 12 (an id switch at frame 6); gt 2 by 13 (shrunk, missed on frames 3-4);
    gt 3 appears on frame 4 and is followed from frame 6 by 14, badly at first; tracker 15 is a false positive."""
    gts, trs = [], []
    n = 12 if seq == 0 else 8
    for t in range(n):
        g = {1: _rect(5, 2 + t, 12, 14), 2: _rect(30, 40 - t, 15, 12)}
        if t >= 4:
            g[3] = _rect(48, 10 + 2 * t, 10, 16)
        p = {(11 if t < 6 else 12): _rect(6, 3 + t, 12, 13)}
        if t not in (3, 4):
            p[13] = _rect(31, 41 - t, 13, 10)
        if t >= 6:
            p[14] = _rect(48 + (2 if t < 8 else 0), 10 + 2 * t + (9 if t < 8 else 1), 10, 16)
        if t in (2, 3):
            p[15] = _rect(40, 65, 8, 8)
        if seq == 1:  # a second sequence with other ids to exercise combining
            p = {k + 100: v for k, v in p.items()}
        gts.append(g)
        trs.append(p)
    return gts, trs


def _mots_line(t: int, oid: int, m: np.ndarray) -> str:
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return f"{t + 1} {2000 + oid} 2 {H} {W} {rle['counts'].decode('ascii')}\n"


def _trackeval(tmp: Path, seqs: list[tuple[list, list]]) -> dict:
    te = pytest.importorskip("trackeval", reason="trackeval is a test dependency (pip install --no-deps trackeval)")
    gt_dir, tr_dir = tmp / "gt", tmp / "trackers"
    info = {}
    for s, (gts, trs) in enumerate(seqs):
        name = f"seq{s}"
        info[name] = len(gts)
        (gt_dir / name / "gt").mkdir(parents=True)
        (tr_dir / "ours" / "data").mkdir(parents=True, exist_ok=True)
        with open(gt_dir / name / "gt" / "gt.txt", "w") as f:
            for t, fr in enumerate(gts):
                for k, m in fr.items():
                    f.write(_mots_line(t, k, m))
        with open(tr_dir / "ours" / "data" / f"{name}.txt", "w") as f:
            for t, fr in enumerate(trs):
                for k, m in fr.items():
                    f.write(_mots_line(t, k, m))
    ec = te.Evaluator.get_default_eval_config()
    ec.update(USE_PARALLEL=False, PRINT_RESULTS=False, PRINT_CONFIG=False, OUTPUT_SUMMARY=False,
              OUTPUT_DETAILED=False, PLOT_CURVES=False, TIME_PROGRESS=False, DISPLAY_LESS_PROGRESS=True,
              LOG_ON_ERROR=None, OUTPUT_EMPTY_CLASSES=False)
    dc = te.datasets.MOTSChallenge.get_default_dataset_config()
    dc.update(GT_FOLDER=str(gt_dir), TRACKERS_FOLDER=str(tr_dir), SEQ_INFO=info, SKIP_SPLIT_FOL=True,
              TRACKERS_TO_EVAL=["ours"], PRINT_CONFIG=False, OUTPUT_FOLDER=str(tmp / "out"))
    metrics = [te.metrics.HOTA(), te.metrics.CLEAR({"PRINT_CONFIG": False}), te.metrics.Identity({"PRINT_CONFIG":
                                                                                                 False})]
    res, _ = te.Evaluator(ec).evaluate([te.datasets.MOTSChallenge(dc)], metrics)
    return res["MOTSChallenge"]["ours"]


def _ours(seqs: list[tuple[list, list]]) -> tuple[list[dict], dict]:
    per = []
    for gts, trs in seqs:
        acc = MOTAccumulator()
        for g, p in zip(gts, trs, strict=True):
            acc.add_masks(g, p)
        per.append(acc.compute())
    return per, combine_mot(per)


def _check(ours: dict, ref: dict) -> float:
    worst = 0.0
    for k in ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr"):
        worst = max(worst, float(np.max(np.abs(np.asarray(ours["hota"][k]) - ref["HOTA"][k]))))
    for k in ("MOTA", "sMOTA", "MOTP", "CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag"):
        worst = max(worst, abs(float(ours["clear"][k]) - float(ref["CLEAR"][k])))
    for k in ("IDF1", "IDTP", "IDFN", "IDFP"):
        worst = max(worst, abs(float(ours["identity"][k]) - float(ref["Identity"][k])))
    return worst


def test_hota_clear_identity_equal_trackeval(tmp_path):
    seqs = [_synthetic(0), _synthetic(1)]
    ref = _trackeval(tmp_path, seqs)
    per, combined = _ours(seqs)
    for s, r in enumerate(per):
        assert _check(r, ref[f"seq{s}"]["pedestrian"]) < 1e-12
    assert _check(combined, ref["COMBINED_SEQ"]["pedestrian"]) < 1e-12
    assert combined["HOTA"] == pytest.approx(float(np.mean(ref["COMBINED_SEQ"]["pedestrian"]["HOTA"]["HOTA"])))
    assert combined["MOTSA"] == pytest.approx(float(ref["COMBINED_SEQ"]["pedestrian"]["CLEAR"]["MOTA"]))
    assert per[0]["IDSW"] == 1 and 0.3 < combined["HOTA"] < 0.9


def test_hand_derived_values():
    """Perfect tracking: HOTA = DetA = AssA = 1, MOTSA = 1. One object tracked perfectly for 4 frames but under
    two ids (2 + 2 frames): DetA = 1; every TP's pair has TPA = 2 of TPA+FNA+FPA = 4, so AssA = 1/2 and
    HOTA = sqrt(1/2); CLEAR counts one id switch, MOTSA = (4 - 0 - 1)/4. Nothing predicted: all zeros."""
    m = _rect(10, 10, 20, 20)
    perfect = MOTAccumulator()
    swap = MOTAccumulator()
    empty = MOTAccumulator()
    for t in range(4):
        perfect.add_masks({1: m, 2: _rect(40, 40, 10, 10)}, {5: m, 6: _rect(40, 40, 10, 10)})
        swap.add_masks({1: m}, {(7 if t < 2 else 8): m})
        empty.add_masks({1: m}, {9: np.zeros((H, W), bool)})  # an empty mask is not a detection
    p = perfect.compute()
    assert p["HOTA"] == pytest.approx(1.0) and p["DetA"] == pytest.approx(1.0) and p["MOTSA"] == 1.0
    s = swap.compute()
    assert s["DetA"] == pytest.approx(1.0) and s["AssA"] == pytest.approx(0.5)
    assert s["HOTA"] == pytest.approx(np.sqrt(0.5)) and s["IDSW"] == 1 and s["MOTSA"] == pytest.approx(0.75)
    assert s["IDF1"] == pytest.approx(0.5)
    e = empty.compute()
    assert e["HOTA"] == 0.0 and e["MOTSA"] == 0.0 and e["clear"]["CLR_FN"] == 4
