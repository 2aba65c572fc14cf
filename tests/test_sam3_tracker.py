"""The SAM 3 tracker on the engine: loading and conversion, the backend's own computations, and the engine's
claims (policies, two objects = each alone, bounded memory in a stream) run on it.

The model is the calibrated random tracker of the golden (``tests/golden/sam3_tracker_checkpoint.py``: the
released tracker with a 2-block ViT and one memory-attention layer), here at 224 px (16x16 grid) so the suite
stays fast; parity with the official predictor at 1008 px is ``tests/test_sam3_tracker_golden.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_shapes, shape_masks, shared_data, write_davis_clip
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "golden"))
import sam3_tracker_checkpoint as ck  # noqa: E402

SIZE = 224


@pytest.fixture(scope="module")
def hf_state() -> dict[str, torch.Tensor]:
    return ck.calibrated_state_dict(ck.SEED)


@pytest.fixture(scope="module")
def meta_checkpoint(hf_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibrated tracker in Meta's ``sam3.pt`` layout (detector + tracker prefixes, a detector-only
    tensor that the tracker must ignore)."""
    tracker_only = ck.to_meta_state_dict(hf_state)
    full: dict[str, torch.Tensor] = {}
    for k, v in tracker_only.items():
        full[("detector." + k) if k.startswith("backbone.") else ("tracker." + k)] = v
    full["detector.transformer.decoder.query_embed.weight"] = torch.zeros(4, 8)
    path = tmp_path_factory.mktemp("sam3") / "sam3.pt"
    torch.save({"model": full}, path)
    return path


@pytest.fixture(scope="module")
def model() -> Any:
    return ck.model(ck.SEED, image_size=SIZE)


def _loader(model: Any, name: str = "sam3-tracker", **config: Any) -> Any:
    cfg = TrackingConfig(device="cpu", dtype="float32", threads=1, **config)
    return create_tracking_loader(name, cfg).load(model=model)


def _masks(result: Any) -> dict[tuple[int, int], str]:
    return {(f.frame_idx, m.object_id): m.to_rle()["counts"] for f in result.frames for m in f.masks}


@pytest.fixture(scope="module")
def davis() -> tuple[list[np.ndarray], np.ndarray]:
    root = shared_data("davis2016")
    paths = sorted((root / "JPEGImages" / "480p" / "car-shadow").glob("*.jpg"))[:10]
    frames = [np.array(Image.open(p).convert("RGB")) for p in paths]
    car = np.asarray(Image.open(root / "Annotations" / "480p" / "car-shadow" / "00000.png")) > 0
    return frames, car


def _road(shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    m = np.zeros((h, w), bool)
    m[int(0.75 * h): int(0.95 * h), int(0.05 * w): int(0.35 * w)] = True
    return m


# --- loading ---------------------------------------------------------------------------------------------------

def test_meta_checkpoint_converts_strictly_and_round_trips(meta_checkpoint: Path, hf_state: Any,
                                                           tmp_path: Path) -> None:
    """Meta's layout (whole-model ``sam3.pt``: ``detector.``/``tracker.`` prefixes) loads strictly into
    ``Sam3TrackerVideoModel`` with every tensor unchanged (qkv split, class-token row dropped, point embeddings
    concatenated); the architecture is read off the tensors (ViT width/depth/MLP, which block is global, memory
    attention depth); the official ViT's LayerNorm eps 1e-5 is kept; a transformers folder loads back equal;
    the catalogue names resolve to the SAM 3 backend; wrong inputs fail in one line."""
    from vidtrack.engines.sam2.backends.sam3_tracker import Sam3TrackerBackend
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import load_sam3_tracker_model

    loaded = load_sam3_tracker_model(checkpoint_path=meta_checkpoint)
    bb = loaded.config.vision_config.backbone_config
    assert (bb.hidden_size, bb.num_hidden_layers, bb.intermediate_size) == (64, 2, 296)
    assert list(bb.global_attn_indexes) == [1] and bb.layer_norm_eps == 1e-5
    assert loaded.config.memory_attention_num_layers == ck.MEMORY_ATTENTION_LAYERS
    assert loaded.config.image_size == 1008
    ours = loaded.state_dict()
    assert set(ours) == set(hf_state)
    assert all(torch.equal(ours[k], hf_state[k]) for k in ours)
    small = load_sam3_tracker_model(checkpoint_path=meta_checkpoint, image_size=SIZE)
    small.save_pretrained(tmp_path / "hf")
    again = load_sam3_tracker_model(checkpoint_path=tmp_path / "hf")
    assert again.config.image_size == SIZE
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in small.state_dict().items())
    for name in ("sam3-tracker", "SAM3", "samurai-sam3-tracker", "sam2long_sam3", "dam4sam-sam3-tracker"):
        loader = create_tracking_loader(name, TrackingConfig(device="cpu"))
        assert loader.spec.backend == "sam3-tracker"
        assert isinstance(loader.load(model=again).engine.backend, Sam3TrackerBackend)
    sam2_folder = tmp_path / "sam2"
    sam2_folder.mkdir()
    (sam2_folder / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    with pytest.raises(WeightsError, match="not the SAM 3 tracker"):
        load_sam3_tracker_model(checkpoint_path=sam2_folder)
    with pytest.raises(WeightsError, match="no SAM 3 tracker"):
        bogus = tmp_path / "bogus.pt"
        torch.save({"model": {"image_encoder.trunk.patch_embed.proj.weight": torch.zeros(1)}}, bogus)
        load_sam3_tracker_model(checkpoint_path=bogus)


def test_gated_hub_id_without_weights_is_one_line(tmp_path: Path) -> None:
    """No cached weights for ``facebook/sam3`` (gated; no network here): one line naming the repo, access and
    ``--checkpoint``."""
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import load_sam3_tracker_model

    with pytest.raises(WeightsError) as e:
        load_sam3_tracker_model(cache_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "facebook/sam3" in msg and "gated" in msg and "--checkpoint" in msg


def test_models_command_lists_sam3_tracker() -> None:
    from typer.testing import CliRunner

    from vidtrack.cli import app

    out = CliRunner().invoke(app, ["models"], env={"COLUMNS": "240"}).output
    for name in ("sam3-tracker", "samurai-sam3-tracker", "sam2long-sam3-tracker", "dam4sam-sam3-tracker"):
        assert name in out


# --- the backend's computations ----------------------------------------------------------------------------------

def test_memory_mask_is_resized_after_the_binarise_rule(model: Any) -> None:
    """The official ``SimpleMaskDownSampler`` resizes the *scaled* mask to 4x the low-res grid (1152 px at
    1008); resizing the logits first (transformers' ``_encode_new_memory``) is another function on soft masks."""
    from vidtrack.engines.sam2.engine import Sam2Engine

    eng = Sam2Engine(model)
    b = eng.backend
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, SIZE, SIZE, generator=g) * 3
    ours = b.mask_for_memory(logits, binarize=False)
    assert ours.shape[-2:] == (4 * b.low_res_size[0], 4 * b.low_res_size[1]) == (256, 256)
    want = torch.nn.functional.interpolate(torch.sigmoid(logits) * 20 - 10, size=(256, 256), mode="bilinear",
                                           align_corners=False, antialias=True)
    torch.testing.assert_close(ours, want, rtol=0, atol=0)
    hf_order = torch.sigmoid(torch.nn.functional.interpolate(logits, size=(256, 256), mode="bilinear",
                                                             align_corners=False, antialias=True)) * 20 - 10
    assert (hf_order - ours).abs().max() > 0.5


def test_prompted_objects_do_not_overlap_in_memory(model: Any) -> None:
    """Objects prompted on the same frame are memorised without overlap (official preflight): where both
    claim a pixel, only the higher-scoring keeps it."""
    from vidtrack.engines.sam2.engine import Sam2Engine

    b = Sam2Engine(model).backend
    a = torch.full((1, 1, 4, 4), -5.0)
    a[..., :2] = 3.0
    c = torch.full((1, 1, 4, 4), -5.0)
    c[..., 1:3] = 4.0
    out = b.prompt_memory_masks(torch.cat([a, c]))
    assert (out[0, 0, :, 0] == 3.0).all() and (out[0, 0, :, 1] == -10.0).all()  # column 1: object 2 wins
    assert (out[1, 0, :, 1] == 4.0).all() and (out[1, 0, :, 2] == 4.0).all()
    assert torch.equal(b.prompt_memory_masks(a), a)


# --- the engine's claims on the SAM 3 tracker -----------------------------------------------------------------------

def test_two_objects_equal_each_alone(model: Any, davis: Any) -> None:
    """Vanilla SAM 3 tracker on real frames: two objects apart on the prompt frame, tracked together, give
    each one's masks alone. (Where prompt-frame masks overlap, SAM 3 memorises them without overlap, as the
    official preflight does, so together differs from alone by design: see the backend's docstring.)"""
    frames, car = davis
    frames = frames[:6]
    road = _road(car.shape)
    loader = _loader(model)
    p1, p2 = Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)
    both = _masks(loader.track_video(frames, [p1, p2]))
    one = _masks(loader.track_video(frames, [p1]))
    two = _masks(loader.track_video(frames, [p2]))
    assert both == {**one, **two}


def test_samurai_kalman_filter_acts_on_real_frames(model: Any, davis: Any) -> None:
    """SAMURAI on the SAM 3 tracker: with the filter's warm-up shortened to 3 frames, every later tracked
    frame's choice is scored with the filter's IoU."""
    frames, car = davis
    loader = _loader(model, "samurai-sam3-tracker", policy_options={"stable_frames_threshold": 3})
    h, w = car.shape
    session = loader.engine.new_session(loader.new_policy(), h, w, num_frames=len(frames))
    notes = []
    for i, f in enumerate(frames):
        session.step(i, f, [Prompt.from_mask(0, 1, car)] if i == 0 else [])
        if i > 0:
            notes.append(session.last_records[1].note)
    scored = [n.kf_score for n in notes if n.kf_score is not None]
    assert len(scored) >= 5, notes
    assert all(0.0 <= s <= 1.0 for s in scored)


def test_sam2long_pathways_diverge_on_sam3_tracker(model: Any, davis: Any) -> None:
    """SAM2Long on the SAM 3 tracker, every step uncertain: distinct pathways are computed; two objects
    together equal each alone."""
    frames, car = davis
    frames = frames[:5]
    road = _road(car.shape)
    opts = {"uncertainty": 100.0, "record_choices": True}
    loader = _loader(model, "sam2long-sam3-tracker", policy_options=opts)
    both = loader.track_video(frames, [Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)])
    st = loader.last_session.tracks[1].policy_state
    assert max(c["distinct_runs"] for c in st.choices) > 1, st.choices
    one = _loader(model, "sam2long-sam3-tracker", policy_options=opts).track_video(
        frames, [Prompt.from_mask(0, 1, car)])
    assert {k: v for k, v in _masks(both).items() if k[1] == 1} == _masks(one)


def test_bounded_memory_in_a_stream(model: Any) -> None:
    """A stream of 30 frames keeps the memories of the last num_maskmem - 1 frames (16x16 tokens of 64
    channels at 224 px) and holds the same bytes per frame once the windows are full."""
    frames = moving_shapes(12)
    box, _ = shape_masks()
    loader = _loader(model)
    s = loader.engine.new_session(loader.new_policy(), 96, 160)
    sizes = []
    for i in range(30):
        s.step(i, frames[i % 12], [Prompt.from_mask(0, 1, box)] if i == 0 else [])
        sizes.append(s.state_nbytes())
    track = s.tracks[1]
    assert sorted(t for t, r in track.non_cond.items() if r.maskmem_features is not None) == list(range(24, 30))
    assert all(r.maskmem_features.shape == (256, 1, 64) for r in track.non_cond.values()
               if r.maskmem_features is not None)
    assert sizes[20:] == [sizes[20]] * 10


def test_at_most_four_conditioning_frames_are_read(model: Any) -> None:
    """More than 4 prompted frames: a read keeps 4, as the official ``select_closest_cond_frames`` picks them
    (the closest before, the closest at or after, then the temporally closest); an unselected one inside the
    6-frame memory window is read in its slot like a tracked frame, one outside is not read and its pointer is
    dropped beyond the pointer window. A SAM 2.1 read, or one with 4 or fewer, is never changed."""
    from vidtrack.engines.sam2.backends.base import Backend
    from vidtrack.engines.sam2.backends.sam3_tracker import select_closest_cond_frames
    from vidtrack.engines.sam2.contract import MemoryRead
    from vidtrack.engines.sam2.engine import Sam2Engine
    from vidtrack.engines.sam2.state import FrameRecord

    b = Sam2Engine(model).backend
    assert select_closest_cond_frames(11, [1, 3, 5, 7, 9, 10], 4) == {10, 9, 7, 5}
    assert select_closest_cond_frames(4, [0, 2, 6, 8, 9, 10], 4) == {2, 6, 0, 8}

    def rec(f: int, cond: bool) -> FrameRecord:
        return FrameRecord(f, cond, torch.zeros(1, 256), 1.0, 1.0, torch.zeros(1))

    def read_of(cond_frames: list[int], tracked: list[int], frame_idx: int) -> MemoryRead:
        conds = [rec(f, True) for f in cond_frames]
        recs = [rec(f, False) for f in tracked]
        return MemoryRead([(6, r) for r in conds] + [(abs(frame_idx - r.frame_idx) - 1, r) for r in recs],
                          [(abs(frame_idx - r.frame_idx), r) for r in conds + recs])

    def slots(read: MemoryRead) -> list[tuple[int, int]]:
        return sorted((s, r.frame_idx) for s, r in read.memories)

    far = b.limit_conditioning(read_of([1, 3, 5, 7, 9, 10], [8, 6], 11), 11, reverse=False, max_ptrs=8)
    assert slots(far) == [(2, 8), (4, 6), (6, 5), (6, 7), (6, 9), (6, 10)]
    assert sorted(r.frame_idx for _, r in far.pointers) == [5, 6, 7, 8, 9, 10]  # 3 and 1: 8+ frames back
    near = b.limit_conditioning(read_of([5, 6, 7, 8, 9, 10], [], 11), 11, reverse=False, max_ptrs=8)
    assert slots(near) == [(4, 6), (5, 5), (6, 7), (6, 8), (6, 9), (6, 10)]
    assert sorted(r.frame_idx for _, r in near.pointers) == [5, 6, 7, 8, 9, 10]
    back = b.limit_conditioning(read_of([12, 13, 14, 15, 16, 20], [], 11), 11, reverse=True, max_ptrs=8)
    assert slots(back) == [(4, 16), (6, 12), (6, 13), (6, 14), (6, 15)]  # 20: 9 frames ahead, not read
    assert sorted(r.frame_idx for _, r in back.pointers) == [12, 13, 14, 15, 16]
    full = read_of([1, 3, 5, 7, 9, 10], [8], 11)
    assert Backend.limit_conditioning(b, full, 11, reverse=False, max_ptrs=8) is full
    small = read_of([1, 3, 5, 7], [8], 11)
    assert b.limit_conditioning(small, 11, reverse=False, max_ptrs=8) is small


def test_cli_tracks_with_meta_checkpoint(meta_checkpoint: Path, tmp_path: Path) -> None:
    """``vidtrack track --model samurai-sam3-tracker --checkpoint sam3.pt`` (Meta's whole-model file, converted)
    writes DAVIS PNGs whose masks equal its RLE JSON; without weights it fails in one line before any work."""
    import subprocess

    from vidtrack.types import rle_decode

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(moving_shapes(4)):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg", quality=95)
    box, _ = shape_masks()
    Image.fromarray(box.astype(np.uint8) * 255).save(tmp_path / "00000.png")
    out = tmp_path / "out"
    base = [sys.executable, "-m", "vidtrack.cli", "track", str(folder), "--model", "samurai-sam3-tracker",
            "--mask", str(tmp_path / "00000.png"), "--device", "cpu", "--threads", "1", "-q"]
    proc = subprocess.run([*base, "--checkpoint", str(meta_checkpoint), "--image-size", str(SIZE), "--format",
                           "davis-png,rle-json", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 4
    data = json.loads((out / "masks.json").read_text())
    for frame, png in zip(data["frames"], pngs, strict=True):
        (obj,) = frame["objects"]
        assert np.array_equal(rle_decode(obj["rle"]), np.asarray(Image.open(png)) > 0)
    assert (np.asarray(Image.open(pngs[-1])) > 0).sum() > 0
    bad = subprocess.run([*base, "--out", str(tmp_path / "o2"), "--cache-dir", str(tmp_path / "empty")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--checkpoint" in bad.stderr


def test_interactive_session_on_sam3_tracker(model: Any) -> None:
    """The interactive session drives the SAM 3 tracker: a box and a mask on frame 0, propagation equal to the
    whole-video run of the same prompts, then a corrective click re-propagates and changes the masks."""
    frames = np.stack(moving_shapes(6))
    box, disc = shape_masks()
    ys, xs = np.nonzero(box)
    bbox = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    loader = _loader(model)
    session = loader.open_session(frames)
    try:
        session.add_prompt(0, 1, box=bbox)
        session.add_prompt(0, 2, mask=disc)
        list(session.propagate())
        got = _masks(session.result())
        whole = _masks(loader.track_video(list(frames), [Prompt.from_box(0, 1, bbox, fmt="xyxy"),
                                                         Prompt.from_mask(0, 2, disc)]))
        assert got == whole
        session.add_prompt(3, 1, points=[[bbox[0] + 2, bbox[1] + 2]], labels=[0])
        list(session.propagate())
        after = _masks(session.result())
        assert any(after[(f, 1)] != got[(f, 1)] for f in range(3, 6))
    finally:
        session.close()


def test_dam4sam_on_sam3_tracker(model: Any, davis: Any) -> None:
    """DAM4SAM on the SAM 3 tracker, real frames: a box prompt (made a mask by one decoder pass, as DAM4SAM
    initialises) tracks on every frame; two objects apart on the prompt frame, tracked together, equal each
    alone (masks: the random decoder's box masks cover most of the frame, and overlapping prompt masks are
    memorised apart in SAM 3)."""
    frames, car = davis
    frames = frames[:6]
    road = _road(car.shape)
    ys, xs = np.nonzero(car)
    box = (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))
    loader = _loader(model, "dam4sam-sam3-tracker")
    boxed = loader.track_video(frames, [Prompt.from_box(0, 1, box, fmt="xyxy")])
    assert [[m.object_id for m in f.masks] for f in boxed.frames] == [[1]] * len(frames)
    p1, p2 = Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)
    both = _masks(loader.track_video(frames, [p1, p2]))
    one = _masks(loader.track_video(frames, [p1]))
    two = _masks(loader.track_video(frames, [p2]))
    assert both == {**one, **two}


def test_overlapping_prompts_are_memorised_apart_in_session_and_video(model: Any) -> None:
    """Two mask prompts that overlap on frame 0: SAM 3 memorises them apart (official preflight), the same
    way in the interactive session (prompts added one by one, then propagate) as in a whole-video run; object 1
    then differs from tracking it alone (the rule acts), which is why the two-objects test uses apart prompts."""
    frames = np.stack(moving_shapes(5))
    box, _ = shape_masks()
    shifted = np.roll(box, (4, 6), axis=(0, 1))
    assert (box & shifted).sum() > 0
    loader = _loader(model)
    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, shifted)]
    whole = _masks(loader.track_video(list(frames), prompts))
    session = loader.open_session(frames)
    try:
        session.add_prompt(0, 1, mask=box)
        session.add_prompt(0, 2, mask=shifted)
        list(session.propagate())
        assert _masks(session.result()) == whole
    finally:
        session.close()
    alone = _masks(loader.track_video(list(frames), prompts[:1]))
    assert any(whole[(f, 1)] != alone[(f, 1)] for f in range(1, 5))


def test_eval_and_prompts_on_later_frames(meta_checkpoint: Path, model: Any, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """``vidtrack eval --model sam3-tracker --checkpoint sam3.pt`` scores a DAVIS-layout dataset with predictions
    equal to the API's; an object first prompted on frame 3 is tracked on every frame (official semantics: from
    frame 0, with its frame-3 memory), and from frame 3 only when causal without --backward."""
    from conftest import run_cli
    from vidtrack.eval.io import read_label_png

    frames = moving_shapes(5)
    box, disc = shape_masks()
    first = np.zeros(box.shape, np.uint8)
    first[box], first[disc] = 1, 2
    data = write_davis_clip(tmp_path / "davis", frames, first, suffix=".png")
    run = tmp_path / "run"
    code, stdout, err = run_cli(["eval", "--dataset", str(data), "--layout", "davis", "--out", str(run), "--json",
                                 "--model", "sam3-tracker", "--checkpoint", str(meta_checkpoint), "--image-size",
                                 str(SIZE), "--device", "cpu", "--threads", "1", "-q"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["objects"] == 2 and 0 <= summary["J&F"] <= 1
    api = _loader(model).track_video(frames, [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)])
    pred = sorted((run / "predictions" / "s1").glob("*.png"))
    assert len(pred) == 5
    for png, tf in zip(pred, api.frames, strict=True):  # one label per pixel: overlaps go to one object
        lab = read_label_png(png)
        a, b = tf.mask_for(1).mask, tf.mask_for(2).mask
        assert np.array_equal(lab > 0, a | b)
        assert not ((lab == 1) & ~a).any() and not ((lab == 2) & ~b).any()

    prompts = [Prompt.from_mask(0, 1, box), Prompt.from_box(3, 2, (120, 55, 145, 80), fmt="xyxy")]
    late = _loader(model).track_video(frames, prompts)
    assert [sorted(m.object_id for m in f.masks) for f in late.frames] == [[1, 2]] * 5
    causal = _loader(model, semantics="causal", backward=False).track_video(frames, prompts)
    assert [sorted(m.object_id for m in f.masks) for f in causal.frames] == [[1]] * 3 + [[1, 2]] * 2
