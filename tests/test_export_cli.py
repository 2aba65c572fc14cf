"""`vidtrack export` and `write_formats` (what `vidtrack track --format` calls) on real files: an H.264 video
written with PyAV, a PNG frame folder of odd size, results in rle-json."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import error_line, moving_shapes, run_cli, write_video
from vidtrack.errors import InputError
from vidtrack.export import FORMATS, check_formats, read_result, write_formats, write_rle_json
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

H, W, N, RATE = 96, 160, 12, 10




def decode(path: Path) -> tuple[list[np.ndarray], av.VideoStream | None, float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = float(stream.average_rate or 0)
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)], None, rate


def shapes_result(frame_idxs: list[int], height: int = H, width: int = W) -> TrackingResult:
    """The true masks of :func:`moving_shapes` (object 1 the box, object 2 the disc) on the given frames."""
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in frame_idxs:
        cx = 30 + (t * 2) % (width - 60)
        box = (np.abs(xx - cx) < 14) & (np.abs(yy - height * 0.4) < 11)
        dx = width - 30 - (t * 2) % (width - 60)
        disc = (xx - dx) ** 2 + (yy - height * 0.7) ** 2 < 10**2
        frames.append(TrackingFrame(t, [TrackingMask(box, 0.9, 1), TrackingMask(disc, 0.8, 2)]))
    return TrackingResult(frames, width, height, 1.0, float(len(frames)), model="sam2.1-tiny")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("vid") / "shapes.mp4", moving_shapes(N))


@pytest.fixture()
def masks_json(tmp_path) -> Path:
    return write_rle_json(shapes_result(list(range(N))), tmp_path / "masks.json", source="shapes.mp4")






def test_export_writes_every_format(video, masks_json, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["export", str(masks_json), "--format", ",".join(FORMATS), "--out", str(out),
                                 "--source", str(video), "-q"], capsys)
    assert code == 0, err
    printed = stdout.split()
    names = ["masks.json", "masks.jsonl", "ytvis.json", "davis", "sav", "mots.txt", "mot.txt", "boxes_1.txt",
             "boxes_2.txt", "overlay.mp4"]
    assert printed == [str(out / n) for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # and no temporary files left
    truth = shapes_result(list(range(N)))
    for name in ("masks.json", "masks.jsonl", "ytvis.json", "davis", "sav", "mots.txt"):
        back = read_result(out / name)  # the shapes do not overlap, so every lossless format is exact
        assert [(f.frame_idx, [m.to_rle() for m in f.masks]) for f in back.frames] == \
               [(f.frame_idx, [m.to_rle() for m in f.masks]) for f in truth.frames], name
    frames, _, rate = decode(out / "overlay.mp4")
    assert len(frames) == N and frames[0].shape == (H, W, 3) and rate == RATE
    assert len((out / "boxes_1.txt").read_text().splitlines()) == N


def test_export_converts_between_formats_and_options_reach_the_writers(masks_json, tmp_path, capsys):
    code, _, err = run_cli(["export", str(masks_json), "-f", "davis-png,mots-txt,box-txt", "--out",
                            str(tmp_path / "a"), "--remap-ids", "--class-id", "1", "--object-id", "2", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "a" / "davis" / "object_ids.json").is_file()
    assert (tmp_path / "a" / "mots.txt").read_text().split()[1:3] == ["1001", "1"]
    disc = shapes_result([0]).frames[0].masks[1].mask
    ys, xs = np.nonzero(disc)
    box = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    assert (tmp_path / "a" / "boxes.txt").read_text().splitlines()[0] == ",".join(map(str, box))
    code, _, err = run_cli(["export", str(tmp_path / "a" / "davis"), "-f", "rle-jsonl", "--out", str(tmp_path / "b"),
                            "-q"], capsys)
    assert code == 0, err
    back = read_result(tmp_path / "b" / "masks.jsonl")
    truth = shapes_result(list(range(N)))
    assert [[m.to_rle() for m in f.masks] for f in back.frames] == [[m.to_rle() for m in f.masks] for f in truth]


def test_write_formats_for_a_strided_track_matches_the_source_frames(video, tmp_path):
    """What `track --stride 2 --start 1 --format ...` does: the result holds source frames 1, 3, ... 11 and the
    overlay must show exactly those frames, at the source rate divided by the stride."""
    result = shapes_result(list(range(1, N, 2)))
    paths = write_formats(result, tmp_path / "o", "rle-json,davis-png,overlay-mp4", source=str(video),
                          info={"source": str(video)})
    assert sorted(paths) == ["davis-png", "overlay-mp4", "rle-json"]
    assert sorted(p.name for p in paths["davis-png"].iterdir()) == [f"{t:05d}.png" for t in range(1, N, 2)]
    assert read_result(paths["rle-json"]).metadata["source"] == str(video)
    frames, _, rate = decode(paths["overlay-mp4"])
    assert len(frames) == 6 and rate == RATE / 2
    source = moving_shapes(N)
    background = ~(result.frames[0].masks[0].mask | result.frames[0].masks[1].mask)
    for k, t in enumerate(range(1, N, 2)):  # each overlay frame is closest to its own source frame
        diffs = [np.abs(frames[k].astype(int) - s.astype(int))[background].mean() for s in source]
        assert int(np.argmin(diffs)) == t


def test_overlay_of_an_odd_sized_frame_folder(tmp_path, capsys):
    frames = [f[:37, :53] for f in moving_shapes(4)]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    result = shapes_result([0, 1, 2, 3], height=37, width=53)
    write_rle_json(result, tmp_path / "m.json")
    code, _, err = run_cli(["export", str(tmp_path / "m.json"), "-f", "overlay-mp4", "--out", str(tmp_path / "o"),
                            "--source", str(folder), "--fps", "8", "-q"], capsys)
    assert code == 0, err
    decoded, _, rate = decode(tmp_path / "o" / "overlay.mp4")
    assert len(decoded) == 4 and decoded[0].shape == (38, 54, 3) and rate == 8


def test_export_errors_are_one_line_and_exit_2(video, masks_json, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    assert "unknown export format 'gif'" in error_line(["export", str(masks_json), "-f", "davis-png,gif", *out],
                                                       capsys)
    assert "pass the source video (--source VIDEO)" in error_line(
        ["export", str(masks_json), "-f", "overlay-mp4", *out], capsys)
    assert "missing.json not found" in error_line(["export", str(tmp_path / "missing.json"), "-f", "davis-png",
                                                   *out], capsys)
    small = write_video(tmp_path / "small.mp4", [f[:48, :64] for f in moving_shapes(3)])
    assert "is 64x48 but the result is 160x96" in error_line(
        ["export", str(masks_json), "-f", "overlay-mp4", "--source", str(small), *out], capsys)
    short = write_video(tmp_path / "short.mp4", moving_shapes(5))
    assert "ended before frame 5" in error_line(
        ["export", str(masks_json), "-f", "overlay-mp4", "--source", str(short), *out], capsys)
    assert "--object-id 9 is not in" in error_line(
        ["export", str(masks_json), "-f", "box-txt", "--object-id", "9", *out], capsys)
    assert "unknown overlap rule 'max'" in error_line(
        ["export", str(masks_json), "-f", "davis-png", "--overlap", "max", *out], capsys)
    (tmp_path / "o" / "davis").mkdir(parents=True)
    (tmp_path / "o" / "davis" / "readme.md").write_text("mine")
    assert "holds other files" in error_line(["export", str(masks_json), "-f", "rle-json,davis-png", *out], capsys)
    assert not (tmp_path / "o" / "masks.json").exists()  # nothing was written: all outputs commit together
    assert (tmp_path / "o" / "davis" / "readme.md").read_text() == "mine"
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["davis"]


def test_check_formats_fails_before_any_work():
    assert check_formats("davis-png, overlay-mp4", "clip.mp4") == ["davis-png", "overlay-mp4"]
    with pytest.raises(InputError, match="overlay-mp4 draws on the video"):
        check_formats("rle-json,overlay-mp4")
    with pytest.raises(InputError, match="no export format given"):
        check_formats(" , ")
    from vidtrack.sources import IteratorSource

    live = IteratorSource(iter([np.zeros((4, 4, 3), np.uint8)]))
    live.is_live = True  # what a camera or network stream reports
    with pytest.raises(InputError, match="is a live stream; record it to a file first"):
        check_formats("overlay-mp4", live)
    assert check_formats("davis-png", live) == ["davis-png"]


def test_console_script(masks_json, tmp_path):
    exe = shutil.which("vidtrack") or str(Path(sys.executable).with_name("vidtrack"))
    ok = subprocess.run([exe, "export", str(masks_json), "-f", "mot-txt", "--out", str(tmp_path / "o")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tmp_path / "o" / "mot.txt")
    x, y, w, h = shapes_result([0]).frames[0].masks[0].bbox
    first = (tmp_path / "o" / "mot.txt").read_text().splitlines()[0]
    assert first == f"1,1,{x:.0f},{y:.0f},{w:.0f},{h:.0f},0.9000,-1,-1,-1"
    bad = subprocess.run([exe, "export", str(masks_json), "-f", "nope", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown export format 'nope'")
    assert "Traceback" not in bad.stderr


def test_real_davis_2016_ground_truth_reads_converts_and_overlays(tmp_path, capsys):
    """DAVIS-2016 GT is mode L with 0/255: read as one object (id 1), not as all-void (reference §1.1)."""
    from conftest import shared_data

    annotations = shared_data("davis2016", "Annotations", "480p", "car-shadow")
    images = shared_data("davis2016", "JPEGImages", "480p", "car-shadow")
    gt = read_result(annotations)
    assert len(gt.frames) == 40 and (gt.video_width, gt.video_height) == (854, 480) and gt.object_ids == [1]
    first = np.asarray(Image.open(annotations / "00000.png"))
    assert np.array_equal(gt.frames[0].masks[0].mask, first > 0)
    short = TrackingResult(gt.frames[:6], 854, 480, 0.0, 0.0)
    paths = write_formats(short, tmp_path, "davis-png,overlay-mp4", source=str(images))
    img = Image.open(paths["davis-png"] / "00000.png")
    assert img.mode == "P" and np.array_equal(np.asarray(img), (first > 0).astype(np.uint8))
    frames, _, _ = decode(paths["overlay-mp4"])
    assert len(frames) == 6 and frames[0].shape == (480, 854, 3)
    from vidtrack.export import result_prompts

    (prompt,) = result_prompts(gt)
    assert (prompt.frame_idx, prompt.object_id) == (0, 1) and np.array_equal(prompt.mask, first > 0)


def test_real_prompt_folder_with_a_wrong_sized_mask_is_refused_by_name():
    from conftest import shared_data

    prompts = shared_data("cutie_judo", "prompts")
    with pytest.raises(InputError, match=r"00005\.png is 853x480 but earlier masks are 854x480"):
        read_result(prompts)


def test_result_prompts_introduce_late_objects_where_they_appear():
    from vidtrack.export import result_prompts

    result = shapes_result([0, 1, 2, 3])
    late = TrackingResult([TrackingFrame(f.frame_idx, f.masks if f.frame_idx >= 2 else f.masks[:1])
                           for f in result.frames], W, H, 0, 0)
    assert [(p.frame_idx, p.object_id) for p in result_prompts(late)] == [(0, 1), (2, 2)]
    assert [(p.frame_idx, p.object_id) for p in result_prompts(late, frames=[3])] == [(3, 1), (3, 2)]
