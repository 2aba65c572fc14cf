"""``vidtrack studio`` without a browser: the real server in a subprocess, driven over HTTP.

* a restart with the same project folder restores objects, prompts (replayed into the new session: a second
  propagation gives the same masks) and tracked frames;
* a shared server (``--host 0.0.0.0``) refuses paths outside the folders it was started with;
* bad command lines end with one ``error:`` line and exit status 2 before anything is served; Ctrl-C -> 130.

The server runs the tiny random SAM 2 model saved in transformers layout and loaded through ``--checkpoint``
(the real loading path), on a short H.264 video written with PyAV.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import error_line, moving_shapes, write_video
from vidtrack.studio.wire import mask_runs

pytest.importorskip("fastapi", reason="the studio needs vidtrack[studio] (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the studio needs vidtrack[studio] (fastapi, uvicorn)")


class StudioProcess:
    """``vidtrack studio ...`` in a subprocess on a free port; ``stop()`` sends SIGINT (Ctrl-C)."""

    def __init__(self, args: list[str], *, timeout: float = 180.0, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "vidtrack.cli", "studio", *args, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = ""
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("vidtrack studio: "):
                self.url = line.split()[2].rstrip("/")
                break
        if not self.url:
            self.proc.kill()
            raise AssertionError(f"studio did not start: {''.join(self.stderr)[-2000:]}")

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def stderr_line(self, prefix: str, timeout: float = 10.0) -> str | None:
        """The first stderr line starting with ``prefix`` (stderr is read by a thread: wait a little)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.stderr if line.startswith(prefix)), None)
            if found is not None:
                return found
            time.sleep(0.05)
        return None

    def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        assert status == expect, (status, payload[:500])
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def wait_job(self, sid: str, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.call("GET", f"/api/sessions/{sid}/propagate")
            if job["state"] != "running":
                return job
            time.sleep(0.2)
        raise AssertionError("propagation did not finish")

    def stop(self) -> int:
        """Ctrl-C; the exit status (130 expected)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames of two moving shapes as a real H.264 file."""
    return write_video(tmp_path_factory.mktemp("studio-video") / "shapes.mp4", moving_shapes(12, 96, 160))


def studio_args(video: Path, project: Path, checkpoint: Path, *extra: str) -> list[str]:
    """The server's command line: one CPU thread, as the tests' own loader (same numerics, same masks)."""
    return [str(video), "--project", str(project), "--checkpoint", str(checkpoint), "--device", "cpu", "--threads",
            "1", *extra]


def frame_masks(server: StudioProcess, sid: str, n: int) -> list[list[tuple[int, list[int]]]]:
    """Every frame's masks as (object id, runs) from the server."""
    return [[(m["object_id"], m["runs"]) for m in server.call("GET", f"/api/sessions/{sid}/masks/{i}")["masks"]]
            for i in range(n)]


def test_restart_restores_objects_prompts_and_tracked_frames(clip, tiny_checkpoint_dir, tmp_path):
    """Fails when only the prompts are replayed (the frame-6 correction then starts from nothing, not from the
    tracked mask) and when nothing is replayed."""
    project = tmp_path / "project"
    server = StudioProcess(studio_args(clip, project, tiny_checkpoint_dir))
    try:
        s = server.call("POST", "/api/sessions", {"resume": True})
        sid = s["sid"]
        assert s["num_frames"] == 12 and (s["width"], s["height"]) == (160, 96)
        server.call("POST", f"/api/sessions/{sid}/objects", {"id": 3, "name": "spare"})  # an object without prompts
        server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 0, "object_id": 1, "points": [[30, 38]],
                                                              "labels": [1]})
        server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 0, "object_id": 1, "points": [[60, 60]],
                                                              "labels": [0]})
        server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 4, "object_id": 2,
                                                              "box": [100, 50, 150, 90], "clear_old_points": True})
        started = server.call("POST", f"/api/sessions/{sid}/propagate", {"direction": "both"})
        assert started["state"] == "running" and started["total"] == 12  # from frame 0: no backward pass
        job = server.wait_job(sid)
        assert job["state"] == "done" and job["done"] == job["total"] == 12, job
        # a correction on a tracked frame (refined from its tracked output), then propagate again
        server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 6, "object_id": 1, "points": [[120, 20]],
                                                              "labels": [1]})
        server.call("POST", f"/api/sessions/{sid}/propagate", {"direction": "both"})
        assert server.wait_job(sid)["state"] == "done"
        before_session = server.call("GET", f"/api/sessions/{sid}")
        before_masks = frame_masks(server, sid, 12)
        before_timeline = server.call("GET", f"/api/sessions/{sid}/timeline")
        assert all(len(f) == 2 for f in before_masks), "both objects on every frame after propagating both ways"
        assert set(before_timeline["rows"]) == {"1", "2", "3"}
        assert set(before_timeline["rows"]["3"]) == {"."}  # never prompted, never tracked
    finally:
        code = server.stop()
    assert code == 130, "".join(server.stderr)
    assert server.stderr_line("interrupted"), server.stderr

    server = StudioProcess(studio_args(clip, project, tiny_checkpoint_dir))
    try:
        after = server.call("GET", f"/api/sessions/{sid}")
        assert after["objects"] == before_session["objects"]
        assert after["prompted"] == {"1": [0, 6], "2": [4]}
        assert frame_masks(server, sid, 12) == before_masks
        assert server.call("GET", f"/api/sessions/{sid}/timeline") == before_timeline
        prompts = server.call("GET", f"/api/sessions/{sid}/masks/0")["prompts"]
        assert prompts == {"1": {"points": [[30.0, 38.0], [60.0, 60.0]], "labels": [1, 0], "box": None,
                                 "mask": False}}
        # the log (prompts and propagations: the correction was made on a tracked frame) is replayed into the new
        # session, not only shown: propagating again gives the same masks
        server.call("POST", f"/api/sessions/{sid}/propagate", {"direction": "both"})
        assert server.wait_job(sid)["state"] == "done"
        assert frame_masks(server, sid, 12) == before_masks
        # a fresh tab on the same video resumes the saved work too
        assert server.call("POST", "/api/sessions", {"resume": True})["sid"] != sid  # sid is live: a new one
    finally:
        assert server.stop() == 130


def test_shared_server_refuses_paths_outside_its_folders(clip, tiny_checkpoint_dir, tmp_path):
    outside = write_video(tmp_path / "elsewhere.mp4", moving_shapes(3, 96, 160))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    inside = write_video(allowed / "ok.mp4", moving_shapes(3, 96, 160))
    link = clip.parent / "link-out.mp4"
    link.symlink_to(outside)
    from vidtrack.studio.project import ProjectStore

    saved = ProjectStore(tmp_path / "project").create(str(outside), "sam2.1-tiny")  # earlier work, local server
    server = StudioProcess(studio_args(clip, tmp_path / "project", tiny_checkpoint_dir, "--host", "0.0.0.0",
                                       "--allow", str(allowed)))
    try:
        assert server.stderr_line("warning: the studio is shared"), server.stderr
        for path in (outside, link, "/etc/passwd", clip.parent / ".." / outside.parent.name / outside.name):
            err = server.call("POST", "/api/sessions", {"video": str(path)}, expect=400)["error"]
            assert "outside the folders" in err and "--allow" in err, err
        err = server.call("GET", f"/api/sessions/{saved.record.sid}", expect=400)["error"]
        assert "outside the folders" in err, err
        assert server.call("POST", "/api/sessions", {"video": str(clip)})["num_frames"] == 12
        assert server.call("POST", "/api/sessions", {"video": str(inside)})["num_frames"] == 3
    finally:
        server.stop()
        link.unlink()


def test_local_server_opens_any_readable_path(clip, tiny_checkpoint_dir, tmp_path):
    other = write_video(tmp_path / "other.mp4", moving_shapes(3, 96, 160))
    server = StudioProcess(studio_args(clip, tmp_path / "project", tiny_checkpoint_dir))
    try:
        assert server.stderr_line("warning", timeout=1.0) is None
        assert server.call("POST", "/api/sessions", {"video": str(other)})["num_frames"] == 3
        from PIL import Image

        folder = tmp_path / "frames"
        folder.mkdir()
        for i, f in enumerate(moving_shapes(4, 96, 160)):
            Image.fromarray(f).save(folder / f"{i:05d}.png")
        s = server.call("POST", "/api/sessions", {"video": str(folder)})
        assert s["num_frames"] == 4
        server.call("POST", f"/api/sessions/{s['sid']}/prompts", {"frame": 1, "object_id": 1, "points": [[40, 38]],
                                                                   "labels": [1]})
        assert server.call("POST", f"/api/sessions/{s['sid']}/propagate", {"direction": "both"})["total"] == 5
        assert server.wait_job(s["sid"])["done"] == 5  # frames 1-3 forward, then 1-0 backward
        files = server.call("POST", f"/api/sessions/{s['sid']}/export", {"formats": ["rle-json", "overlay-mp4"]})
        assert sorted(f["name"] for f in files["files"]) == ["masks.json", "overlay.mp4"]
        got = server.call("GET", next(f["url"] for f in files["files"] if f["name"] == "masks.json"))
        assert [f["frame_idx"] for f in got["frames"]] == [0, 1, 2, 3]
        err = server.call("POST", "/api/sessions", {"video": str(tmp_path / "missing.mp4")}, expect=400)["error"]
        assert "not found" in err
    finally:
        server.stop()


def test_bad_command_lines_fail_before_serving(clip, tiny_checkpoint_dir, tmp_path, capsys):
    base = ["studio", "--project", str(tmp_path / "p"), "--checkpoint", str(tiny_checkpoint_dir), "--device", "cpu"]
    assert "not found" in error_line([*base, str(tmp_path / "nope.mp4")], capsys)
    assert "--port" in error_line([*base, str(clip), "--port", "70000"], capsys)
    assert "not a studio tracker" in error_line([*base, str(clip), "--model", "yolo11n-seg"], capsys)
    assert "--checkpoint" in error_line(["studio", str(clip), "--checkpoint", str(tmp_path / "none.pt")], capsys)
    assert "--yolo" in error_line([*base, str(clip), "--yolo", str(tmp_path / "none.pt")], capsys)
    assert "--allow" in error_line([*base, str(clip), "--allow", str(tmp_path / "none")], capsys)
    assert "--host" in error_line([*base, str(clip), "--host", "no-such-host.invalid"], capsys)
    assert "--dtype" in error_line([*base, str(clip), "--dtype", "int3"], capsys)
    (tmp_path / "file").write_text("x")
    assert "--project" in error_line([*base[:1], str(clip), "--project", str(tmp_path / "file")], capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert "cannot listen" in error_line([*base, str(clip), "--port", str(port)], capsys)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    line = error_line(["studio", str(clip), "--project", str(tmp_path / "p"), "--checkpoint", str(bad), "--port",
                       "0", "--device", "cpu"], capsys)
    assert str(bad) in line or "bad.safetensors" in line


def test_action_log_tracks_prompted_frames():
    from vidtrack.studio.actions import frame_prompts, prompted_frames

    log = [{"op": "add_prompt", "frame": 0, "object_id": 1, "points": [[1, 2]], "labels": [1], "box": None,
            "mask": None, "clear_old_points": False},
           {"op": "add_prompt", "frame": 0, "object_id": 1, "points": [[3, 4]], "labels": [0], "box": None,
            "mask": None, "clear_old_points": False},
           {"op": "add_prompt", "frame": 5, "object_id": 2, "points": None, "labels": None, "box": [1, 1, 9, 9],
            "mask": None, "clear_old_points": True},
           {"op": "add_prompt", "frame": 7, "object_id": 2, "points": [[5, 5]], "labels": [1], "box": None,
            "mask": None, "clear_old_points": False}]
    assert prompted_frames(log) == {1: [0], 2: [5, 7]}
    assert frame_prompts(log)[0][1] == {"points": [[1, 2], [3, 4]], "labels": [1, 0], "box": None, "mask": False}
    cleared = [*log, {"op": "clear_prompts", "frame": 7, "object_id": None}]
    assert prompted_frames(cleared) == {1: [0], 2: [5]}
    assert prompted_frames([*log, {"op": "remove_object", "object_id": 1}]) == {2: [5, 7]}
    assert prompted_frames([*log, {"op": "reset"}]) == {}


def test_mask_runs_are_coco_uncompressed_counts():
    from pycocotools import mask as mask_utils

    from vidtrack.studio.wire import mask_runs

    rng = np.random.default_rng(0)
    for mask in (rng.random((7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((3, 4), bool)):
        runs = mask_runs(mask)
        rle = mask_utils.frPyObjects({"size": list(mask.shape), "counts": runs}, *mask.shape)
        assert (mask_utils.decode(rle).astype(bool) == mask).all()
        assert sum(runs) == mask.size


def test_yolo_suggestions_become_mask_prompts(tiny_checkpoint_dir, tmp_path):
    """--yolo: the detector's masks come back as suggestions; using one is the API's mask prompt."""
    pytest.importorskip("ultralytics", reason="YOLO suggestions need vidtrack[yolo]")
    import torch

    from test_yolo_backend import force_masks, scene
    from vidtrack.api import create_tracking_loader
    from vidtrack.cli_options import TrackerOptions
    from vidtrack.engines.yolo.runtime import import_ultralytics

    config_dir = tmp_path / "yolo-config"
    config_dir.mkdir()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    torch.manual_seed(0)
    weights = tmp_path / "random-seg.pt"
    force_masks(import_ultralytics().YOLO("yolo11n-seg.yaml")).save(str(weights))
    video = write_video(tmp_path / "scene.mp4", [scene(96, 160, seed=3)] * 4)
    server = StudioProcess(studio_args(video, tmp_path / "project", tiny_checkpoint_dir, "--yolo", str(weights),
                                       "--yolo-conf", "0"), cwd=tmp_path, env={"YOLO_CONFIG_DIR": str(config_dir)})
    try:
        assert server.call("GET", "/api/info")["yolo"] is True
        sid = server.call("POST", "/api/sessions", {})["sid"]
        err = server.call("POST", f"/api/sessions/{sid}/suggestions/use", {"frame": 0, "index": 0, "object_id": 1},
                          expect=400)["error"]
        assert "ask for them first" in err
        found = server.call("POST", f"/api/sessions/{sid}/suggestions", {"frame": 0})["suggestions"]
        assert found and all(s["area"] > 0 and s["runs"] for s in found)
        used = server.call("POST", f"/api/sessions/{sid}/suggestions/use", {"frame": 0, "index": 0, "object_id": 1})
        assert server.call("GET", f"/api/sessions/{sid}/masks/0")["prompts"]["1"]["mask"] is True
    finally:
        server.stop()

    from pycocotools import mask as mask_utils

    det = mask_utils.decode(mask_utils.frPyObjects({"size": [96, 160], "counts": found[0]["runs"]}, 96, 160))
    options = TrackerOptions(device="cpu", threads=1)
    loader = create_tracking_loader("sam2.1-tiny", options.config("sam2.1-tiny",
                                                                  checkpoint_path=str(tiny_checkpoint_dir))).load()
    with loader.open_session(str(video)) as s:
        f = s.add_prompt(0, 1, mask=det.astype(bool))
    assert [(m["object_id"], m["runs"]) for m in used["masks"]] == [(1, mask_runs(f.mask_for(1).mask))]


def test_cancel_busy_upload_and_tracker_switch(tiny_checkpoint_dir, tmp_path):
    """A running propagation refuses clicks (409) at once, still serves frames, and stops on cancel with fewer
    frames, logged as far as it went;
    an uploaded video lands in the project's uploads/ and opens; a session moves to another tracker."""
    video = write_video(tmp_path / "long.mp4", moving_shapes(150, 96, 160))
    server = StudioProcess(studio_args(video, tmp_path / "project", tiny_checkpoint_dir))
    try:
        sid = server.call("POST", "/api/sessions", {})["sid"]
        server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 0, "object_id": 1, "points": [[30, 38]],
                                                              "labels": [1]})
        assert server.call("POST", f"/api/sessions/{sid}/propagate", {})["total"] == 150
        err = server.call("POST", f"/api/sessions/{sid}/prompts", {"frame": 3, "object_id": 1,
                                                                    "points": [[30, 38]], "labels": [1]},
                          expect=409)["error"]
        assert "propagation is running" in err
        # the page stays live: a frame image is served between two propagated frames, not after the last one
        assert server.call("GET", f"/api/sessions/{sid}/frames/100.jpg")[:2] == b"\xff\xd8"
        assert server.call("GET", f"/api/sessions/{sid}/propagate")["state"] == "running"
        deadline = time.monotonic() + 60
        while server.call("GET", f"/api/sessions/{sid}/propagate")["done"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        job = server.call("POST", f"/api/sessions/{sid}/cancel")
        assert job["state"] == "cancelled" and 0 < job["done"] < 150, job
        log = json.loads((tmp_path / "project" / "sessions" / sid / "actions.json").read_text())
        assert log[-1] == {"op": "propagate", "direction": "forward", "start": None, "max_frames": None,
                           "frames": job["done"]}
        rows = server.call("GET", f"/api/sessions/{sid}/timeline")["rows"]["1"]
        assert rows[: job["done"]].count(".") == 0 and set(rows[job["done"]:]) == {"."}
        assert server.call("POST", f"/api/sessions/{sid}/propagate", {"start": job["done"]})["state"] == "running"
        assert server.wait_job(sid)["state"] == "done"
        assert "." not in server.call("GET", f"/api/sessions/{sid}/timeline")["rows"]["1"]

        clip = write_video(tmp_path / "my clip.mp4", moving_shapes(5, 96, 160))
        boundary = "vidtrack-test-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../{clip.name}\"\r\n"
                "Content-Type: video/mp4\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(server.url + "/api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            saved = Path(json.loads(r.read())["path"])
        assert saved.parent == (tmp_path / "project" / "uploads").resolve() and saved.name.endswith("my_clip.mp4")
        assert saved.read_bytes() == clip.read_bytes()
        assert server.call("POST", "/api/sessions", {"video": str(saved)})["num_frames"] == 5

        # another tracker for the first session: prompts replayed, the other model's frames and propagations gone
        switched = server.call("POST", f"/api/sessions/{sid}/tracker", {"model": "samurai-tiny"})
        assert switched["model"] == "samurai-tiny" and switched["prompted"] == {"1": [0]}
        assert server.call("GET", f"/api/sessions/{sid}/timeline")["rows"]["1"] == "v" + "." * 149
        log = json.loads((tmp_path / "project" / "sessions" / sid / "actions.json").read_text())
        assert [a["op"] for a in log] == ["add_prompt"]
        assert server.call("POST", f"/api/sessions/{sid}/propagate", {"max_frames": 20})["total"] == 21
        assert server.wait_job(sid)["done"] == 21  # Meta's max_frame_num_to_track: start frame + 20
        err = server.call("POST", f"/api/sessions/{sid}/tracker", {"model": "bogus"}, expect=400)["error"]
        assert "unknown tracker" in err
    finally:
        server.stop()
