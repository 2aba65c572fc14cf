"""J, F, J&F, recall and decay: equality with vos-benchmark (run for real) on DAVIS-2016 sequences with
perturbed predictions, DAVIS edge cases, and decay past 255 frames.

vos-benchmark (PyPI, MIT) is the upstream of SAM 2's SA-V evaluator; its per-frame J and F are davis2017's.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import shared_data
from vidtrack.errors import InputError
from vidtrack.eval import DAVIS, SAV, FrameMasks, VOSDataset, db_statistics, evaluate_vos_sequence, score_vos
from vidtrack.eval.io import davis_palette, read_label_png, write_label_png
from vidtrack.eval.vos import _dilate_numpy, boundary_f, disk, region_j, seg2bmap, tolerance_radius

SEQS = ("car-shadow", "motocross-jump")


def _palette(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(list(davis_palette()))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _shift(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = m[max(-dy, 0) : h - max(dy, 0),
                                                                      max(-dx, 0) : w - max(dx, 0)]
    return out


def _late_box(t: int, h: int = 480, w: int = 854) -> np.ndarray:
    """Object 2 of car-shadow: a box that appears on frame 10 and moves right."""
    m = np.zeros((h, w), bool)
    if t >= 10:
        x = 40 + 6 * (t - 10)
        m[30:110, x : x + 90] = True
    return m


@pytest.fixture(scope="module")
def davis_fixture(tmp_path_factory) -> dict[str, object]:
    """DAVIS-layout GT (palette, index 1 = the DAVIS-2016 object) and perturbed predictions.

    car-shadow (dense): object 1 eroded / shifted / missing on frames 20-24; object 2 appears on frame 10 in the
    GT, is predicted from frame 8 (two false-positive frames before it exists), and is shifted; a spurious
    prediction-only id 3. motocross-jump (sparse: every 2nd frame annotated, predictions on all frames): object 1
    drifting further every frame.
    """
    src = shared_data("davis2016", "Annotations", "480p")
    root = tmp_path_factory.mktemp("davis")
    gt_root, gt_nolate, pred_root = root / "gt", root / "gt_nolate", root / "pred"
    for seq in SEQS:
        files = sorted((src / seq).glob("*.png"))
        for t, f in enumerate(files):
            obj = np.asarray(Image.open(f)) == 255
            if seq == "car-shadow":
                late = _late_box(t) & ~obj
                gt = obj.astype(np.uint8)
                _palette(gt_nolate / seq / f.name, gt)
                gt[late] = 2
                _palette(gt_root / seq / f.name, gt)
                if t % 3 == 0:
                    p1 = ndimage.binary_erosion(obj, iterations=3)
                elif t % 3 == 1:
                    p1 = _shift(obj, 3, -5)
                else:
                    p1 = obj.copy()
                if 20 <= t <= 24:
                    p1[:] = False
                pred = p1.astype(np.uint8)
                if t >= 8:
                    pred[_shift(_late_box(max(t, 10)), 2, 4) & ~p1] = 2
                if t in (15, 16, 30):
                    pred[400:440, 700:760] = 3
            else:
                if t % 2 == 0:
                    _palette(gt_root / seq / f.name, obj.astype(np.uint8))
                    _palette(gt_nolate / seq / f.name, obj.astype(np.uint8))
                pred = _shift(obj, t // 4, t // 3).astype(np.uint8)
            _palette(pred_root / seq / f.name, pred)
    return {"gt": gt_root, "gt_nolate": gt_nolate, "pred": pred_root, "root": root}


def _vos_benchmark(gt: Path, pred: Path) -> tuple[float, float, float, dict]:
    vb = pytest.importorskip("vos_benchmark.benchmark", reason="vos-benchmark is a test dependency (pip install "
                                                               "vos-benchmark)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jf, j, f, objs = vb.benchmark([str(gt)], [str(pred)], strict=True, num_processes=2, verbose=False)
    return jf[0] / 100, j[0] / 100, f[0] / 100, objs[0]


def _compare(report, ref_objs: dict) -> float:
    ours = {(r["sequence"], r["object"]): r for r in report.rows}
    theirs = {(seq, int(o)): (iou[o] / 100, bf[o] / 100) for seq, (iou, bf) in ref_objs.items() for o in iou}
    assert set(ours) == set(theirs)
    worst = 0.0
    for k, (j, f) in theirs.items():
        worst = max(worst, abs(ours[k]["J-Mean"] - j), abs(ours[k]["F-Mean"] - f))
    return worst


def test_sav_protocol_equals_vos_benchmark_with_late_object_missing_frames_and_sparse_gt(davis_fixture):
    ref_jf, ref_j, ref_f, ref_objs = _vos_benchmark(davis_fixture["gt"], davis_fixture["pred"])
    report = score_vos(VOSDataset(davis_fixture["gt"]), davis_fixture["pred"], SAV)
    s = report.summary
    assert abs(s["J&F"] - ref_jf) < 1e-6 and abs(s["J-Mean"] - ref_j) < 1e-6 and abs(s["F-Mean"] - ref_f) < 1e-6
    assert _compare(report, ref_objs) < 1e-6
    # object 2 counts from frame 8 (first predicted), object 3 (never in GT) is dropped, 3 objects in all
    rows = {(r["sequence"], r["object"]): r for r in report.rows}
    assert set(rows) == {("car-shadow", 1), ("car-shadow", 2), ("motocross-jump", 1)}
    assert rows[("car-shadow", 2)]["frames"] == 31  # frames 8..38
    assert rows[("motocross-jump", 1)]["frames"] == 18  # 20 annotated frames minus first and last
    assert 0.3 < s["J&F"] < 0.95


def test_davis_protocol_equals_vos_benchmark_when_objects_are_in_frame_0(davis_fixture):
    ref_jf, ref_j, ref_f, ref_objs = _vos_benchmark(davis_fixture["gt_nolate"], davis_fixture["pred"])
    report = score_vos(VOSDataset(davis_fixture["gt_nolate"]), davis_fixture["pred"], DAVIS)
    assert abs(report.summary["J&F"] - ref_jf) < 1e-6
    assert abs(report.summary["J-Mean"] - ref_j) < 1e-6 and abs(report.summary["F-Mean"] - ref_f) < 1e-6
    assert _compare(report, ref_objs) < 1e-6
    assert np.isfinite(report.summary["J-Decay"]) and report.summary["J-Decay"] > 0  # motocross drifts away


def test_davis_protocol_rejects_a_late_appearing_object(davis_fixture):
    with pytest.raises(InputError, match=r"object\(s\) \[2\] first appear.*--rules sav"):
        score_vos(VOSDataset(davis_fixture["gt"], sequences="car-shadow"), davis_fixture["pred"], DAVIS)


def test_sav_per_object_layout_with_overlap_equals_vos_benchmark_per_object(davis_fixture, tmp_path):
    """SA-V layout <video>/<obj>/<frame>.png, sparse (every 4th frame), objects overlapping. SA-V's evaluator
    runs vos-benchmark's Evaluator once per object folder, so the reference is vos-benchmark on one binary
    sequence per object."""
    src = shared_data("davis2016", "Annotations", "480p", "car-shadow")
    files = sorted(src.glob("*.png"))
    sav_gt, sav_pred, ref_gt, ref_pred = (tmp_path / n for n in ("sav_gt", "sav_pred", "ref_gt", "ref_pred"))
    for t, f in enumerate(files):
        car = np.asarray(Image.open(f)) == 255
        cover = np.zeros_like(car)
        if t >= 6:  # object 001 appears on frame 6 and overlaps the car
            cover[200:330, 300 + 4 * t : 520 + 4 * t] = True
        gts = {0: car, 1: cover}
        preds = {0: _shift(car, 2, 3) if t % 2 else ndimage.binary_erosion(car, iterations=2),
                 1: _shift(cover, -3, 6) if t >= 9 else np.zeros_like(car)}
        for o in (0, 1):
            _palette(sav_pred / "car-shadow" / f"{o:03d}" / f.name, preds[o].astype(np.uint8))
            _palette(ref_pred / f"car-shadow_{o}" / f.name, preds[o].astype(np.uint8))
            if t % 4 == 0:
                _palette(sav_gt / "car-shadow" / f"{o:03d}" / f.name, gts[o].astype(np.uint8))
                _palette(ref_gt / f"car-shadow_{o}" / f.name, gts[o].astype(np.uint8))
    _, _, _, ref_objs = _vos_benchmark(ref_gt, ref_pred)
    report = score_vos(VOSDataset(sav_gt, "sav"), sav_pred, SAV)
    ours = {r["object"]: r for r in report.rows}
    assert set(ours) == {0, 1}
    for o in (0, 1):
        iou, bf = ref_objs[f"car-shadow_{o}"]
        assert abs(ours[o]["J-Mean"] - iou[1] / 100) < 1e-6
        assert abs(ours[o]["F-Mean"] - bf[1] / 100) < 1e-6
    # annotated 0, 4, ..., 36; evaluated 4..32; object 001 is in the GT from frame 8 (predicted from 9): 8..32
    assert ours[1]["frames"] == 7


def test_score_reads_davis_2016_binary_png_as_object_1():
    f = shared_data("davis2016", "Annotations", "480p", "car-shadow", "00000.png")
    labels = read_label_png(f)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}


def test_write_label_png_roundtrip(tmp_path):
    lab = np.zeros((5, 7), np.uint8)
    lab[1:3, 2:5] = 2
    lab[4, 6] = 255
    write_label_png(tmp_path / "a.png", lab)
    img = Image.open(tmp_path / "a.png")
    assert img.mode == "P" and img.getpalette()[3:6] == [128, 0, 0]
    assert (read_label_png(tmp_path / "a.png") == lab).all()


# --------------------------------------------------------------------------------------------------
# per-frame definitions and edge cases
# --------------------------------------------------------------------------------------------------


def test_edge_cases_follow_davis():
    """Both empty: J = F = 1. Prediction empty (GT not): J = 0, F = 0 (P=1, R=0). GT empty: J = 0, F = 0."""
    z = np.zeros((48, 64), bool)
    m = z.copy()
    m[10:20, 10:30] = True
    assert region_j(z, z) == 1.0 and boundary_f(z, z) == 1.0
    assert region_j(z, m) == 0.0 and boundary_f(z, m) == 0.0
    assert region_j(m, z) == 0.0 and boundary_f(m, z) == 0.0
    assert region_j(m, m) == 1.0 and boundary_f(m, m) == 1.0
    ev = pytest.importorskip("vos_benchmark.evaluator").Evaluator()
    lab = m.astype(np.uint8)
    for pred, gt in ((z, z), (z, lab), (lab, z)):
        ev.feed_frame(np.asarray(pred, np.uint8), np.asarray(gt, np.uint8))
    # vos-benchmark only tracks the object from its first appearance: frames 2 and 3 above
    assert ev.object_iou[1] == [0, 0] and ev.boundary_f[1] == [0, 0]


def test_boundary_and_dilation_match_the_reference_primitives():
    skm = pytest.importorskip("skimage.morphology")
    vbu = pytest.importorskip("vos_benchmark.utils")
    cv2 = pytest.importorskip("cv2")
    for r in (0, 1, 4, 8, 12):
        assert (disk(r) == skm.disk(float(r))).all()
    assert tolerance_radius(480, 854) == 8 and tolerance_radius(720, 1280) == 12 and tolerance_radius(1080, 1920) == 18
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        b = rng.random((h, w)) < 0.1
        r = int(rng.integers(0, 10))
        assert (_dilate_numpy(b, r) == cv2.dilate(b.astype(np.uint8), disk(r)).astype(bool)).all()
        assert (seg2bmap(b) == vbu._seg2bmap(b)).all()


def test_f_without_opencv_equals_f_with_it(monkeypatch):
    rng = np.random.default_rng(2)
    cases = []
    for _ in range(10):
        a = ndimage.binary_dilation(rng.random((60, 90)) < 0.01, iterations=4)
        b = ndimage.binary_dilation(rng.random((60, 90)) < 0.01, iterations=3)
        cases.append((a, b, boundary_f(a, b)))
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)
    for a, b, f in cases:
        assert boundary_f(a, b) == f


def _davis2017_statistics(v: np.ndarray, index_dtype) -> tuple[float, float, float]:
    """davis2017-evaluation utils.db_statistics, transcribed; index_dtype=np.uint8 is the original."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        m = np.nanmean(v)
        o = np.nanmean(v > 0.5)
    ids = np.round(np.linspace(1, len(v), 4 + 1) + 1e-10) - 1
    ids = ids.astype(index_dtype)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(0, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        d = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(m), float(o), float(d)


def test_statistics_equal_davis2017_below_256_frames_and_stay_right_beyond():
    rng = np.random.default_rng(3)
    v = rng.random(38)
    assert db_statistics(v) == _davis2017_statistics(v, np.uint8)
    v300 = np.linspace(1.0, 0.0, 300)
    _, _, d_uint8 = _davis2017_statistics(v300, np.uint8)
    mean, recall, decay = db_statistics(v300)
    # by hand: bins are frames [0, 75] and [224, 299]; means 1 - 37.5/299 and 1 - 261.5/299
    assert decay == pytest.approx(224 / 299, abs=1e-12)
    assert mean == pytest.approx(0.5) and recall == pytest.approx(150 / 300)
    assert not (math.isfinite(d_uint8) and abs(d_uint8 - decay) < 1e-9)  # the uint8 original is wrong here
    assert all(math.isnan(x) for x in db_statistics([]))


def test_300_frame_sequence_has_a_finite_decay():
    """A 300-frame sequence (streamed: one frame in memory at a time) whose prediction slowly drifts."""
    h, w = 40, 64
    yy, xx = np.mgrid[:h, :w]

    def gt(t: int) -> FrameMasks:
        return FrameMasks(labels=((np.abs(xx - 32) < 10) & (np.abs(yy - 20) < 8)).astype(np.uint8))

    def pred(t: int) -> FrameMasks:
        dx = t // 20  # 0..14 px of drift
        return FrameMasks(labels=((np.abs(xx - 32 - dx) < 10) & (np.abs(yy - 20) < 8)).astype(np.uint8))

    objs = evaluate_vos_sequence("long", list(range(300)), gt, pred, DAVIS)
    assert len(objs) == 1 and len(objs[0].j) == 298
    j_mean, _, j_decay = objs[0].j_stats
    _, _, f_decay = objs[0].f_stats
    assert math.isfinite(j_decay) and math.isfinite(f_decay)
    # independent check: the box is 19 px wide, so a drift of dx px gives J = (19 - dx) / (19 + dx)
    jv = np.array([(19 - t // 20) / (19 + t // 20) for t in range(1, 299)])
    first, last = jv[0 : 75], jv[223:298]  # bins of linspace(1, 298, 5): [0, 74] and [223, 297], inclusive
    assert j_decay == pytest.approx(first.mean() - last.mean(), abs=1e-12)
    assert j_mean == pytest.approx(jv.mean(), abs=1e-12)
    assert j_decay > 0.3


def test_frame_masks_label_map_and_dict_agree():
    lab = np.zeros((10, 12), np.uint8)
    lab[2:5, 3:7] = 1
    lab[6:9, 1:4] = 4
    a = FrameMasks(labels=lab)
    b = FrameMasks(masks={1: lab == 1, 4: lab == 4, 7: np.zeros_like(lab, bool)})
    assert a.ids == b.ids == {1, 4} and a.max_label() == 4
    assert (a.mask(4) == b.mask(4)).all() and not a.mask(9).any() and not b.mask(9).any()
