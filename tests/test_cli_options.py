"""The tracker options every tracking command shares (vidtrack.cli_options), the frame range of `track`, a
user's own policy through the command line, `--format` help from the format table, and a start-up that
imports neither torch nor transformers for `--help`, `models` or a bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

os.environ.setdefault("OMP_NUM_THREADS", "1")

from conftest import error_line, moving_shapes, run_cli, shape_masks, write_video
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.export import FORMATS, format_help, read_rle_json
from vidtrack.tracking import TrackingModelLoader

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("vid") / "shapes.mp4", moving_shapes(16))


def _box_text(mask) -> str:
    ys, xs = mask.nonzero()
    return f"{xs.min()},{ys.min()},{xs.max() - xs.min() + 1},{ys.max() - ys.min() + 1}"


def _masks(path: Path) -> dict[tuple[int, int], str]:
    return {(f.frame_idx, m.object_id): m.to_rle()["counts"] for f in read_rle_json(path).frames for m in f.masks}


@pytest.fixture()
def backward_calls(monkeypatch) -> list[dict[int, int]]:
    """Records the ``late`` objects of every backward pass the skeleton runs (the real pass still runs)."""
    calls: list[dict[int, int]] = []
    original = TrackingModelLoader._backward

    def spy(self, forward, frames, prompts, late, height, width):  # type: ignore[no-untyped-def]
        calls.append(dict(late))
        return original(self, forward, frames, prompts, late, height, width)

    monkeypatch.setattr(TrackingModelLoader, "_backward", spy)
    return calls


def test_track_start_10_frame_10_runs_no_backward_pass(video, tmp_path, tiny_checkpoint_dir, tiny_model, capsys,
                                                       backward_calls):
    box, disc = shape_masks()
    common = ["--checkpoint", str(tiny_checkpoint_dir), "--device", "cpu", "-q", "--semantics", "causal",
              "--start", "10"]
    code, _, err = run_cli(["track", str(video), "--box", _box_text(box), "--frame", "10",
                            "--out", str(tmp_path / "a"), *common], capsys)
    assert code == 0, err
    result = read_rle_json(tmp_path / "a" / "masks.json")
    assert [f.frame_idx for f in result.frames] == list(range(10, 16))
    assert backward_calls == []  # the prompt is on the range's first frame: nothing is late
    # the same masks as the API given the range by start= (independent of how the CLI ranges the source)
    api = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", semantics="causal")).load(
        model=tiny_model)
    x, y, w, h = (float(v) for v in _box_text(box).split(","))
    ref = api.track_video(str(video), [Prompt.from_box(10, 1, (x, y, w, h), fmt="xywh")], start=10)
    assert _masks(tmp_path / "a" / "masks.json") == {
        (f.frame_idx, m.object_id): m.to_rle()["counts"] for f in ref.frames for m in f.masks}

    # control: an object first prompted on frame 12 is late, and is followed back to frame 10, not to 0
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps([{"frame": 10, "object_id": 1, "box": [x, y, w, h]},
                                   {"frame": 12, "object_id": 2, "rle": _rle(disc)}]))
    code, _, err = run_cli(["track", str(video), "--prompts", str(prompts), "--out", str(tmp_path / "b"), *common],
                           capsys)
    assert code == 0, err
    assert backward_calls == [{2: 12}]
    frames = read_rle_json(tmp_path / "b" / "masks.json").frames
    assert [f.frame_idx for f in frames] == list(range(10, 16))
    assert all(f.mask_for(2) is not None for f in frames)

    # official semantics: also starts at frame 10
    code, _, err = run_cli(["track", str(video), "--box", _box_text(box), "--frame", "10", "--out",
                            str(tmp_path / "c"), *[a for a in common if a != "causal" and a != "--semantics"]],
                           capsys)
    assert code == 0, err
    assert read_rle_json(tmp_path / "c" / "masks.json").frames[0].frame_idx == 10


def _rle(mask) -> dict:
    from vidtrack.types import rle_encode

    return rle_encode(mask)


def test_a_policy_written_outside_the_package_runs_through_the_cli(video, tmp_path, tiny_checkpoint_dir, capsys,
                                                                   monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    box, disc = shape_masks()
    import numpy as np
    from PIL import Image

    arr = np.zeros(box.shape, np.uint8)
    arr[box] = 1
    arr[disc] = 2
    png = tmp_path / "00000.png"
    Image.fromarray(arr, mode="P").save(png)
    common = ["--checkpoint", str(tiny_checkpoint_dir), "--device", "cpu", "-q", "--mask", str(png), "--end", "10"]

    def run(name: str, *extra: str) -> dict[tuple[int, int], str]:
        code, _, err = run_cli(["track", str(video), "--out", str(tmp_path / name), *common, *extra], capsys)
        assert code == 0, err
        return _masks(tmp_path / name / "masks.json")

    vanilla = run("vanilla")
    # window 6 is SAM 2.1's own memory: the same masks through the user's policy, options from --policy-option
    same = run("w6", "--policy", "my_policy:RecentMemoryPolicy", "--policy-option", "window=6")
    short = run("w1", "--policy", "my_policy:RecentMemoryPolicy", "--policy-option", "window=1")
    assert same == vanilla
    assert short.keys() == vanilla.keys() and short != vanilla
    line = error_line(["track", str(video), "--out", str(tmp_path / "x"), *common, "--policy",
                       "my_policy:RecentMemoryPolicy", "--policy-option", "size=3"], capsys)
    assert "--policy-option" in line and "my_policy:RecentMemoryPolicy" in line


@pytest.mark.parametrize(("option", "names"), [
    (["--device", "gpu"], "--device"),
    (["--dtype", "float64"], "--dtype"),
    (["--autocast", "fp8"], "--autocast"),
    (["--encoder-ahead", "sometimes"], "--encoder-ahead"),
    (["--resize", "pil"], "--resize"),
    (["--semantics", "later"], "--semantics"),
    (["--threads", "0"], "--threads"),
    (["--max-batch", "0"], "--max-batch"),
    (["--image-size", "100"], "--image-size"),
    (["--policy", "nosuch"], "nosuch"),
    (["--policy", "nosuch_module_xyz:Policy"], "nosuch_module_xyz"),
    (["--policy-option", "window"], "KEY=VALUE"),
    (["--policy-option", "bogus=1"], "bogus"),
    (["--model", "sam2long-tiny", "--policy-option", "mode=later"], "mode"),
    (["--model", "yolo11n-seg", "--policy", "samurai"], "YOLO"),
])
def test_bad_tracker_options_are_one_line_before_loading(option, names, video, tmp_path, capsys):
    """Exit 2, one line naming the option, before the (missing) checkpoint is even looked at."""
    missing = str(tmp_path / "no-such-checkpoint.pt")
    line = error_line(["track", str(video), "--box", "1,1,5,5", "--checkpoint", missing, "--out",
                       str(tmp_path / "o"), *option], capsys)
    assert names in line and "checkpoint" not in line


def test_eval_and_batch_share_the_options_and_their_checks(tmp_path, capsys):
    line = error_line(["eval", "--dataset", str(tmp_path / "none"), "--model", "sam2.1-tiny", "--out",
                       str(tmp_path / "e"), "--semantics", "later"], capsys)
    assert "--semantics" in line
    line = error_line(["batch", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "b"), "--policy-option",
                       "x"], capsys)
    assert "--policy-option" in line
    from vidtrack.cli import app

    command = typer.main.get_command(app)
    for name in ("track", "eval", "batch"):
        params = {p.name for p in command.commands[name].params}  # type: ignore[attr-defined]
        assert {"device", "dtype", "autocast", "compile", "threads", "max_batch", "encoder_ahead", "resize",
                "semantics", "model_config", "policy", "policy_option", "image_size"} <= params, name


def test_batch_passes_the_tracker_options_to_its_workers(video, tmp_path, tiny_checkpoint_dir):
    from vidtrack.batch.manifest import JobOptions, VideoJob
    from vidtrack.batch.state import job_inputs
    from vidtrack.batch.worker import VideoProcessor

    opts = JobOptions(checkpoint=str(tiny_checkpoint_dir),
                      tracking=json.dumps({"semantics": "causal", "max_batch": 2, "policy": "vanilla"}))
    loader = VideoProcessor(tmp_path, device="cpu").loader_for(opts)
    assert (loader.config.semantics, loader.config.max_batch, loader.config.policy) == ("causal", 2, "vanilla")
    # the options are part of each video's checksum; without any, the checksum is the one from before the field
    assert job_inputs(VideoJob("a", str(video), options=opts), [])["options"]["tracking"] == opts.tracking
    assert "tracking" not in job_inputs(VideoJob("a", str(video), options=JobOptions()), [])["options"]


def test_format_help_is_the_format_table():
    from vidtrack.cli import app

    command = typer.main.get_command(app)
    for name in ("track", "export", "batch"):
        fmt = next(p for p in command.commands[name].params if p.name == "formats")  # type: ignore[attr-defined]
        assert all(n in fmt.help for n in FORMATS), name
        assert fmt.help.endswith(format_help(""))


def _imported_after(args: list[str], error: str = "") -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter; which heavy modules it imported (and, given ``error``, that its error
    line says so: the check under test is the one that answered)."""
    code = textwrap.dedent("""
        import sys
        from vidtrack.cli import main
        try:
            main(sys.argv[1:])
        except SystemExit as e:
            code = e.code
        heavy = [m for m in ("torch", "transformers", "ray", "ultralytics") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy), file=sys.stderr)
        sys.exit(code)
    """)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "120"})
    heavy = proc.stderr.strip().splitlines()[-1]
    assert heavy.startswith("HEAVY="), proc.stderr
    assert error in proc.stderr, proc.stderr
    return proc.returncode, [m for m in heavy[len("HEAVY="):].split(",") if m]


def test_help_models_and_bad_input_import_neither_torch_nor_transformers(tmp_path, video):
    assert _imported_after(["--help"]) == (0, [])
    assert _imported_after(["track", "--help"]) == (0, [])
    assert _imported_after(["models"]) == (0, [])
    assert _imported_after(["track", str(tmp_path / "missing.mp4"), "--box", "1,1,5,5", "-o", str(tmp_path / "o")]
                           ) == (2, [])
    assert _imported_after(["track", str(tmp_path / "missing.mp4"), "--box", "1,1,5,5", "-o", str(tmp_path / "o"),
                            "--device", "gpu"]) == (2, [])
    # a policy and its options are checked by building the policy, which must not need torch (issue 17: every
    # bad-input error well under a second)
    track = ["track", str(video), "--box", "1,1,5,5", "-o", str(tmp_path / "o")]
    assert _imported_after([*track, "--policy", "bogus"], error="unknown memory policy 'bogus'") == (2, [])
    assert _imported_after([*track, "--policy-option", "bogus=1"], error="does not take these options") == (2, [])
    assert _imported_after([*track, "--policy", "sam2long", "--policy-option", "mode=bogus"],
                           error="sam2long mode must be") == (2, [])
    assert _imported_after([*track, "--model", "samurai-tiny", "--policy-option", "bogus=1"],
                           error="the samurai policy does not take these options") == (2, [])
    # bench checks every case's options the same way before it imports its runner (torch)
    assert _imported_after(["bench", "--policy", "bogus"], error="unknown memory policy 'bogus'") == (2, [])
    assert _imported_after(["bench", "--models", "sam2long-tiny", "--policy-option", "mode=x"],
                           error="sam2long mode must be") == (2, [])


def test_eval_refuses_to_resume_with_other_tracker_options(tmp_path):
    from vidtrack.cli_options import TrackerOptions
    from vidtrack.errors import InputError
    from vidtrack.eval.runner import check_run_info

    def info(**options):  # type: ignore[no-untyped-def]
        return {"model": "sam2.1-tiny", "protocol": "davis", "tracker": TrackerOptions(**options).mask_fields()}

    check_run_info(tmp_path, info())
    check_run_info(tmp_path, info(device="cpu", threads=2))  # does not change masks: resumes
    with pytest.raises(InputError, match="tracker="):
        check_run_info(tmp_path, info(semantics="causal"))
    with pytest.raises(InputError, match="tracker="):
        check_run_info(tmp_path, info(policy_option=["window=2"], policy="my_policy:RecentMemoryPolicy"))
    old = tmp_path / "old"
    check_run_info(old, {"model": "sam2.1-tiny", "protocol": "davis"})  # a folder from before the options
    check_run_info(old, info(semantics="causal"))
