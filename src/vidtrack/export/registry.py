"""The format registry, :func:`open_writer`, :func:`export_result` and :func:`read_result`.

A format is a name (``davis-png``), a streaming writer class, the file or folder name it gets inside an
output folder, and, for lossless formats, a reader. The CLI and the Python API share this table.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.export.base import Writer
from vidtrack.export.mot import BoxTxtWriter, MotsTxtWriter, MotTxtWriter, read_mots_txt
from vidtrack.export.overlay import DEFAULT_FPS, OverlayMp4Writer
from vidtrack.export.png_folders import DavisPngWriter, SavPngWriter, read_davis_png, read_sav_png
from vidtrack.export.rle_json import (
    RleJsonlWriter,
    RleJsonWriter,
    read_rle_json,
    read_rle_jsonl,
    result_from_dict,
    result_info,
)
from vidtrack.export.ytvis import YtvisWriter, read_ytvis_json, ytvis_from_dict
from vidtrack.types import Prompt, TrackingFrame, TrackingResult


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: registry name (``rle-json``...).
        writer: the streaming :class:`Writer` class.
        filename: file or folder name used inside an output folder by :func:`export_result`.
        is_folder: the output is a folder of files.
        lossless: masks read back exactly (``davis-png`` and ``mots-txt`` modulo their overlap rule).
        reader: ``path -> TrackingResult`` for formats that can be read back.
        description: one line for help texts.
    """

    name: str
    writer: type[Writer]
    filename: str
    is_folder: bool
    lossless: bool
    reader: Callable[[Path], TrackingResult] | None
    description: str

    @property
    def needs_images(self) -> bool:
        return self.writer.needs_images


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("rle-json", RleJsonWriter, "masks.json", False, True, read_rle_json,
                     "COCO-RLE JSON, every frame and object with scores (vidtrack's own format)"),
        ExportFormat("rle-jsonl", RleJsonlWriter, "masks.jsonl", False, True, read_rle_jsonl,
                     "COCO-RLE JSON Lines, one line per object per frame"),
        ExportFormat("ytvis-json", YtvisWriter, "ytvis.json", False, True, read_ytvis_json,
                     "YouTube-VIS JSON, one track per object"),
        ExportFormat("davis-png", DavisPngWriter, "davis", True, True, read_davis_png,
                     "DAVIS palette PNG folder (index = object id; overlaps: lowest id wins)"),
        ExportFormat("sav-png", SavPngWriter, "sav", True, True, read_sav_png,
                     "SA-V per-object binary PNG folders (overlaps kept)"),
        ExportFormat("mots-txt", MotsTxtWriter, "mots.txt", False, True, read_mots_txt,
                     "MOTS txt, RLE masks without overlaps (id = class*1000 + instance)"),
        ExportFormat("mot-txt", MotTxtWriter, "mot.txt", False, False, None,
                     "MOTChallenge box txt frame,id,x,y,w,h,conf,-1,-1,-1 (1-based frames)"),
        ExportFormat("box-txt", BoxTxtWriter, "boxes.txt", False, False, None,
                     "single-object x,y,w,h per frame (LaSOT/GOT-10k); one file per object"),
        ExportFormat("overlay-mp4", OverlayMp4Writer, "overlay.mp4", False, False, None,
                     "annotated H.264 MP4 that browsers play (needs the source video)"),
    )
}


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"davis-png, overlay-mp4"`` or a list -> validated, de-duplicated names in the given order."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in FORMATS:
            raise InputError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise InputError(f"no export format given; choose from {', '.join(FORMATS)}")
    return names


def format_help(prefix: str = "comma-separated: ") -> str:
    """The ``--format`` help text, from :data:`FORMATS` (so a new format appears in every command's help)."""
    names = [f"{n} (needs the source video)" if f.needs_images else n for n, f in FORMATS.items()]
    return prefix + ", ".join(names)


def check_formats(formats: str | Iterable[str], source: object = None) -> list[str]:
    """Validate a ``--format`` value before any work is done; returns the names.

    ``source`` may be the path/URL or an opened :class:`~vidtrack.sources.FrameSource`. Raises
    :class:`InputError` for an unknown name, or for a format that draws on the frames (``overlay-mp4``) without
    a source that can be read again (none given, or a live stream: camera, network stream, pipe).
    """
    names = parse_formats(formats)
    if any(FORMATS[n].needs_images for n in names):
        if source is None:
            raise InputError("overlay-mp4 draws on the video: pass the source video (--source VIDEO)")
        if getattr(source, "is_live", False):
            raise InputError(f"overlay-mp4 re-reads the video after tracking, but {getattr(source, 'name', source)} "
                             "is a live stream; record it to a file first, or drop overlay-mp4")
    return names


def write_formats(result: TrackingResult, out_dir: str | Path, formats: str | Iterable[str], source: Any = None, *,
                  info: Mapping[str, Any] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                  progress: Callable[[TrackingFrame], None] | None = None) -> dict[str, Path]:
    """:func:`check_formats`, then :func:`export_result`: what ``vidtrack track --format`` writes.

    ``source`` is the video the result was tracked on, re-read for ``overlay-mp4`` (frames are matched by
    ``frame_idx``, so ``--stride``/``--start`` results work). File names: see ``vidtrack export --help``.
    """
    names = check_formats(formats, source)
    return export_result(result, out_dir, names, source=source, info=info, options=options, progress=progress)


def open_writer(fmt: str, path: str | Path, *, width: int, height: int, fps: float | None = None,
                **options: Any) -> Writer:
    """A streaming writer of format ``fmt`` to ``path``.

    Write frames as they arrive with ``writer.write(frame, image=None)`` (``image``: the RGB frame, needed by
    ``overlay-mp4``) and commit with ``writer.close()``, or use it as a context manager (commits on success,
    discards on error). ``options`` are the writer's own keywords (see each writer class); unknown ones raise
    :class:`InputError`.
    """
    spec = FORMATS.get(str(fmt).strip().lower())
    if spec is None:
        raise InputError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    allowed = spec.writer.option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"{spec.name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(allowed) or 'none'}")
    return spec.writer(path, width=width, height=height, fps=fps, **options)


# ---------------------------------------------------------------------------------------------------------
# Whole results
# ---------------------------------------------------------------------------------------------------------


def _source_frames(source: Any, frame_idxs: Sequence[int], width: int, height: int,
                   ) -> tuple[Iterator[np.ndarray], float | None, Callable[[], None]]:
    """The source's RGB frames at ``frame_idxs`` (increasing), its frame rate for them, and a closer.

    A path is re-opened over just the range the result covers (with the result's stride when it is regular),
    so a strided or partial track re-reads only what it needs.
    """
    from vidtrack.sources import FrameSource, open_source

    steps = {b - a for a, b in itertools.pairwise(frame_idxs)}
    if isinstance(source, FrameSource):
        src = source  # the caller's pass: used as it is
    else:
        step = next(iter(steps)) if len(steps) == 1 else 1
        src = open_source(source, start=frame_idxs[0] if frame_idxs else 0,
                          end=frame_idxs[-1] + 1 if frame_idxs else None, stride=step)
        if src.is_live:
            src.close()
            raise InputError(f"{src.name} is a live stream and cannot be read again for the overlay; write the "
                             "overlay while tracking (open_writer) or record the stream to a file first")
    rate = src.fps  # FrameSource.fps is already divided by the stride
    h, w = src.probe_size()
    if (h, w) != (height, width):
        src.close()
        raise InputError(f"source {src.name} is {w}x{h} but the result is {width}x{height}; pass the video the "
                         "result was tracked on")

    def frames() -> Iterator[np.ndarray]:
        it = iter(src)
        for want in frame_idxs:
            for idx, img in it:
                if idx == want:
                    yield img
                    break
                if idx > want:
                    raise InputError(f"source {src.name} has no frame {want}; is it the video the result was "
                                     "tracked on?")
            else:
                raise InputError(f"source {src.name} ended before frame {want}; is it the video the result was "
                                 "tracked on?")

    return frames(), rate, src.close


def _default_options(name: str, result: TrackingResult, info: Mapping[str, Any], video_name: str) -> dict[str, Any]:
    """Options a whole result implies (ids that need remapping, model/timing info)."""
    ids = result.object_ids
    if name == "rle-json":
        return {"info": result_info(result, **info)}
    if name == "ytvis-json":
        return {"video_name": video_name, "info": {"model": result.model, **info}}
    if name == "davis-png" and any(not 1 <= i <= 254 for i in ids):
        return {"remap_ids": True}
    if name == "mots-txt" and any(not 0 <= i <= 999 for i in ids):
        return {"remap_ids": True}
    return {}


def _video_name(source: Any, info: Mapping[str, Any], result: TrackingResult) -> str:
    for candidate in (source, info.get("source"), result.metadata.get("source")):
        if isinstance(candidate, str | os.PathLike):
            stem = Path(os.fspath(candidate)).stem
            if stem:
                return stem
    return "video"


def export_result(result: TrackingResult, out_dir: str | Path, formats: str | Iterable[str],
                  source: Any = None, *, options: Mapping[str, Mapping[str, Any]] | None = None,
                  info: Mapping[str, Any] | None = None, fps: float | None = None,
                  progress: Callable[[TrackingFrame], None] | None = None) -> dict[str, Path]:
    """Write ``result`` in every format of ``formats`` into ``out_dir``, in one pass over the frames.

    Args:
        result: a tracking result (e.g. from ``track_video`` or :func:`read_result`).
        out_dir: the output folder; each format gets its :attr:`ExportFormat.filename` in it.
        formats: names, as a list or a comma-separated string.
        source: the video the result was tracked on (path, or an open :class:`~vidtrack.sources.FrameSource`),
            needed by ``overlay-mp4``; frames are matched by ``frame_idx``, so strided results work.
        options: per-format writer options, e.g. ``{"davis-png": {"overlap": "highest-score"}}``.
        info: extra ``info`` fields for the JSON formats (e.g. ``{"source": "clip.mp4"}``).
        fps: frame rate of the overlay (default: the source's, adjusted for the result's stride).
        progress: called after each frame is written.

    Returns:
        format name -> written path. ``box-txt`` writes one file per object when the result has several
        objects and no ``object_id`` option: keys ``box-txt:<id>``, files ``boxes_<id>.txt``.

    Everything is staged and committed only after the last frame: an error (or a kill) leaves earlier
    exports in place and adds no partial file.
    """
    names = parse_formats(formats)
    options = {k: dict(v) for k, v in (options or {}).items()}
    for key in options:
        if key not in names:
            raise InputError(f"options given for {key!r}, which is not among the formats {', '.join(names)}")
    info = dict(info or {})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file; --out must be a folder")
    frame_idxs = [f.frame_idx for f in result.frames]
    needs_images = any(FORMATS[n].needs_images for n in names)
    if needs_images and source is None:
        raise InputError("overlay-mp4 draws on the video: pass the source video (CLI: --source VIDEO)")
    video_name = _video_name(source, info, result)

    images: Iterator[np.ndarray] | None = None
    close_source: Callable[[], None] = lambda: None  # noqa: E731
    rate = fps
    if needs_images:
        images, src_rate, close_source = _source_frames(source, frame_idxs, result.video_width, result.video_height)
        rate = fps or src_rate or DEFAULT_FPS

    plan: list[tuple[str, Path, dict[str, Any]]] = []
    for name in names:
        spec = FORMATS[name]
        opts = {**_default_options(name, result, info, video_name), **options.get(name, {})}
        if name == "box-txt" and opts.get("object_id") is None and len(result.object_ids) > 1:
            for oid in result.object_ids:
                plan.append((f"box-txt:{oid}", out / f"boxes_{oid}.txt", {**opts, "object_id": oid}))
        else:
            plan.append((name, out / spec.filename, opts))

    writers: list[tuple[str, Writer]] = []
    try:
        for key, path, opts in plan:
            writers.append((key, open_writer(key.split(":")[0], path, width=result.video_width,
                                             height=result.video_height, fps=rate, **opts)))
        for frame in result.frames:
            image = next(images) if images is not None else None
            for _, w in writers:
                w.write(frame, image if w.needs_images else None)
            if progress is not None:
                progress(frame)
        return {key: w.close() for key, w in writers}
    except BaseException:
        for _, w in writers:
            w.abort()
        raise
    finally:
        close_source()


# ---------------------------------------------------------------------------------------------------------
# Reading any format back
# ---------------------------------------------------------------------------------------------------------


def read_result(path: str | Path) -> TrackingResult:
    """Read masks from any readable format, detected from the path:

    a folder of ``*.png`` (``davis-png``), a folder of numeric object folders (``sav-png``), ``*.jsonl``
    (``rle-jsonl``), ``*.json`` holding ``frames`` (``rle-json``) or ``videos``/a results list (``ytvis-json``),
    ``*.txt`` (``mots-txt``).
    """
    p = Path(path)
    if p.is_dir():
        entries = list(p.iterdir())
        if any(e.suffix.lower() == ".png" and e.is_file() for e in entries):
            return read_davis_png(p)
        if any(e.is_dir() and e.name.isdigit() for e in entries):
            return read_sav_png(p)
        raise InputError(f"{p} holds neither <frame>.png masks (davis-png) nor <object>/<frame>.png folders "
                         "(sav-png)")
    if not p.exists():
        raise InputError(f"result {p} not found")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return read_rle_jsonl(p)
    if suffix == ".txt":
        return read_mots_txt(p)
    if suffix == ".json":
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {p}: {e}") from None
        try:
            if isinstance(data, dict) and "frames" in data:
                return result_from_dict(data)
            if isinstance(data, list) or (isinstance(data, dict) and "videos" in data):
                return ytvis_from_dict(data, name=str(p))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"cannot read {p}: {type(e).__name__}: {e}") from None
        raise InputError(f"{p} is neither vidtrack RLE JSON (a 'frames' list) nor YouTube-VIS JSON ('videos')")
    raise InputError(f"cannot tell the format of {p}; give a .json, .jsonl or MOTS .txt file, or a PNG folder")


def result_prompts(result: TrackingResult, frames: Iterable[int] | None = None) -> list[Prompt]:
    """Mask prompts from a result read back (e.g. a DAVIS ground-truth folder) for ``track_video``.

    With ``frames`` None, each object is prompted on the frame where its mask first appears (so objects that
    enter late, as in YouTube-VOS or the judo clip, are introduced where they enter); otherwise every
    non-empty mask on the given frames becomes a prompt.
    """
    wanted = None if frames is None else set(frames)
    seen: set[int] = set()
    out: list[Prompt] = []
    for f in result.frames:
        for m in f.masks:
            if not m.area:
                continue
            if wanted is None:
                if m.object_id in seen:
                    continue
                seen.add(m.object_id)
            elif f.frame_idx not in wanted:
                continue
            out.append(Prompt.from_mask(f.frame_idx, m.object_id, m.mask, origin=f"frame {f.frame_idx}"))
    return out
