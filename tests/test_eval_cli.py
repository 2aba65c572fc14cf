"""``vidtrack eval`` and ``vidtrack score`` as a user runs them: a tiny random SAM 2.1 model over small DAVIS,
SA-V and LaSOT/GOT-10k-layout datasets, resuming, scoring existing predictions, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_line as _error
from conftest import moving_shapes, run_cli
from vidtrack.eval import SAV, VOSDataset, score_vos
from vidtrack.eval.io import read_label_png, write_label_png
from vidtrack.eval.runner import _vos_prompts
from vidtrack.export import write_rle_json
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

H, W = 96, 160


def shape_gt(t: int) -> dict[int, np.ndarray]:
    """Ground-truth masks of conftest.moving_shapes on frame t (same formulas): 1 = box, 2 = disc."""
    yy, xx = np.mgrid[:H, :W]
    cx = 30 + (t * 2) % (W - 60)
    box = (np.abs(xx - cx) < 14) & (np.abs(yy - H * 0.4) < 11)
    dx = W - 30 - (t * 2) % (W - 60)
    disc = (xx - dx) ** 2 + (yy - H * 0.7) ** 2 < 10**2
    return {1: box, 2: disc & ~box}


def make_davis(root: Path, n: int = 6, seqs: tuple[str, ...] = ("s1", "s2"), late: bool = False) -> Path:
    for k, s in enumerate(seqs):
        frames = moving_shapes(n, H, W, seed=k)
        for t, f in enumerate(frames):
            (root / "JPEGImages" / "480p" / s).mkdir(parents=True, exist_ok=True)
            Image.fromarray(f).save(root / "JPEGImages" / "480p" / s / f"{t:05d}.jpg", quality=95)
            g = shape_gt(t)
            lab = np.zeros((H, W), np.uint8)
            lab[g[1]] = 1
            if not late or t >= 2:
                lab[g[2]] = 2
            write_label_png(root / "Annotations" / "480p" / s / f"{t:05d}.png", lab)
    return root






@pytest.fixture()
def model_args(tiny_checkpoint_dir) -> list[str]:
    return ["--model", "sam2.1-tiny", "--checkpoint", str(tiny_checkpoint_dir), "--device", "cpu", "--dtype",
            "float32", "-q"]


def test_eval_davis_runs_scores_resumes_and_matches_score(tmp_path, model_args, capsys):
    data = make_davis(tmp_path / "davis")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["eval", "--dataset", str(data), "--layout", "davis", "--out", str(out), "--json",
                                 *model_args], capsys)
    assert code == 0, err
    assert "tracked 2 sequence(s), 0 already done" in err
    summary = json.loads(stdout)
    assert summary["protocol"] == "davis" and summary["objects"] == 4 and 0 <= summary["J&F"] <= 1
    saved = json.loads((out / "summary.json").read_text())
    assert saved["summary"]["J&F"] == pytest.approx(summary["J&F"])
    assert any("ceil(0.008" in c for c in saved["conventions"])
    assert saved["info"]["timing"]["frames"] == 12
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert rows[0].startswith("sequence,object,frames,J&F") and len(rows) == 5
    pngs = sorted((out / "predictions" / "s1").glob("*.png"))
    assert len(pngs) == 6 and Image.open(pngs[0]).mode == "P"
    assert set(np.unique(read_label_png(pngs[0]))) <= {0, 1, 2}

    # a finished run is not tracked again (the model is not even loaded)
    code, _, err = run_cli(["eval", "--dataset", str(data), "--out", str(out), *model_args], capsys)
    assert code == 0 and "already tracked" in err
    # an interrupted run: s2 missing and a stale partial folder -> only s2 is tracked, with the same result
    before = {p.name: p.read_bytes() for p in (out / "predictions" / "s2").glob("*.png")}
    shutil.rmtree(out / "predictions" / "s2")
    (out / "predictions" / ".s2.partial").mkdir()
    (out / "predictions" / ".s2.partial" / "00000.png").write_bytes(b"half")
    code, _, err = run_cli(["eval", "--dataset", str(data), "--out", str(out), *model_args], capsys)
    assert code == 0 and "tracked 1 sequence(s), 1 already done" in err, err
    assert {p.name: p.read_bytes() for p in (out / "predictions" / "s2").glob("*.png")} == before
    assert not (out / "predictions" / ".s2.partial").exists()

    # score on the same predictions gives the same numbers; so does vidtrack's masks.json
    code, stdout, err = run_cli(["score", "--pred", str(out / "predictions"), "--gt", str(data), "--json", "-q"],
                                capsys)
    assert code == 0, err
    assert json.loads(stdout)["J&F"] == pytest.approx(summary["J&F"], abs=1e-12)
    as_json = tmp_path / "as_json"
    for s in ("s1", "s2"):
        frames = []
        for t in range(6):
            lab = read_label_png(out / "predictions" / s / f"{t:05d}.png")
            frames.append(TrackingFrame(t, [TrackingMask(lab == k, 1.0, k) for k in (1, 2)]))
        write_rle_json(TrackingResult(frames, W, H, 0.0, 0.0), as_json / s / "masks.json")
    code, stdout, err = run_cli(["score", "--pred", str(as_json), "--gt", str(data / "Annotations" / "480p"),
                                 "--json", "-q", "--mot"], capsys)
    assert code == 0, err
    js = json.loads(stdout)
    assert js["J&F"] == pytest.approx(summary["J&F"], abs=1e-12)
    assert 0 <= js["MOT"]["HOTA"] <= 1 and "MOTSA" in js["MOT"]

    # the run folder belongs to one model
    line = _error(["eval", "--dataset", str(data), "--out", str(out), "--model", "sam2.1-large", "--device", "cpu",
                   "--sequences", "s1", "-q"], capsys)
    assert "model='sam2.1-tiny'" in line and "'sam2.1-large'" in line and "another --out" in line


def test_eval_sav_layout_prompts_late_objects_where_they_appear(tmp_path, model_args, capsys):
    """SA-V layout: <video>/<obj>/<frame>.png, sparse (every 2nd frame); object 001 appears on frame 2."""
    root = tmp_path / "sav"
    frames = moving_shapes(9, H, W, seed=3)
    for t, f in enumerate(frames):
        (root / "JPEGImages_24fps" / "v1").mkdir(parents=True, exist_ok=True)
        Image.fromarray(f).save(root / "JPEGImages_24fps" / "v1" / f"{t:05d}.jpg", quality=95)
        if t % 2 == 0:
            g = shape_gt(t)
            write_label_png(root / "Annotations_6fps" / "v1" / "000" / f"{t:05d}.png", g[1].astype(np.uint8))
            write_label_png(root / "Annotations_6fps" / "v1" / "001" / f"{t:05d}.png",
                            (g[2] if t >= 2 else np.zeros((H, W), bool)).astype(np.uint8))
    out = tmp_path / "run"
    code, stdout, err = run_cli(["eval", "--dataset", str(root), "--out", str(out), "--json", "--mot", *model_args],
                                capsys)
    assert code == 0, err
    js = json.loads(stdout)
    assert js["protocol"] == "sav" and js["objects"] == 2 and 0 <= js["MOT"]["HOTA"] <= 1
    assert sorted(p.name for p in (out / "predictions" / "v1").iterdir()) == ["000", "001"]
    assert len(list((out / "predictions" / "v1" / "001").glob("*.png"))) == 5
    # prompts: each object's mask on the first annotated frame where it is present (tracker ids = folder + 1)
    seq = VOSDataset(root, "sav").sequence("v1")
    prompts = _vos_prompts(seq, SAV, {p.stem: i for i, p in enumerate(seq.frame_files)})
    assert [(p.frame_idx, p.object_id) for p in prompts] == [(0, 1), (2, 2)]
    assert (prompts[1].mask == shape_gt(2)[2]).all()


def make_boxes(root: Path) -> Path:
    """A LaSOT-style sequence (class/seq/img + groundtruth.txt + absent flags) and a GOT-10k-style one."""
    for d, layout in ((root / "box" / "box-1", "lasot"), (root / "GOT_1", "got")):
        frames = moving_shapes(6, H, W, seed=5)
        img = d / "img" if layout == "lasot" else d
        img.mkdir(parents=True, exist_ok=True)
        rows = []
        for t, f in enumerate(frames):
            Image.fromarray(f).save(img / f"{t + 1:08d}.jpg", quality=95)
            ys, xs = np.nonzero(shape_gt(t)[1])
            rows.append(f"{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}")
        (d / "groundtruth.txt").write_text("\n".join(rows) + "\n")
        if layout == "lasot":
            (d / "full_occlusion.txt").write_text("0,0,0,0,1,0")
            (d / "out_of_view.txt").write_text("0,0,0,0,0,0")
        else:
            (d / "cover.label").write_text("8\n8\n8\n0\n8\n8\n")
            (d / "absence.label").write_text("0\n0\n0\n1\n0\n0\n")
            (d / "meta_info.ini").write_text("[METAINFO]\nresolution: (160, 96)\n")
    return root


def test_eval_and_score_box_layout(tmp_path, model_args, capsys):
    data = make_boxes(tmp_path / "lasot")
    out = tmp_path / "run"
    code, stdout, err = run_cli(["eval", "--dataset", str(data), "--out", str(out), "--json", *model_args], capsys)
    assert code == 0, err
    js = json.loads(stdout)
    assert js["sequences"] == 2 and 0 <= js["success_auc"] <= 20 / 21 and "norm_precision@0.20" in js
    assert 0 <= js["AO"] <= 1 and js["frames"] == 8  # GOT pooling: 5 + 5 frames minus the occluded ones
    boxes = (out / "predictions" / "box-1.txt").read_text().splitlines()
    assert len(boxes) == 6 and boxes[0] == (data / "box" / "box-1" / "groundtruth.txt").read_text().splitlines()[0]
    # perfect predictions: every non-absent frame passes, the absent frame fails at every threshold
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    shutil.copy(data / "box" / "box-1" / "groundtruth.txt", perfect / "box-1.txt")
    (perfect / "GOT_1").mkdir()
    shutil.copy(data / "GOT_1" / "groundtruth.txt", perfect / "GOT_1" / "GOT_1_001.txt")
    code, stdout, err = run_cli(["score", "--pred", str(perfect), "--gt", str(data), "--json", "-q",
                                 "--out", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    js = json.loads(stdout)
    assert js["success_auc"] == pytest.approx(20 / 21 * 5 / 6) and js["precision@20"] == pytest.approx(5 / 6)
    assert js["AO"] == pytest.approx(1.0) and js["SR0.75"] == 1.0
    code, stdout, _ = run_cli(["score", "--pred", str(perfect), "--gt", str(data), "--json", "-q", "--absent",
                               "drop"], capsys)
    assert json.loads(stdout)["success_auc"] == pytest.approx(20 / 21)
    assert (tmp_path / "rep" / "per_sequence.csv").read_text().count("\n") == 3


def test_score_errors_are_one_line(tmp_path, capsys):
    data = make_davis(tmp_path / "d", n=4, seqs=("s1",))
    pred = tmp_path / "pred"
    shutil.copytree(data / "Annotations" / "480p", pred)
    assert "predictions folder not found" in _error(["score", "--pred", str(tmp_path / "nope"), "--gt", str(data)],
                                                    capsys)
    assert "--layout must be one of" in _error(["score", "--pred", str(pred), "--gt", str(data), "--layout", "x"],
                                               capsys)
    assert "--rules must be one of" in _error(["score", "--pred", str(pred), "--gt", str(data), "--rules", "x"],
                                              capsys)
    assert "sequence(s) zz not found" in _error(["score", "--pred", str(pred), "--gt", str(data), "--sequences",
                                                 "zz"], capsys)
    (pred / "s1" / "00002.png").unlink()
    assert "--allow-missing" in _error(["score", "--pred", str(pred), "--gt", str(data), "-q"], capsys)
    code, stdout, err = run_cli(["score", "--pred", str(pred), "--gt", str(data), "--allow-missing", "-q", "--json"],
                                capsys)
    assert code == 0 and "missing prediction frame" not in err  # --json prints only the summary
    assert json.loads(stdout)["J-Mean"] == pytest.approx(0.5)  # frames 1 (perfect) and 2 (missing): (1 + 0)/2
    code, stdout, err = run_cli(["score", "--pred", str(pred), "--gt", str(data), "--allow-missing", "-q"], capsys)
    assert code == 0 and "1 missing prediction frame(s)" in err and "J&F" in stdout
    # palette predictions against per-object ground truth is refused with what to do
    sav = tmp_path / "sav" / "v"
    write_label_png(sav / "000" / "00000.png", np.ones((4, 4), np.uint8))
    (tmp_path / "p2" / "v").mkdir(parents=True)
    write_label_png(tmp_path / "p2" / "v" / "00000.png", np.ones((4, 4), np.uint8))
    assert "must be too" in _error(["score", "--pred", str(tmp_path / "p2"), "--gt", str(tmp_path / "sav")], capsys)
    assert "found object folders" in _error(["score", "--pred", str(tmp_path / "sav"), "--gt", str(tmp_path / "p2"),
                                             "--layout", "davis"], capsys)


def test_late_object_under_davis_rules_is_a_clear_error_and_sav_rules_score_it(tmp_path, capsys):
    data = make_davis(tmp_path / "d", n=5, seqs=("s1",), late=True)
    pred = data / "Annotations" / "480p"
    line = _error(["score", "--pred", str(pred), "--gt", str(data), "--rules", "davis"], capsys)
    assert "first appear on frame 00002" in line and "--rules sav" in line
    report = score_vos(VOSDataset(data), pred, SAV)
    assert report.summary["J&F"] == 1.0 and report.summary["objects"] == 2
