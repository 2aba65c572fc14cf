"""Shared fixtures: a tiny random SAM 2.1-shaped model and synthetic videos.

OMP threads are pinned before torch is imported: on 2-core CI machines spinning OpenMP workers make timings
and even progress erratic.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (only present beside the project checkout)")
    return p


def write_davis_clip(root: Path, frames: list[np.ndarray], first_labels: np.ndarray, *, seq: str = "s1",
                     suffix: str = ".jpg") -> Path:
    """A one-sequence DAVIS-layout dataset under ``root``: the frames in ``JPEGImages/480p/<seq>`` (JPEG quality 95
    or PNG, by ``suffix``) and a label PNG per frame in ``Annotations/480p/<seq>``, ``first_labels`` on frame 0 and
    empty after it (the objects are prompted on frame 0 only)."""
    from PIL import Image

    from vidtrack.eval.io import write_label_png

    images, labels = root / "JPEGImages" / "480p" / seq, root / "Annotations" / "480p" / seq
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(images / f"{t:05d}{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))
        write_label_png(labels / f"{t:05d}.png", first_labels if t == 0 else np.zeros_like(first_labels))
    return root


def moving_shapes(num_frames: int, height: int = 96, width: int = 160, seed: int = 0) -> list[np.ndarray]:
    """Two textured shapes moving across a noisy background: object 1 a red box moving right, object 2 a
    green disc moving left. Deterministic."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(20, 60, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    frames = []
    for t in range(num_frames):
        f = bg.copy()
        cx = 30 + (t * 2) % (width - 60)
        box = (np.abs(xx - cx) < 14) & (np.abs(yy - height * 0.4) < 11)
        f[box] = (220, 50, 50)
        dx = width - 30 - (t * 2) % (width - 60)
        disc = (xx - dx) ** 2 + (yy - height * 0.7) ** 2 < 10**2
        f[disc] = (50, 210, 60)
        frames.append(f)
    return frames


def shape_masks(height: int = 96, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Frame-0 masks of the two shapes of :func:`moving_shapes`."""
    yy, xx = np.mgrid[:height, :width]
    box = (np.abs(xx - 30) < 14) & (np.abs(yy - height * 0.4) < 11)
    disc = (xx - (width - 30)) ** 2 + (yy - height * 0.7) ** 2 < 10**2
    return box, disc


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Encode RGB frames as H.264 (yuv420p, crf 18) with PyAV: a real, lossy video file."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `vidtrack ARGS` in-process through the real entry point; (exit code, stdout, stderr)."""
    from vidtrack.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(args: list[str], capsys) -> str:
    """Run a command that must fail as a user error: exit 2, one `error:` line, no traceback."""
    code, out, err = run_cli(args, capsys)
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="session")
def tiny_model():
    from vidtrack.engines.sam2.weights import random_sam2_model, tiny_test_config

    return random_sam2_model(tiny_test_config(128), seed=0)


@pytest.fixture()
def sam2_loader(tiny_model):
    from vidtrack import TrackingConfig, create_tracking_loader

    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", dtype="float32"))
    loader.load(model=tiny_model)
    yield loader
    loader.unload()


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tiny_model, tmp_path_factory) -> Path:
    """The tiny model saved in transformers layout (what `--checkpoint FOLDER` reads)."""
    d = tmp_path_factory.mktemp("tiny-sam2")
    tiny_model.save_pretrained(str(d))
    return d
