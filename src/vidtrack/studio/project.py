"""The studio's project folder: everything a session needs to come back after a reload or a server restart.

Layout (one folder per session, so two browser tabs never write the same files)::

    <project>/
      sessions/<sid>/
        session.json          video path, tracker, objects (id, colour, name), times
        actions.json          every action as the server applied it, in order (add_prompt, clear_prompts,
                              remove_object, reset): replayed into a fresh session on restore
        frames/000123.json    the latest masks of every object on frame 123 (COCO RLE, rle-json records)
        exports/              what the page exported (downloaded from there)
      uploads/                videos uploaded through the page

Every file is written to a temporary name and renamed (:func:`vidtrack.export.atomic.atomic_write`), so a
killed server leaves each file either as it was or complete. Masks live on disk, not in the server: the store
keeps only a per-frame summary (which objects are visible or occluded) for the timeline, a few bytes per
frame, so a 2,000-frame video costs the server little memory however long it is tracked.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidtrack.errors import InputError
from vidtrack.export.atomic import atomic_write
from vidtrack.export.base import object_color
from vidtrack.export.rle_json import normalize_rle
from vidtrack.types import TrackingFrame, TrackingMask

SID_RE = re.compile(r"^[a-z0-9]{8,32}$")
VISIBLE, OCCLUDED, ABSENT = "v", "o", "."
"""Timeline states of an object on a frame: tracked and visible, tracked and judged absent, not tracked."""


def new_session_id() -> str:
    return secrets.token_hex(8)


def check_session_id(sid: str) -> str:
    """A session id is a short lowercase token: it names a folder, so nothing else is accepted."""
    if not SID_RE.match(sid):
        raise InputError(f"bad session id {sid!r}")
    return sid


def hex_color(object_id: int) -> str:
    r, g, b = object_color(object_id)
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass
class StudioObject:
    """An object the user added: its id (the export's object id), display colour and optional name."""

    id: int
    color: str
    name: str = ""


@dataclass
class SessionRecord:
    """``session.json``: what to reopen (video, tracker) and the objects."""

    sid: str
    video: str
    model: str
    objects: list[StudioObject] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SessionRecord:
        objects = [StudioObject(int(o["id"]), str(o["color"]), str(o.get("name", ""))) for o in data["objects"]]
        return cls(str(data["sid"]), str(data["video"]), str(data["model"]), objects,
                   float(data.get("created", 0.0)), float(data.get("updated", 0.0)))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(data, f, separators=(",", ":"))


def frame_record(frame: TrackingFrame) -> dict[str, Any]:
    """A frame as stored: its rle-json record (masks of every object with scores and occlusion)."""
    return {"frame_idx": frame.frame_idx, "objects": [m.to_dict() for m in frame.masks]}


def frame_from_record(data: dict[str, Any]) -> TrackingFrame:
    masks = [TrackingMask(rle=normalize_rle(o["rle"]), confidence=float(o.get("confidence", 1.0)),
                          object_id=int(o["object_id"]), visibility=o.get("visibility"),
                          occluded=bool(o.get("occluded", False))) for o in data["objects"]]
    return TrackingFrame(int(data["frame_idx"]), masks, {m.object_id: m.occluded for m in masks})


class SessionStore:
    """One session's folder: the record, the action log and the tracked frames (masks on disk only)."""

    def __init__(self, folder: Path, record: SessionRecord) -> None:
        self.folder = folder
        self.record = record
        self.actions: list[dict[str, Any]] = []
        self.summary: dict[int, dict[int, str]] = {}  # frame -> object -> VISIBLE | OCCLUDED

    # --- paths -------------------------------------------------------------------------------------------
    @property
    def frames_dir(self) -> Path:
        return self.folder / "frames"

    @property
    def exports_dir(self) -> Path:
        return self.folder / "exports"

    def _frame_path(self, frame_idx: int) -> Path:
        return self.frames_dir / f"{frame_idx:06d}.json"

    # --- record and objects ------------------------------------------------------------------------------
    def save_record(self) -> None:
        self.record.updated = time.time()
        _write_json(self.folder / "session.json", self.record.to_json())

    def add_object(self, object_id: int | None = None, name: str = "") -> StudioObject:
        ids = {o.id for o in self.record.objects}
        oid = object_id if object_id is not None else next(i for i in range(1, len(ids) + 2) if i not in ids)
        if oid < 1:
            raise InputError(f"object ids start at 1; got {oid}")
        if oid in ids:
            raise InputError(f"object {oid} already exists")
        obj = StudioObject(oid, hex_color(oid), name)
        self.record.objects.append(obj)
        self.record.objects.sort(key=lambda o: o.id)
        self.save_record()
        return obj

    def ensure_object(self, object_id: int) -> None:
        if all(o.id != object_id for o in self.record.objects):
            self.add_object(object_id)

    def drop_object(self, object_id: int) -> None:
        self.record.objects = [o for o in self.record.objects if o.id != object_id]
        self.save_record()

    # --- the action log ----------------------------------------------------------------------------------
    def log(self, action: dict[str, Any]) -> None:
        """Append one applied action and rewrite ``actions.json`` (small: clicks, not masks)."""
        self.actions.append(action)
        _write_json(self.folder / "actions.json", self.actions)

    def set_actions(self, actions: list[dict[str, Any]]) -> None:
        self.actions = list(actions)
        _write_json(self.folder / "actions.json", self.actions)

    # --- tracked frames ----------------------------------------------------------------------------------
    def put_frame(self, frame: TrackingFrame) -> None:
        """Store the latest masks of every object on ``frame.frame_idx`` (replacing what was there)."""
        _write_json(self._frame_path(frame.frame_idx), frame_record(frame))
        self.summary[frame.frame_idx] = {m.object_id: OCCLUDED if m.occluded or not m.area else VISIBLE
                                         for m in frame.masks}

    def get_frame(self, frame_idx: int) -> TrackingFrame | None:
        path = self._frame_path(frame_idx)
        if frame_idx not in self.summary or not path.exists():
            return None
        return frame_from_record(json.loads(path.read_text(encoding="utf-8")))

    def drop_object_frames(self, object_id: int) -> None:
        """Remove one object from every stored frame."""
        for idx in sorted(self.summary):
            if object_id in self.summary[idx]:
                frame = self.get_frame(idx)
                if frame is not None:
                    frame.masks = [m for m in frame.masks if m.object_id != object_id]
                    self.put_frame(frame)

    def clear_frames(self) -> None:
        shutil.rmtree(self.frames_dir, ignore_errors=True)
        self.summary.clear()

    def frames(self) -> Iterator[TrackingFrame]:
        """Every stored frame in frame order, read one at a time."""
        for idx in sorted(self.summary):
            frame = self.get_frame(idx)
            if frame is not None:
                yield frame

    def timeline(self, num_frames: int) -> dict[str, str]:
        """Object id -> one character per frame: ``v`` visible, ``o`` occluded/absent, ``.`` not tracked."""
        rows: dict[str, list[str]] = {str(o.id): [ABSENT] * num_frames for o in self.record.objects}
        for idx, states in self.summary.items():
            if 0 <= idx < num_frames:
                for oid, state in states.items():
                    row = rows.get(str(oid))
                    if row is not None:
                        row[idx] = state
        return {k: "".join(v) for k, v in rows.items()}

    def load_summary(self) -> None:
        """Rebuild the per-frame summary from the frame files (after a restart)."""
        self.summary.clear()
        if not self.frames_dir.is_dir():
            return
        for path in sorted(self.frames_dir.glob("[0-9]*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            self.summary[int(data["frame_idx"])] = {
                int(o["object_id"]): OCCLUDED if o.get("occluded") or not o.get("area") else VISIBLE
                for o in data["objects"]}


class ProjectStore:
    """The project folder: sessions (one per browser tab) and uploaded videos."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sessions_dir = root / "sessions"
        self.uploads_dir = root / "uploads"

    def create(self, video: str, model: str) -> SessionStore:
        sid = new_session_id()
        store = SessionStore(self.sessions_dir / sid, SessionRecord(sid, video, model))
        store.save_record()
        store.set_actions([])
        return store

    def open(self, sid: str) -> SessionStore:
        """A saved session, with its action log and frame summary read back."""
        folder = self.sessions_dir / check_session_id(sid)
        path = folder / "session.json"
        if not path.exists():
            raise InputError(f"no saved session {sid} in {self.root}")
        record = SessionRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
        store = SessionStore(folder, record)
        actions = folder / "actions.json"
        store.actions = json.loads(actions.read_text(encoding="utf-8")) if actions.exists() else []
        store.load_summary()
        return store

    def saved(self) -> list[SessionRecord]:
        """Every saved session, newest first."""
        out = []
        for path in self.sessions_dir.glob("*/session.json"):
            try:
                out.append(SessionRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, KeyError):
                continue  # a folder that is not ours, or damaged by hand: not offered
        return sorted(out, key=lambda r: r.updated, reverse=True)

    def latest_for(self, video: str, exclude: Iterable[str] = ()) -> SessionRecord | None:
        skip = set(exclude)
        return next((r for r in self.saved() if r.video == video and r.sid not in skip), None)
