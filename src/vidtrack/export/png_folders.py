"""PNG folder formats: DAVIS palette PNGs (``davis-png``) and SA-V per-object binary PNGs (``sav-png``).

``davis-png``: ``<dir>/<frame>.png``, one per written frame (all-background frames included), mode ``P``
with the standard DAVIS palette; pixel value = object id, 0 = background. This is what the DAVIS, YouTube-VOS,
MOSE and LVOS evaluators and ``vos-benchmark`` read, and what SAM 2, Cutie, XMem and DEVA take as prompts.

* Overlaps: a pixel holds one id, so overlapping objects are resolved by :data:`OVERLAP_RULES` (default
  ``lowest-id``: the smallest id wins, as in SAM 2's ``vos_inference.py``). Use ``sav-png`` to keep overlaps.
* Ids: object ids 1..254 are written as themselves (255 is the DAVIS "void" label and 0 background). Other ids
  need ``remap_ids=True``: objects are numbered 1, 2, ... in order of first appearance (up to 255 objects;
  beyond that :class:`InputError`) and the mapping is stored in ``<dir>/object_ids.json``
  (``{"1": original_id, ...}``), which :func:`read_davis_png` applies. Evaluators ignore that file (they
  read PNGs by frame name).

``sav-png``: ``<dir>/<object:03d>/<frame>.png``, one binary PNG per object per frame, as SA-V's evaluator and
SAM 2's ``vos_inference.py --per_obj_png_file`` use; objects may overlap. Like SAM 2 it writes mode ``P`` PNGs
holding 0/1 (read them with ``np.array(Image.open(p)) > 0``). An object gets a PNG on every frame from its
first appearance on (empty where it has no mask), none before.

Atomicity: both write into a hidden temporary folder beside ``<dir>`` and rename it onto ``<dir>`` in
:meth:`close`; an existing ``<dir>`` is replaced only if it looks like a previous export of the same format
(only ``*.png`` files, or only numeric folders of ``*.png``), otherwise :class:`InputError`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from vidtrack.errors import InputError
from vidtrack.export.atomic import AtomicDir, only_entries
from vidtrack.export.base import IdMapper, Writer, check_overlap, frame_file_stem, label_map, save_palette_png
from vidtrack.label_png import VOID, read_label_png, read_object_png
from vidtrack.sources import natural_sort_key
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

ID_MAP_FILE = "object_ids.json"


def _is_davis_dir(p: Path) -> bool:
    return only_entries(p, file_re=r".+\.png|" + re.escape(ID_MAP_FILE))


def _is_sav_dir(p: Path) -> bool:
    return only_entries(p, dir_re=r"\d+", sub_file_re=r".+\.png")


class DavisPngWriter(Writer):
    """``davis-png`` writer.

    Options:
        overlap: ``lowest-id`` (default) or ``highest-score``, see :data:`OVERLAP_RULES`.
        remap_ids: number objects 1..N by first appearance (needed for ids outside 1..254).
        frame_name: file stem pattern, formatted with ``frame_idx`` (default ``{:05d}``).
    """

    format = "davis-png"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None,
                 overlap: str = "lowest-id", remap_ids: bool = False, frame_name: str = "{:05d}") -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self.overlap = check_overlap(overlap)
        self.frame_name = frame_name
        frame_file_stem(frame_name, 0)
        self.ids = IdMapper(1, 255 if remap_ids else 254, remap=remap_ids, what="a DAVIS palette PNG",
                            hint="Use sav-png (one folder per object) for more objects.")
        self._dir = AtomicDir(self.path, replaceable=_is_davis_dir, what=self.format)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        for m in frame.masks:  # map every id first, so an unmappable id fails even when its mask is hidden
            self.ids(m.object_id)
        index = label_map(frame.masks, self.height, self.width, self.overlap, lambda m: self.ids(m.object_id))
        save_palette_png(self._dir.tmp_path / f"{frame_file_stem(self.frame_name, frame.frame_idx)}.png", index)

    def _finish(self) -> None:
        if self.ids.remap:
            mapping = {str(label): oid for oid, label in sorted(self.ids.labels.items(), key=lambda kv: kv[1])}
            (self._dir.tmp_path / ID_MAP_FILE).write_text(json.dumps(mapping, indent=1) + "\n")
        self._dir.commit()

    def _discard(self) -> None:
        self._dir.abort()


class SavPngWriter(Writer):
    """``sav-png`` writer (overlaps kept).

    Options:
        frame_name: file stem pattern, formatted with ``frame_idx`` (default ``{:05d}``).
    """

    format = "sav-png"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None,
                 frame_name: str = "{:05d}") -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self.frame_name = frame_name
        frame_file_stem(frame_name, 0)
        self._seen: set[int] = set()
        self._dir = AtomicDir(self.path, replaceable=_is_sav_dir, what=self.format)

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        for m in frame.masks:
            if m.object_id < 0:
                raise InputError(f"sav-png: object id {m.object_id} cannot name a folder; ids must be >= 0")
        stem = frame_file_stem(self.frame_name, frame.frame_idx)
        by_id = {m.object_id: m for m in frame.masks}
        self._seen.update(by_id)
        empty: np.ndarray | None = None
        for oid in sorted(self._seen):
            folder = self._dir.tmp_path / f"{oid:03d}"
            if oid in by_id:
                folder.mkdir(exist_ok=True)
                arr = by_id[oid].mask.view(np.uint8)
            else:
                if empty is None:
                    empty = np.zeros((self.height, self.width), np.uint8)
                arr = empty
            save_palette_png(folder / f"{stem}.png", arr)

    def _finish(self) -> None:
        self._dir.commit()

    def _discard(self) -> None:
        self._dir.abort()


# ---------------------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------------------


def _png_files(folder: Path, what: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} not found")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()),
                   key=lambda p: natural_sort_key(p.name))
    return files


def _frame_indices(stems: list[str]) -> list[int]:
    """Numeric stems are frame indices (``00005`` -> 5); otherwise positions in natural order."""
    if all(s.isdigit() for s in stems):
        return [int(s) for s in stems]
    return list(range(len(stems)))


def read_davis_png(path: str | Path, *, void: int | None = VOID) -> TrackingResult:
    """Read a DAVIS palette PNG folder (ours, a DAVIS ground truth, or another tracker's output).

    Palette (``P``) PNGs give one object per non-zero index except ``void`` (255; pass ``void=None`` to keep
    it as an object). With ``object_ids.json`` (written by ``remap_ids``) indices map back to the original ids
    and every mapped index is an object. Greyscale/RGB PNGs (DAVIS-2016 0/255 masks) are one object, id 1:
    every non-zero pixel (:mod:`vidtrack.label_png`). All files must have one size. Frame indices come from
    numeric file names.
    """
    folder = Path(path)
    files = _png_files(folder, "DAVIS PNG")
    if not files:
        raise InputError(f"no PNG files in {folder}; a DAVIS folder holds <frame>.png masks")
    mapping: dict[int, int] | None = None
    if (folder / ID_MAP_FILE).is_file():
        try:
            mapping = {int(k): int(v) for k, v in json.loads((folder / ID_MAP_FILE).read_text()).items()}
        except (OSError, ValueError, AttributeError) as e:
            raise InputError(f"cannot read {folder / ID_MAP_FILE}: {e}") from None
    size: tuple[int, int] | None = None
    frames = []
    for idx, file in zip(_frame_indices([p.stem for p in files]), files, strict=True):
        # palette: indices; greyscale/RGB (DAVIS-2016 0/255): one object
        arr = read_label_png(file, non_palette="one-object", size=size, size_of="earlier masks")
        size = arr.shape
        masks = []
        for label in np.unique(arr).tolist():
            if label == 0:
                continue
            if mapping is not None:
                if label not in mapping:
                    continue
                oid = mapping[label]
            elif label == void:
                continue
            else:
                oid = label
            masks.append(TrackingMask(arr == label, 1.0, oid))
        masks.sort(key=lambda m: m.object_id)
        frames.append(TrackingFrame(idx, masks, {m.object_id: False for m in masks}))
    assert size is not None
    return TrackingResult(frames, size[1], size[0], 0.0, 0.0)


def read_sav_png(path: str | Path) -> TrackingResult:
    """Read an SA-V per-object PNG folder ``<dir>/<object id>/<frame>.png`` (any PNG mode; non-zero =
    object). A frame is a frame any object has a PNG for; objects without a PNG on a frame have no mask."""
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"SA-V PNG folder {folder} not found")
    objects = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not objects:
        raise InputError(f"no object folders in {folder}; an SA-V folder holds <object id>/<frame>.png")
    per_object = {int(p.name): {f.stem: f for f in _png_files(p, "SA-V object")} for p in objects}
    stems = sorted({s for files in per_object.values() for s in files}, key=natural_sort_key)
    size: tuple[int, int] | None = None
    frames = []
    for idx, stem in zip(_frame_indices(stems), stems, strict=True):
        masks = []
        for oid, files in per_object.items():
            file = files.get(stem)
            if file is None:
                continue
            mask = read_object_png(file, size=size)
            size = mask.shape
            masks.append(TrackingMask(mask, 1.0, oid))
        frames.append(TrackingFrame(idx, masks, {m.object_id: False for m in masks}))
    if size is None:
        raise InputError(f"no PNG files under {folder}")
    return TrackingResult(frames, size[1], size[0], 0.0, 0.0)
