"""What a batch is made of: one :class:`VideoJob` per video, read from a manifest or a folder.

Manifest formats (relative paths are relative to the manifest's folder):

* JSON Lines (``.jsonl``/``.ndjson``), one object per video; ``.json`` holding a list of such objects;
* CSV (``.csv``) with a header row naming the same fields; empty cells mean "not given";
* a folder of videos, each with a prompt file of the same stem beside it: ``clip.json`` (prompts.json) or
  ``clip.png`` (a mask on frame 0; a palette PNG gives one object per index).

Fields of a manifest entry:

========== ==================================================================================================
source     the video (file or frame folder); required. ``video`` is accepted as an alias.
id         output folder name (default: the source's stem); must be unique in the batch.
prompts    a prompts.json file (see :func:`vidtrack.prompt_files.load_prompts_json`).
mask       a mask PNG, or a list of them (palette PNG: one object per index).
box        ``"x,y,w,h"`` or ``[x, y, w, h]`` in pixels, for object ``object_id`` on frame ``frame``.
points     ``"x,y[,label];..."`` for object ``object_id`` on frame ``frame``.
frame      frame of ``mask``/``box``/``points`` (default: from a numeric mask file name, else 0).
object_id  object id of ``box``/``points`` (default 1).
model, checkpoint, dtype, resize, backward, formats (alias ``format``), stride, start, end
           per-video overrides of the batch-wide options (see :class:`JobOptions`).
========== ==================================================================================================

Structural problems (unreadable manifest, unknown field, no source, no prompt, duplicate id) raise
:class:`InputError` at once, naming the line: a typo in a field name should not cost a night of tracking.
Problems with a video's content (missing or corrupt file, invalid prompt) are found by the worker and
recorded as that video's failure, so the rest of the batch still runs.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vidtrack.errors import InputError
from vidtrack.types import Prompt

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
"""File suffixes taken as videos when a folder is given instead of a manifest."""

_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_RESERVED_IDS = {"batch_summary.json"}


@dataclass(frozen=True)
class JobOptions:
    """How one video is tracked and written. Batch-wide defaults come from the CLI; a manifest entry may
    override any field for its video.

    Every field is part of the video's input checksum: changing one redoes the video on the next run.
    (The device is not: a batch moved from CPU to GPU keeps its finished videos.)
    """

    model: str = "sam2.1-tiny"
    checkpoint: str | None = None
    dtype: str = "auto"
    resize: str = "transformers"
    backward: bool = True
    formats: tuple[str, ...] = ("rle-json",)
    stride: int = 1
    start: int = 0
    end: int | None = None
    tracking: str = ""  # JSON of further TrackingConfig fields (the CLI's tracker options); batch-wide only

    def model_key(self) -> tuple[Any, ...]:
        """What identifies a loaded model: videos with the same key share one loaded model in a worker."""
        return (self.model, self.checkpoint, self.dtype, self.resize, self.backward, self.tracking)


@dataclass(frozen=True)
class VideoJob:
    """One video of a batch: where it is, its prompts and its options. Plain data, so it crosses process and
    Ray boundaries as a dict (:meth:`to_dict` / :meth:`from_dict`)."""

    id: str
    source: str
    prompts: str | None = None
    masks: tuple[str, ...] = ()
    box: str | None = None
    points: str | None = None
    frame: int | None = None
    object_id: int = 1
    options: JobOptions = field(default_factory=JobOptions)
    where: str = ""
    """Where the entry was defined (``manifest.jsonl:3``), for messages."""

    def load_prompts(self) -> list[Prompt]:
        """Read this video's prompts (mask PNGs decoded, boxes parsed). Raises :class:`InputError`."""
        from vidtrack.prompt_files import load_prompts_json, mask_prompts, parse_box, parse_points

        plist: list[Prompt] = []
        for m in self.masks:
            if not Path(m).is_file():
                raise InputError(f"mask {m} not found")
            plist += mask_prompts(m, self.frame)
        if self.box:
            plist.append(parse_box(self.box, self.frame or 0, self.object_id))
        if self.points:
            plist.append(parse_points(self.points, self.frame or 0, self.object_id))
        if self.prompts:
            if not Path(self.prompts).is_file():
                raise InputError(f"prompts file {self.prompts} not found")
            plist += load_prompts_json(self.prompts)
        if not plist:
            raise InputError(f"{self.id}: no prompt; give prompts, mask, box or points")
        return plist

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["masks"] = list(self.masks)
        d["options"]["formats"] = list(self.options.formats)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoJob:
        opts = dict(d.get("options") or {})
        opts["formats"] = tuple(opts.get("formats") or ("rle-json",))
        return cls(**{**d, "masks": tuple(d.get("masks") or ()), "options": JobOptions(**opts)})


# ---------------------------------------------------------------------------------------------------------
# Reading manifests
# ---------------------------------------------------------------------------------------------------------

_ALIASES = {"video": "source", "format": "formats", "prompt": "prompts", "object": "object_id"}
_JOB_FIELDS = {"id", "source", "prompts", "mask", "box", "points", "frame", "object_id"}
_OPTION_FIELDS = {f.name for f in fields(JobOptions)} - {"tracking"}  # tracker options: batch-wide, from the CLI
_KNOWN = _JOB_FIELDS | _OPTION_FIELDS


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise InputError(f"{what} must be true or false; got {value!r}")


def _as_int(value: Any, what: str) -> int:
    try:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be an integer; got {value!r}") from None


def parse_format_list(value: Any, what: str = "formats") -> tuple[str, ...]:
    """``"rle-json,davis-png"`` (also ``;``/``|``/space separated, handy in CSV cells) or a list -> names,
    validated against the export registry."""
    from vidtrack.export import parse_formats

    if isinstance(value, str):
        items: Iterable[str] = re.split(r"[,;|\s]+", value)
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise InputError(f"{what} must be a string or a list of format names; got {value!r}")
    try:
        return tuple(parse_formats(list(items)))
    except InputError as e:
        raise InputError(f"{what}: {e}") from None


def _resolve(base: Path, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be a path (a non-empty string); got {value!r}")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", value.strip()):  # a URL is not relative to the manifest
        return value.strip()
    p = Path(value.strip()).expanduser()
    return str(p if p.is_absolute() else (base / p))


def _default_id(source: str) -> str:
    p = Path(source.rstrip("/"))
    return p.stem if p.suffix.lower() in VIDEO_EXTENSIONS or p.is_file() else p.name


def sanitize_id(text: str) -> str:
    """A file-system-safe output folder name: characters outside ``[A-Za-z0-9._+-]`` become ``_``."""
    out = re.sub(r"[^A-Za-z0-9._+-]", "_", text.strip())
    out = out.lstrip(".") or "video"
    return out if _ID_OK.fullmatch(out) else f"v{out}"


def job_from_entry(entry: Mapping[str, Any], base: Path, defaults: JobOptions, where: str) -> VideoJob:
    """One manifest entry (a JSON object or a CSV row, empty values dropped) -> a :class:`VideoJob`."""
    e: dict[str, Any] = {}
    for k, v in entry.items():
        if k is None:
            raise InputError(f"{where}: more cells than header columns")
        key = _ALIASES.get(str(k).strip().lower(), str(k).strip().lower())
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if key not in _KNOWN:
            raise InputError(f"{where}: unknown field {k!r}; known fields: {', '.join(sorted(_KNOWN))}")
        e[key] = v
    if "source" not in e:
        raise InputError(f"{where}: no 'source' (the video path)")
    source = _resolve(base, e["source"], f"{where}: source")
    masks_v = e.get("mask")
    masks = tuple(_resolve(base, m, f"{where}: mask") for m in (masks_v if isinstance(masks_v, list) else
                                                                [masks_v] if masks_v is not None else []))
    box = e.get("box")
    if isinstance(box, list | tuple):
        box = ",".join(str(v) for v in box)
    points = e.get("points")
    if isinstance(points, list | tuple):  # [[x, y], [x, y, label], ...]
        points = ";".join(",".join(str(c) for c in p) for p in points)
    prompts = _resolve(base, e["prompts"], f"{where}: prompts") if "prompts" in e else None
    if not (masks or box or points or prompts):
        raise InputError(f"{where}: no prompt for {e['source']}; give 'prompts' (a prompts.json), 'mask', 'box' "
                         "or 'points'")
    opts: dict[str, Any] = {}
    for key in ("model", "dtype", "resize"):
        if key in e:
            opts[key] = str(e[key]).strip()
    if "checkpoint" in e:
        opts["checkpoint"] = _resolve(base, e["checkpoint"], f"{where}: checkpoint")
    if "backward" in e:
        opts["backward"] = _as_bool(e["backward"], f"{where}: backward")
    if "formats" in e:
        opts["formats"] = parse_format_list(e["formats"], f"{where}: formats")
    for key in ("stride", "start", "end"):
        if key in e:
            opts[key] = _as_int(e[key], f"{where}: {key}")
    if opts.get("stride", 1) < 1 or opts.get("start", 0) < 0:
        raise InputError(f"{where}: stride must be >= 1 and start >= 0")
    raw_id = str(e["id"]).strip() if "id" in e else _default_id(source)
    vid = sanitize_id(raw_id)
    if "id" in e and vid != raw_id:
        raise InputError(f"{where}: id {raw_id!r} must use only letters, digits and . _ + - (and not start with .)")
    return VideoJob(
        id=vid,
        source=source,
        prompts=prompts,
        masks=masks,
        box=None if box is None else str(box),
        points=None if points is None else str(points),
        frame=_as_int(e["frame"], f"{where}: frame") if "frame" in e else None,
        object_id=_as_int(e.get("object_id", 1), f"{where}: object_id"),
        options=replace(defaults, **opts),
        where=where,
    )


def _entries(path: Path) -> list[tuple[str, Mapping[str, Any]]]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read manifest {path}: {e}") from None
    out: list[tuple[str, Mapping[str, Any]]] = []
    if suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise InputError(f"{path.name}:{n}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path.name}:{n}: each line must be a JSON object")
            out.append((f"{path.name}:{n}", obj))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InputError(f"cannot read manifest {path}: {e}") from None
        if isinstance(data, dict):
            data = data.get("videos")
        if not isinstance(data, list) or not all(isinstance(o, dict) for o in data):
            raise InputError(f"manifest {path} must hold a list of objects (or {{'videos': [...]}})")
        out = [(f"{path.name}[{i}]", o) for i, o in enumerate(data)]
    elif suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise InputError(f"manifest {path} is empty; the first row must name the columns (source,prompts,...)")
        for row in reader:
            out.append((f"{path.name}:{reader.line_num}", row))
    else:
        raise InputError(f"cannot tell the manifest format of {path}; use .jsonl, .csv or .json, or pass a folder "
                         "of videos with a prompt file (name.json or name.png) beside each")
    return out


def scan_folder(folder: Path, defaults: JobOptions) -> list[VideoJob]:
    """Videos in ``folder`` (not recursive), each with ``<stem>.json`` (prompts.json) or ``<stem>.png`` (mask)."""
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise InputError(f"no videos in {folder} (looked for {', '.join(VIDEO_EXTENSIONS)})")
    jobs, missing = [], []
    for v in videos:
        js, png = v.with_suffix(".json"), v.with_suffix(".png")
        entry: dict[str, Any] = {"source": str(v)}
        if js.is_file():
            entry["prompts"] = str(js)
        elif png.is_file():
            entry["mask"] = str(png)
            entry["frame"] = 0
        else:
            missing.append(v.name)
            continue
        jobs.append(job_from_entry(entry, folder, defaults, v.name))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise InputError(f"{len(missing)} video(s) in {folder} have no prompt file: {', '.join(missing[:5])}{more}; "
                         "put name.json (prompts) or name.png (frame-0 mask) beside each video")
    return jobs


def load_manifest(path: str | Path, defaults: JobOptions | None = None) -> list[VideoJob]:
    """Read a manifest (``.jsonl``, ``.csv``, ``.json``) or scan a folder of videos; see the module doc.

    Raises :class:`InputError` for structural problems, naming the entry. Ids must be unique: two sources with
    the same stem need an explicit ``id``.
    """
    p = Path(path).expanduser()
    defaults = defaults or JobOptions()
    if p.is_dir():
        jobs = scan_folder(p.resolve(), defaults)  # entries are resolved against the folder: no relative path twice
    elif not p.exists():
        raise InputError(f"manifest {p} not found")
    else:
        base = p.resolve().parent
        jobs = [job_from_entry(entry, base, defaults, where) for where, entry in _entries(p)]
    if not jobs:
        raise InputError(f"manifest {p} lists no videos")
    seen: dict[str, str] = {}
    for j in jobs:
        if j.id in _RESERVED_IDS:
            raise InputError(f"{j.where}: id {j.id!r} is reserved; give another 'id'")
        if j.id in seen:
            raise InputError(f"{j.where}: id {j.id!r} is already used by {seen[j.id]}; give each video a unique "
                             "'id' (it names the output folder)")
        seen[j.id] = j.where
    return jobs
