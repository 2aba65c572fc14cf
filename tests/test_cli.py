"""The `vidtrack` command as a user runs it: real video files, real PNG prompts, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import error_line as _error
from conftest import moving_shapes, run_cli, shape_masks, shared_data, write_video
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.export import read_rle_json
from vidtrack.sources import open_source

DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (768 - 9)




def palette_png(path: Path, masks: dict[int, np.ndarray]) -> Path:
    h, w = next(iter(masks.values())).shape
    arr = np.zeros((h, w), np.uint8)
    for i, m in masks.items():
        arr[m] = i
    img = Image.fromarray(arr, mode="P")
    img.putpalette(DAVIS_PALETTE)
    img.save(path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("vid") / "shapes.mp4", moving_shapes(12))




def test_track_writes_rle_json_equal_to_the_api(video, tmp_path, tiny_checkpoint_dir, tiny_model, capsys):
    box, disc = shape_masks()
    png = palette_png(tmp_path / "00000.png", {1: box, 2: disc})
    code, _, err = run_cli(["track", str(video), "--model", "sam2.1-tiny", "--checkpoint", str(tiny_checkpoint_dir),
                            "--mask", str(png), "--out", str(tmp_path / "out"), "--device", "cpu", "-q"], capsys)
    assert code == 0, err
    assert "12 frames, 2 objects" in err
    result = read_rle_json(tmp_path / "out" / "masks.json")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["peak_rss_mb"] > 0
    assert [f.frame_idx for f in result.frames] == list(range(12))

    api = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu")).load(model=tiny_model)
    ref = api.track_video(open_source(str(video)), [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)])
    for a, b in zip(result.frames, ref.frames, strict=True):
        assert [m.to_rle() for m in a.masks] == [m.to_rle() for m in b.masks]
        assert [round(m.confidence, 6) for m in a.masks] == [round(m.confidence, 6) for m in b.masks]


def test_track_with_box_points_and_prompts_file(video, tmp_path, tiny_checkpoint_dir, capsys):
    prompts = [{"frame": 0, "object_id": 4, "box": [16, 27, 28, 22]},
               {"frame": 3, "object_id": 9, "points": [[120, 60], [10, 10]], "labels": [1, 0]}]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    code, _, err = run_cli(["track", str(video), "--checkpoint", str(tiny_checkpoint_dir), "--prompts",
                            str(tmp_path / "prompts.json"), "--points", "100,50", "--object-id", "2",
                            "--out", str(tmp_path / "o"), "-q", "--device", "cpu"], capsys)
    assert code == 0, err
    result = read_rle_json(tmp_path / "o" / "masks.json")
    assert result.object_ids == [2, 4, 9]
    assert result.frames[0].object_ids == [2, 4, 9]  # object 9 was tracked backward from frame 3




def test_bad_inputs_exit_2_with_one_line(video, tmp_path, tiny_checkpoint_dir, capsys):
    box, _ = shape_masks()
    good = palette_png(tmp_path / "m.png", {1: box})
    common = ["--checkpoint", str(tiny_checkpoint_dir), "--out", str(tmp_path / "o"), "-q", "--device", "cpu"]
    assert "video not found" in _error(["track", str(tmp_path / "none.mp4"), "--mask", str(good), *common], capsys)
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    assert "corrupt.mp4" in _error(["track", str(tmp_path / "corrupt.mp4"), "--mask", str(good), *common], capsys)
    (tmp_path / "empty").mkdir()
    assert "empty" in _error(["track", str(tmp_path / "empty"), "--mask", str(good), *common], capsys)
    small = palette_png(tmp_path / "small.png", {1: box[:, :159]})
    msg = _error(["track", str(video), "--mask", str(small), *common], capsys)
    assert "small.png" in msg and "159x96" in msg and "160x96" in msg
    palette_png(tmp_path / "blank.png", {1: np.zeros_like(box)})
    assert "empty" in _error(["track", str(video), "--mask", str(tmp_path / "blank.png"), *common], capsys)
    assert "unknown model 'sam9'" in _error(["track", str(video), "--mask", str(good), "--model", "sam9",
                                             *common[2:]], capsys)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert "cannot read checkpoint" in _error(["track", str(video), "--mask", str(good), "--checkpoint",
                                               str(tmp_path / "bad.pt"), *common[2:]], capsys)
    assert "outside the 160x96 frame" in _error(["track", str(video), "--box", "300,10,20,20", *common], capsys)
    (tmp_path / "dup.json").write_text(json.dumps([{"frame": 0, "object_id": 1, "box": [1, 1, 20, 20]},
                                                   {"frame": 0, "object_id": 1, "box": [30, 30, 20, 20]}]))
    assert "duplicate prompt for object 1" in _error(["track", str(video), "--prompts", str(tmp_path / "dup.json"),
                                                      *common], capsys)
    assert "no prompt given" in _error(["track", str(video), *common], capsys)


def test_real_mask_of_wrong_width_is_rejected_with_its_name(tmp_path, tiny_checkpoint_dir, capsys):
    frames = shared_data("cutie_judo", "JPEGImages")
    prompt = shared_data("cutie_judo", "prompts", "00005.png")
    msg = _error(["track", str(frames), "--mask", str(prompt), "--checkpoint", str(tiny_checkpoint_dir), "--out",
                  str(tmp_path / "o"), "-q"], capsys)
    assert "00005.png" in msg and "853x480" in msg and "854x480" in msg


def test_palette_prompts_on_later_frames_on_real_frames(tmp_path, tiny_checkpoint_dir, capsys):
    frames = shared_data("cutie_judo", "JPEGImages")
    p0, p8 = shared_data("cutie_judo", "prompts", "00000.png"), shared_data("cutie_judo", "prompts", "00008.png")
    code, _, err = run_cli(["track", str(frames), "--mask", str(p0), "--mask", str(p8), "--checkpoint",
                            str(tiny_checkpoint_dir), "--out", str(tmp_path / "o"), "-q"], capsys)
    assert code == 0, err
    result = read_rle_json(tmp_path / "o" / "masks.json")
    assert len(result.frames) == 16 and (result.video_width, result.video_height) == (854, 480)
    assert result.object_ids == [1, 3]  # 00000.png introduces object 1, 00008.png object 3
    assert all(f.object_ids == [1, 3] for f in result.frames)


def test_models_lists_the_catalogue(capsys):
    code, out, _ = run_cli(["models", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert {"sam2.1-tiny", "sam2.1-large", "samurai-large", "sam2long-base-plus", "yolo11n-seg"} <= names
    assert all(r["local"] is False for r in rows if r["family"] != "yolo")


def test_models_table_in_a_pipe_keeps_whole_names_and_hub_ids():
    """``vidtrack models | grep ...`` must find every name: rich cuts a pipe's table to 80 columns otherwise."""
    from vidtrack.catalog import CATALOGUE

    exe = shutil.which("vidtrack") or str(Path(sys.executable).with_name("vidtrack"))
    proc = subprocess.run([exe, "models"], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert proc.returncode == 0
    cells = {c.strip() for line in proc.stdout.splitlines() for c in line.split("│")}
    assert {s.name for s in CATALOGUE.values()} <= cells
    assert {s.hub_id for s in CATALOGUE.values()} <= cells


def test_console_script_exit_code(tmp_path):
    exe = shutil.which("vidtrack") or str(Path(sys.executable).with_name("vidtrack"))
    proc = subprocess.run([exe, "track", str(tmp_path / "missing.mp4"), "--box", "1,1,5,5", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: video not found")
    assert "Traceback" not in proc.stderr


def test_track_writes_several_formats(video, tmp_path, tiny_checkpoint_dir, capsys):
    box, disc = shape_masks()
    png = palette_png(tmp_path / "00000.png", {1: box, 2: disc})
    code, _, err = run_cli(["track", str(video), "--checkpoint", str(tiny_checkpoint_dir), "--mask", str(png),
                            "--out", str(tmp_path / "out"), "-q", "--device", "cpu",
                            "--format", "rle-json,davis-png,overlay-mp4"], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    result = read_rle_json(out / "masks.json")
    pngs = sorted((out / "davis").glob("*.png"))
    assert len(pngs) == 12
    first = np.asarray(Image.open(pngs[0]))
    assert Image.open(pngs[0]).mode == "P"
    np.testing.assert_array_equal(first == 1, result.frames[0].mask_for(1).mask)  # lowest id wins overlaps
    with av.open(str(out / "overlay.mp4")) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == 12
    assert set(json.loads((out / "summary.json").read_text())["outputs"]) == {"rle-json", "davis-png", "overlay-mp4"}
    assert "unknown" in _error(["track", str(video), "--checkpoint", str(tiny_checkpoint_dir), "--mask", str(png),
                                "--out", str(tmp_path / "o2"), "-q", "--format", "rle-json,bogus"], capsys).lower()
