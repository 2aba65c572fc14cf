"""Runtime options of the SAM 2 engine: precision by device capability, CPU threads, the encoder running ahead,
autocast and torch.compile. Each must leave the masks of the plain float32 run (or, for reduced precision,
close to them); speed itself is measured with `vidtrack bench`, never asserted here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import moving_shapes, run_cli, shape_masks, write_video
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.engines.sam2.runtime import apply_cpu_threads, default_cpu_threads, resolve_precision
from vidtrack.errors import InputError


def _track(model, frames, prompts, **config):
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", **config))
    loader.load(model=model)
    return loader.track_video(frames, prompts)


def _ious(a, b) -> list[float]:
    out = []
    for fa, fb in zip(a.frames, b.frames, strict=True):
        for m in fa.masks:
            x, y = m.mask, fb.mask_for(m.object_id).mask
            union = np.logical_or(x, y).sum()
            out.append(1.0 if union == 0 else float(np.logical_and(x, y).sum() / union))
    return out


def test_precision_is_chosen_by_device_and_capability(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("auto", "auto", cpu) == (torch.float32, None)  # bf16 is slower on CPUs
    assert resolve_precision("bfloat16", "auto", cpu) == (torch.bfloat16, None)
    assert resolve_precision("auto", "bfloat16", cpu) == (torch.float32, torch.bfloat16)
    assert resolve_precision("float32", "off", cpu) == (torch.float32, None)
    # no GPU here: the capability query is the one thing replaced, to check the choice made on each generation
    cuda = torch.device("cuda")
    for capability, expected in (((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16), ((7, 5), torch.float16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        assert resolve_precision("auto", "auto", cuda) == (torch.float32, expected)
    assert resolve_precision("float16", "auto", cuda) == (torch.float16, None)  # explicit weights: no autocast
    with pytest.raises(InputError, match="unknown dtype"):
        resolve_precision("float8", "auto", cpu)
    with pytest.raises(InputError, match="unknown autocast"):
        resolve_precision("auto", "int8", cpu)


def test_cpu_threads_default_to_the_cpus_of_this_process(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert apply_cpu_threads(None) == default_cpu_threads()
        import os

        if hasattr(os, "sched_getaffinity"):
            assert default_cpu_threads() == len(os.sched_getaffinity(0))
        assert apply_cpu_threads(1) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert apply_cpu_threads(None) == 1  # the user's OMP_NUM_THREADS is respected
        with pytest.raises(InputError, match="threads"):
            apply_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_encoder_ahead_gives_the_same_masks(tiny_model):
    frames = moving_shapes(10)
    box, disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(3, 2, disc)]  # object 2 starts later (+ backward)
    plain = _track(tiny_model, frames, prompts, encoder_ahead="off")
    ahead = _track(tiny_model, frames, prompts, encoder_ahead="on")
    for a, b in zip(plain.frames, ahead.frames, strict=True):
        assert [m.to_rle() for m in a.masks] == [m.to_rle() for m in b.masks]
        assert b.timings["image_encoder"] > 0  # measured in the worker


def test_encoder_ahead_stream_stops_cleanly(tiny_model):
    """Leaving a stream early must not leave the worker thread or its frame behind."""
    import threading

    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", encoder_ahead="on"))
    loader.load(model=tiny_model)
    box, _ = shape_masks()
    it = loader.stream(moving_shapes(8), [Prompt.from_mask(0, 1, box)])
    assert next(it).mask_for(1) is not None
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("vidtrack-encoder")]


def test_autocast_bfloat16_on_cpu_runs_and_stays_close(tiny_model):
    frames = moving_shapes(8)
    box, disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)]
    fp32 = _track(tiny_model, frames, prompts)
    bf16 = _track(tiny_model, frames, prompts, autocast="bfloat16")
    ious = _ious(fp32, bf16)
    assert np.mean(ious) > 0.95, ious  # bf16 rounding on a random model; the masks are the same objects


def test_compile_with_warmup_gives_the_same_masks():
    """torch.compile (inductor, C++ on this CPU) of the four modules, warmed up at load: masks equal eager."""
    from vidtrack.engines.sam2.weights import random_sam2_model, tiny_test_config

    torch._dynamo.reset()
    frames = moving_shapes(6, 64, 96)
    box = np.zeros((64, 96), bool)
    box[20:40, 10:40] = True
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_box(0, 2, (50, 30, 90, 60), fmt="xyxy")]
    eager = _track(random_sam2_model(tiny_test_config(64), seed=0), frames, prompts)
    compiled = _track(random_sam2_model(tiny_test_config(64), seed=0), frames, prompts, compile=True)
    ious = _ious(eager, compiled)
    assert np.mean(ious) >= 0.999, ious
    torch._dynamo.reset()


def test_cli_runtime_options(tmp_path, tiny_checkpoint_dir, capsys):
    from vidtrack.export import read_result

    video = write_video(tmp_path / "v.mp4", moving_shapes(6))
    runs = {}
    for name, extra in (("default", []), ("tuned", ["--max-batch", "1", "--encoder-ahead", "on", "--threads", "1",
                                                    "--autocast", "off"])):
        code, _, err = run_cli(["track", str(video), "--checkpoint", str(tiny_checkpoint_dir), "--box", "10,20,40,30",
                                "--out", str(tmp_path / name), "--device", "cpu", "-q", *extra], capsys)
        assert code == 0, err
        runs[name] = read_result(tmp_path / name / "masks.json")
    assert _ious(runs["default"], runs["tuned"]) and min(_ious(runs["default"], runs["tuned"])) >= 0.999
    code, _, err = run_cli(["track", str(video), "--checkpoint", str(tiny_checkpoint_dir), "--box", "10,20,40,30",
                            "--out", str(tmp_path / "bad"), "--device", "cpu", "--autocast", "int4"], capsys)
    assert code == 2 and "--autocast must be one of" in err and "int4" in err and err.count("\n") == 1
