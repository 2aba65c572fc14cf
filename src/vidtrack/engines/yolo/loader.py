"""YOLO11-seg behind :class:`TrackingModelLoader`: weights, per-frame detection, identity, streaming.

ultralytics is used for detection and masks only (``YOLO.predict`` frame by frame, fixed arguments for a
whole video); identity over time is :mod:`vidtrack.engines.yolo.identity`. Prompts follow the SAM 2
engines: masks, boxes or points with the user's object ids on any frame; without prompts every detection of
the chosen classes becomes an object with a fresh id (auto mode).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from vidtrack.catalog import ModelSpec
from vidtrack.config import TrackingConfig
from vidtrack.engines.yolo.identity import Detections, IdentityTracker, ObjectState, Patch
from vidtrack.engines.yolo.masks import unletterbox
from vidtrack.engines.yolo.options import YoloOptions
from vidtrack.engines.yolo.runtime import import_ultralytics
from vidtrack.engines.yolo.synthetic import color_embedding
from vidtrack.errors import InputError, NotLoadedError, WeightsError
from vidtrack.tracking import Runner, StepResult, TrackingModelLoader
from vidtrack.types import RLE, Prompt, TrackingFrame, TrackingMask, rle_encode

WEIGHT_SUFFIXES = (".pt", ".onnx", ".torchscript", ".engine", ".yaml", ".yml")


def resolve_weights(spec: ModelSpec, config: TrackingConfig) -> str:
    """An absolute path to existing weights; never a bare name (ultralytics would download it into the CWD).

    ``checkpoint_path`` wins (any ultralytics ``-seg`` checkpoint, or a model ``.yaml`` for random weights);
    otherwise the catalogue file name (``yolo11n-seg.pt``...) is looked up in ``cache_dir`` and the current
    directory.
    """
    if config.checkpoint_path:
        p = Path(config.checkpoint_path).expanduser()
        if p.suffix.lower() in (".yaml", ".yml") and not p.exists():
            return p.name  # a bundled architecture (e.g. yolo11n-seg.yaml): built locally, random weights
        if not p.exists():
            raise WeightsError(f"{spec.name}: checkpoint {p} does not exist; pass the path of a YOLO -seg .pt file")
        if p.is_dir() or p.suffix.lower() not in WEIGHT_SUFFIXES:
            raise WeightsError(f"{spec.name}: {p} is not an ultralytics weights file (.pt, .onnx, .torchscript)")
        return str(p.resolve())
    name = spec.hub_id
    dirs = [Path(config.cache_dir).expanduser()] if config.cache_dir else []
    dirs.append(Path.cwd())
    for d in dirs:
        for cand in (d / name, d / "ultralytics" / name):
            if cand.is_file():
                return str(cand.resolve())
    where = ", ".join(str(d) for d in dirs)
    raise WeightsError(
        f"{spec.name}: weights file {name} not found (looked in {where}); vidtrack never downloads YOLO "
        f"weights: get {name} from https://github.com/ultralytics/assets/releases and pass its path as the "
        "checkpoint (--checkpoint) or put it in the cache dir"
    )


def _device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or device == "mps" or device.startswith("cuda:"):
        return device
    raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


class YoloLoader(TrackingModelLoader):
    """YOLO11-seg (any ultralytics segmentation checkpoint): per-frame masks plus our identity layer."""

    def __init__(self, spec: ModelSpec, config: TrackingConfig) -> None:
        super().__init__(spec, config)
        self.options = YoloOptions.from_mapping(config.policy_options)
        self.device = _device(config.device)
        if self.options.half and not self.device.startswith("cuda"):
            raise InputError("half (FP16) needs a CUDA device; drop the half option on CPU/MPS")
        self.model: Any = None
        self.weights: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self.model is not None

    def load(self, model: Any | None = None) -> YoloLoader:
        """Load the weights; ``model`` may be an already-built ``ultralytics.YOLO`` (tests, custom models)."""
        if self.model is not None:
            return self
        ultralytics = import_ultralytics(self.name)
        if self.config.threads:
            import torch

            torch.set_num_threads(self.config.threads)
        if model is None:
            self.weights = resolve_weights(self.spec, self.config)
            try:
                model = ultralytics.YOLO(self.weights, task="segment")
            except Exception as e:  # unreadable, wrong format, blocked by safe loading...
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise WeightsError(f"{self.name}: cannot load {self.weights}: {msg}") from None
        if getattr(model, "task", None) != "segment":
            raise WeightsError(
                f"{self.name}: {self.weights or 'the model'} is a {getattr(model, 'task', '?')} model, not a "
                "segmentation (-seg) model"
            )
        self.model = model
        return self

    def unload(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _model(self) -> Any:
        if self.model is None:
            raise NotLoadedError(f"{self.name} is not loaded; call load() first")
        return self.model

    @property
    def class_names(self) -> dict[int, str]:
        return dict(getattr(self._model(), "names", {}) or {})

    # --- one frame ---------------------------------------------------------------------------------------
    def detect(self, frame: np.ndarray) -> Detections:
        """Run the detector on one RGB frame; masks come back at the frame's resolution."""
        model = self._model()
        h, w = frame.shape[:2]
        bgr = np.ascontiguousarray(frame[..., ::-1])  # ultralytics takes numpy frames as BGR
        r = model.predict(bgr, device=self.device, **self.options.predict_kwargs())[0]
        if r.masks is None or r.boxes is None or len(r.boxes) == 0:
            return Detections.empty()
        boxes_t = r.boxes.xyxy
        full = unletterbox(r.masks.data, (h, w), boxes_t)
        keep = full.reshape(len(full), -1).any(axis=1)
        boxes = boxes_t.cpu().numpy().astype(np.float64)[keep]
        scores = r.boxes.conf.cpu().numpy().astype(np.float64)[keep]
        classes = r.boxes.cls.cpu().numpy().astype(np.int64)[keep]
        masks = list(full[keep])
        emb = np.array([color_embedding(frame, m) for m in masks]) if self.options.appearance and masks else None
        return Detections.from_masks(masks, scores, classes, boxes=boxes, embeddings=emb)

    def new_tracker(self, height: int, width: int, prompted: bool) -> IdentityTracker:
        return IdentityTracker(self.options.identity_options(), height=height, width=width, prompted=prompted)

    def open_stream(self, height: int, width: int, *, prompted: bool = True) -> LiveYoloTracker:
        """A push-style tracker for frames of ``height`` x ``width`` (cameras, custom pipelines)."""
        self._model()
        return LiveYoloTracker(self, height, width, prompted)

    # --- the tracking skeleton's hooks (vidtrack.tracking) ----------------------------------------------------
    requires_prompts = False  # without prompts every detection is tracked (auto ids)

    def new_runner(self, height: int, width: int, num_frames: int | None, *, prompted: bool,
                   prompts_first: bool) -> YoloRunner:
        return YoloRunner(self, self.new_tracker(height, width, prompted), height, width, {})

    def result_metadata(self, prompts: list[Prompt], backward: bool) -> dict[str, Any]:
        return {"backend": "ultralytics", "mode": "prompted" if prompts else "auto", "backward": backward,
                "options": dict(vars(self.options)), "class_names": self.class_names}


class YoloRunner(Runner):
    """Detection plus the identity layer, frame by frame. Frames a backward pass revisits keep their
    detections (without full-frame masks): the backward pass re-runs association only, never the detector."""

    def __init__(self, loader: YoloLoader, tracker: IdentityTracker, height: int, width: int,
                 kept: dict[int, Detections]) -> None:
        self.loader = loader
        self.tracker = tracker
        self.height, self.width = height, width
        self.detections = kept
        self._empty = rle_encode(np.zeros((height, width), dtype=bool))

    def step(
        self, pos: int, frame: np.ndarray | None, prompts: list[Prompt], *, ahead: object = None,
        keep: bool = False,
    ) -> StepResult:
        t0 = time.perf_counter()
        dets = self.detections[pos] if frame is None else self.loader.detect(frame)
        t1 = time.perf_counter()
        states = self.tracker.step(dets, prompts)
        t2 = time.perf_counter()
        masks = [_to_mask(s, dets, self.height, self.width, self._empty) for s in states]
        t3 = time.perf_counter()
        if keep:
            self.detections[pos] = _light(dets)
        if frame is None:  # a revisited frame: association only
            return StepResult(masks, {"associate": t3 - t0})
        return StepResult(masks, {"detect": t1 - t0, "associate": t2 - t1, "encode": t3 - t2})

    def reverse(self, num_frames: int) -> YoloRunner:
        tracker = self.loader.new_tracker(self.height, self.width, prompted=True)
        return YoloRunner(self.loader, tracker, self.height, self.width, self.detections)


class LiveYoloTracker:
    """Push frames one by one; ``add_prompt`` applies to the next frame processed."""

    def __init__(self, loader: YoloLoader, height: int, width: int, prompted: bool) -> None:
        self.loader = loader
        self.height, self.width = height, width
        self.tracker = loader.new_tracker(height, width, prompted)
        self._pending: list[Prompt] = []
        self._empty = rle_encode(np.zeros((height, width), dtype=bool))
        self.frame_idx = 0

    def add_prompt(self, prompt: Prompt) -> None:
        self._pending.append(prompt.validate(self.height, self.width))

    def process(self, frame: np.ndarray, frame_idx: int | None = None) -> TrackingFrame:
        if frame.shape[:2] != (self.height, self.width):
            raise InputError(f"frame is {frame.shape[1]}x{frame.shape[0]}, not {self.width}x{self.height}")
        idx = self.frame_idx if frame_idx is None else frame_idx
        t0 = time.perf_counter()
        dets = self.loader.detect(frame)
        states = self.tracker.step(dets, self._pending)
        self._pending = []
        masks = [_to_mask(s, dets, self.height, self.width, self._empty) for s in states]
        self.frame_idx += 1
        return TrackingFrame(idx, masks, {m.object_id: m.occluded for m in masks}, time.perf_counter() - t0)


def _light(d: Detections) -> Detections:
    """The detections without full-frame masks (patches are enough to rebuild them), for the backward pass."""
    return Detections(d.boxes, d.scores, d.classes, d.patches, d.embeddings, None)


def _to_mask(s: ObjectState, dets: Detections, height: int, width: int, empty: RLE) -> TrackingMask:
    if s.detection is not None:
        j = s.detection
        full = dets.masks[j] if dets.masks is not None else dets.patches[j].to_mask(height, width)
        return TrackingMask(rle=rle_encode(full), confidence=s.confidence, object_id=s.object_id,
                            visibility=1.0, occluded=False)
    if s.prompt_mask is not None:
        return TrackingMask(rle=rle_encode(s.prompt_mask.to_mask(height, width)), confidence=1.0,
                            object_id=s.object_id, visibility=1.0, occluded=False)
    return TrackingMask(rle=dict(empty), confidence=0.0, object_id=s.object_id, visibility=0.0, occluded=True)


__all__ = ["LiveYoloTracker", "Patch", "YoloLoader", "YoloRunner", "resolve_weights"]
