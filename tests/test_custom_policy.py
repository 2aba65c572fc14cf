"""A memory policy written outside the package (docs/examples/my_policy.py) plugs in through
``TrackingConfig.policy`` -- by import path or as a class -- with no edit to vidtrack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from conftest import moving_shapes, shape_masks
from vidtrack import InputError, Prompt, TrackingConfig, create_tracking_loader

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.fixture()
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _masks(tiny_model, frames, prompts, **config):
    loader = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", dtype="float32", **config))
    res = loader.load(model=tiny_model).track_video(frames, prompts)
    return loader, res, {(f.frame_idx, m.object_id): m.to_rle()["counts"] for f in res.frames for m in f.masks}


def test_example_policy_runs_through_track_video(tiny_model, examples_on_path):
    frames = moving_shapes(12)
    box, disc = shape_masks()
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)]
    _, _, vanilla = _masks(tiny_model, frames, prompts)
    # window 6 is SAM 2.1's own memory: the same masks, through the user's class
    loader, res, same = _masks(tiny_model, frames, prompts, policy="my_policy:RecentMemoryPolicy",
                               policy_options={"window": 6})
    assert type(loader.last_session.policy).__name__ == "RecentMemoryPolicy"
    assert res.metadata["policy"] == "my_policy:RecentMemoryPolicy"
    assert same == vanilla
    # window 1 reads less memory: the masks move (the policy really decides what is read)
    import my_policy

    loader, res, short = _masks(tiny_model, frames, prompts, policy=my_policy.RecentMemoryPolicy,
                                policy_options={"window": 1})
    assert res.metadata["policy"] == "recent-memory" and loader.last_session.policy.window == 1
    assert short.keys() == vanilla.keys() and short != vanilla


def test_bad_policy_is_one_input_error_before_loading(examples_on_path):
    for bad, words in [("my_policy:Nope", "no callable 'Nope'"), ("no_such_module:X", "cannot import"),
                       ("unknown", "unknown memory policy"), (42, "must be a name")]:
        with pytest.raises(InputError, match=words):
            create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", policy=bad))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="SAM 2 family only"):
        create_tracking_loader("yolo11n-seg", TrackingConfig(policy="vanilla"))
