"""Benchmark layouts on disk: ground truth, frames and predictions of DAVIS, SA-V and LaSOT/GOT-10k data.

**DAVIS layout** (DAVIS 2016/2017, YouTube-VOS, MOSE, LVOS)::

    ROOT/JPEGImages/480p/<seq>/00000.jpg      (or ROOT/JPEGImages/<seq>/...)
    ROOT/Annotations/480p/<seq>/00000.png     (or ROOT/Annotations/<seq>/...; label PNGs, see vidtrack.eval.io)

**SA-V layout** (per-object; objects may overlap)::

    ROOT/JPEGImages_24fps/<video>/00000.jpg   (or JPEGImages/)
    ROOT/Annotations_6fps/<video>/<obj:03d>/00000.png   (or Annotations/; binary, sparse: every 4th frame)

Either root may also be the annotation folder itself (``<seq>/<frame>.png``), as vos-benchmark accepts; a
sequence whose folder holds object folders instead of PNGs is read per object whatever the layout is called.
Frames are matched to annotations by file stem; frame order is natural order (identical to the references'
``sorted()`` on the zero-padded names benchmarks use).

**LaSOT layout** (also GOT-10k, TrackingNet and OTB-style folders): every folder under ROOT (up to 3 levels)
holding ``groundtruth.txt`` (or ``groundtruth_rect.txt``) is a sequence; frames are in its ``img/`` subfolder
or the folder itself. Per-frame flags: LaSOT ``full_occlusion.txt`` and ``out_of_view.txt``, GOT-10k
``absence.label`` and ``cover.label``, image size from GOT-10k ``meta_info.ini``. TrackingNet's
``anno/<seq>.txt`` + ``frames/<seq>/`` is recognised too.

**Predictions** (what ``vidtrack score`` reads, what ``vidtrack eval`` writes) mirror the ground truth:
``PRED/<seq>/<frame>.png`` (palette PNGs), ``PRED/<seq>/<obj>/<frame>.png`` (per-object), or vidtrack's
``PRED/<seq>/masks.json`` / ``PRED/<seq>.json`` (COCO RLE, frame_idx = position of the frame in the sequence's
frame folder, or the numeric frame stem when no frames are available); boxes as ``PRED/<seq>.txt`` or GOT-10k's
``PRED/<seq>/<seq>_001.txt`` (several repetitions are pooled for AO).
"""

from __future__ import annotations

import ast
import configparser
import os
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from vidtrack.errors import InputError
from vidtrack.eval.io import compose_labels, read_boxes, read_flags, read_label_png, read_object_png
from vidtrack.eval.vos import FrameMasks
from vidtrack.sources import IMAGE_EXTENSIONS, natural_sort_key

__all__ = [
    "BoxDataset",
    "BoxSequence",
    "VOSDataset",
    "VOSPredictions",
    "VOSSequence",
    "read_box_predictions",
    "select_sequences",
]

Layout = Literal["davis", "sav", "lasot"]


def _dirs(p: Path) -> list[str]:
    try:
        return sorted((e.name for e in os.scandir(p) if e.is_dir() and not e.name.startswith(".")),
                      key=natural_sort_key)
    except OSError as e:
        raise InputError(f"cannot list {p}: {e}") from None


def _files(p: Path, suffixes: frozenset[str] | set[str]) -> list[str]:
    try:
        return sorted((e.name for e in os.scandir(p)
                       if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in suffixes),
                      key=natural_sort_key)
    except OSError as e:
        raise InputError(f"cannot list {p}: {e}") from None


def select_sequences(available: Sequence[str], wanted: Sequence[str] | str | Path | None, where: str) -> list[str]:
    """Filter sequence names: None keeps all; a list/comma string picks names; a path to a text file
    (DAVIS ``ImageSets/2017/val.txt``) lists one name per line."""
    if wanted is None:
        return list(available)
    names: list[str]
    if isinstance(wanted, str | Path) and Path(wanted).is_file():
        names = [ln.strip() for ln in Path(wanted).read_text().splitlines() if ln.strip()]
    elif isinstance(wanted, str | Path):
        names = [n.strip() for n in str(wanted).split(",") if n.strip()]
    else:
        names = list(wanted)
    missing = [n for n in names if n not in set(available)]
    if missing:
        raise InputError(f"sequence(s) {', '.join(missing[:5])} not found in {where}; "
                         f"available: {', '.join(list(available)[:8])}{' ...' if len(available) > 8 else ''}")
    return names


# --------------------------------------------------------------------------------------------------
# VOS (DAVIS / SA-V)
# --------------------------------------------------------------------------------------------------


@dataclass
class VOSSequence:
    """Ground truth of one sequence; frames are read one at a time."""

    name: str
    ann_dir: Path
    frames_dir: Path | None
    frames: list[str]
    """Annotated frame stems, in order (the union over objects in the per-object layout)."""
    object_dirs: dict[int, str] | None = None
    """Per-object layout: object id (the folder name as an integer) -> folder name."""
    object_frames: dict[int, list[str]] | None = None

    @property
    def per_object(self) -> bool:
        return self.object_dirs is not None

    @cached_property
    def object_frame_sets(self) -> dict[int, set[str]]:
        """Per-object layout: object id -> the set of its annotated frame stems."""
        return {o: set(fr) for o, fr in (self.object_frames or {}).items()}

    def read_gt(self, stem: Hashable) -> FrameMasks:
        if self.object_dirs is None:
            return FrameMasks(labels=read_label_png(self.ann_dir / f"{stem}.png"))
        assert self.object_frames is not None
        masks = {o: read_object_png(self.ann_dir / d / f"{stem}.png")
                 for o, d in self.object_dirs.items() if stem in self.object_frame_sets[o]}
        return FrameMasks(masks=masks, shape=self.shape)

    @cached_property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the annotations."""
        if self.object_dirs is None:
            p = self.ann_dir / f"{self.frames[0]}.png"
        else:
            assert self.object_frames is not None
            o = next(o for o, fr in self.object_frames.items() if fr)
            p = self.ann_dir / self.object_dirs[o] / f"{self.object_frames[o][0]}.png"
        try:
            with Image.open(p) as img:
                return img.size[1], img.size[0]
        except OSError as e:
            raise InputError(f"cannot read {p}: {e}") from None

    @cached_property
    def frame_files(self) -> list[Path]:
        """The sequence's frame images in natural order (empty when the dataset has no frames)."""
        if self.frames_dir is None or not self.frames_dir.is_dir():
            return []
        return [self.frames_dir / f for f in _files(self.frames_dir, IMAGE_EXTENSIONS)]

    @cached_property
    def frame_index(self) -> dict[str, int]:
        """Frame stem -> position in the frame folder; numeric stems map to themselves when there are no frames."""
        if self.frame_files:
            return {p.stem: i for i, p in enumerate(self.frame_files)}
        return {s: int(s) for s in self.frames if s.isdigit()}


class VOSDataset:
    """A DAVIS-layout or SA-V-layout dataset (see the module docstring).

    Args:
        root: dataset root, or the annotation folder itself.
        layout: ``"davis"`` or ``"sav"`` (only changes which folder names are tried first).
        resolution: DAVIS resolution subfolder (``480p``, ``Full-Resolution``) when present.
        sequences: names, a comma-separated string or an ImageSets text file; None for all.
    """

    def __init__(self, root: str | Path, layout: Literal["davis", "sav"] = "davis", *, resolution: str = "480p",
                 sequences: Sequence[str] | str | Path | None = None) -> None:
        self.root = Path(root)
        self.layout = layout
        if not self.root.is_dir():
            raise InputError(f"dataset folder not found: {self.root}")
        ann_names = ["Annotations_6fps", "Annotations"] if layout == "sav" else ["Annotations", "Annotations_6fps"]
        img_names = ["JPEGImages_24fps", "JPEGImages"] if layout == "sav" else ["JPEGImages", "JPEGImages_24fps"]
        ann = next((self.root / n for n in ann_names if (self.root / n).is_dir()), None)
        img = next((self.root / n for n in img_names if (self.root / n).is_dir()), None)
        if ann is None:
            ann = self.root  # the annotation folder itself
        if (ann / resolution).is_dir():
            ann = ann / resolution
        if img is not None and (img / resolution).is_dir():
            img = img / resolution
        self.ann_root = ann
        self.img_root = img
        names = _dirs(ann)
        if not names:
            raise InputError(f"no sequence folders in {ann}; expected {ann}/<sequence>/<frame>.png "
                             f"({'SA-V: <video>/<object>/<frame>.png' if layout == 'sav' else 'DAVIS layout'})")
        self.names = select_sequences(names, sequences, str(ann))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[VOSSequence]:
        return (self.sequence(n) for n in self.names)

    def sequence(self, name: str) -> VOSSequence:
        d = self.ann_root / name
        pngs = _files(d, {".png"})
        subdirs = _dirs(d)
        frames_dir = self.img_root / name if self.img_root is not None else None
        if pngs and subdirs:
            raise InputError(f"{d} holds both PNG files and folders; use one layout per sequence")
        if pngs:
            return VOSSequence(name, d, frames_dir, [Path(f).stem for f in pngs])
        if not subdirs:
            raise InputError(f"{d} has no annotation PNGs")
        object_dirs: dict[int, str] = {}
        object_frames: dict[int, list[str]] = {}
        for od in subdirs:
            try:
                oid = int(od)
            except ValueError:
                raise InputError(f"{d / od}: per-object folders must be named by number (000, 001, ...)") from None
            object_dirs[oid] = od
            object_frames[oid] = [Path(f).stem for f in _files(d / od, {".png"})]
        union = sorted({s for fr in object_frames.values() for s in fr}, key=natural_sort_key)
        return VOSSequence(name, d, frames_dir, union, object_dirs, object_frames)


class VOSPredictions:
    """Predictions of one sequence, read frame by frame (palette PNGs, per-object PNGs or masks.json).

    ``allow_missing`` scores a missing frame (or a missing sequence) as an empty prediction and counts it in
    :attr:`missing`; otherwise a missing file is an error naming it.
    """

    def __init__(self, pred_root: str | Path, seq: VOSSequence, *, allow_missing: bool = False) -> None:
        self.seq = seq
        self.allow_missing = allow_missing
        self.missing = 0
        self.kind: Literal["labels", "objects", "json", "none"]
        root = Path(pred_root)
        d = root / seq.name
        self._rle: dict[int, dict[int, object]] | None = None
        json_path = next((p for p in (d / "masks.json", root / f"{seq.name}.json") if p.is_file()), None)
        if d.is_dir() and _files(d, {".png"}):
            self.kind, self.dir = "labels", d
        elif d.is_dir() and _dirs(d):
            self.kind, self.dir = "objects", d
        elif json_path is not None:
            self.kind, self.dir = "json", d
            self._load_json(json_path)
        elif allow_missing:
            self.kind, self.dir = "none", d
        else:
            raise InputError(f"no predictions for sequence {seq.name}: expected {d}/<frame>.png, {d}/<object>/ or "
                             f"{d}/masks.json (pass --allow-missing to score missing predictions as empty)")
        if not seq.per_object and self.kind == "objects":
            raise InputError(f"{seq.name}: the ground truth is one palette PNG per frame, so the predictions must be "
                             f"too (<seq>/<frame>.png or masks.json); found object folders in {d}")
        if seq.per_object and self.kind in ("labels", "json"):
            raise InputError(f"{seq.name}: the ground truth is per object (<seq>/<obj>/<frame>.png), so the "
                             f"predictions must be too; found {'palette PNGs' if self.kind == 'labels' else 'JSON'}"
                             f" in {d}")

    def _load_json(self, path: Path) -> None:
        from vidtrack.export import read_rle_json

        result = read_rle_json(path)
        self._rle = {f.frame_idx: {m.object_id: m.to_rle() for m in f.masks} for f in result.frames}

    def _missing(self, what: Path) -> FrameMasks:
        if not self.allow_missing:
            raise InputError(f"prediction missing: {what} (pass --allow-missing to score it as empty)")
        self.missing += 1
        return FrameMasks.empty(self.seq.shape)

    def read(self, stem: Hashable) -> FrameMasks:
        if self.kind == "none":
            self.missing += 1
            return FrameMasks.empty(self.seq.shape)
        if self.kind == "labels":
            p = self.dir / f"{stem}.png"
            return FrameMasks(labels=read_label_png(p)) if p.is_file() else self._missing(p)
        if self.kind == "objects":
            assert self.seq.object_dirs is not None
            masks = {}
            for o, od in self.seq.object_dirs.items():
                if stem not in self.seq.object_frame_sets.get(o, set()):
                    continue
                p = self.dir / od / f"{stem}.png"
                if p.is_file():
                    masks[o] = read_object_png(p)
                else:
                    self._missing(p)
            return FrameMasks(masks=masks, shape=self.seq.shape)
        assert self._rle is not None
        idx = self.seq.frame_index.get(str(stem))
        if idx is None or idx not in self._rle:
            return self._missing(self.dir / f"masks.json[frame {stem}]")
        from vidtrack.types import rle_decode

        objs = {o: rle_decode(r) for o, r in self._rle[idx].items()}  # type: ignore[arg-type]
        return FrameMasks(labels=compose_labels(objs, self.seq.shape))


# --------------------------------------------------------------------------------------------------
# Boxes (LaSOT / GOT-10k / TrackingNet / OTB)
# --------------------------------------------------------------------------------------------------


@dataclass
class BoxSequence:
    """Ground truth of one single-object box sequence."""

    name: str
    frames_dir: Path | None
    gt: np.ndarray
    absent: np.ndarray | None = None
    """True where the target is absent (LaSOT full occlusion or out of view, GOT-10k absence)."""
    cover: np.ndarray | None = None
    """GOT-10k visible ratio class per frame (0 = fully occluded)."""
    resolution: tuple[int, int] | None = None
    """(width, height) from meta_info.ini, for GOT-10k clipping (else read from the first frame)."""

    @cached_property
    def frame_files(self) -> list[Path]:
        if self.frames_dir is None or not self.frames_dir.is_dir():
            return []
        return [self.frames_dir / f for f in _files(self.frames_dir, IMAGE_EXTENSIONS)]

    def image_size(self) -> tuple[int, int] | None:
        """(width, height): meta_info.ini, else the first frame's header, else None."""
        if self.resolution is not None:
            return self.resolution
        if self.frame_files:
            with Image.open(self.frame_files[0]) as img:
                return int(img.size[0]), int(img.size[1])
        return None


_GT_NAMES = ("groundtruth.txt", "groundtruth_rect.txt")


class BoxDataset:
    """A LaSOT/GOT-10k/TrackingNet/OTB-style dataset (see the module docstring)."""

    def __init__(self, root: str | Path, *, sequences: Sequence[str] | str | Path | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset folder not found: {self.root}")
        self._paths: dict[str, tuple[Path, Path | None]] = {}  # name -> (gt file, frames dir)
        if (self.root / "anno").is_dir() and (self.root / "frames").is_dir():  # TrackingNet
            for f in _files(self.root / "anno", {".txt"}):
                self._paths[Path(f).stem] = (self.root / "anno" / f, self.root / "frames" / Path(f).stem)
        else:
            self._scan(self.root, 0)
        if not self._paths:
            raise InputError(f"no sequences in {self.root}: expected folders with groundtruth.txt (LaSOT, GOT-10k) "
                             "or anno/ + frames/ (TrackingNet)")
        self.names = select_sequences(sorted(self._paths, key=natural_sort_key), sequences, str(self.root))

    def _scan(self, d: Path, depth: int) -> None:
        gt = next((d / n for n in _GT_NAMES if (d / n).is_file()), None)
        if gt is not None:
            frames = d / "img" if (d / "img").is_dir() else d
            if d.name in self._paths:
                raise InputError(f"two sequences named {d.name}: {self._paths[d.name][0].parent} and {d}")
            self._paths[d.name] = (gt, frames)
            return
        if depth < 3:
            for sub in _dirs(d):
                self._scan(d / sub, depth + 1)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[BoxSequence]:
        return (self.sequence(n) for n in self.names)

    def sequence(self, name: str) -> BoxSequence:
        gt_file, frames = self._paths[name]
        d = gt_file.parent
        gt = read_boxes(gt_file)
        absent = None
        flags = [d / "full_occlusion.txt", d / "out_of_view.txt", d / "absence.label"]
        for f in flags:
            if f.is_file():
                a = read_flags(f).astype(bool)
                if len(a) != len(gt):
                    raise InputError(f"{f}: {len(a)} flags for {len(gt)} ground-truth boxes")
                absent = a if absent is None else (absent | a)
        cover = read_flags(d / "cover.label") if (d / "cover.label").is_file() else None
        resolution = None
        meta = d / "meta_info.ini"
        if meta.is_file():
            resolution = _got_resolution(meta)
        return BoxSequence(name, frames, gt, absent, cover, resolution)


def _got_resolution(path: Path) -> tuple[int, int] | None:
    """``resolution: (1920, 1080)`` from a GOT-10k meta_info.ini (which has no section header)."""
    cp = configparser.ConfigParser()
    try:
        cp.read_string("[meta]\n" + path.read_text())
        value = cp.get("meta", "resolution", fallback=None)
        if value is None:
            return None
        w, h = ast.literal_eval(value)
        return int(w), int(h)
    except (OSError, ValueError, SyntaxError, configparser.Error, TypeError):
        return None


def read_box_predictions(pred_root: str | Path, name: str) -> list[np.ndarray]:
    """All repetitions of one sequence's predicted boxes: ``PRED/<name>.txt``, or GOT-10k's
    ``PRED/<name>/<name>_NNN.txt`` files. Raises :class:`InputError` when there are none."""
    root = Path(pred_root)
    single = root / f"{name}.txt"
    if single.is_file():
        return [read_boxes(single)]
    d = root / name
    if d.is_dir():
        reps = [f for f in _files(d, {".txt"}) if f.startswith(f"{name}_") and f[len(name) + 1 : -4].isdigit()]
        if reps:
            return [read_boxes(d / f) for f in reps]
    raise InputError(f"no predictions for sequence {name}: expected {single} or {d}/{name}_001.txt")
