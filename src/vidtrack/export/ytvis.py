"""YouTube-VIS style JSON (``ytvis-json``): one track per object, as VIS tools and TrackEval's YouTubeVIS read.

Layout (the dataset/ground-truth layout, one video)::

    {"info": {...},
     "videos": [{"id": 1, "name": "video", "width": W, "height": H, "length": L,
                 "file_names": ["video/00000.jpg", ...]}],
     "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
     "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "object_id": 7, "iscrowd": 0,
                      "height": H, "width": W, "score": s,
                      "segmentations": [RLE or null, ...],   # L entries, one per written frame
                      "areas": [n or null, ...], "bboxes": [[x, y, w, h] or null, ...]}, ...]}

``segmentations[i]`` is ``null`` when the object has no mask or an empty mask on frame ``i`` (YouTube-VIS
marks absent objects so). ``object_id`` (our id) and ``score`` (mean confidence over the frames where the
object is present) are extra keys; a results-format list for a VIS evaluator is
``[{"video_id", "category_id", "segmentations", "score"} for each annotation]``. Objects never present get no
annotation.

Streaming: per-object lists cannot be written until the last frame, so each frame's RLE strings go to one
spool file per object (a hidden ``.<name>.*.spool.tmp`` folder beside the output); :meth:`close` streams
them into the JSON. Memory holds only a few numbers per object, never masks.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.export.atomic import AtomicFile
from vidtrack.export.base import Writer, frame_file_stem
from vidtrack.export.rle_json import normalize_rle
from vidtrack.types import TrackingFrame, TrackingMask, TrackingResult

_SEP = (",", ":")
_MAX_OPEN = 32  # spool files kept open at once (results with hundreds of tracks must not exhaust descriptors)


def _close_spool(handles: OrderedDict[int, IO[str]], frames: IO[str], folder: str) -> None:
    for h in [*handles.values(), frames]:
        h.close()
    handles.clear()
    shutil.rmtree(folder, ignore_errors=True)


class YtvisWriter(Writer):
    """``ytvis-json`` writer.

    Options:
        video_name: the video's name, the folder part of ``file_names`` (default ``video``).
        video_id, category_id, category_name: ids and the single category written.
        frame_name: file name pattern of a frame, formatted with its ``frame_idx`` (default ``{:05d}.jpg``).
        info: fields for the top-level ``info`` object.
    """

    format = "ytvis-json"

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float | None = None,
                 video_name: str = "video", video_id: int = 1, category_id: int = 1, category_name: str = "object",
                 frame_name: str = "{:05d}.jpg", info: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, width=width, height=height, fps=fps)
        self.video_name, self.video_id = str(video_name), int(video_id)
        self.category_id, self.category_name = int(category_id), str(category_name)
        self.frame_name = frame_name
        frame_file_stem(frame_name, 0)
        self._info = dict(info or {})
        self._out = AtomicFile(self.path)
        self._spool = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".spool.tmp", dir=self.path.parent))
        self._frames = open(self._spool / "frames.txt", "w", encoding="utf-8")  # noqa: SIM115 (closed in finish)
        self._handles: OrderedDict[int, IO[str]] = OrderedDict()
        self._spool_cleanup = weakref.finalize(self, _close_spool, self._handles, self._frames, str(self._spool))
        self._tracks: dict[int, list[float]] = {}  # object id -> [frames present, sum of confidences]

    def _handle(self, object_id: int) -> IO[str]:
        h = self._handles.get(object_id)
        if h is None:
            if len(self._handles) >= _MAX_OPEN:
                self._handles.popitem(last=False)[1].close()
            h = open(self._spool / f"{object_id}.txt", "a", encoding="utf-8")  # noqa: SIM115 (LRU-managed)
            self._handles[object_id] = h
        else:
            self._handles.move_to_end(object_id)
        return h

    def _write(self, frame: TrackingFrame, image: np.ndarray | None) -> None:
        pos = self.frames_written
        self._frames.write(frame_file_stem(self.frame_name, frame.frame_idx) + "\n")
        for m in frame.masks:
            area = m.area
            if not area:
                continue
            track = self._tracks.setdefault(m.object_id, [0, 0.0])
            track[0] += 1
            track[1] += m.confidence
            bbox = json.dumps([round(v, 3) for v in m.bbox], separators=_SEP)
            h = self._handle(m.object_id)
            h.write(f"{pos}\t{area}\t{bbox}\t{m.to_rle()['counts']}\n")
            h.flush()  # to the OS at once: Python's text buffers do not grow with the number of tracks
        self._frames.flush()

    def _finish(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles.clear()
        self._frames.close()
        f = self._out.file
        length = self.frames_written
        video = {"id": self.video_id, "name": self.video_name, "width": self.width, "height": self.height,
                 "length": length}
        f.write('{"info":' + json.dumps({"format": "youtube-vis", "writer": "vidtrack", **self._info},
                                        separators=_SEP))
        f.write(',"videos":[' + json.dumps(video, separators=_SEP)[:-1] + ',"file_names":[')
        with open(self._spool / "frames.txt", encoding="utf-8") as names:
            for i, name in enumerate(names):
                f.write(("," if i else "") + json.dumps(f"{self.video_name}/{name.rstrip(chr(10))}"))
        f.write("]}]")
        category = {"id": self.category_id, "name": self.category_name, "supercategory": "object"}
        f.write(',"categories":[' + json.dumps(category, separators=_SEP) + '],"annotations":[')
        size = json.dumps([self.height, self.width], separators=_SEP)
        for k, oid in enumerate(sorted(self._tracks)):
            n, conf = self._tracks[oid]
            head = {"id": k + 1, "video_id": self.video_id, "category_id": self.category_id, "object_id": oid,
                    "iscrowd": 0, "height": self.height, "width": self.width, "score": conf / n}
            f.write(("," if k else "") + json.dumps(head, separators=_SEP)[:-1])
            spool = self._spool / f"{oid}.txt"
            for key, column in (("segmentations", 3), ("areas", 1), ("bboxes", 2)):
                f.write(f',"{key}":[')
                nxt = 0
                with open(spool, encoding="utf-8") as lines:
                    for line in lines:
                        parts = line.rstrip("\n").split("\t")
                        pos = int(parts[0])
                        f.write("null," * (pos - nxt))
                        value = parts[column]
                        if column == 3:
                            value = '{"size":' + size + ',"counts":' + json.dumps(value) + "}"
                        f.write(value + ("," if pos < length - 1 else ""))
                        nxt = pos + 1
                f.write(",".join(["null"] * (length - nxt)) + "]")
            f.write("}")
        f.write("]}\n")
        self._out.commit()
        self._spool_cleanup()

    def _discard(self) -> None:
        self._out.abort()
        self._spool_cleanup()


def write_ytvis_json(result: TrackingResult, path: str | Path, **options: Any) -> Path:
    """Write a whole result as ``ytvis-json``; ``options`` as for :class:`YtvisWriter`."""
    with YtvisWriter(path, width=result.video_width, height=result.video_height, **options) as w:
        for f in result.frames:
            w.write(f)
    return Path(path)


def _frame_index(name: str, pos: int) -> int:
    stem = Path(str(name)).stem
    return int(stem) if stem.isdigit() else pos


def read_ytvis_json(path: str | Path, *, video_id: int | None = None) -> TrackingResult:
    """Read one video's tracks from a YouTube-VIS JSON: the dataset layout (as written here), or a results
    list ``[{"video_id", "segmentations", "score", ...}]``.

    Frame indices come from numeric ``file_names`` stems (``00005.jpg`` -> 5), else from positions. Object ids
    are ``object_id`` where present, else the annotation ``id`` (results lists: position + 1).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return ytvis_from_dict(data, video_id=video_id, name=str(path))
    except OSError as e:
        raise InputError(f"cannot read YouTube-VIS JSON {path}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read YouTube-VIS JSON {path}: {type(e).__name__}: {e}") from None


def ytvis_from_dict(data: Any, *, video_id: int | None = None, name: str = "YouTube-VIS JSON") -> TrackingResult:
    """A parsed YouTube-VIS document (dataset dict or results list) -> :class:`TrackingResult`."""
    if isinstance(data, list):
        anns = [dict(a, object_id=a.get("object_id", i + 1)) for i, a in enumerate(data)]
        videos = sorted({int(a["video_id"]) for a in anns})
        vid = video_id if video_id is not None else (videos[0] if len(videos) == 1 else None)
        if vid is None:
            raise InputError(f"{name} holds results for videos {videos}; pass video_id=")
        anns = [a for a in anns if int(a["video_id"]) == vid]
        length = max((len(a["segmentations"]) for a in anns), default=0)
        names: list[str] = [f"{i:05d}" for i in range(length)]
        width = height = None
    else:
        videos_list = data["videos"]
        if video_id is None:
            if len(videos_list) != 1:
                raise InputError(f"{name} holds {len(videos_list)} videos; pass video_id= (one of "
                                 f"{[v['id'] for v in videos_list]})")
            video = videos_list[0]
        else:
            matches = [v for v in videos_list if int(v["id"]) == video_id]
            if not matches:
                raise InputError(f"{name} has no video with id {video_id}")
            video = matches[0]
        vid = int(video["id"])
        names = list(video.get("file_names") or [f"{i:05d}" for i in range(int(video["length"]))])
        width, height = int(video["width"]), int(video["height"])
        anns = [dict(a, object_id=a.get("object_id", a["id"])) for a in data.get("annotations", [])
                if int(a["video_id"]) == vid]
    frames = [TrackingFrame(_frame_index(n, i)) for i, n in enumerate(names)]
    for a in anns:
        oid = int(a["object_id"])
        score = float(a.get("score", 1.0))
        for i, seg in enumerate(a["segmentations"]):
            if seg is None:
                continue
            if not isinstance(seg, dict):
                raise InputError(f"{name}: object {oid} frame {i} is a polygon; only RLE segmentations are supported")
            if i >= len(frames):
                raise InputError(f"{name}: object {oid} has more segmentations than the video has frames")
            m = TrackingMask(rle=normalize_rle(seg), confidence=score, object_id=oid)
            frames[i].masks.append(m)
            frames[i].occlusions[oid] = False
    for f in frames:
        f.masks.sort(key=lambda m: m.object_id)
    if width is None or height is None:
        sizes = {m.size for f in frames for m in f.masks}
        if len(sizes) != 1:
            raise InputError(f"{name}: cannot tell the frame size from the segmentations ({sorted(sizes)})")
        height, width = sizes.pop()
    return TrackingResult(frames, width, height, 0.0, 0.0)
