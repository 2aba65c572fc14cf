"""The YOLO11-seg backend through ultralytics, with models built from the bundled yaml (random weights, no
download): offline behaviour, weights lookup, masks at video resolution vs ``retina_masks``, the loader
interface; and the clear error when the extra is not installed (that part runs without ultralytics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_line
from vidtrack import Prompt, TrackingConfig, create_tracking_loader
from vidtrack.engines.yolo.masks import letterbox_window, mask_iou
from vidtrack.engines.yolo.options import YoloOptions
from vidtrack.errors import DependencyError, InputError, WeightsError

HAVE_ULTRALYTICS = True
try:
    import importlib.util

    HAVE_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None
except ValueError:
    HAVE_ULTRALYTICS = False
needs_ultralytics = pytest.mark.skipif(not HAVE_ULTRALYTICS, reason="ultralytics not installed (vidtrack[yolo])")

FAST = {"imgsz": 320, "conf": 0.0, "low_conf": 0.0, "max_det": 6}  # random weights: force some detections


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB frame (gradients and filled ellipses): random-weight masks then follow image structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = xx * 255 // max(w - 1, 1)
    img[..., 1] = yy * 255 // max(h - 1, 1)
    for _ in range(5):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * h
        img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] = rng.integers(0, 255, 3)
    return img


def force_masks(yolo):
    """Make a random-init yolo11n-seg produce non-empty, image-dependent masks (deterministically).

    Random init leaves the prototype masks almost constant and the mask logits of one sign, so every mask is
    empty and ultralytics drops every detection. Normalising the last prototype layer (BatchNorm statistics
    from one calibration frame) and giving every anchor the coefficients (+1, -1, 0, ...) makes each mask the
    sign of a difference of two image-dependent prototype maps, cropped to its box.
    """
    import torch

    net = yolo.model.eval()
    head = net.model[-1]
    cv3 = head.proto.cv3
    seen = {}
    hook = cv3.conv.register_forward_hook(lambda mod, i, o: seen.__setitem__("x", o.detach()))
    calib = torch.from_numpy(scene(320, 640, seed=123)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        net(calib)
    hook.remove()
    x = seen["x"][0]
    with torch.no_grad():
        cv3.bn.running_mean.copy_(x.mean((1, 2)))
        cv3.bn.running_var.copy_(x.var((1, 2)))
        cv3.bn.weight.fill_(1.0)
        cv3.bn.bias.zero_()
        for seq in head.cv4:
            seq[-1].weight.zero_()
            v = torch.zeros(seq[-1].bias.shape)
            v[0], v[1] = 1.0, -1.0
            seq[-1].bias.copy_(v)
    return yolo


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """An empty working directory for everything ultralytics does here (nothing may land in it)."""
    d = tmp_path_factory.mktemp("yolo-cwd")
    old = os.getcwd()
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo-config")))
    os.chdir(d)
    yield d
    os.chdir(old)


@pytest.fixture(scope="module")
def yolo_model(workdir):
    if not HAVE_ULTRALYTICS:
        pytest.skip("ultralytics not installed (vidtrack[yolo])")
    import torch

    from vidtrack.engines.yolo.runtime import import_ultralytics

    ultralytics = import_ultralytics()
    torch.manual_seed(0)
    return force_masks(ultralytics.YOLO("yolo11n-seg.yaml"))


def make_loader(model, **options):
    loader = create_tracking_loader("yolo11n-seg", TrackingConfig(device="cpu", policy_options={**FAST, **options}))
    return loader.load(model=model)


# --- offline behaviour and weights -------------------------------------------------------------------------
@needs_ultralytics
def test_import_build_predict_offline_and_nothing_in_cwd(tmp_path):
    """In a fresh process: no DNS lookup, socket or pip subprocess while importing, building from the yaml and
    predicting; the working directory stays empty."""
    script = textwrap.dedent("""
        import json, os, sys
        events = []
        def hook(ev, args):
            if ev.startswith("socket.") or (ev == "subprocess.Popen" and "ldconfig" not in str(args[0])):
                events.append(f"{ev} {args[:2]!r}")
        sys.addaudithook(hook)
        import numpy as np
        from vidtrack.engines.yolo.runtime import import_ultralytics
        u = import_ultralytics()
        m = u.YOLO("yolo11n-seg.yaml")
        m.predict(np.zeros((64, 96, 3), np.uint8), imgsz=160, verbose=False)
        print(json.dumps({"events": events, "cwd": sorted(os.listdir(".")), "offline": os.environ["YOLO_OFFLINE"],
                          "autoinstall": os.environ["YOLO_AUTOINSTALL"]}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(OMP_NUM_THREADS="1", YOLO_CONFIG_DIR=str(tmp_path / "cfg"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["events"] == []
    assert report["cwd"] == []
    assert (report["offline"], report["autoinstall"]) == ("1", "false")
    assert (tmp_path / "cfg" / "Ultralytics" / "settings.json").exists()  # settings went to the config dir


@needs_ultralytics
def test_bare_name_without_local_weights_is_a_weights_error(workdir, tmp_path):
    loader = create_tracking_loader("yolo11s-seg", TrackingConfig(device="cpu", cache_dir=str(tmp_path)))
    with pytest.raises(WeightsError, match=r"yolo11s-seg\.pt not found .*never downloads"):
        loader.load()
    assert not loader.is_loaded
    assert os.listdir(workdir) == []
    with pytest.raises(WeightsError, match="does not exist"):
        create_tracking_loader("yolo11n-seg", TrackingConfig(checkpoint_path=str(tmp_path / "nope.pt"))).load()


@needs_ultralytics
def test_weights_found_in_cache_dir_and_bad_files_rejected(workdir, tmp_path):
    (tmp_path / "yolo11m-seg.pt").write_bytes(b"not a checkpoint")
    loader = create_tracking_loader("yolo11m-seg", TrackingConfig(device="cpu", cache_dir=str(tmp_path)))
    with pytest.raises(WeightsError, match=r"cannot load .*yolo11m-seg\.pt"):
        loader.load()
    assert os.listdir(workdir) == []


@needs_ultralytics
def test_checkpoint_by_path_round_trip_and_task_check(yolo_model, tmp_path):
    from vidtrack.engines.yolo.runtime import import_ultralytics

    ckpt = tmp_path / "custom-seg.pt"
    yolo_model.save(str(ckpt))
    loader = create_tracking_loader(
        "yolo11n-seg", TrackingConfig(device="cpu", checkpoint_path=str(ckpt), policy_options=FAST)
    ).load()
    assert loader.weights == str(ckpt.resolve())
    dets = loader.detect(scene(90, 120))
    assert len(dets) > 0 and dets.masks is not None and dets.masks[0].shape == (90, 120)
    det_ckpt = tmp_path / "detector.pt"
    import_ultralytics().YOLO("yolo11n.yaml").save(str(det_ckpt))
    with pytest.raises(WeightsError, match="not a segmentation"):
        create_tracking_loader("yolo11n-seg", TrackingConfig(device="cpu", checkpoint_path=str(det_ckpt))).load()


# --- masks at video resolution -----------------------------------------------------------------------------
def test_letterbox_window_geometry():
    assert letterbox_window((384, 640), (360, 640)) == (12, 0, 360, 640)
    assert letterbox_window((640, 640), (360, 640)) == (140, 0, 360, 640)
    top, left, h, w = letterbox_window((640, 192), (333, 100))
    assert (h, w) == (round(333 * min(640 / 333, 192 / 100)), 192) and left == 0 and top + h <= 640


@needs_ultralytics
@pytest.mark.parametrize("size", [(97, 203), (480, 854), (333, 100)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_masks_match_retina_masks(yolo_model, size):
    h, w = size
    frame = scene(h, w, seed=h * w)
    ours = make_loader(yolo_model, imgsz=640, max_det=20).detect(frame)
    retina = make_loader(yolo_model, imgsz=640, max_det=20, retina_masks=True).detect(frame)
    assert ours.masks is not None and retina.masks is not None
    assert len(ours) >= 3, "the forced model must give masks to compare"
    ious, inter, union = [], 0, 0
    for j, box in enumerate(ours.boxes):
        k = int(np.argmin(np.abs(retina.boxes - box).sum(1)))
        assert np.abs(retina.boxes[k] - box).max() < 1e-3  # same detections, boxes in frame pixels
        a, b = ours.masks[j], retina.masks[k]
        assert a.shape == b.shape == (h, w)
        ious.append(mask_iou(a, b))
        inter += int((a & b).sum())
        union += int((a | b).sum())
    print(f"{w}x{h}: {len(ious)} masks, mean IoU {np.mean(ious):.4f}, min {min(ious):.4f}, "
          f"pooled {inter / union:.4f}")
    assert inter / union >= 0.99
    assert np.mean(ious) >= 0.99


@needs_ultralytics
@pytest.mark.parametrize("size", [(97, 203), (480, 854), (333, 100), (1080, 1920)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_unletterbox_matches_native_masks_on_smooth_prototypes(size):
    """Geometry alone, without a model: smooth prototype maps through ultralytics' letterboxed path
    (``process_mask``) then :func:`unletterbox`, against its frame-resolution path (``process_mask_native``,
    what ``retina_masks`` uses). ultralytics is called as the reference here, not copied."""
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops

    from vidtrack.engines.yolo.masks import unletterbox

    h, w = size
    ih, iw = LetterBox((640, 640), auto=True, stride=32)(image=np.zeros((h, w, 3), np.uint8)).shape[:2]
    mh, mw = ih // 4, iw // 4
    yy, xx = torch.meshgrid(torch.arange(mh).float(), torch.arange(mw).float(), indexing="ij")
    protos = torch.stack([torch.exp(-(((yy - mh * a) / (mh * 0.2)) ** 2 + ((xx - mw * b) / (mw * 0.3)) ** 2)) - 0.3
                          for a, b in [(0.3, 0.5), (0.6, 0.4), (0.5, 0.7)]])
    boxes_in = torch.tensor([[0.0, 0.0, iw, ih], [iw * 0.2, ih * 0.1, iw * 0.9, ih * 0.8], [0, 0, iw / 2, ih]])
    letterboxed = ops.process_mask(protos, torch.eye(3), boxes_in.clone(), (ih, iw), upsample=True)
    boxes = ops.scale_boxes((ih, iw), boxes_in.clone(), (h, w))
    native = ops.process_mask_native(protos, torch.eye(3), boxes, (h, w)).bool().numpy()
    ours = unletterbox(letterboxed, (h, w), boxes)
    ious = [mask_iou(a, b) for a, b in zip(ours, native, strict=True)]
    pooled = (ours & native).sum() / (ours | native).sum()
    print(f"{w}x{h}: IoU per mask {[round(v, 4) for v in ious]}, pooled {pooled:.4f}")
    # a binary mask at input resolution cannot carry sub-pixel contours: small masks lose a little at the edge
    assert pooled >= 0.99 and min(ious) >= 0.98, ious


@needs_ultralytics
def test_naive_resize_is_worse_than_unletterbox(yolo_model):
    """Guard that the comparison above can fail: stretching the padded mask onto the frame misplaces it."""
    import torch
    import torch.nn.functional as F

    frame = scene(97, 203, seed=97 * 203)
    bgr = np.ascontiguousarray(frame[..., ::-1])
    r = yolo_model.predict(bgr, imgsz=640, conf=0.0, max_det=20, agnostic_nms=True, verbose=False)[0]
    rr = yolo_model.predict(bgr, imgsz=640, conf=0.0, max_det=20, agnostic_nms=True, retina_masks=True,
                            verbose=False)[0]
    naive = F.interpolate(r.masks.data[None].float(), (97, 203), mode="bilinear")[0] > 0.5
    from vidtrack.engines.yolo.masks import unletterbox

    ours = torch.from_numpy(unletterbox(r.masks.data, (97, 203), r.boxes.xyxy))
    ret = rr.masks.data.bool()
    d = torch.cdist(r.boxes.xyxy, rr.boxes.xyxy)
    ia, ib = torch.nonzero(d < 1e-3, as_tuple=True)

    def pooled(x):
        return float((x[ia] & ret[ib]).sum() / (x[ia] | ret[ib]).sum())

    assert pooled(ours) >= 0.99 > pooled(naive) + 0.05


# --- the loader interface ----------------------------------------------------------------------------------
@needs_ultralytics
def test_stream_auto_mode(yolo_model):
    loader = make_loader(yolo_model)
    frames = [scene(72, 128, seed=1)] * 3
    out = list(loader.stream(frames))
    assert [f.frame_idx for f in out] == [0, 1, 2]
    ids = out[0].object_ids
    assert ids and ids == list(range(1, len(ids) + 1))
    for f in out:
        assert f.object_ids == ids  # static video: same objects, same ids
        for m in f.masks:
            assert m.size == (72, 128) and not m.occluded and m.visibility == 1.0 and m.area > 0
        assert set(f.timings) >= {"detect", "associate", "encode"}


@needs_ultralytics
def test_prompted_track_video_and_backward(yolo_model):
    loader = make_loader(yolo_model)
    frames = [scene(72, 128, seed=2)] * 4
    dets = loader.detect(frames[0])
    assert dets.masks is not None and len(dets) >= 2
    prompts = [Prompt.from_mask(0, 11, dets.masks[0]), Prompt.from_box(2, 22, tuple(dets.boxes[1]), fmt="xyxy")]
    res = loader.track_video(frames, prompts)
    assert len(res) == 4 and res.video_width == 128 and res.video_height == 72
    assert res.metadata["mode"] == "prompted" and res.metadata["backward"] is True
    assert res.frames[0].object_ids == [11, 22]  # 22 first prompted on frame 2, found backward
    assert mask_iou(res.frames[3].mask_for(11).mask, dets.masks[0]) == 1.0
    assert mask_iou(res.frames[1].mask_for(22).mask, dets.masks[1]) == 1.0
    assert all(not m.occluded for f in res for m in f.masks)
    # the original module's call
    res2 = loader.track(frames, [dets.masks[0]], object_ids=[5])
    assert res2.object_ids == [5]


@needs_ultralytics
def test_live_stream_and_class_filter(yolo_model):
    loader = make_loader(yolo_model)
    frame = scene(64, 64, seed=3)
    live = loader.open_stream(64, 64, prompted=False)
    assert live.process(frame).object_ids
    assert live.process(frame).frame_idx == 1
    none = make_loader(yolo_model, classes=[79]).detect(frame)
    anyc = make_loader(yolo_model).detect(frame)
    assert all(int(c) == 79 for c in none.classes) and len(none) <= len(anyc)


@needs_ultralytics
def test_nothing_was_written_to_the_working_directory(yolo_model, workdir):
    """After building, saving elsewhere, predicting and tracking above: the CWD is still empty."""
    make_loader(yolo_model).track_video([scene(40, 60)] * 2)
    assert os.listdir(workdir) == []


def test_options_are_checked():
    assert YoloOptions.from_mapping({"classes": 0}).classes == [0]
    for bad in ({"conff": 0.3}, {"conf": 1.5}, {"imgsz": 100}, {"conf": 0.1, "low_conf": 0.2},
                {"classes": ["person"]}, {"max_lost_frames": -1}):
        with pytest.raises(InputError):
            YoloOptions.from_mapping(bad)


# --- without ultralytics -----------------------------------------------------------------------------------
def test_missing_ultralytics_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # simulate the extra not being installed
    with pytest.raises(DependencyError, match=r"pip install 'vidtrack\[yolo\]'"):
        create_tracking_loader("yolo11n-seg")
    from vidtrack.engines.yolo.runtime import import_ultralytics

    with pytest.raises(DependencyError, match=r"vidtrack\[yolo\]"):
        import_ultralytics("yolo11x-seg")
    # everything else still works: other engines, the identity layer, the CLI's one-line error
    assert create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu")).name == "sam2.1-tiny"
    from vidtrack.engines.yolo import synthetic
    from vidtrack.engines.yolo.identity import IdentityTracker

    v = synthetic.crossing(5)
    tr = IdentityTracker(height=v.height, width=v.width)
    assert [s.object_id for s in tr.step(v.detections[0])] == [1, 2]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(scene(32, 48, seed=i)).save(folder / f"{i:05d}.png")
    line = error_line(["track", str(folder), "--out", str(tmp_path / "out"), "--model", "yolo11n-seg",
                       "--box", "2,2,10,10", "--quiet"], capsys)
    assert "install the yolo extra" in line  # (rich markup in the CLI's error printer eats "[yolo]")


def test_pyproject_yolo_extra_lists_lap():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    line = next(li for li in text.splitlines() if li.startswith("yolo = "))
    assert "ultralytics" in line and "lap" in line
