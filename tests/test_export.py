"""Export formats through the Python API, checked against the real readers (pycocotools, PIL, PyAV, supervision).

Masks are random: empty masks, masks touching the border, overlapping objects, odd frame sizes, objects
missing on some frames. Lossless formats must give the masks back exactly; the one-label-per-pixel formats
(DAVIS palette, MOTS) must give them back after the documented overlap rule, which is computed here
independently of the library.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from vidtrack.errors import InputError
from vidtrack.export import (
    FORMATS,
    export_result,
    iter_rle_jsonl,
    open_writer,
    read_davis_png,
    read_mots_txt,
    read_result,
    read_rle_json,
    read_sav_png,
    read_ytvis_json,
    render_overlay,
    result_to_dict,
    write_rle_json,
)
from vidtrack.prompt_files import read_mask_png
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

SIZES = [(37, 53), (48, 64)]  # (height, width): odd and even
IDS = (1, 2, 7)


# ---------------------------------------------------------------------------------------------------------
# Test data and independent expectations
# ---------------------------------------------------------------------------------------------------------


def random_result(height: int, width: int, num_frames: int = 6, ids: tuple[int, ...] = IDS, seed: int = 0,
                  stride: int = 1) -> TrackingResult:
    """Random blobs + speckle per object; frame 0 has all objects overlapping and touching all four borders,
    frame 2 gives object 2 an empty (occluded) mask, frame 3 has no record for the last object."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        masks = []
        for k, oid in enumerate(ids):
            m = np.zeros((height, width), bool)
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            m[y0:y0 + rng.integers(3, height), x0:x0 + rng.integers(3, width)] = True
            m |= rng.random((height, width)) < 0.05
            if t == 0:
                m[: height // 2 + 2, : width // 2 + 2] = True  # every object: overlap
                for edge in ((0, k), (-1, -1 - k), (k, 0), (-1 - k, -1)):  # touch all four borders
                    m[edge] = True
            occluded = t == 2 and oid == 2
            if occluded:
                m[:] = False
            if t == 3 and oid == ids[-1]:
                continue
            masks.append(TrackingMask(m, float(rng.uniform(0.1, 1.0)), oid, visibility=float(rng.random()),
                                      occluded=occluded))
        frames.append(TrackingFrame(t * stride, masks, {m.object_id: m.occluded for m in masks}, 0.01 * (t + 1)))
    return TrackingResult(frames, width, height, 0.21, 28.5, model="sam2.1-tiny", metadata={"policy": "sam2"})


def dense(result: TrackingResult) -> dict[tuple[int, int], np.ndarray]:
    """(frame_idx, object id) -> mask, non-empty masks only (formats may drop empty ones)."""
    return {(f.frame_idx, m.object_id): m.mask for f in result.frames for m in f.masks if m.area}


def resolved(result: TrackingResult, rule: str = "lowest-id") -> dict[tuple[int, int], np.ndarray]:
    """The overlap rule, written out per pixel: each pixel goes to the lowest id (or the most confident
    object, ties to the lowest id) among the objects covering it."""
    out = {}
    for f in result.frames:
        ms = [m for m in f.masks if m.area]
        if rule == "lowest-id":
            ranked = sorted(ms, key=lambda m: m.object_id)
        else:
            ranked = sorted(ms, key=lambda m: (-m.confidence, m.object_id))
        claimed = np.zeros((result.video_height, result.video_width), bool)
        for m in ranked:
            own = m.mask & ~claimed
            claimed |= m.mask
            if own.any():
                out[(f.frame_idx, m.object_id)] = own
        # a pixel is given to at most one object
    return out


def assert_same(got: dict[tuple[int, int], np.ndarray], want: dict[tuple[int, int], np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].shape == want[key].shape, key
        assert np.array_equal(got[key], want[key]), key


def coco_counts(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def davis_color_map() -> list[int]:
    """``davis2017.utils.color_map`` (PASCAL VOC), re-implemented from its definition."""
    def bitget(v: int, i: int) -> int:
        return (v >> i) & 1

    cmap = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= bitget(c, 0) << (7 - j)
            g |= bitget(c, 1) << (7 - j)
            b |= bitget(c, 2) << (7 - j)
            c >>= 3
        cmap += [r, g, b]
    return cmap


# ---------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("fmt", ["rle-json", "rle-jsonl", "ytvis-json", "sav-png"])
def test_lossless_formats_give_the_masks_back(fmt, size, tmp_path):
    h, w = size
    result = random_result(h, w, stride=3)
    path = tmp_path / FORMATS[fmt].filename
    with open_writer(fmt, path, width=w, height=h) as writer:
        for f in result.frames:
            writer.write(f)
    back = FORMATS[fmt].reader(path)  # type: ignore[misc]
    assert (back.video_width, back.video_height) == (w, h)
    assert_same(dense(back), dense(result))
    assert back.object_ids == list(IDS)
    if fmt in ("rle-json", "ytvis-json"):  # these keep frames without objects too
        assert [f.frame_idx for f in back.frames] == [f.frame_idx for f in result.frames]


def test_rle_json_keeps_scores_flags_and_info(tmp_path):
    result = random_result(37, 53)
    write_rle_json(result, tmp_path / "m.json", source="clip.mp4")
    back = read_rle_json(tmp_path / "m.json")
    for a, b in zip(result.frames, back.frames, strict=True):
        assert a.frame_idx == b.frame_idx and a.processing_time == b.processing_time
        assert [m.to_dict() for m in a.masks] == [m.to_dict() for m in b.masks]  # rle, bbox, area, scores, flags
    assert (back.model, back.total_processing_time, back.fps) == ("sam2.1-tiny", 0.21, 28.5)
    assert back.metadata["source"] == "clip.mp4" and back.metadata["policy"] == "sam2"
    info = json.loads((tmp_path / "m.json").read_text())["info"]
    assert info["num_frames"] == 6 and info["object_ids"] == [1, 2, 7] and info["format"] == "vidtrack-rle-json"


def test_rle_json_reads_files_of_the_first_release(tmp_path):
    """The first release wrote ``info`` before ``frames`` with json.dump(result_to_dict(...))."""
    result = random_result(37, 53)
    (tmp_path / "old.json").write_text(json.dumps(result_to_dict(result)))
    assert_same(dense(read_rle_json(tmp_path / "old.json")), dense(result))


def test_rle_jsonl_is_one_uniform_record_per_object_per_frame(tmp_path):
    result = random_result(37, 53)
    path = export_result(result, tmp_path, "rle-jsonl")["rle-jsonl"]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == sum(len(f.masks) for f in result.frames)
    keys = {"frame_idx", "object_id", "rle", "bbox", "area", "confidence", "visibility", "occluded"}
    assert all(set(rec) == keys for rec in lines)
    occluded = [rec for rec in lines if rec["occluded"]]
    assert [(r["frame_idx"], r["object_id"], r["area"]) for r in occluded] == [(2, 2, 0)]
    frames = list(iter_rle_jsonl(path))  # the streaming reader groups lines into frames
    assert [f.frame_idx for f in frames] == list(range(6))


@pytest.mark.parametrize("rule", ["lowest-id", "highest-score"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("fmt", ["davis-png", "mots-txt"])
def test_one_label_formats_give_the_masks_back_after_the_overlap_rule(fmt, size, rule, tmp_path):
    h, w = size
    result = random_result(h, w, seed=1)
    assert any(np.logical_and(a, b).any() for a in dense(result).values() for b in dense(result).values()
               if a is not b)  # the data really overlaps
    path = export_result(result, tmp_path, fmt, options={fmt: {"overlap": rule}})[fmt]
    back = read_davis_png(path) if fmt == "davis-png" else read_mots_txt(path)
    assert_same(dense(back), resolved(result, rule))


def test_davis_overlap_rule_lowest_id_wins(tmp_path):
    a = np.zeros((9, 11), bool)
    a[1:6, 1:7] = True
    b = np.zeros_like(a)
    b[3:8, 4:10] = True
    c = np.zeros_like(a)
    c[0:9, 5] = True  # crosses both
    frame = TrackingFrame(0, [TrackingMask(b, 0.9, 5), TrackingMask(a, 0.2, 3), TrackingMask(c, 0.5, 4)])
    for rule, want in (("lowest-id", [(a & b & c, 3), (a & b & ~c, 3), (b & c & ~a, 4)]),
                       ("highest-score", [(a & b & c, 5), (a & c & ~b, 4), (a & b & ~c, 5)])):
        with open_writer("davis-png", tmp_path / rule, width=11, height=9, overlap=rule) as wr:
            wr.write(frame)
        index = np.asarray(Image.open(tmp_path / rule / "00000.png"))
        for region, value in want:
            assert region.any() and (index[region] == value).all(), (rule, value)
        assert (index[~(a | b | c)] == 0).all()
    # SAM 2's put_per_obj_mask: paint ids in descending order, so the lowest id ends on top
    sam2 = np.zeros((9, 11), np.uint8)
    for oid, m in sorted({5: b, 3: a, 4: c}.items(), reverse=True):
        sam2[m] = oid
    assert np.array_equal(np.asarray(Image.open(tmp_path / "lowest-id" / "00000.png")), sam2)


def test_davis_png_is_mode_p_with_the_davis_palette_and_reads_as_a_prompt(tmp_path):
    result = random_result(37, 53)
    folder = export_result(result, tmp_path, "davis-png")["davis-png"]
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"{i:05d}.png" for i in range(6)]
    img = Image.open(folder / "00000.png")
    assert img.mode == "P" and img.size == (53, 37)
    palette = img.getpalette()
    assert palette == davis_color_map()
    assert palette[:3 * 9] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128,
                               128, 128, 128, 64, 0, 0]
    prompts = read_mask_png(folder / "00001.png")  # what `vidtrack track --mask` reads
    want = {oid: m for (t, oid), m in resolved(result).items() if t == 1}
    assert sorted(prompts) == sorted(want) and all(np.array_equal(prompts[k], want[k]) for k in want)


def test_davis_ids_outside_the_palette_need_remapping_and_255_objects_is_the_limit(tmp_path):
    m = np.zeros((16, 16), bool)
    m[2:5, 2:5] = True
    for bad in (255, 0, 1000):
        with (
            pytest.raises(InputError, match=rf"object id {bad} does not fit.*remap_ids"),
            open_writer("davis-png", tmp_path / "d", width=16, height=16) as w,
        ):
            w.write(TrackingFrame(0, [TrackingMask(m, 1.0, bad)]))
    assert not (tmp_path / "d").exists()  # the failed export left nothing
    frame = TrackingFrame(0, [TrackingMask(m, 1.0, 1000), TrackingMask(np.roll(m, 6, 0), 1.0, 0)])
    with open_writer("davis-png", tmp_path / "d", width=16, height=16, remap_ids=True) as w:
        w.write(frame)
    assert json.loads((tmp_path / "d" / "object_ids.json").read_text()) == {"1": 1000, "2": 0}
    assert_same(dense(read_davis_png(tmp_path / "d")), dense(TrackingResult([frame], 16, 16, 0, 0)))
    # 255 objects fit (indices 1..255 with the mapping file), the 256th does not
    pixels = [np.zeros((16, 16), bool) for _ in range(256)]
    for i, p in enumerate(pixels):
        p.flat[i] = True
    many = TrackingFrame(0, [TrackingMask(p, 1.0, 1000 + i) for i, p in enumerate(pixels[:255])])
    with open_writer("davis-png", tmp_path / "many", width=16, height=16, remap_ids=True) as w:
        w.write(many)
    assert len(read_davis_png(tmp_path / "many").frames[0].masks) == 255
    with (
        pytest.raises(InputError, match=r"at most 255 objects.*sav-png"),
        open_writer("davis-png", tmp_path / "toomany", width=16, height=16, remap_ids=True) as w,
    ):
        w.write(TrackingFrame(0, [*many.masks, TrackingMask(pixels[255], 1.0, 5000)]))
    # export_result remaps on its own when ids do not fit
    res = TrackingResult([frame], 16, 16, 0, 0)
    assert_same(dense(read_result(export_result(res, tmp_path / "auto", "davis-png")["davis-png"])), dense(res))


def test_sav_png_layout_keeps_overlaps(tmp_path):
    result = random_result(37, 53)
    folder = export_result(result, tmp_path, "sav-png")["sav-png"]
    assert sorted(p.name for p in folder.iterdir()) == ["001", "002", "007"]
    # object 7 has no record on frame 3 but appeared before: an empty PNG keeps its track continuous
    assert len(list((folder / "007").iterdir())) == 6
    empty = np.asarray(Image.open(folder / "007" / "00003.png"))
    assert not empty.any()
    img = Image.open(folder / "001" / "00000.png")
    assert img.mode == "P" and set(np.unique(np.asarray(img)).tolist()) == {0, 1}  # SAM 2's 0/1 PNGs
    a, b = (np.asarray(Image.open(folder / d / "00000.png")) > 0 for d in ("001", "002"))
    assert (a & b).any()  # the overlap survives


# ---------------------------------------------------------------------------------------------------------
# Format details
# ---------------------------------------------------------------------------------------------------------


def test_rle_strings_equal_pycocotools_encoding(tmp_path):
    result = random_result(37, 53)
    masks = dense(result)
    paths = export_result(result, tmp_path, "rle-json,rle-jsonl,ytvis-json,mots-txt")
    doc = json.loads(paths["rle-json"].read_text())
    for fr in doc["frames"]:
        for o in fr["objects"]:
            m = masks.get((fr["frame_idx"], o["object_id"]), np.zeros((37, 53), bool))
            assert o["rle"] == {"size": [37, 53], "counts": coco_counts(m)}
            assert np.array_equal(mask_utils.decode({"size": [37, 53], "counts": o["rle"]["counts"].encode()}), m)
    for line in paths["rle-jsonl"].read_text().splitlines():
        rec = json.loads(line)
        m = masks.get((rec["frame_idx"], rec["object_id"]), np.zeros((37, 53), bool))
        assert rec["rle"]["counts"] == coco_counts(m)
    ytvis = json.loads(paths["ytvis-json"].read_text())
    for ann in ytvis["annotations"]:
        for t, seg in enumerate(ann["segmentations"]):
            if seg is not None:
                assert seg["counts"] == coco_counts(masks[(t, ann["object_id"])])
    own = resolved(result)
    for line in paths["mots-txt"].read_text().splitlines():
        t, obj, _cls, _h, _w, counts = line.split()
        assert counts == coco_counts(own[(int(t) - 1, int(obj) % 1000)])


def test_ytvis_layout(tmp_path):
    result = random_result(37, 53, stride=2)
    path = export_result(result, tmp_path, "ytvis-json", source="videos/bike.mp4")["ytvis-json"]
    doc = json.loads(path.read_text())
    (video,) = doc["videos"]
    assert (video["width"], video["height"], video["length"]) == (53, 37, 6)
    assert video["file_names"] == [f"bike/{2 * t:05d}.jpg" for t in range(6)]
    assert doc["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    masks = dense(result)
    anns = {a["object_id"]: a for a in doc["annotations"]}
    assert sorted(anns) == list(IDS) and sorted(a["id"] for a in anns.values()) == [1, 2, 3]
    for oid, ann in anns.items():
        assert ann["video_id"] == 1 and ann["iscrowd"] == 0
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == 6
        for t in range(6):
            m = masks.get((2 * t, oid))
            if m is None:  # absent or empty: null everywhere
                assert ann["segmentations"][t] is None and ann["areas"][t] is None and ann["bboxes"][t] is None
            else:
                assert ann["areas"][t] == int(m.sum())
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                assert ann["bboxes"][t] == mask_utils.toBbox(rle).tolist()
        present = [t for t in range(6) if (2 * t, oid) in masks]
        confs = [next(x.confidence for x in result.frames[t].masks if x.object_id == oid) for t in present]
        assert ann["score"] == pytest.approx(np.mean(confs))
    assert anns[2]["segmentations"][2] is None  # occluded on frame 4
    assert anns[7]["segmentations"][3] is None  # no record on frame 6
    back = read_ytvis_json(path)
    assert [f.frame_idx for f in back.frames] == [2 * t for t in range(6)]
    # the results-list layout VIS evaluators take, made from the annotations, reads back too
    results_list = [{"video_id": a["video_id"], "category_id": a["category_id"], "segmentations": a["segmentations"],
                     "score": a["score"]} for a in doc["annotations"]]
    (tmp_path / "results.json").write_text(json.dumps(results_list))
    listed = read_result(tmp_path / "results.json")
    assert len(dense(listed)) == len(masks)


def test_mots_txt_layout(tmp_path):
    result = random_result(37, 53)
    path = export_result(result, tmp_path, "mots-txt")["mots-txt"]
    rows = [line.split() for line in path.read_text().splitlines()]
    assert {r[2] for r in rows} == {"2"} and {(r[3], r[4]) for r in rows} == {("37", "53")}
    assert {int(r[1]) for r in rows} == {2001, 2002, 2007}
    assert min(int(r[0]) for r in rows) == 1  # MOTS Challenge counts frames from 1
    for t in {r[0] for r in rows}:  # non-overlapping by construction
        total = sum(mask_utils.decode({"size": [37, 53], "counts": r[5].encode()}).astype(int) for r in rows
                    if r[0] == t)
        assert total.max() == 1
    kitti = open_writer("mots-txt", tmp_path / "kitti.txt", width=53, height=37, frame_base=0, class_id=1)
    with kitti:
        for f in result.frames:
            kitti.write(f)
    first = (tmp_path / "kitti.txt").read_text().split()
    assert first[:3] == ["0", "1001", "1"]
    assert_same(dense(read_mots_txt(tmp_path / "kitti.txt", frame_base=0)), resolved(result))
    with (
        pytest.raises(InputError, match="object id 1000 does not fit a MOTS instance"),
        open_writer("mots-txt", tmp_path / "x.txt", width=53, height=37) as w,
    ):
        w.write(TrackingFrame(0, [TrackingMask(np.ones((37, 53), bool), 1.0, 1000)]))
    assert not (tmp_path / "x.txt").exists()


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """x, y, w, h of the pixels of ``mask``, computed here (w = last column - first column + 1)."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)


def test_mot_txt_boxes(tmp_path):
    # a hand-made frame first: rows 5..9 and columns 10..19 -> x=10, y=5, w=10, h=5; one pixel -> w=h=1
    rect = np.zeros((37, 53), bool)
    rect[5:10, 10:20] = True
    dot = np.zeros((37, 53), bool)
    dot[36, 52] = True
    hand = TrackingResult([TrackingFrame(4, [TrackingMask(dot, 0.5, 9), TrackingMask(rect, 0.25, 3)])], 53, 37, 0, 0)
    path = export_result(hand, tmp_path / "hand", "mot-txt")["mot-txt"]
    assert path.read_text().splitlines() == ["5,3,10,5,10,5,0.2500,-1,-1,-1", "5,9,52,36,1,1,0.5000,-1,-1,-1"]

    result = random_result(37, 53)
    path = export_result(result, tmp_path, "mot-txt")["mot-txt"]
    rows = [line.split(",") for line in path.read_text().splitlines()]
    want = [(f.frame_idx + 1, m.object_id, _tight_box(m.mask), m.confidence)
            for f in result.frames for m in sorted(f.masks, key=lambda m: m.object_id) if m.mask.any()]
    assert len(rows) == len(want)
    for row, (frame, oid, box, conf) in zip(rows, want, strict=True):
        assert len(row) == 10 and row[7:] == ["-1", "-1", "-1"]
        assert (int(row[0]), int(row[1])) == (frame, oid)
        assert [float(v) for v in row[2:6]] == list(box)
        assert float(row[6]) == pytest.approx(conf, abs=1e-4)


def test_box_txt_single_object(tmp_path):
    result = random_result(37, 53)
    paths = export_result(result, tmp_path, "box-txt", options={"box-txt": {"object_id": 2}})
    lines = paths["box-txt"].read_text().splitlines()
    assert len(lines) == 6
    assert lines[2] == "0,0,0,0"  # occluded: LaSOT/pytracking absent box
    m = result.frames[0].mask_for(2)
    assert m is not None and lines[0] == ",".join(str(int(v)) for v in m.bbox)
    with open_writer("box-txt", tmp_path / "nan.txt", width=53, height=37, object_id=2, absent="nan") as w:
        for f in result.frames:
            w.write(f)
    assert (tmp_path / "nan.txt").read_text().splitlines()[2] == "nan,nan,nan,nan"
    with (
        pytest.raises(InputError, match=r"box-txt holds one object.*object_id"),
        open_writer("box-txt", tmp_path / "multi.txt", width=53, height=37) as w,
    ):
        w.write(result.frames[0])
    per_object = export_result(result, tmp_path / "all", "box-txt")
    assert sorted(per_object) == ["box-txt:1", "box-txt:2", "box-txt:7"]
    assert all(len(p.read_text().splitlines()) == 6 for p in per_object.values())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_overlay_mp4_plays_in_browsers(size, tmp_path):
    h, w = size
    result = random_result(h, w, num_frames=7)
    grey = np.full((7, h, w, 3), 100, np.uint8)
    path = export_result(result, tmp_path, "overlay-mp4", source=grey, fps=12.5,
                         options={"overlay-mp4": {"scores": True}})["overlay-mp4"]
    data = path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # +faststart: index first
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12.5
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 7
    assert all(f.shape == (h + h % 2, w + w % 2, 3) for f in frames)  # odd sizes padded to even
    # frame 1: the interior of object 1's mask is grey blended with its DAVIS colour (128, 0, 0)
    m = result.frames[1].mask_for(1)
    assert m is not None
    inner = m.mask.copy()
    for axis, shift in ((0, 1), (0, -1), (1, 1), (1, -1)):
        inner &= np.roll(m.mask, shift, axis)
    for other in result.frames[1].masks:
        if other.object_id != 1:
            inner &= ~other.mask
    inner[:8] = False  # keep clear of the id label
    if inner.sum() >= 20:
        mean = frames[1][: h, : w][inner].mean(axis=0)
        assert np.allclose(mean, (114, 50, 50), atol=14), mean


def test_render_overlay_draws_only_present_objects():
    frame = TrackingFrame(0, [TrackingMask(np.zeros((20, 30), bool), 0.5, 3, occluded=True)])
    img = np.full((20, 30, 3), 7, np.uint8)
    assert np.array_equal(render_overlay(img, frame), img)


def test_supervision_detections():
    sv = pytest.importorskip("supervision")
    from vidtrack.export import iter_detections, to_detections

    result = random_result(37, 53)
    det = to_detections(result.frames[2])
    assert isinstance(det, sv.Detections)
    present = [m for m in result.frames[2].masks if m.area]
    assert det.tracker_id.tolist() == [m.object_id for m in present]
    assert det.mask.shape == (len(present), 37, 53) and det.mask.dtype == bool
    for i, m in enumerate(present):
        assert np.array_equal(det.mask[i], m.mask)
        x, y, w, h = m.bbox
        assert det.xyxy[i].tolist() == [x, y, x + w, y + h]
        assert det.confidence[i] == pytest.approx(m.confidence)
    assert np.allclose(sv.mask_to_xyxy(det.mask), det.xyxy - [0, 0, 1, 1])  # supervision: inclusive corners
    annotated = sv.MaskAnnotator(color_lookup=sv.ColorLookup.TRACK).annotate(np.zeros((37, 53, 3), np.uint8), det)
    assert annotated.any()
    empty = to_detections(TrackingFrame(9), height=37, width=53)
    assert len(empty) == 0 and empty.mask.shape == (0, 37, 53)
    assert [idx for idx, _ in iter_detections(result)] == [f.frame_idx for f in result.frames]


# ---------------------------------------------------------------------------------------------------------
# Errors, atomicity, memory
# ---------------------------------------------------------------------------------------------------------


def test_writer_refuses_bad_input_with_one_line(tmp_path):
    m = TrackingMask(np.ones((5, 6), bool), 1.0, 1)
    with open_writer("rle-json", tmp_path / "a.json", width=6, height=5) as w:
        w.write(TrackingFrame(3, [m]))
        with pytest.raises(InputError, match="increasing frame order; got frame 3 after frame 3"):
            w.write(TrackingFrame(3, [m]))
        with pytest.raises(InputError, match=r"is 6x5 \(WxH\) but the video is 8x5"):
            open_writer("rle-json", tmp_path / "b.json", width=8, height=5).write(TrackingFrame(0, [m]))
        with pytest.raises(InputError, match="object 1 appears twice"):
            w.write(TrackingFrame(4, [m, m]))
    with pytest.raises(InputError, match="overlay-mp4 draws on the video frames: pass image="):
        open_writer("overlay-mp4", tmp_path / "o.mp4", width=6, height=5).write(TrackingFrame(0, [m]))
    with pytest.raises(InputError, match="video frame 0 is 7x5 but the masks are 6x5"):
        open_writer("overlay-mp4", tmp_path / "o.mp4", width=6, height=5).write(
            TrackingFrame(0, [m]), np.zeros((5, 7, 3), np.uint8))
    with pytest.raises(InputError, match="unknown export format 'png'; choose from rle-json"):
        open_writer("png", tmp_path / "x", width=6, height=5)
    with pytest.raises(InputError, match="davis-png has no option colour; its options: overlap, remap_ids"):
        open_writer("davis-png", tmp_path / "x", width=6, height=5, colour=1)
    with pytest.raises(InputError, match="unknown overlap rule 'biggest'"):
        open_writer("davis-png", tmp_path / "x", width=6, height=5, overlap="biggest")
    with pytest.raises(InputError, match="overlay-mp4 draws on the video: pass the source video"):
        export_result(TrackingResult([], 6, 5, 0, 0), tmp_path, "overlay-mp4")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # failed or abandoned writers cleaned up their temporary files


def test_folder_exports_replace_only_their_own_kind(tmp_path):
    result = random_result(37, 53)
    short = TrackingResult(result.frames[:2], 53, 37, 0, 0)
    folder = export_result(result, tmp_path, "davis-png")["davis-png"]
    export_result(short, tmp_path, "davis-png")  # a previous export is replaced as a whole
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png"]
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="mine: it exists and holds other files"):
        open_writer("davis-png", user, width=53, height=37)
    with pytest.raises(InputError, match="holds other files"):
        open_writer("sav-png", folder, width=53, height=37)  # a DAVIS folder is not an SA-V one
    assert (user / "notes.txt").read_text() == "keep me"


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from vidtrack.export import open_writer
    from vidtrack.types import TrackingFrame, TrackingMask

    fmt, path = sys.argv[1], sys.argv[2]
    h, w = 37, 53
    rng = np.random.default_rng(0)
    masks = [[TrackingMask(rng.random((h, w)) < 0.3, 0.9, oid) for oid in (1, 2)] for _ in range(8)]
    image = np.zeros((h, w, 3), np.uint8)
    options = {"object_id": 1} if fmt == "box-txt" else {}
    writer = open_writer(fmt, path, width=w, height=h, fps=10, **options)
    for t in range(10**7):
        writer.write(TrackingFrame(t, masks[t % 8]), image if writer.needs_images else None)
        if t == 40:
            print("writing", flush=True)
""")


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("fmt", "previous"), [("rle-json", True), ("rle-jsonl", False), ("ytvis-json", True),
                                               ("davis-png", True), ("sav-png", False), ("mots-txt", False),
                                               ("box-txt", True), ("overlay-mp4", True)])
def test_a_killed_export_leaves_the_previous_output_or_none(fmt, previous, tmp_path):
    path = tmp_path / FORMATS[fmt].filename
    if previous:
        result = random_result(37, 53, num_frames=3, ids=(1,))
        export_result(result, tmp_path, fmt, source=np.zeros((3, 37, 53, 3), np.uint8))
    before = snapshot(path)
    assert (before is not None) == previous
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, fmt, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "writing", proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)
        staged = [p for p in tmp_path.iterdir() if p.name.startswith(f".{path.name}.")]
        assert staged, "the writer should be mid-way, with its temporary output on disk"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(path) == before  # byte for byte the previous output, or still nothing
    if previous:  # and it is complete: it reads back
        if FORMATS[fmt].reader is not None:
            assert len(read_result(path).frames) == 3
        elif fmt == "overlay-mp4":
            with av.open(str(path)) as c:
                assert sum(1 for _ in c.decode(video=0)) == 3


def mask_pool(h: int = 96, w: int = 128) -> list[list[TrackingMask]]:
    rng = np.random.default_rng(0)
    return [[TrackingMask(rng.random((h, w)) < 0.2, 0.9, oid) for oid in (1, 2, 3)] for _ in range(5)]


def stream_frames(n: int, pool: list[list[TrackingMask]]) -> Iterator[TrackingFrame]:
    """``n`` frames of three objects, made on the fly (the caller holds none of them)."""
    for t in range(n):
        yield TrackingFrame(t, list(pool[t % 5]), processing_time=0.01)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_writers_do_not_accumulate_frames(fmt, tmp_path):
    """Traced memory after 60 frames and after 360 frames must be the same to a few KiB. Keeping even one RLE
    string per frame would add ~75 KiB over these 300 frames (measured), a dense mask per frame 3.6 MiB."""
    image = np.zeros((96, 128, 3), np.uint8)
    pool = mask_pool()  # made before tracing starts: only what the writer allocates is traced
    tracemalloc.start()
    try:
        options = {"object_id": 2} if fmt == "box-txt" else {}
        with open_writer(fmt, tmp_path / FORMATS[fmt].filename, width=128, height=96, fps=25, **options) as w:
            frames = stream_frames(360, pool)
            for k, f in enumerate(frames):
                w.write(f, image if w.needs_images else None)
                if k == 59:
                    base = tracemalloc.get_traced_memory()[0]
                    tracemalloc.reset_peak()
            grown = tracemalloc.get_traced_memory()[0] - base
            peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"{fmt} grew by {grown} bytes over 300 frames"
    assert peak < 1024 * 1024, f"{fmt} peaked {peak} bytes above its steady state"
    if FORMATS[fmt].reader is not None:
        assert len(read_result(tmp_path / FORMATS[fmt].filename).frames) == 360


def test_read_result_detects_every_readable_format(tmp_path):
    result = random_result(37, 53)
    readable = [name for name, spec in FORMATS.items() if spec.reader is not None]
    paths = export_result(result, tmp_path, readable)
    for name, path in paths.items():
        back = read_result(path)
        want = resolved(result) if name in ("davis-png", "mots-txt") else dense(result)
        assert_same(dense(back), want)
    with pytest.raises(InputError, match="not found"):
        read_result(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputError, match="neither vidtrack RLE JSON"):
        read_result(tmp_path / "other.json")
    assert math.isfinite(read_sav_png(paths["sav-png"]).fps)
