"""The studio's HTTP routes (FastAPI): a thin JSON layer over :mod:`vidtrack.studio.live`.

Everything the page needs is served from this process: the page itself and its script and style
(``static/``), frames as JPEG, masks as run lengths, progress, exports. Nothing is fetched from anywhere else
and nothing is reported anywhere: no CDN, no analytics, no update check.

User errors (a bad path, a click outside the frame, a format that does not exist) answer 400 with
``{"error": "..."}``, the same one-line messages as the command line; a request that would disturb a running
propagation answers 409.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel

from vidtrack.errors import InputError, VidtrackError
from vidtrack.export.atomic import AtomicFile, atomic_write
from vidtrack.studio.actions import frame_prompts, prompt_action, prompted_frames
from vidtrack.studio.live import Busy, LiveSession, SessionManager
from vidtrack.studio.paths import PathGuard
from vidtrack.studio.project import ProjectStore, check_session_id
from vidtrack.studio.wire import frame_json, mask_json

STATIC = Path(__file__).with_name("static")
EXPORT_NAME_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9]{3}/[A-Za-z0-9_.-]+$")
UPLOAD_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class StudioConfig:
    """What ``vidtrack studio`` was started with."""

    project: Path
    make_loader: Any  # model name -> loaded loader with open_session()
    models: list[str]
    default_model: str
    video: str | None = None
    guard: PathGuard = field(default_factory=lambda: PathGuard([], shared=False))
    make_detector: Any = None  # () -> loaded YOLO loader, when a YOLO weights file was given
    checkpoint: str | None = None
    max_live: int = 4


# --- request bodies ----------------------------------------------------------------------------------------
class OpenBody(BaseModel):
    video: str | None = None
    model: str | None = None
    resume: bool = False


class ObjectBody(BaseModel):
    id: int | None = None
    name: str = ""


class PromptBody(BaseModel):
    frame: int
    object_id: int
    points: list[list[float]] | None = None
    labels: list[int] | None = None
    box: list[float] | None = None
    clear_old_points: bool = False


class ClearBody(BaseModel):
    frame: int
    object_id: int | None = None


class TrackerBody(BaseModel):
    model: str


class PropagateBody(BaseModel):
    direction: str = "forward"
    start: int | None = None
    max_frames: int | None = None


class FrameBody(BaseModel):
    frame: int


class SuggestionBody(BaseModel):
    frame: int
    index: int
    object_id: int


class ExportBody(BaseModel):
    formats: list[str]


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _zip_folder(folder: Path, target: Path) -> Path:
    """Zip ``folder`` (its files, sorted, under the folder's name) to ``target`` atomically."""
    with atomic_write(target, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, str(Path(folder.name) / p.relative_to(folder)))
    return target


def create_app(config: StudioConfig) -> FastAPI:
    """The studio application; ``config.make_loader`` decides which weights each tracker name runs."""
    project = ProjectStore(config.project)
    manager = SessionManager(project, config.make_loader, max_live=config.max_live)
    detector: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        manager.close_all()

    app = FastAPI(title="vidtrack studio", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.manager = manager

    @app.exception_handler(VidtrackError)
    def _user_error(_request: Request, e: VidtrackError) -> JSONResponse:
        status = 409 if isinstance(e, Busy) else 400
        return JSONResponse({"error": " ".join(str(e).split())}, status_code=status)

    def live(sid: str) -> LiveSession:
        check_session_id(sid)
        if sid not in manager.live:  # reopening saved work: its video must be one this server may open
            config.guard.check(project.open(sid).record.video)
        return manager.get(sid)

    def session_json(s: LiveSession) -> dict[str, Any]:
        n = int(s.session.num_frames)
        rec = s.store.record
        return {"sid": s.sid, "video": rec.video, "model": rec.model, "loaded_as": getattr(s.loader, "name", ""),
                "num_frames": n, "width": int(s.session.width), "height": int(s.session.height),
                "fps": s.session.fps, "objects": [o.__dict__ for o in rec.objects],
                "prompted": {str(k): v for k, v in prompted_frames(s.store.actions).items()},
                "job": s.job.to_json() if s.job else None}

    # --- the page ----------------------------------------------------------------------------------------
    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        from vidtrack.export.registry import FORMATS

        return {"video": config.video, "models": config.models, "default_model": config.default_model,
                "checkpoint": config.checkpoint, "shared": config.guard.shared,
                "yolo": config.make_detector is not None,
                "formats": [{"name": f.name, "description": f.description, "needs_images": f.needs_images}
                            for f in FORMATS.values()],
                "saved": [{"sid": r.sid, "video": r.video, "model": r.model, "updated": r.updated}
                          for r in project.saved()]}

    # --- sessions ----------------------------------------------------------------------------------------
    @app.post("/api/sessions")
    def open_session(body: OpenBody) -> dict[str, Any]:
        video = body.video or config.video
        if not video:
            raise InputError("no video: type the path of a video file or frame folder, or upload one")
        path = config.guard.check(video)
        if not path.exists():
            raise InputError(f"video {video} not found")
        model = body.model or config.default_model
        if model not in config.models:
            raise InputError(f"unknown tracker {model!r}; one of {', '.join(config.models)}")
        if body.resume:
            saved = project.latest_for(str(path), exclude=manager.live)
            if saved is not None:
                return session_json(manager.get(saved.sid))
        return session_json(manager.create(str(path), model))

    @app.get("/api/sessions/{sid}")
    def get_session(sid: str) -> dict[str, Any]:
        return session_json(live(sid))

    @app.post("/api/upload")
    def upload(file: UploadFile = File(...)) -> dict[str, str]:  # noqa: B008 - FastAPI's declaration style
        name = UPLOAD_NAME_RE.sub("_", Path(file.filename or "video").name).lstrip(".") or "video"
        target = project.uploads_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        out = AtomicFile(target, "wb")
        try:
            shutil.copyfileobj(file.file, out.file)
        except BaseException:
            out.abort()
            raise
        out.commit()
        return {"path": str(target)}

    # --- frames and masks --------------------------------------------------------------------------------
    @app.get("/api/sessions/{sid}/frames/{frame_idx}.jpg")
    def frame_image(sid: str, frame_idx: int) -> Response:
        data = _jpeg(live(sid).frame_image(frame_idx))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/sessions/{sid}/masks/{frame_idx}")
    def masks(sid: str, frame_idx: int) -> dict[str, Any]:
        s = live(sid)
        out = frame_json(s.current(frame_idx), frame_idx)
        out["prompts"] = {str(o): p for o, p in frame_prompts(s.store.actions).get(frame_idx, {}).items()}
        return out

    @app.get("/api/sessions/{sid}/timeline")
    def timeline(sid: str) -> dict[str, Any]:
        s = live(sid)
        return {"num_frames": int(s.session.num_frames), "objects": [o.__dict__ for o in s.store.record.objects],
                "rows": s.store.timeline(int(s.session.num_frames)),
                "prompted": {str(k): v for k, v in prompted_frames(s.store.actions).items()}}

    # --- objects and prompts -----------------------------------------------------------------------------
    @app.post("/api/sessions/{sid}/objects")
    def add_object(sid: str, body: ObjectBody) -> dict[str, Any]:
        return live(sid).store.add_object(body.id, body.name).__dict__

    @app.delete("/api/sessions/{sid}/objects/{object_id}")
    def remove_object(sid: str, object_id: int) -> dict[str, Any]:
        s = live(sid)
        if object_id in prompted_frames(s.store.actions):
            s.act({"op": "remove_object", "object_id": object_id})
        else:
            s.store.drop_object(object_id)
        return session_json(s)

    def answer(s: LiveSession, frame_idx: int, frame: Any) -> dict[str, Any]:
        out = frame_json(frame, frame_idx)
        out["prompts"] = {str(o): p for o, p in frame_prompts(s.store.actions).get(frame_idx, {}).items()}
        out["objects"] = [o.__dict__ for o in s.store.record.objects]
        return out

    @app.post("/api/sessions/{sid}/prompts")
    def add_prompt(sid: str, body: PromptBody) -> dict[str, Any]:
        s = live(sid)
        action = prompt_action(body.frame, body.object_id, points=body.points, labels=body.labels, box=body.box,
                               clear_old_points=body.clear_old_points)
        return answer(s, body.frame, s.act(action))

    @app.post("/api/sessions/{sid}/clear")
    def clear(sid: str, body: ClearBody) -> dict[str, Any]:
        s = live(sid)
        return answer(s, body.frame, s.act({"op": "clear_prompts", "frame": body.frame,
                                            "object_id": body.object_id}))

    @app.post("/api/sessions/{sid}/reset")
    def reset(sid: str) -> dict[str, Any]:
        s = live(sid)
        s.act({"op": "reset"})
        return session_json(s)

    @app.post("/api/sessions/{sid}/tracker")
    def tracker(sid: str, body: TrackerBody) -> dict[str, Any]:
        if body.model not in config.models:
            raise InputError(f"unknown tracker {body.model!r}; one of {', '.join(config.models)}")
        s = live(sid)
        if s.busy:
            raise Busy("a propagation is running; cancel it before changing the tracker")
        return session_json(manager.switch_model(s, body.model))

    # --- propagation -------------------------------------------------------------------------------------
    @app.post("/api/sessions/{sid}/propagate")
    def propagate(sid: str, body: PropagateBody) -> dict[str, Any]:
        return live(sid).propagate(body.direction, body.start, body.max_frames).to_json()

    @app.get("/api/sessions/{sid}/propagate")
    def progress(sid: str) -> dict[str, Any]:
        job = live(sid).job
        return job.to_json() if job else {"state": "idle"}

    @app.post("/api/sessions/{sid}/cancel")
    def cancel(sid: str) -> dict[str, Any]:
        job = live(sid).cancel()
        return job.to_json() if job else {"state": "idle"}

    # --- YOLO suggestions --------------------------------------------------------------------------------
    @app.post("/api/sessions/{sid}/suggestions")
    def suggestions(sid: str, body: FrameBody) -> dict[str, Any]:
        if config.make_detector is None:
            raise InputError("no YOLO weights: restart with --yolo yolo11n-seg.pt for detection suggestions")
        s = live(sid)
        image = s.frame_image(body.frame)
        if "yolo" not in detector:
            detector["yolo"] = config.make_detector()
        yolo = detector["yolo"]
        dets = yolo.detect(image)
        s.suggestions = (body.frame, dets)
        names = yolo.class_names
        from vidtrack.types import TrackingMask

        out = []
        for j, m in enumerate(dets.masks or []):
            cls = int(dets.classes[j])
            entry = mask_json(TrackingMask(m, float(dets.scores[j]), j + 1))
            entry.update(index=j, label=str(names.get(cls, cls)), score=round(float(dets.scores[j]), 3))
            out.append(entry)
        return {"frame_idx": body.frame, "suggestions": out}

    @app.post("/api/sessions/{sid}/suggestions/use")
    def use_suggestion(sid: str, body: SuggestionBody) -> dict[str, Any]:
        s = live(sid)
        if s.suggestions is None or s.suggestions[0] != body.frame:
            raise InputError(f"no suggestions for frame {body.frame}; ask for them first")
        dets = s.suggestions[1]
        if not 0 <= body.index < len(dets.masks or []):
            raise InputError(f"no suggestion {body.index} on frame {body.frame}")
        action = prompt_action(body.frame, body.object_id, mask=dets.masks[body.index])
        return answer(s, body.frame, s.act(action))

    # --- export ------------------------------------------------------------------------------------------
    @app.post("/api/sessions/{sid}/export")
    def export(sid: str, body: ExportBody) -> dict[str, Any]:
        from vidtrack.export.registry import FORMATS, export_result, parse_formats

        s = live(sid)
        names = parse_formats(body.formats)
        if s.busy:
            raise Busy("a propagation is running; export when it has finished")
        result = s.result()
        if not result.frames:
            raise InputError("nothing tracked yet: click an object, then propagate")
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
        out = s.store.exports_dir / stamp
        video = s.store.record.video
        paths = export_result(result, out, names, source=video, info={"source": video})
        files = []
        for key, path in paths.items():
            name = key.split(":")[0]
            if FORMATS[name].is_folder:
                path = _zip_folder(path, path.with_name(path.name + ".zip"))
            files.append({"format": key, "name": path.name,
                          "url": f"/api/sessions/{s.sid}/exports/{stamp}/{path.name}"})
        return {"folder": str(out), "files": files}

    @app.get("/api/sessions/{sid}/exports/{stamp}/{name}")
    def download(sid: str, stamp: str, name: str) -> FileResponse:
        s = live(sid)
        if not EXPORT_NAME_RE.match(f"{stamp}/{name}"):
            raise InputError(f"no export {stamp}/{name}")
        path = s.store.exports_dir / stamp / name
        if not path.is_file():
            raise InputError(f"no export {stamp}/{name}")
        return FileResponse(path, filename=name)

    return app
