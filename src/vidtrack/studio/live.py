"""Live sessions: an interactive session per browser tab, its project folder, and its propagation job.

The interactive session (``loader.open_session(video)``) is a Python object with state on the model's
device, so the server keeps it in memory between requests. One lock per session serialises everything that
touches it: a prompt, a frame read, and each step of a running propagation (the job takes the lock per frame,
so frame images and previews are served while it runs). Prompts are refused while a propagation runs; the
page cancels first.

At most :attr:`SessionManager.max_live` sessions stay open; the least recently used one beyond that is
closed (its work is on disk and comes back when its tab asks for it again), which bounds the server's
memory whatever the number of tabs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.studio.actions import apply_action, prompted_frames, propagate_action, replay
from vidtrack.studio.project import ProjectStore, SessionStore
from vidtrack.types import TrackingFrame, TrackingResult

DIRECTIONS = ("forward", "backward", "both")


class Busy(InputError):
    """The session is propagating; the request would change what is being propagated."""


@dataclass
class PropagationJob:
    """A propagation running in a thread: progress for the page, a cancel flag, the last frame for previews."""

    direction: str
    start: int | None
    total: int
    done: int = 0
    last_frame: int | None = None
    state: str = "running"  # running | done | cancelled | failed
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_requested: bool = False
    thread: threading.Thread | None = None

    def to_json(self) -> dict[str, Any]:
        return {"direction": self.direction, "start": self.start, "total": self.total, "done": self.done,
                "last_frame": self.last_frame, "state": self.state, "error": self.error,
                "seconds": round((self.finished or time.time()) - self.started, 3)}


def mirror(store: SessionStore, action: Mapping[str, Any], frame: TrackingFrame | None) -> None:
    """Make the stored frames follow what an applied action did to the session."""
    if action["op"] == "remove_object":
        store.drop_object_frames(int(action["object_id"]))
    elif action["op"] == "reset":
        store.clear_frames()
    if frame is not None:
        store.put_frame(frame)


class LiveSession:
    """One tab's interactive session plus its project folder."""

    def __init__(self, store: SessionStore, session: Any, loader: Any, *, restored: bool = False) -> None:
        self.store = store
        self.session = session
        self.loader = loader
        self.replay_pending = restored and bool(store.actions)
        self.lock = threading.RLock()
        self.job: PropagationJob | None = None
        self.suggestions: tuple[int, Any] | None = None  # (frame, YOLO detections) of the last request

    @property
    def sid(self) -> str:
        return self.store.record.sid

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.state == "running"

    def _check_idle(self) -> None:
        if self.busy:
            raise Busy("a propagation is running; cancel it or wait for it to finish")

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the session for a change: refused at once while a propagation runs (waiting for the lock would
        wait for the whole propagation: CPython locks are not fair, the propagation thread re-takes it frame
        after frame), checked again under the lock, and a restored session caught up first."""
        self._check_idle()
        with self.lock:
            self._check_idle()
            self._catch_up()
            yield

    def _catch_up(self) -> None:
        """Before the first change to a restored session: replay its log (prompts and propagations), so the
        session is the one the work was done in. Until then the page shows the stored frames; reopening is
        quick, and only continuing the work pays for the replay."""
        if self.replay_pending:
            replay(self.session, self.store.actions)
            self.replay_pending = False

    def check_frame(self, frame_idx: int) -> int:
        n = int(self.session.num_frames)
        if not 0 <= frame_idx < n:
            raise InputError(f"frame {frame_idx} is outside the video (0..{n - 1})")
        return frame_idx

    def frame_image(self, frame_idx: int) -> np.ndarray:
        self.check_frame(frame_idx)
        with self.lock:
            return np.asarray(self.session.frame(frame_idx))

    # --- actions -----------------------------------------------------------------------------------------
    def act(self, action: Mapping[str, Any]) -> TrackingFrame | None:
        """Apply one action, log it, and store the frame it returns; the store mirrors the session."""
        if "frame" in action:
            self.check_frame(int(action["frame"]))
        with self._changing():
            frame = apply_action(self.session, action)
            self.store.log(dict(action))
            mirror(self.store, action, frame)
            if action["op"] == "add_prompt":
                self.store.ensure_object(int(action["object_id"]))
            elif action["op"] == "remove_object":
                self.store.drop_object(int(action["object_id"]))
            return frame

    def current(self, frame_idx: int) -> TrackingFrame | None:
        """The stored masks of a frame (what the session last returned for it)."""
        self.check_frame(frame_idx)
        return self.store.get_frame(frame_idx)

    def result(self) -> TrackingResult:
        """Every stored frame as a result, for export."""
        frames = list(self.store.frames())
        return TrackingResult(frames, int(self.session.width), int(self.session.height), 0.0, 0.0,
                              model=getattr(self.loader, "name", ""), metadata={"source": self.store.record.video})

    # --- propagation -------------------------------------------------------------------------------------
    def _estimate_total(self, direction: str, start: int | None, max_frames: int | None) -> int:
        """Frames the propagation will yield, for the progress bar: the session's own plan (Meta's processing
        order; SAM2Long's revised frames come on top and raise the total as they arrive)."""
        return len(self.session.plan(direction, start, max_frames))

    def propagate(self, direction: str, start: int | None, max_frames: int | None = None) -> PropagationJob:
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        if start is not None:
            self.check_frame(start)
        if not prompted_frames(self.store.actions):
            raise InputError("nothing to propagate: click an object first")
        with self._changing():
            job = PropagationJob(direction, start, self._estimate_total(direction, start, max_frames))
            self.job = job
        job.thread = threading.Thread(target=self._run, args=(job, max_frames), name=f"propagate-{self.sid}",
                                      daemon=True)
        job.thread.start()
        return job

    def _run(self, job: PropagationJob, max_frames: int | None) -> None:
        gen = None
        try:
            with self.lock:
                gen = self.session.propagate(direction=job.direction, start=job.start, max_frames=max_frames)
            while True:
                if job.cancel_requested:
                    job.state = "cancelled"
                    break
                with self.lock:
                    frame = next(gen, None)
                    if frame is None:
                        job.state = "done"
                        break
                    self.store.put_frame(frame)
                job.done += 1
                job.total = max(job.total, job.done)
                job.last_frame = frame.frame_idx
                time.sleep(0)  # let a request waiting for the lock (a frame image, a mask) take it between frames
        except Exception as e:  # shown in the page; the session stays usable (its generator is closed below)
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            if gen is not None:
                with self.lock:
                    gen.close()
                    self.store.log(propagate_action(job.direction, job.start, max_frames, job.done))
            job.finished = time.time()

    def cancel(self) -> PropagationJob | None:
        job = self.job
        if job is not None and job.state == "running":
            job.cancel_requested = True
            if job.thread is not None:
                job.thread.join(timeout=60)
        return job

    def close(self) -> None:
        self.cancel()
        with self.lock:
            self.session.close()


class SessionManager:
    """Live sessions by id, the loaders they use, and the project folder."""

    def __init__(self, project: ProjectStore, make_loader: Callable[[str], Any], *, max_live: int = 4) -> None:
        self.project = project
        self.make_loader = make_loader
        self.max_live = max_live
        self.loaders: dict[str, Any] = {}
        self.live: OrderedDict[str, LiveSession] = OrderedDict()
        self.lock = threading.RLock()

    def loader(self, model: str) -> Any:
        """The loaded loader of ``model`` (loaded on first use); loaders no session uses are unloaded."""
        with self.lock:
            if model not in self.loaders:
                for name in [m for m in self.loaders if all(s.store.record.model != m for s in self.live.values())]:
                    self.loaders.pop(name).unload()
                self.loaders[model] = self.make_loader(model)
            return self.loaders[model]

    def _admit(self, live: LiveSession) -> LiveSession:
        self.live[live.sid] = live
        while len(self.live) > self.max_live:
            _, old = self.live.popitem(last=False)
            old.close()
        return live

    def create(self, video: str, model: str) -> LiveSession:
        with self.lock:
            loader = self.loader(model)
            session = loader.open_session(video)
            store = self.project.create(video, model)
            return self._admit(LiveSession(store, session, loader))

    def get(self, sid: str) -> LiveSession:
        """A live session, or a saved one reopened: its tracked frames read back, its log replayed before the
        first change (:meth:`LiveSession._catch_up`)."""
        with self.lock:
            live = self.live.get(sid)
            if live is not None:
                self.live.move_to_end(sid)
                return live
            store = self.project.open(sid)
            loader = self.loader(store.record.model)
            session = loader.open_session(store.record.video)
            return self._admit(LiveSession(store, session, loader, restored=True))

    def switch_model(self, live: LiveSession, model: str) -> LiveSession:
        """Reopen a session on another tracker: prompts replayed, tracked frames dropped (another model's)."""
        with self.lock:
            live.close()
            self.live.pop(live.sid, None)
            live.store.record.model = model
            live.store.save_record()
            live.store.clear_frames()
            live.store.set_actions([a for a in live.store.actions if a["op"] != "propagate"])  # another model's
            loader = self.loader(model)
            session = loader.open_session(live.store.record.video)
            for action in live.store.actions:
                mirror(live.store, action, apply_action(session, action))
            return self._admit(LiveSession(live.store, session, loader))

    def close_all(self) -> None:
        with self.lock:
            for live in self.live.values():
                live.close()
            self.live.clear()
            for loader in self.loaders.values():
                loader.unload()
            self.loaders.clear()
