"""One-pass evaluation: success AUC, OP50/75, precision, both normalised precisions, GOT-10k AO/SR.

Expected values come from two independent places, named in each test: values worked out by hand on small box
fixtures, and a direct transcription of got10k-toolkit's published formulas (``got10k/utils/metrics.py``,
``experiments/lasot.py``, ``experiments/got10k.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

from vidtrack.errors import InputError
from vidtrack.eval import BoxDataset, got10k_sequence, ope_sequence, score_boxes, summarize_got10k, summarize_ope
from vidtrack.eval.io import read_boxes

GT_A = [[0, 0, 10, 10]] * 5
PRED_A = [[50, 50, 10, 10],  # frame 0: replaced by the ground truth -> IoU 1, centre error 0
          [1, 0, 10, 5],     # IoU 45/105 = 3/7; centre error sqrt(1 + 2.5²) = 2.69; normalised 0.269
          [4, 1, 10, 10],    # IoU 54/146 = 0.370; centre error sqrt(17) = 4.12; normalised 0.412
          [20, 20, 10, 10],  # IoU 0; centre error 28.3; normalised 2.83
          [0, 0, 9, 9]]      # IoU 81/100; centre error 0.707; normalised 0.0707


def test_hand_fixture_success_precision_and_both_normalised_precisions():
    """By hand. IoUs 1, 3/7, 0.370, 0, 0.81. Frames with IoU > τ for τ = k/20: k=0: 4, k=1..7: 4 (x7),
    k=8: 3, k=9..16: 2 (x8), k=17..19: 1 (x3), k=20: 0 -> 54 of 5·21, AUC = 54/105. Centre errors <= 20 px: 4 of
    5. Normalised errors <= 0.20: frames 0 and 4. Thresholds k/100 passed per frame: 51, 24 (k >= 27), 9
    (k >= 42), 0, 43 (k >= 8) -> 127 of 5·51."""
    r = ope_sequence(PRED_A, GT_A, name="A")
    s = r.scores
    assert s["success_auc"] == pytest.approx(54 / 105, abs=1e-12)
    assert s["OP50"] == pytest.approx(2 / 5) and s["OP75"] == pytest.approx(2 / 5)
    assert s["precision@20"] == pytest.approx(4 / 5)
    assert s["norm_precision@0.20"] == pytest.approx(2 / 5)
    assert s["norm_precision_auc51"] == pytest.approx(127 / 255, abs=1e-12)
    assert r.frames == 5 and r.absent == 0


def test_perfect_tracker_scores_20_of_21():
    gt = np.array([[3, 4, 30, 20]] * 7, float)
    s = ope_sequence(gt, gt).scores
    assert s["success_auc"] == pytest.approx(20 / 21) and s["precision@20"] == 1.0


def test_lasot_absent_frames_fail_but_stay_in_the_denominator_and_empty_boxes_carry_forward():
    """By hand. 4 frames, frame 2 absent (LaSOT full_occlusion | out_of_view), frame 3 predicted empty (0x0):
    the LaSOT toolkit carries frame 2's box (= GT) forward. 'fail': IoUs 1, 1, -, 1 over 4 frames -> S(τ) = 3/4
    for τ < 1 -> AUC = 20·(3/4)/21. 'drop': 3 frames, all perfect -> 20/21. Without carrying, frame 3 fails."""
    gt = [[10, 10, 20, 20]] * 4
    pred = [[0, 0, 5, 5], [10, 10, 20, 20], [10, 10, 20, 20], [0, 0, 0, 0]]
    absent = [0, 0, 1, 0]
    fail = ope_sequence(pred, gt, absent=absent)
    assert fail.scores["success_auc"] == pytest.approx(20 * 0.75 / 21)
    assert fail.scores["precision@20"] == pytest.approx(0.75)
    assert fail.scores["norm_precision@0.20"] == pytest.approx(0.75)
    assert fail.frames == 4 and fail.absent == 1
    drop = ope_sequence(pred, gt, absent=absent, absent_policy="drop")
    assert drop.scores["success_auc"] == pytest.approx(20 / 21) and drop.frames == 3
    raw = ope_sequence(pred, gt, absent=absent, carry_empty=False)
    assert raw.scores["success_auc"] == pytest.approx(20 * 0.5 / 21)
    # sequences count equally: the mean of the two sequences' AUCs
    both = summarize_ope([ope_sequence(PRED_A, GT_A), fail])
    assert both["success_auc"] == pytest.approx((54 / 105 + 20 * 0.75 / 21) / 2, abs=1e-12)
    assert both["sequences"] == 2


def test_nan_ground_truth_is_absent():
    gt = [[10, 10, 20, 20], [np.nan] * 4, [10, 10, 20, 20]]
    r = ope_sequence([[10, 10, 20, 20]] * 3, gt)
    assert r.absent == 1 and r.scores["precision@20"] == pytest.approx(2 / 3)


def test_got10k_ao_sr_pool_frames_clip_to_the_image_and_skip_frame0_and_cover0():
    """By hand. G1 (100x100): frame 1 pred (90,90,20,20) is clipped to (90,90,10,10) -> IoU 100/400 = 0.25;
    frame 2 has cover 0 and is left out; frame 3 IoU 1. G2 (50x40): IoU 1; pred (-5,5,20,10) becomes (0,5,20,10)
    (got10k keeps the width) -> 100/200 = 0.5 (minus eps, so not > 0.5); then 0. Pooled: 0.25, 1, 1, 0.5, 0 ->
    AO = 2.75/5 (a per-sequence mean would give 0.5625), SR0.5 = SR0.75 = 2/5."""
    g1 = got10k_sequence(np.array([[0, 0, 1, 1], [90, 90, 20, 20], [0, 0, 1, 1], [50, 50, 10, 10]], float),
                         np.array([[0, 0, 10, 10], [80, 80, 20, 20], [10, 10, 10, 10], [50, 50, 10, 10]], float),
                         cover=[8, 8, 0, 8], resolution=(100, 100), name="G1")
    g2 = got10k_sequence(np.array([[0, 0, 1, 1], [5, 5, 10, 10], [-5, 5, 20, 10], [30, 30, 10, 10]], float),
                         np.array([[5, 5, 10, 10]] * 4, float), resolution=(50, 40), name="G2")
    np.testing.assert_allclose(g1.ious, [0.25, 1.0], atol=1e-12)
    np.testing.assert_allclose(g2.ious, [1.0, 0.5, 0.0], atol=1e-12)
    s = summarize_got10k([g1, g2])
    assert s["AO"] == pytest.approx(0.55) and s["SR0.5"] == pytest.approx(0.4) and s["SR0.75"] == pytest.approx(0.4)
    assert s["frames"] == 5


# --------------------------------------------------------------------------------------------------
# got10k-toolkit transcription (GitHub master), used as an independent reference on random boxes
# --------------------------------------------------------------------------------------------------


def _g_center_error(rects1, rects2):
    centers1 = rects1[..., :2] + (rects1[..., 2:] - 1) / 2
    centers2 = rects2[..., :2] + (rects2[..., 2:] - 1) / 2
    return np.sqrt(np.sum(np.power(centers1 - centers2, 2), axis=-1))


def _g_normalized_center_error(rects1, rects2):
    centers1 = rects1[..., :2] + (rects1[..., 2:] - 1) / 2
    centers2 = rects2[..., :2] + (rects2[..., 2:] - 1) / 2
    return np.sqrt(np.sum(np.power((centers1 - centers2) / np.maximum(np.array([[1., 1.]]), rects2[:, 2:]), 2),
                          axis=-1))


def _g_intersection(rects1, rects2):
    x1 = np.maximum(rects1[..., 0], rects2[..., 0])
    y1 = np.maximum(rects1[..., 1], rects2[..., 1])
    x2 = np.minimum(rects1[..., 0] + rects1[..., 2], rects2[..., 0] + rects2[..., 2])
    y2 = np.minimum(rects1[..., 1] + rects1[..., 3], rects2[..., 1] + rects2[..., 3])
    w = np.maximum(x2 - x1, 0)
    h = np.maximum(y2 - y1, 0)
    return np.stack([x1, y1, w, h]).T


def _g_rect_iou(rects1, rects2, bound=None):
    if bound is not None:
        rects1[:, 0] = np.clip(rects1[:, 0], 0, bound[0])
        rects1[:, 1] = np.clip(rects1[:, 1], 0, bound[1])
        rects1[:, 2] = np.clip(rects1[:, 2], 0, bound[0] - rects1[:, 0])
        rects1[:, 3] = np.clip(rects1[:, 3], 0, bound[1] - rects1[:, 1])
        rects2[:, 0] = np.clip(rects2[:, 0], 0, bound[0])
        rects2[:, 1] = np.clip(rects2[:, 1], 0, bound[1])
        rects2[:, 2] = np.clip(rects2[:, 2], 0, bound[0] - rects2[:, 0])
        rects2[:, 3] = np.clip(rects2[:, 3], 0, bound[1] - rects2[:, 1])
    rects_inter = _g_intersection(rects1, rects2)
    areas_inter = np.prod(rects_inter[..., 2:], axis=-1)
    areas1 = np.prod(rects1[..., 2:], axis=-1)
    areas2 = np.prod(rects2[..., 2:], axis=-1)
    areas_union = areas1 + areas2 - areas_inter
    eps = np.finfo(float).eps
    ious = areas_inter / (areas_union + eps)
    return np.clip(ious, 0.0, 1.0)


def _g_lasot_report(seqs):
    """ExperimentLaSOT.report on in-memory (boxes, anno) pairs (no NaN rows, so _calc_metrics keeps all)."""
    succ, prec, nprec = [], [], []
    for boxes, anno in seqs:
        boxes = boxes.copy()
        boxes[0] = anno[0]
        ious = _g_rect_iou(boxes.copy(), anno.copy())[:, np.newaxis]
        ce = _g_center_error(boxes, anno)[:, np.newaxis]
        nce = _g_normalized_center_error(boxes, anno)[:, np.newaxis]
        succ.append(np.mean(np.greater(ious, np.linspace(0, 1, 21)[np.newaxis, :]), axis=0))
        prec.append(np.mean(np.less_equal(ce, np.arange(0, 51)[np.newaxis, :]), axis=0))
        nprec.append(np.mean(np.less_equal(nce, np.linspace(0, 0.5, 51)[np.newaxis, :]), axis=0))
    succ_curve, prec_curve, norm_curve = (np.mean(np.stack(c), axis=0) for c in (succ, prec, nprec))
    return {"success_score": np.mean(succ_curve), "precision_score": prec_curve[20],
            "normalized_precision_score": np.mean(norm_curve), "success_rate": succ_curve[21 // 2],
            "norm_curve": norm_curve}


def _random_seq(rng, n, w=320, h=240):
    gt = np.column_stack([rng.uniform(0, w - 60, n), rng.uniform(0, h - 60, n), rng.uniform(8, 60, (n, 2))])
    pred = gt + rng.normal(0, 6, (n, 4))
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    lost = rng.random(n) < 0.15
    pred[lost, :2] += 100
    return np.round(pred, 2), np.round(gt, 2)


def test_ope_equals_got10k_transcription_on_random_boxes():
    rng = np.random.default_rng(7)
    seqs = [_random_seq(rng, n) for n in (30, 57, 12)]
    ref = _g_lasot_report(seqs)
    ours = summarize_ope([ope_sequence(p, g) for p, g in seqs])
    assert ours["success_auc"] == ref["success_score"]
    assert ours["precision@20"] == ref["precision_score"]
    assert ours["norm_precision_auc51"] == ref["normalized_precision_score"]
    assert ours["OP50"] == ref["success_rate"]
    assert ours["norm_precision@0.20"] == ref["norm_curve"][20]


def test_got10k_equals_transcription_of_experiment_got10k():
    rng = np.random.default_rng(8)
    seqs, ious = [], []
    for n in (20, 45):
        pred, gt = _random_seq(rng, n)
        pred[3] = [-20, 200, 80, 80]  # crosses the left and bottom edges
        cover = rng.integers(0, 9, n)
        seqs.append(got10k_sequence(pred, gt, cover=cover, resolution=(320, 240)))
        ious.append(_g_rect_iou(pred[1:].copy(), gt[1:].copy(), bound=(320, 240))[cover[1:] > 0])
    pooled = np.concatenate(ious)
    s = summarize_got10k(seqs)
    assert s["AO"] == np.mean(pooled) and s["SR0.5"] == np.mean(pooled > 0.5)
    assert s["SR0.75"] == np.mean(pooled > 0.75)




def test_box_reading_and_length_errors(tmp_path):
    (tmp_path / "a.txt").write_text("1,2,3,4\n5\t6\t7\t8\n\n9 10 11 12\nnan,nan,nan,nan\n")
    b = read_boxes(tmp_path / "a.txt")
    assert b.shape == (4, 4) and b[1, 2] == 7 and np.isnan(b[3]).all()
    (tmp_path / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(InputError, match="expected 4 numbers"):
        read_boxes(tmp_path / "bad.txt")
    with pytest.raises(InputError, match="prediction has 2 boxes but the ground truth 3"):
        ope_sequence([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]] * 3, name="s")
    with pytest.raises(InputError, match="every frame is absent"):
        ope_sequence([[0, 0, 1, 1]], [[0, 0, 1, 1]], absent=[1], absent_policy="drop")


def test_trackingnet_and_otb_layouts_are_found_and_scored(tmp_path):
    """TrackingNet: anno/<seq>.txt + frames/<seq>/; OTB: <seq>/groundtruth_rect.txt (tab separated)."""
    tn = tmp_path / "TRAIN_0"
    (tn / "anno").mkdir(parents=True)
    (tn / "frames" / "abc").mkdir(parents=True)
    (tn / "anno" / "abc.txt").write_text("0,0,10,10\n1,1,10,10\n")
    otb = tmp_path / "otb" / "Crossing"
    otb.mkdir(parents=True)
    (otb / "groundtruth_rect.txt").write_text("5\t5\t20\t20\n6\t5\t20\t20\n7\t5\t20\t20\n")
    preds = tmp_path / "pred"
    preds.mkdir()
    (preds / "abc.txt").write_text("0,0,10,10\n1,1,10,10\n")
    (preds / "Crossing.txt").write_text("5,5,20,20\n6,5,20,20\n100,100,20,20\n")
    assert BoxDataset(tn).names == ["abc"]
    assert BoxDataset(tmp_path / "otb").names == ["Crossing"]
    assert score_boxes(BoxDataset(tn), preds).summary["success_auc"] == pytest.approx(20 / 21)
    rep = score_boxes(BoxDataset(tmp_path / "otb"), preds)
    assert rep.summary["success_auc"] == pytest.approx(20 / 21 * 2 / 3) and rep.summary["AO"] == pytest.approx(0.5)
