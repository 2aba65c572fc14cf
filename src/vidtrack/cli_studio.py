"""``vidtrack studio [VIDEO]``: the local web app (click, see the mask, propagate, correct, export).

Everything the user can get wrong (a missing video, an unreadable checkpoint, a taken port, a project folder
that cannot be written) is checked, and the tracker loaded, before the server starts: one ``error:`` line and
exit status 2. The server binds 127.0.0.1 unless ``--host`` says otherwise; a shared server prints a warning
and opens only files inside the folders it was started with. Ctrl-C stops it (exit 130); the work is in the
project folder already.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vidtrack.cli_options import TrackerOptions, tracker_options
from vidtrack.errors import InputError

DEFAULT_PORT = 8765


def studio_models() -> list[str]:
    """The trackers the page offers: every SAM 2 family name of the catalogue (SAM 2.1 sizes, SAMURAI,
    SAM2Long, and any family added later, e.g. DAM4SAM); YOLO is offered as suggestions, not as a tracker."""
    from vidtrack.catalog import CATALOGUE

    return [name for name, spec in CATALOGUE.items() if spec.family != "yolo"]


def check_studio_installed() -> None:
    """The web stack is an extra: say how to get it instead of failing on an import."""
    from vidtrack.errors import DependencyError

    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise DependencyError(f"the studio needs {', '.join(missing)}: pip install 'vidtrack[studio]'")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind now (before loading weights), so a taken port or an unknown host is a plain error line."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be 0 (any free port) or 1..65535; got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: {e.strerror}; use 127.0.0.1 (this machine) or 0.0.0.0 (share)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port (0: any free "
                         "port)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def check_video(video: str) -> str:
    """The video's absolute path, after checking that it opens and has a frame size."""
    from vidtrack.sources import open_source

    path = Path(video).expanduser()
    if not path.exists():
        raise InputError(f"video {video} not found; give a video file or a folder of frames")
    src = open_source(str(path))
    try:
        src.probe_size()
    finally:
        src.close()
    return str(path.resolve())


def studio(
    video: Annotated[str | None, typer.Argument(help="video file or frame folder to open (optional: the page "
                                                     "can open or upload one)")] = None,
    project: Annotated[Path, typer.Option("--project", "-p", help="project folder: prompts, objects and tracked "
                                                                  "frames are saved there and restored after a "
                                                                  "restart")] = Path("vidtrack-studio"),
    host: Annotated[str, typer.Option(help="address to listen on; anything but 127.0.0.1/localhost shares the "
                                           "studio with the network")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = DEFAULT_PORT,
    model: Annotated[str, typer.Option("--model", "-m", help="tracker the page starts with (SAM 2.1 sizes, "
                                                             "samurai-*, sam2long-*)")] = "sam2.1-tiny",
    checkpoint: Annotated[str | None, typer.Option(help="Meta .pt/.safetensors file or transformers folder; "
                                                        "used by every tracker the page offers")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = None,
    yolo: Annotated[Path | None, typer.Option(help="YOLO11-seg weights file: its detections become clickable "
                                                   "suggestions")] = None,
    yolo_conf: Annotated[float, typer.Option(help="confidence a YOLO detection needs to be suggested")] = 0.25,
    allow: Annotated[list[Path] | None, typer.Option(help="with --host: another folder whose files the page may "
                                                          "open (repeatable)")] = None,
    max_sessions: Annotated[int, typer.Option(help="sessions kept open in memory (one per browser tab); older "
                                                   "ones are closed and restored from the project when "
                                                   "needed")] = 4,
    tracker: TrackerOptions | None = None,
) -> None:
    """Open the studio web app: click objects, see their masks, propagate, correct and export."""
    from vidtrack.cli_errors import PROGRESS
    from vidtrack.output_checks import check_output_dir
    from vidtrack.studio.paths import PathGuard, is_loopback

    PROGRESS.where = "while checking the inputs"
    check_studio_installed()
    assert tracker is not None  # given by @tracker_options
    models = studio_models()
    from vidtrack.catalog import resolve_model

    name = resolve_model(model).name
    if name not in models:
        raise InputError(f"--model {model} is not a studio tracker; choose one of {', '.join(models)} (YOLO "
                         "weights go to --yolo, as suggestions)")
    tracker.check(name)
    if max_sessions < 1:
        raise InputError(f"--max-sessions must be >= 1; got {max_sessions}")
    video_path = check_video(video) if video is not None else None
    check_output_dir(project, "--project")
    project_dir = project.expanduser().resolve()
    if checkpoint is not None and not Path(checkpoint).expanduser().exists():
        raise InputError(f"--checkpoint {checkpoint} not found; give a Meta .pt/.safetensors file or a "
                         "transformers folder")
    if yolo is not None and not yolo.is_file():
        raise InputError(f"--yolo {yolo} not found; give a YOLO11-seg .pt weights file")
    if not 0.0 <= yolo_conf <= 1.0:
        raise InputError(f"--yolo-conf must be in [0, 1]; got {yolo_conf}")
    for folder in allow or []:
        if not folder.is_dir():
            raise InputError(f"--allow {folder} is not a folder")
    shared = not is_loopback(host)
    roots = [project_dir, *(a.resolve() for a in allow or [])]
    if video_path is not None:
        roots.append(Path(video_path).parent if Path(video_path).is_file() else Path(video_path))
    guard = PathGuard(roots, shared=shared)
    sock = bind_socket(host, port)
    try:
        _serve(sock, host, shared, guard, video_path, project_dir, name, models, checkpoint, cache_dir, yolo,
               yolo_conf, max_sessions, tracker, PROGRESS)
    finally:
        sock.close()


def _serve(sock: socket.socket, host: str, shared: bool, guard: Any, video: str | None, project: Path,
           model: str, models: list[str], checkpoint: str | None, cache_dir: str | None, yolo: Path | None,
           yolo_conf: float, max_sessions: int, tracker: TrackerOptions, progress: Any) -> None:
    import uvicorn

    from vidtrack.api import create_tracking_loader
    from vidtrack.config import TrackingConfig
    from vidtrack.studio.server import StudioConfig, create_app

    def make_loader(name: str) -> Any:
        config = tracker.config(name, checkpoint_path=checkpoint, cache_dir=cache_dir)
        return create_tracking_loader(name, config).load()

    def make_detector() -> Any:
        """YOLO11-seg for suggestions: every detection at or above --yolo-conf (no tracking thresholds)."""
        config = TrackingConfig(device=tracker.device, checkpoint_path=str(yolo),
                                policy_options={"conf": yolo_conf, "low_conf": yolo_conf})
        return create_tracking_loader("yolo11n-seg", config).load()

    progress.where = f"while loading {model}"
    first = make_loader(model)  # a bad checkpoint fails here, before the server starts
    detector = None
    if yolo is not None:
        progress.where = f"while loading {yolo}"
        detector = make_detector()
    loaders = {model: first}

    def cached_loader(name: str) -> Any:
        return loaders.pop(name) if name in loaders else make_loader(name)

    config = StudioConfig(project=project, make_loader=cached_loader, models=models, default_model=model,
                          video=video, guard=guard, make_detector=(lambda: detector) if detector is not None else None,
                          checkpoint=checkpoint, max_live=max_sessions)
    app = create_app(config)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{bound_port}/"
    if shared:
        print(f"warning: the studio is shared on {host}:{bound_port}: anyone who can reach this machine can use "
              f"it and open files in {', '.join(str(r) for r in guard.roots)}", file=sys.stderr, flush=True)
    print(f"vidtrack studio: {url}  (project {project}; Ctrl-C to stop)", flush=True)
    progress.where = "while serving"
    progress.kept = f"the work is saved in {project}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    server.run(sockets=[sock])


def register(app: typer.Typer) -> None:
    """Add ``studio`` to the ``vidtrack`` command."""
    app.command("studio")(tracker_options(studio))
