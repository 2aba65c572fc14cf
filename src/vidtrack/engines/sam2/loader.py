"""The SAM 2 family behind :class:`TrackingModelLoader`: weights, the policy, and a :class:`Sam2Runner` per video
(the tracking skeleton itself is :mod:`vidtrack.tracking`)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidtrack.catalog import ModelSpec
from vidtrack.config import SEMANTICS, TrackingConfig
from vidtrack.engines.sam2.checkpoints import spec_for_weights
from vidtrack.engines.sam2.contract import ImageFeatures, Policy, PolicyFactory
from vidtrack.engines.sam2.engine import Sam2Engine, Sam2Session
from vidtrack.engines.sam2.interactive import InteractiveSession
from vidtrack.engines.sam2.runtime import EncoderAhead, apply_cpu_threads, compile_model, resolve_precision
from vidtrack.engines.sam2.state import FrameRecord
from vidtrack.engines.sam2.weights import check_image_size, load_sam2_model
from vidtrack.errors import InputError, NotLoadedError
from vidtrack.frame_access import open_frames
from vidtrack.tracking import Runner, StepResult, TrackingModelLoader
from vidtrack.types import Prompt, TrackingFrame, TrackingMask


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return dev


def _load_edgetam(config: TrackingConfig, hub_id: str, device: torch.device, dtype: torch.dtype) -> Any:
    """EdgeTAM weights for the EdgeTAM catalogue entries (engines/sam2/backends/edgetam_weights.py)."""
    from vidtrack.engines.sam2.backends.edgetam_weights import load_edgetam_model

    if config.model_config is not None:
        raise InputError("a model config (yaml) applies to SAM 2.1 .pt checkpoints only; EdgeTAM has one "
                         "architecture: drop --model-config")
    return load_edgetam_model(hub_id=hub_id, checkpoint_path=config.checkpoint_path, cache_dir=config.cache_dir,
                              download=config.download, device=device, dtype=dtype, image_size=config.image_size)


def _load_sam3_tracker(config: TrackingConfig, hub_id: str, device: torch.device, dtype: torch.dtype) -> Any:
    """SAM 3 tracker weights for the SAM 3 catalogue entries (engines/sam2/backends/sam3_tracker_weights.py)."""
    from vidtrack.engines.sam2.backends.sam3_tracker_weights import load_sam3_tracker_model

    if config.model_config is not None:
        raise InputError("a model config (yaml) applies to SAM 2.1 .pt checkpoints only; the SAM 3 tracker's "
                         "architecture is read from its weights: drop --model-config")
    return load_sam3_tracker_model(hub_id=hub_id, checkpoint_path=config.checkpoint_path,
                                   cache_dir=config.cache_dir, download=config.download, device=device,
                                   dtype=dtype, image_size=config.image_size)


class LiveTracker:
    """Push frames one by one and add prompts at any time (cameras, custom pipelines).

    ``add_prompt`` applies to the next frame processed (its ``frame_idx`` must be that frame's index).
    """

    def __init__(self, session: Sam2Session, model_name: str) -> None:
        self.session = session
        self.model_name = model_name
        self._pending: list[Prompt] = []
        self.frame_idx = 0

    def add_prompt(self, prompt: Prompt) -> None:
        self._pending.append(prompt)

    def process(self, frame: np.ndarray, frame_idx: int | None = None) -> TrackingFrame:
        idx = self.frame_idx if frame_idx is None else frame_idx
        prompts = [p.at(self.frame_idx) for p in self._pending]
        self._pending.clear()
        t0 = time.perf_counter()
        outputs, timings = self.session.step(self.frame_idx, frame, prompts)
        masks = self.session.to_tracking_masks(outputs)
        self.frame_idx += 1
        return TrackingFrame(idx, masks, {m.object_id: m.occluded for m in masks}, time.perf_counter() - t0,
                             dict(timings.stages))


class Sam2Loader(TrackingModelLoader):
    """SAM 2.1, SAMURAI and SAM2Long: one engine and a memory policy.

    ``policy`` builds the policy of each session (the factory :func:`vidtrack.create_tracking_loader` resolved
    from ``config.policy`` or the catalogue entry); ``policy_defaults`` are the options it gets under
    ``config.policy_options`` (the catalogue's, for its own policy). ``reference_policy`` is SAM 2.1's own
    policy class (``vidtrack.policies.MemoryPolicy``, handed down so the engine does not import the policies
    above it): interactive corrections read memory its way, and a policy that keeps its hooks reuses outputs.
    """

    def __init__(
        self, spec: ModelSpec, config: TrackingConfig, policy: PolicyFactory,
        policy_defaults: dict[str, Any] | None = None, *, reference_policy: type | None = None,
    ) -> None:
        super().__init__(spec, config)
        self.policy_factory = policy
        self.reference_policy = reference_policy
        self.policy_defaults = dict(policy_defaults or {})
        self.engine: Sam2Engine | None = None
        self.device = resolve_device(config.device)
        self.dtype, self.autocast_dtype = resolve_precision(config.dtype, config.autocast, self.device)
        if config.encoder_ahead not in ("auto", "on", "off"):
            raise InputError(f"encoder_ahead must be auto, on or off; got {config.encoder_ahead!r}")
        # auto: on a GPU the encoder overlaps the memory path on a second stream; on a CPU both would compete
        # for the same cores, so it is opt-in there
        self.encoder_ahead = config.encoder_ahead == "on" or (
            config.encoder_ahead == "auto" and self.device.type == "cuda")
        if config.resize not in ("transformers", "official"):
            raise InputError(f"resize must be 'transformers' or 'official'; got {config.resize!r}")
        _check_semantics(config.semantics)
        check_image_size(config.image_size, backend=self.spec.backend)  # before any weights are read

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self.engine is not None

    def load(self, model: Any | None = None) -> Sam2Loader:
        """Load the weights; ``model`` may be an already-built ``Sam2VideoModel`` (tests, custom configs)."""
        if self.engine is not None:
            return self
        if self.device.type == "cpu" or self.config.threads:
            apply_cpu_threads(self.config.threads)
        if model is None and self.spec.backend == "edgetam":
            model = _load_edgetam(self.config, self.spec.hub_id, self.device, self.dtype)
        elif model is None and self.spec.backend == "sam3-tracker":
            model = _load_sam3_tracker(self.config, self.spec.hub_id, self.device, self.dtype)
        elif model is None:
            model = load_sam2_model(
                size=self.spec.size,
                hub_id=self.spec.hub_id,
                checkpoint_path=self.config.checkpoint_path,
                model_config=self.config.model_config,
                image_size=self.config.image_size,
                cache_dir=self.config.cache_dir,
                download=self.config.download,
                device=self.device,
                dtype=self.dtype,
            )
            self.spec = spec_for_weights(self.spec, model)  # name what runs: the size is read from the weights
        else:
            check_image_size(self.config.image_size, model, self.spec.backend)
            model = model.to(device=self.device, dtype=self.dtype)
        if self.config.compile:
            compile_model(model)
        engine = Sam2Engine(model, device=self.device, resize=self.config.resize,  # type: ignore[arg-type]
                            max_batch=self.config.max_batch, autocast_dtype=self.autocast_dtype)
        self.engine = engine
        if self.config.compile:
            engine.warmup(self.new_policy)
        return self

    def unload(self) -> None:
        self.engine = None
        self.last_runner = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _engine(self) -> Sam2Engine:
        if self.engine is None:
            raise NotLoadedError(f"{self.name} is not loaded; call load() first")
        return self.engine

    def new_policy(self) -> Policy:
        """A fresh policy for one session (state is per session and object, never shared)."""
        eng = self._engine()
        options = {**self.policy_defaults, **self.config.policy_options}
        built = self.policy_factory(num_maskmem=eng.num_maskmem, max_obj_ptrs=eng.max_obj_ptrs, **options)
        if not isinstance(built, Policy):
            raise InputError(f"policy {self.policy_name} built a {type(built).__name__}, not a memory policy "
                             "(subclass vidtrack.policies.MemoryPolicy)")
        return built

    @property
    def policy_name(self) -> str:
        """What ``TrackingResult.metadata["policy"]`` says: the catalogue's name, or the configured policy's."""
        if self.config.policy is None:
            return self.spec.policy
        if isinstance(self.config.policy, str):
            return self.config.policy
        return str(getattr(self.config.policy, "name", None) or getattr(self.config.policy, "__name__", "custom"))

    def open_stream(self, height: int, width: int) -> LiveTracker:
        """A push-style tracker for frames of ``height`` x ``width`` (unknown length)."""
        session = self._engine().new_session(self.new_policy(), height, width)
        return LiveTracker(session, self.name)

    def open_session(self, video: Any, *, work_dir: Any = None, feature_cache_frames: int = 16,
                     corrections_as_cond: bool = True) -> InteractiveSession:
        """An interactive session on ``video`` (a video file, a folder of frames, a (T, H, W, 3) uint8 array or
        a list of frames) with Meta's ``SAM2VideoPredictor`` semantics (docs/SESSION.md). ``work_dir``: where
        the session spills per-frame memories (a temporary folder by default, removed by ``close()``);
        ``feature_cache_frames``: image features kept in RAM; ``corrections_as_cond``: Meta's
        ``add_all_frames_to_correct_as_cond`` (a correction on a tracked frame becomes a conditioning frame)."""
        engine = self._engine()
        if isinstance(feature_cache_frames, bool) or not isinstance(feature_cache_frames, int) \
                or feature_cache_frames < 1:
            raise InputError(f"feature_cache_frames must be an integer >= 1; got {feature_cache_frames!r}")
        if self.reference_policy is None:
            raise InputError("this loader was built without SAM 2.1's reference policy; make it with "
                             "vidtrack.create_tracking_loader to open interactive sessions")
        self.new_policy()  # a policy that cannot be built fails here, before the video is read
        frames = open_frames(video)
        return InteractiveSession(engine, self.new_policy, frames, reference_policy=self.reference_policy,
                                  work_dir=work_dir,
                                  feature_cache_frames=feature_cache_frames, corrections_as_cond=corrections_as_cond,
                                  model_name=self.name, policy_name=self.policy_name)

    # --- the tracking skeleton's hooks (vidtrack.tracking) ----------------------------------------------------
    @property
    def last_session(self) -> Sam2Session | None:
        """The last video's forward session (inspection: state size, policy state); freed by unload()."""
        return self.last_runner.session if isinstance(self.last_runner, Sam2Runner) else None

    def prompts_first(self) -> bool:
        return _check_semantics(self.config.semantics) == "official"

    def new_runner(self, height: int, width: int, num_frames: int | None, *, prompted: bool,
                   prompts_first: bool) -> Sam2Runner:
        session = self._engine().new_session(self.new_policy(), height, width, num_frames=num_frames)
        return Sam2Runner(self, session, _FrameCache(), prompts_first=prompts_first)

    def result_metadata(self, prompts: list[Prompt], backward: bool) -> dict[str, Any]:
        session = self.last_session
        extra = session.policy.result_metadata() if session is not None else {}
        return {"policy": self.policy_name, "semantics": self.config.semantics, "backward": self.config.backward,
                **extra}


@dataclass
class _Ahead:
    """A frame's image features computed one frame ahead (:class:`EncoderAhead`) and the encoder's seconds."""

    features: ImageFeatures
    seconds: float


class Sam2Runner(Runner):
    """One :class:`Sam2Session` behind the tracking skeleton: steps by position, keeps the frames a later pass
    reads again spilled to disk (:class:`_FrameCache`), revises with the policy's final masks.

    Prompts first (Meta's order), the forward runner also keeps, per object, the records of positions
    ``s .. s + max_ptrs - 2`` (``s`` the earliest prompted position) as they were when stored: what Meta's
    reverse pass from ``s - 1``, run on the same inference state, reads; :meth:`reverse` seeds its session
    with them and with the conditioning frames. Causally, :meth:`reverse` is a fresh reverse session.
    """

    def __init__(self, loader: Sam2Loader, session: Sam2Session, frames: _FrameCache, *, prompts_first: bool,
                 owns_frames: bool = True) -> None:
        self.loader = loader
        self.session = session
        self.frames = frames
        self.prompts_first = prompts_first
        self.owns_frames = owns_frames
        self.start: int | None = None  # prompts first: the earliest prompted position, set at the first step
        self.seed: dict[int, dict[int, FrameRecord]] = {}

    def feed(self, frames: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, object]]:
        if not self.loader.encoder_ahead:
            return super().feed(frames)
        return ((i, f, _Ahead(feats, secs)) for i, f, feats, secs in EncoderAhead(self.session.engine, frames))

    def add_prompts(self, pos: int, frame: np.ndarray, prompts: list[Prompt], *, keep: bool = False) -> StepResult:
        if keep:
            self.frames.offer(pos, frame)
        outputs, timings = self.session.add_prompts(pos, frame, prompts)
        return StepResult(self.session.to_tracking_masks(outputs), dict(timings.stages))

    def step(
        self, pos: int, frame: np.ndarray | None, prompts: list[Prompt], *, ahead: object = None,
        keep: bool = False,
    ) -> StepResult:
        session = self.session
        if frame is None:
            frame = self.frames.get(pos)
        elif keep:
            self.frames.offer(pos, frame)
        features = ahead.features if isinstance(ahead, _Ahead) else None
        outputs, timings = session.step(pos, frame, prompts, features=features)
        stages = dict(timings.stages)
        if isinstance(ahead, _Ahead):  # encoder time spent in the worker, overlapped with the previous frame
            stages["image_encoder"] = ahead.seconds
        if self.prompts_first and not session.reverse:
            self._keep_for_reverse(pos)
        return StepResult(session.to_tracking_masks(outputs), stages)

    def _keep_for_reverse(self, pos: int) -> None:
        session = self.session
        if self.start is None:
            self.start = min(min(t.cond) for t in session.tracks.values())
        s = self.start
        if not (self.loader.config.backward and s > 0 and pos - s < session.max_ptrs - 1):
            return
        for oid, track in session.tracks.items():
            rec = track.non_cond.get(pos)
            if rec is not None:  # a copy: later pruning drops the original's spatial memory
                kept = dataclasses.replace(rec)
                if pos - s >= session.engine.num_maskmem - 1:  # read backward for its pointer only
                    kept.maskmem_features = None
                self.seed.setdefault(oid, {})[pos] = kept

    def kept(self, pos: int) -> np.ndarray:
        return self.frames.get(pos)

    def reverse(self, num_frames: int) -> Sam2Runner:
        forward = self.session
        session = forward.engine.new_session(self.loader.new_policy(), forward.height, forward.width,
                                             num_frames=num_frames, reverse=True)
        if self.prompts_first:  # Meta's reverse pass runs on the forward pass's state
            for oid, ftrack in sorted(forward.tracks.items()):
                session.seed_object(oid, ftrack.cond, self.seed.get(oid, {}))
        return Sam2Runner(self.loader, session, self.frames, prompts_first=self.prompts_first, owns_frames=False)

    def revisions(self) -> dict[int, list[TrackingMask]]:
        return self.session.final_masks()

    def close(self) -> None:
        if self.owns_frames:
            self.frames.close()


def _check_semantics(value: str) -> str:
    if value not in SEMANTICS:
        raise InputError(f"semantics must be one of {', '.join(SEMANTICS)}; got {value!r}")
    return value


class _FrameCache:
    """Frames a later pass reads again (a backward pass, or replayed after the prompts were processed first),
    spilled to a temporary file (never held in RAM), by position; kept positions are consecutive."""

    def __init__(self) -> None:
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._file: Any = None
        self._shape: tuple[int, ...] | None = None
        self._first_pos: int | None = None
        self._count = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def offer(self, pos: int, frame: np.ndarray) -> None:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="vidtrack-frames-")
            self._file = open(Path(self._dir.name) / "frames.u8", "w+b")  # noqa: SIM115
            self._shape = frame.shape
            self._first_pos = pos
        assert self._first_pos is not None and pos == self._first_pos + self._count and self._file is not None
        self._file.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self._count += 1

    def get(self, pos: int) -> np.ndarray:
        assert self._file is not None and self._shape is not None and self._first_pos is not None
        assert self._first_pos <= pos < self._first_pos + self._count, f"frame at position {pos} was not kept"
        n = int(np.prod(self._shape))
        self._file.flush()
        self._file.seek((pos - self._first_pos) * n)
        return np.frombuffer(bytearray(self._file.read(n)), dtype=np.uint8).reshape(self._shape)
