"""Every user mistake and fault of issue 13, through the real ``vidtrack`` console script in a subprocess.

The rows live in ``scripts/check_user_errors.py`` (one table for the script that reports them and for these
tests): each checks the exit status, the message, that no traceback was printed (unless asked for) and what is
on disk afterwards. Below them, the pieces that a console run cannot reach: the exception-to-exit-code helper
on an internal error, strict weight loading on a Meta-style state dict, and the box format.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtrack import Prompt
from vidtrack.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("check_user_errors", ROOT / "scripts" / "check_user_errors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_user_errors"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cue = _load_script()
CASES = {c.name: c for c in cue.cases()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    return cue.make_inputs(tmp_path_factory.mktemp("user-error-inputs"))


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_row(name, inputs, tmp_path):
    # the export row reads a result written by the truncated-video row; give it its own
    if name.startswith("export"):
        run, _, found = cue.execute(CASES["truncated video (first 30 % of the bytes)"], inputs, tmp_path)
        assert run is not None and not found, found
    run, skip, found = cue.execute(CASES[name], inputs, tmp_path)
    if run is None:
        pytest.skip(skip)
    assert not found, (found, run.code, run.err[-2000:])
    if CASES[name].code == 2 and "debug" not in name.lower():
        lines = [line for line in run.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), run.err  # click's usage errors too


# ----------------------------------------------------------------------------- the helper, in-process


def test_internal_error_is_one_line_exit_1_and_debug_shows_the_traceback(capsys, monkeypatch):
    from vidtrack import cli_errors

    def boom(_args: list[str]) -> None:
        raise ZeroDivisionError("division by zero in a bug")

    monkeypatch.delenv("VIDTRACK_DEBUG", raising=False)
    assert cli_errors.run(boom, ["track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error, ZeroDivisionError" in err and "--debug" in err
    assert "Traceback" not in err
    assert cli_errors.run(boom, ["--debug", "track"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: internal error")


def test_typer_exit_codes_are_returned_not_dropped():
    """typer hands back ``Exit(130)`` (its Ctrl-C) as a return value in non-standalone mode: it must reach the
    shell (the old entry point dropped it and exited 0)."""
    from vidtrack import cli_errors

    assert cli_errors.run(lambda _a: 130, []) == 130
    assert cli_errors.run(lambda _a: None, []) == 0


def test_full_disk_error_names_where_it_happened():
    from vidtrack.cli_errors import environment_error_line

    line = environment_error_line(OSError(errno.ENOSPC, "No space left on device"), "while writing out/")
    assert line is not None and line.startswith("no space left on device while writing out/")
    assert environment_error_line(OSError(errno.EIO, "I/O error")) is None  # not the user's environment


# ----------------------------------------------------------------------------------- weights


def test_meta_state_dict_with_a_wrong_shape_or_missing_weight_is_refused(tiny_model):
    from vidtrack.engines.sam2.checkpoints import load_state_dict_strict
    from vidtrack.engines.sam2.weights import random_sam2_model, tiny_test_config

    target = random_sam2_model(tiny_test_config(128), seed=1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    key = "mask_decoder.iou_prediction_head.proj_out.weight"
    sd[key] = torch.zeros(sd[key].shape[0] + 1, *sd[key].shape[1:])
    with pytest.raises(WeightsError, match="1 of another shape"):
        load_state_dict_strict(target, sd, what="checkpoint x.pt", expected="SAM 2.1 tiny")
    del sd[key]
    with pytest.raises(WeightsError, match="1 missing"):
        load_state_dict_strict(target, sd, what="checkpoint x.pt", expected="SAM 2.1 tiny")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-loaded
    load_state_dict_strict(target, tiny_model.state_dict(), what="checkpoint x.pt", expected="SAM 2.1 tiny")
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), tiny_model.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"\x80\x04garbage", b"PK\x03\x04garbage", "cut"])
def test_corrupt_checkpoint_message_never_suggests_unsafe_loading(tmp_path, content):
    from vidtrack.engines.sam2.weights import load_sam2_model

    p = tmp_path / "model.pt"
    if content == "cut":  # a real checkpoint cut in half, like an interrupted download
        torch.save({"model": {"w": torch.randn(4096)}}, p)
        content = p.read_bytes()[: p.stat().st_size // 2]
    p.write_bytes(content)
    with pytest.raises(WeightsError) as e:
        load_sam2_model(size="tiny", hub_id="x", checkpoint_path=p)
    msg = str(e.value)
    assert msg.startswith(f"cannot read checkpoint {p}") and "\n" not in msg
    assert "weights_only" not in msg and "False" not in msg
    assert "damaged or truncated" in msg  # our words, whatever torch raised


def test_size_is_read_from_the_weights():
    from vidtrack.catalog import resolve_model
    from vidtrack.engines.sam2.checkpoints import size_of, spec_for_weights
    from vidtrack.engines.sam2.weights import sam2_config, tiny_test_config

    assert [size_of(sam2_config(s)) for s in ("tiny", "small", "base-plus", "large")] == [
        "tiny", "small", "base-plus", "large"]
    assert size_of(tiny_test_config(128)) is None

    class Weights:
        config = sam2_config("tiny")

    assert spec_for_weights(resolve_model("samurai-large"), Weights()).name == "samurai-tiny"
    assert spec_for_weights(resolve_model("sam2long-base-plus"), Weights()).name == "sam2long-tiny"
    assert spec_for_weights(resolve_model("sam2.1-tiny"), Weights()).name == "sam2.1-tiny"


# ------------------------------------------------------------------------------------------ boxes


def test_box_format_must_be_named_and_every_entry_point_agrees(tmp_path):
    from vidtrack.prompt_files import load_prompts_json, parse_box

    with pytest.raises(TypeError):
        Prompt.from_box(0, 1, (10, 20, 30, 40))  # type: ignore[call-arg]  # no default format
    with pytest.raises(ValueError, match="box_fmt"):
        Prompt.from_points(0, 1, [[15, 25]], box=(10, 20, 30, 40))
    xywh = (10.0, 20.0, 30.0, 40.0)
    corners = (10.0, 20.0, 40.0, 60.0)
    (tmp_path / "p.json").write_text(json.dumps([
        {"frame": 0, "object_id": 1, "box": list(xywh)},
        {"frame": 0, "object_id": 2, "box_xyxy": list(corners)},
        {"frame": 0, "object_id": 3, "box": list(xywh), "points": [[15, 25]]},
    ]))
    from_file = [p.box for p in load_prompts_json(tmp_path / "p.json")]
    assert from_file == [corners, corners, corners]
    assert parse_box("10,20,30,40", 0, 1).box == corners  # the CLI's --box
    assert Prompt.from_box(0, 1, xywh, fmt="xywh").box == corners
    assert Prompt.from_box(0, 1, corners, fmt="xyxy").box == corners
    assert Prompt.from_points(0, 1, [[15, 25]], box=xywh, box_fmt="xywh").box == corners
    np.testing.assert_array_equal(Prompt.from_points(0, 1, [[15, 25]]).points, [[15, 25]])


def test_in_process_runs_put_the_signal_handlers_back():
    """``main()`` called in-process (tests, embedding programs) must not leave its handlers installed."""
    import signal

    from vidtrack import cli_errors

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    seen = []
    cli_errors.run(lambda _a: seen.append(signal.getsignal(signal.SIGTERM)), [])
    assert seen and seen[0] is not before[1]  # installed while the command ran
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
