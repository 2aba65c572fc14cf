"""An interactive session: click, see the mask, propagate, correct, propagate again (docs/SESSION.md).

:class:`InteractiveSession` follows Meta's ``SAM2VideoPredictor`` (sam2 1.1.0) call for call:

* :meth:`~InteractiveSession.add_prompt` is ``add_new_points_or_box`` / ``add_new_mask``: points accumulate on
  a frame (a box starts it afresh); on a frame not yet tracked for the object the output is computed without
  memory (``is_init_cond_frame``), on a tracked frame *with* the object's memory (a correction); the frame's
  previous low-res logits are the mask input of a further click; the output is kept aside ("temporary")
  without memory until the next propagation;
* :meth:`~InteractiveSession.propagate` is ``propagate_in_video``: the temporary outputs are memory-encoded
  first (``propagate_in_video_preflight``), then every frame from ``start`` (default: the earliest
  conditioning frame of any object) is tracked in the chosen direction; conditioning frames pass through,
  every other frame reads the object's conditioning frames (all of them, later ones included) and its
  previous frames in the direction of travel;
* :meth:`~InteractiveSession.clear_prompts`, :meth:`~InteractiveSession.remove_object`,
  :meth:`~InteractiveSession.reset` are ``clear_all_prompts_in_frame``, ``remove_object``, ``reset_state``.

One setting differs from the yaml default, on purpose: ``corrections_as_cond=True`` (Meta's
``add_all_frames_to_correct_as_cond``, which its online demo turns on): a correction on a tracked frame becomes a
conditioning frame. With the yaml default (False, available) the next propagation recomputes the corrected
frame from memory and the correction is lost (facebookresearch/sam2#719, #731).

What is computed again and what is kept:

* image features of the last ``feature_cache_frames`` frames used (a bounded LRU, :class:`FeatureCache`);
* every object's output on every frame it was tracked on (what Meta keeps in ``output_dict_per_obj``): scores
  and the mask (RLE) in RAM, the memory features, object pointer and low-res logits in a :class:`TensorStore`
  (a small RAM LRU spilling to files in ``work_dir``);
* a propagation recomputes an object's frame only when the records that frame would read (its conditioning
  frames and the previous frames in the window, identified by the keys under which they were stored) differ
  from those it read when it was last computed in the same direction. Recomputing a frame with the same inputs
  gives the same output, so this keeps Meta's results while skipping the work: after a correction on one
  object the other objects are not recomputed, and a frame where no object needs work is not even decoded.
  Policies with per-object state (SAMURAI's Kalman filter, SAM2Long's tree) always recompute.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidtrack.engines.sam2.contract import ImageFeatures, Policy, StepTimings
from vidtrack.engines.sam2.engine import Sam2Engine, Sam2Session
from vidtrack.engines.sam2.state import FrameNote, FrameRecord, ObjectTrack
from vidtrack.errors import InputError
from vidtrack.frame_access import FrameAccess
from vidtrack.types import Prompt, TrackingFrame, TrackingMask, TrackingResult

__all__ = ["DIRECTIONS", "FeatureCache", "InteractiveSession", "TensorStore"]

DIRECTIONS = ("forward", "backward", "both")
_REUSE_HOOKS = ("new_object_state", "memory_reads", "memory_frames", "pointer_frames", "choose",
                "choose_candidate", "remember", "record_stored", "final_masks")


# --- storage -----------------------------------------------------------------------------------------------

class TensorStore:
    """Immutable groups of tensors by integer key: the newest ``ram_items`` groups in RAM, the others in one
    file each under ``directory`` (raw bytes; shapes and dtypes kept in RAM). A group is written once, when it
    leaves the RAM cache, and read back on demand (then cached again)."""

    def __init__(self, directory: Path, ram_items: int = 64) -> None:
        self.directory = directory
        self.ram_items = max(1, int(ram_items))
        self._ram: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._disk: dict[int, list[tuple[str, torch.dtype, tuple[int, ...], int]]] = {}
        self._next = 0
        self.disk_bytes = 0
        self.reads = 0

    def put(self, tensors: dict[str, torch.Tensor]) -> int:
        key = self._next
        self._next += 1
        self._ram[key] = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        self._evict()
        return key

    def get(self, key: int) -> dict[str, torch.Tensor]:
        hit = self._ram.get(key)
        if hit is not None:
            self._ram.move_to_end(key)
            return hit
        layout = self._disk[key]
        data = (self.directory / f"{key}.bin").read_bytes()
        self.reads += 1
        out: dict[str, torch.Tensor] = {}
        at = 0
        for name, dtype, shape, n in layout:
            buf = torch.frombuffer(bytearray(data[at : at + n]), dtype=torch.uint8)
            out[name] = buf.view(dtype).reshape(shape)
            at += n
        self._ram[key] = out
        self._evict()
        return out

    def drop(self, key: int) -> None:
        self._ram.pop(key, None)
        layout = self._disk.pop(key, None)
        if layout is not None:
            self.disk_bytes -= sum(x[3] for x in layout)
            (self.directory / f"{key}.bin").unlink(missing_ok=True)

    def ram_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for g in self._ram.values() for t in g.values())

    def _evict(self) -> None:
        while len(self._ram) > self.ram_items:
            key, group = self._ram.popitem(last=False)
            if key in self._disk:
                continue  # already written (read back from disk): nothing to do
            layout = []
            chunks = []
            for name, t in group.items():
                raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                layout.append((name, t.dtype, tuple(t.shape), len(raw)))
                chunks.append(raw)
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{key}.bin").write_bytes(b"".join(chunks))
            self._disk[key] = layout
            self.disk_bytes += sum(x[3] for x in layout)


def slim_features(feats: ImageFeatures) -> ImageFeatures:
    """What the memory path and the decoder read of a frame's features: the top level with its position
    encoding, and the two high-resolution levels (the other levels' copies and encodings are dropped)."""
    return ImageFeatures([feats.top], [feats.vision_pos[-1]], list(feats.high_res))


def features_nbytes(feats: ImageFeatures) -> int:
    seen: set[int] = set()
    n = 0
    for t in [*feats.vision_feats, *feats.vision_pos, *feats.high_res]:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            n += t.untyped_storage().nbytes()
    return n


class FeatureCache:
    """Image features of the most recently used frames (an LRU of ``capacity`` frames)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InputError(f"feature_cache_frames must be >= 1; got {capacity}")
        self.capacity = int(capacity)
        self._items: OrderedDict[int, ImageFeatures] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, frame_idx: int) -> ImageFeatures | None:
        feats = self._items.get(frame_idx)
        if feats is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(frame_idx)
        return feats

    def put(self, frame_idx: int, feats: ImageFeatures) -> None:
        self._items[frame_idx] = feats
        self._items.move_to_end(frame_idx)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def frames(self) -> list[int]:
        return list(self._items)

    def nbytes(self) -> int:
        return sum(features_nbytes(f) for f in self._items.values())

    def clear(self) -> None:
        self._items.clear()


# --- per-object state ----------------------------------------------------------------------------------------

@dataclass
class _Entry:
    """One object's output on one frame (Meta's compact output dict): what a record holds besides tensors
    (scores, the policy's note), the mask as RLE, the store key of its tensors (low-res logits, object
    pointer, memory features once encoded), the direction of the pass that computed it and the keys of the
    records it read (None: never reused). Only these few hundred bytes stay in RAM per object and frame."""

    frame_idx: int
    is_cond: bool
    score: float  # object-score logit
    iou: float
    note: FrameNote | None
    mask: TrackingMask
    key: int
    reverse: bool = False
    inputs: tuple[int, ...] | None = None


@dataclass
class _Object:
    """Meta's per-object slices of the inference state."""

    object_id: int
    points: dict[int, tuple[tuple[float, float, float, float] | None, np.ndarray, np.ndarray]] = field(
        default_factory=dict)  # frame -> (box, clicks (N, 2) pixels, labels (N,))
    mask_frames: set[int] = field(default_factory=set)
    cond: dict[int, _Entry] = field(default_factory=dict)
    non_cond: dict[int, _Entry] = field(default_factory=dict)
    temp_cond: dict[int, _Entry] = field(default_factory=dict)
    temp_non_cond: dict[int, _Entry] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def entries(self) -> Iterator[_Entry]:
        for d in (self.cond, self.non_cond, self.temp_cond, self.temp_non_cond):
            yield from d.values()

    def current(self, t: int) -> _Entry | None:
        """What the object shows on frame ``t`` now: a pending click first, then the stored output."""
        return self.temp_cond.get(t) or self.temp_non_cond.get(t) or self.cond.get(t) or self.non_cond.get(t)


def _policy_reuses(policy: Policy, reference: type) -> bool:
    """Whether outputs can be reused across propagations: the policy reads and decides like SAM 2.1 (the
    ``reference`` class's hooks, inherited unchanged), with no state beyond the bank (so an output is a function
    of the records it read)."""
    return isinstance(policy, reference) and all(
        getattr(type(policy), h) is getattr(reference, h) for h in _REUSE_HOOKS)


# --- the session -------------------------------------------------------------------------------------------

class InteractiveSession:
    """Prompts, corrections and propagations on one video, with Meta's ``SAM2VideoPredictor`` semantics.

    Made by ``Sam2Loader.open_session(video)``. Frame indices are the video's (0-based); coordinates are pixels
    of the video frame. Not thread-safe for concurrent calls beyond this: calls are serialised by a lock, and
    prompts cannot change while a propagation is being iterated (close the generator to cancel it first).
    """

    def __init__(
        self,
        engine: Sam2Engine,
        policy_factory: Callable[[], Policy],
        frames: FrameAccess,
        *,
        reference_policy: type,
        work_dir: str | Path | None = None,
        feature_cache_frames: int = 16,
        corrections_as_cond: bool = True,
        store_ram_items: int = 64,
        model_name: str = "",
        policy_name: str = "",
    ) -> None:
        self.engine = engine
        self._policy_factory = policy_factory
        self._frames = frames
        self.corrections_as_cond = bool(corrections_as_cond)
        self.model_name = model_name
        self.policy_name = policy_name
        self.features = FeatureCache(feature_cache_frames)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vidtrack-session-")
            root = Path(self._tmp.name)
        else:
            root = Path(work_dir)
            root.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self.work_dir = root
        self.store = TensorStore(root / "records", store_ram_items)
        self._reference = reference_policy
        self._vanilla: Policy = reference_policy(num_maskmem=engine.num_maskmem, max_obj_ptrs=engine.max_obj_ptrs)
        self._objects: dict[int, _Object] = {}
        self._prompts: list[Prompt] = []
        self._lock = threading.RLock()
        self._running = False
        self._closed = False
        self.seconds = 0.0
        self.frames_computed = 0  # object-frames run through the model by propagations (reuse skips them)
        self.frames_reused = 0

    # --- video -------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self._frames.num_frames

    @property
    def height(self) -> int:
        return self._frames.height

    @property
    def width(self) -> int:
        return self._frames.width

    @property
    def fps(self) -> float | None:
        return self._frames.fps

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB (read-only). Waits for a running propagation's current frame (the
        decoder is shared)."""
        with self._lock:
            return self._frames.frame(i)

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    @property
    def prompts(self) -> list[Prompt]:
        """Every prompt as given, in order (cleared and removed ones left out)."""
        return list(self._prompts)

    # --- prompts -----------------------------------------------------------------------------------------
    def add_prompt(
        self,
        frame_idx: int,
        object_id: int,
        *,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        box: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        clear_old_points: bool = False,
    ) -> TrackingFrame:
        """Add points (xy pixels, labels 1 positive / 0 negative), a box (xyxy pixels) or a mask ((H, W) bool)
        for one object on one frame; returns every object's mask on that frame.

        Points accumulate with those already on this frame and object unless ``clear_old_points``; a box
        always starts the frame's prompt afresh (box first, then clicks, as Meta requires). A further click
        refines the last output (its low-res logits are the decoder's mask input)."""
        t0 = time.perf_counter()
        with self._lock:
            self._check_idle()
            t = self._check_frame(frame_idx)
            prompt = self._make_prompt(t, object_id, points, labels, box, mask)
            oid = prompt.object_id
            obj = self._objects.get(oid)
            if obj is None:
                obj = self._objects[oid] = _Object(oid)
            self._prompts.append(prompt)
            is_init = t not in obj.tracked
            reverse = False if is_init else obj.tracked[t]
            is_cond = is_init or self.corrections_as_cond
            temp = obj.temp_cond if is_cond else obj.temp_non_cond
            eng = self.engine
            ps = eng.new_session(self._policy_factory(), self.height, self.width, num_frames=self.num_frames,
                                 reverse=reverse)
            track = ps._track(oid)
            timings = StepTimings()
            with torch.inference_mode(), eng.autocast():
                feats = self._features(t, timings)
                if prompt.mask is not None:
                    obj.points.pop(t, None)
                    obj.mask_frames.add(t)
                    out, rec, _ = ps._prompted_frame(track, t, feats, prompt, timings)
                else:
                    old = None if (clear_old_points or prompt.box is not None) else obj.points.get(t)
                    new_pts = np.zeros((0, 2), np.float32) if prompt.points is None else prompt.points
                    new_lab = np.zeros((0,), np.int32) if prompt.labels is None else prompt.labels
                    if old is not None:
                        acc = (old[0], np.concatenate([old[1], new_pts]), np.concatenate([old[2], new_lab]))
                    else:
                        acc = (prompt.box, new_pts, new_lab)
                    obj.points[t] = acc
                    obj.mask_frames.discard(t)
                    prev = temp.get(t) or obj.cond.get(t) or obj.non_cond.get(t)
                    prev_logits = None if prev is None else self.store.get(prev.key)["low"].to(eng.device)
                    memory = None if is_init else self._correction_read(obj, track, t, ps)
                    full = Prompt(t, oid, box=acc[0], points=acc[1], labels=acc[2])
                    out, rec, _ = ps._prompted_frame(track, t, feats, full, timings, prev_logits=prev_logits,
                                                     memory=memory)
                m = ps.to_tracking_masks([out])[0]
                key = self.store.put({"low": out.low_res_logits, "ptr": rec.obj_ptr})
            old_entry = temp.pop(t, None)
            if old_entry is not None:
                self.store.drop(old_entry.key)
            temp[t] = _Entry(t, is_cond, rec.object_score_logit, rec.iou, rec.note, m, key)
            result = self._consolidated(t, is_cond)
            elapsed = time.perf_counter() - t0
            self.seconds += elapsed
            result.processing_time = elapsed
            result.timings = dict(timings.stages)
            return result

    def clear_prompts(self, frame_idx: int, object_id: int | None = None) -> TrackingFrame:
        """Remove the prompts of one object (or of every object) on a frame (Meta's
        ``clear_all_prompts_in_frame``): a conditioning frame becomes an ordinary tracked frame, keeping its
        output until the next propagation recomputes it. Returns every object's mask on that frame."""
        with self._lock:
            self._check_idle()
            t = self._check_frame(frame_idx)
            if object_id is None:
                objs = list(self._objects.values())
            else:
                obj = self._objects.get(int(object_id))
                if obj is None:
                    raise InputError(f"no object {object_id} in this session; objects: {self.object_ids}")
                objs = [obj]
            for obj in objs:
                obj.points.pop(t, None)
                obj.mask_frames.discard(t)
                for temp in (obj.temp_cond, obj.temp_non_cond):
                    e = temp.pop(t, None)
                    if e is not None:
                        self.store.drop(e.key)
                out = obj.cond.pop(t, None)
                if out is not None:  # downgraded to a non-conditioning output
                    old = obj.non_cond.pop(t, None)
                    if old is not None:
                        self.store.drop(old.key)
                    out.is_cond = False
                    out.inputs = None
                    obj.non_cond[t] = out
                    obj.tracked.pop(t, None)
                ids = {obj.object_id}
                self._prompts = [p for p in self._prompts if not (p.frame_idx == t and p.object_id in ids)]
            is_cond = any(t in o.temp_cond for o in self._objects.values())
            return self._consolidated(t, is_cond)

    def remove_object(self, object_id: int) -> None:
        """Forget an object: its prompts and outputs. Other objects are unaffected (objects are tracked
        independently, as in Meta's predictor)."""
        with self._lock:
            self._check_idle()
            obj = self._objects.pop(int(object_id), None)
            if obj is None:
                raise InputError(f"no object {object_id} in this session; objects: {self.object_ids}")
            for e in obj.entries():
                self.store.drop(e.key)
            self._prompts = [p for p in self._prompts if p.object_id != obj.object_id]

    def reset(self) -> None:
        """Remove every object, prompt and output (Meta's ``reset_state``); cached image features stay."""
        with self._lock:
            self._check_idle()
            for obj in self._objects.values():
                for e in obj.entries():
                    self.store.drop(e.key)
            self._objects.clear()
            self._prompts.clear()

    # --- propagation -------------------------------------------------------------------------------------
    def propagate(
        self, direction: str = "forward", start: int | None = None, max_frames: int | None = None
    ) -> Iterator[TrackingFrame]:
        """Track every object over the video (Meta's ``propagate_in_video``), yielding each frame's masks as
        soon as they are computed.

        ``start``: first frame (default: the earliest conditioning frame of any object); ``max_frames``: as
        Meta's ``max_frame_num_to_track`` (frames ``start .. start +- max_frames``); ``direction="both"``: a
        forward pass from ``start``, then a backward one from ``start`` (as Meta's demo server does). Stop
        iterating (close the generator) to cancel: every frame yielded so far is committed and the session
        stays consistent. Under SAM2Long's offline mode, frames whose masks the best pathway revises are
        yielded again at the end of each pass.
        """
        self._check_propagate_args(direction, start, max_frames)
        if start is not None:
            start = int(start)
        with self._lock:
            self._check_idle()
            self._check_ready()
        passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
        return self._propagate(passes, start, max_frames)

    def plan(self, direction: str = "forward", start: int | None = None, max_frames: int | None = None) -> list[int]:
        """The frames ``propagate`` with these arguments will yield, in order (for a progress bar; SAM2Long's
        revised frames, yielded again at the end of a pass, are not counted)."""
        self._check_propagate_args(direction, start, max_frames)
        with self._lock:
            self._check_ready()
            if start is None:
                start = min(min([*o.cond, *o.temp_cond]) for o in self._objects.values())
            passes = {"forward": [False], "backward": [True], "both": [False, True]}[direction]
            return [t for reverse in passes for t in self._order(reverse, start, max_frames)]

    def _order(self, reverse: bool, start: int, max_frames: int | None) -> Sequence[int]:
        """Meta's processing order of ``propagate_in_video``."""
        n = self.num_frames
        span = n if max_frames is None else max_frames
        if reverse:
            return range(start, max(start - span, 0) - 1, -1) if start > 0 else []
        return range(start, min(start + span, n - 1) + 1)

    def _check_propagate_args(self, direction: str, start: int | None, max_frames: int | None) -> None:
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
        if start is not None:
            self._check_frame(start)
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 0):
            raise InputError(f"max_frames must be an integer >= 0; got {max_frames!r}")

    def _propagate(self, passes: list[bool], start: int | None, max_frames: int | None) -> Iterator[TrackingFrame]:
        with self._lock:
            self._check_idle()
            self._running = True
        try:
            for reverse in passes:
                yield from self._pass(reverse, start, max_frames)
        finally:
            self._running = False

    def _pass(self, reverse: bool, start: int | None, max_frames: int | None) -> Iterator[TrackingFrame]:
        eng = self.engine
        with self._lock:
            self._preflight()
            n = self.num_frames
            if start is None:
                start = min(min(o.cond) for o in self._objects.values())
            order = self._order(reverse, start, max_frames)
            policy = self._policy_factory()
            reuse = _policy_reuses(policy, self._reference)
            ps = eng.new_session(policy, self.height, self.width, num_frames=n, reverse=reverse)
            objs = list(self._objects.values())
            for o in objs:
                track = ps._track(o.object_id)
                for t in sorted(o.cond):
                    track.cond[t] = self._load(o.cond[t], with_memory=True)
                    policy.record_stored(track, track.cond[t])
            computing: set[int] = set()
        for t in order:
            with self._lock:
                t0 = time.perf_counter()
                todo: list[_Object] = []
                for o in objs:
                    if t in o.cond:
                        continue
                    if o.object_id not in computing:
                        e = o.non_cond.get(t)
                        if reuse and e is not None and e.reverse == reverse and e.inputs is not None \
                                and e.inputs == self._signature(o, t, reverse, ps.max_ptrs):
                            self.frames_reused += 1
                            continue
                        self._seed_window(ps.tracks[o.object_id], o, t, ps)
                        computing.add(o.object_id)
                    todo.append(o)
                timings = StepTimings()
                with torch.inference_mode(), eng.autocast():
                    if todo:
                        inputs = {o.object_id: self._signature(o, t, reverse, ps.max_ptrs) for o in todo}
                        feats = self._features(t, timings)
                        skip = {o.object_id for o in objs} - set(inputs)
                        outputs, st = ps.step(t, None, (), features=feats, skip=skip)
                        for k, v in st.stages.items():
                            timings.add(k, v)
                        masks = ps.to_tracking_masks(outputs)
                        by_id = {o.object_id: o for o in objs}
                        for out, m in zip(outputs, masks, strict=True):
                            rec = ps.last_records[out.object_id]
                            assert rec.maskmem_features is not None  # encoded by the step
                            key = self.store.put({"low": out.low_res_logits, "ptr": rec.obj_ptr,
                                                  "mem": rec.maskmem_features})
                            o = by_id[out.object_id]
                            old = o.non_cond.get(t)
                            if old is not None:
                                self.store.drop(old.key)
                            o.non_cond[t] = _Entry(t, False, rec.object_score_logit, rec.iou, rec.note, m, key,
                                                   reverse, inputs[out.object_id] if reuse else None)
                            self.frames_computed += 1
                    else:
                        ps.step(t, None, (), skip={o.object_id for o in objs})
                for o in objs:
                    o.tracked[t] = reverse
                tf = self._stored_frame(t)
                tf.processing_time = time.perf_counter() - t0
                tf.timings = dict(timings.stages)
                self.seconds += tf.processing_time
            yield tf
        with self._lock:
            revised = ps.final_masks()
            for t, ms in sorted(revised.items(), reverse=reverse):
                for m in ms:
                    e = self._objects[m.object_id].non_cond.get(t) if m.object_id in self._objects else None
                    if e is not None:
                        e.mask = m
            frames = [self._stored_frame(t) for t in sorted(revised, reverse=reverse)]
        yield from frames

    # --- results -----------------------------------------------------------------------------------------
    def frame_result(self, frame_idx: int) -> TrackingFrame | None:
        """Every object's current mask on a frame (a pending click first, then the last propagation's
        output); None where no object has one."""
        with self._lock:
            t = self._check_frame(frame_idx)
            masks = [e.mask for o in self._objects.values() if (e := o.current(t)) is not None]
            if not masks:
                return None
            return TrackingFrame(t, masks, {m.object_id: m.occluded for m in masks})

    def result(self) -> TrackingResult:
        """Every frame with a mask so far, in frame order (for export)."""
        with self._lock:
            frames_with = sorted({t for o in self._objects.values()
                                  for d in (o.cond, o.non_cond, o.temp_cond, o.temp_non_cond) for t in d})
            frames = [tf for t in frames_with if (tf := self.frame_result(t)) is not None]
            total = self.seconds
            return TrackingResult(frames, self.width, self.height, total, len(frames) / total if total else 0.0,
                                  self.model_name, {"policy": self.policy_name, "semantics": "interactive",
                                                    "corrections_as_cond": self.corrections_as_cond})

    def memory_report(self) -> dict[str, int]:
        """Bytes held: image-feature cache, records' tensors in RAM and on disk, RAM metadata estimate."""
        with self._lock:
            entries = sum(1 for o in self._objects.values() for _ in o.entries())
            return {"feature_cache_frames": len(self.features), "feature_cache_bytes": self.features.nbytes(),
                    "store_ram_bytes": self.store.ram_bytes(), "store_disk_bytes": self.store.disk_bytes,
                    "entries": entries}

    def close(self) -> None:
        """Release the decoder, the caches and the session's files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._frames.close()
            self.features.clear()
            self._objects.clear()
            if self._tmp is not None:
                self._tmp.cleanup()
            else:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> InteractiveSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self._closed:
            raise InputError("this session is closed; open a new one with loader.open_session(video)")
        if self._running:
            raise InputError("a propagation is running; stop iterating it (close the generator) first")

    def _check_frame(self, frame_idx: int) -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int | np.integer):
            raise InputError(f"frame index must be an integer; got {frame_idx!r}")
        t = int(frame_idx)
        if not 0 <= t < self.num_frames:
            raise InputError(f"frame {t} does not exist: the video has frames 0..{self.num_frames - 1}")
        return t

    def _check_ready(self) -> None:
        if not self._objects:
            raise InputError("no objects to propagate: add a prompt first (session.add_prompt)")
        for o in self._objects.values():
            if not o.cond and not o.temp_cond:
                raise InputError(f"object {o.object_id} has no prompt left; add one or remove_object("
                                 f"{o.object_id})")

    def _make_prompt(self, t: int, object_id: int, points: Any, labels: Any, box: Any, mask: Any) -> Prompt:
        if isinstance(object_id, bool) or not isinstance(object_id, int | np.integer):
            raise InputError(f"object id must be an integer; got {object_id!r}")
        oid = int(object_id)
        if mask is not None:
            if points is not None or box is not None or labels is not None:
                raise InputError("give a mask, or points/box, not both")
            prompt = Prompt.from_mask(t, oid, np.asarray(mask))
        elif points is not None:
            pts = np.asarray(points, dtype=np.float32)
            if pts.ndim != 2 or pts.shape[-1] != 2:
                raise InputError(f"points must be (N, 2) x, y pixels; got shape {pts.shape}")
            if labels is None:
                raise InputError("points need labels: 1 (positive) or 0 (negative), one per point")
            prompt = Prompt.from_points(t, oid, pts.tolist(), np.asarray(labels).reshape(-1).tolist(),
                                        box=None if box is None else list(box), box_fmt="xyxy")
        elif box is not None:
            prompt = Prompt.from_box(t, oid, list(box), fmt="xyxy")
        else:
            if labels is not None:
                raise InputError("labels given without points")
            raise InputError("empty prompt: give points and labels, a box or a mask")
        return prompt.validate(self.height, self.width)

    def _features(self, t: int, timings: StepTimings) -> ImageFeatures:
        feats = self.features.get(t)
        if feats is None:
            frame = np.array(self._frames.frame(t))  # a writable copy: the cached frame is read-only
            t0 = time.perf_counter()
            feats = slim_features(self.engine.encode_image(self.engine.preprocess(frame)))
            timings.add("image_encoder", time.perf_counter() - t0)
            self.features.put(t, feats)
        return feats

    def _load(self, e: _Entry, *, with_memory: bool) -> FrameRecord:
        group = self.store.get(e.key)
        mem = group.get("mem") if with_memory else None
        dev = self.engine.device
        return FrameRecord(e.frame_idx, e.is_cond, group["ptr"].to(dev), e.score, e.iou,
                           None if mem is None else mem.to(dev), e.note)

    def _seed_window(self, track: ObjectTrack, o: _Object, t: int, ps: Sam2Session) -> None:
        """The records frame ``t`` of this pass reads from before it (previous frames in the direction of
        travel): memories for the last ``num_maskmem - 1``, pointers for the last ``max_ptrs - 1``."""
        sign = -1 if ps.reverse else 1
        for k in range(1, ps.max_ptrs):
            f = t - sign * k
            e = o.non_cond.get(f)
            if e is not None:
                track.non_cond[f] = self._load(e, with_memory=k <= self.engine.num_maskmem - 1)

    def _signature(self, o: _Object, t: int, reverse: bool, max_ptrs: int) -> tuple[int, ...]:
        """Store keys of everything frame ``t`` reads (the object's conditioning frames, then the previous
        frames of the pointer window, -1 where none): equal keys, equal inputs."""
        sign = -1 if reverse else 1
        cond = [x for f in sorted(o.cond) for x in (f, o.cond[f].key)]
        window = [o.non_cond[f].key if (f := t - sign * k) in o.non_cond else -1 for k in range(1, max_ptrs)]
        return (*cond, -2, *window)

    def _correction_read(self, obj: _Object, track: ObjectTrack, t: int, ps: Sam2Session) -> Any:
        """The memory a correction on a tracked frame reads (Meta: ``track_step`` with the object's output
        dict): SAM 2.1's layout, whatever the policy (no policy's official code defines corrections)."""
        if not obj.cond:
            raise InputError(f"object {obj.object_id} has no conditioning frame left to read on frame {t}; "
                             "add a prompt on a frame it was not tracked on, or propagate first")
        for f in sorted(obj.cond):
            track.cond[f] = self._load(obj.cond[f], with_memory=True)
        self._seed_window(track, obj, t, ps)
        return self._vanilla.memory_reads(track, t, ps.max_ptrs)[0]

    def _preflight(self) -> None:
        """Meta's ``propagate_in_video_preflight``: memory-encode every pending output (from its low-res mask,
        upsampled and binarised) and file it; a conditioning frame's non-conditioning output is dropped."""
        self._check_ready()
        eng = self.engine
        timings = StepTimings()
        with torch.inference_mode(), eng.autocast():
            joint = self._joint_prompt_masks()
            for o in self._objects.values():
                for temp, target in ((o.temp_non_cond, o.non_cond), (o.temp_cond, o.cond)):
                    for t, e in temp.items():
                        feats = self._features(t, timings)
                        hi = joint[id(e)]
                        logit = torch.tensor([[e.score]], device=eng.device)
                        mem = eng.encode_memory(feats, hi, logit, binarize=True)
                        key = self.store.put({**self.store.get(e.key), "mem": mem})
                        self.store.drop(e.key)
                        e.key = key
                        e.inputs = None
                        old = target.pop(t, None)
                        if old is not None:
                            self.store.drop(old.key)
                        target[t] = e
                    temp.clear()
                for t in o.cond:
                    old = o.non_cond.pop(t, None)
                    if old is not None:
                        self.store.drop(old.key)

    def _joint_prompt_masks(self) -> dict[int, torch.Tensor]:
        """Every pending output's high-res mask (its low-res mask upsampled), keyed by ``id(entry)``; the
        outputs pending on one frame pass through the family's rule for objects prompted together
        (``Backend.prompt_memory_masks``: SAM 2.1 keeps them as they are, SAM 3 keeps them from overlapping)."""
        eng = self.engine
        groups: dict[tuple[int, bool], list[_Entry]] = {}
        for o in self._objects.values():
            for cond, temp in ((False, o.temp_non_cond), (True, o.temp_cond)):
                for t, e in temp.items():
                    groups.setdefault((t, cond), []).append(e)
        out: dict[int, torch.Tensor] = {}
        for entries in groups.values():
            his = torch.cat([eng.upsample(self.store.get(e.key)["low"].to(eng.device)) for e in entries])
            if len(entries) > 1:
                his = eng.backend.prompt_memory_masks(his)
            out.update((id(e), his[i : i + 1]) for i, e in enumerate(entries))
        return out

    def _consolidated(self, t: int, is_cond: bool) -> TrackingFrame:
        """Meta's ``_consolidate_temp_output_across_obj``: per object the pending output of the same kind
        (conditioning or not) as the call, else its stored conditioning, else non-conditioning output."""
        masks = []
        for o in self._objects.values():
            temp = o.temp_cond if is_cond else o.temp_non_cond
            e = temp.get(t) or o.cond.get(t) or o.non_cond.get(t)
            if e is not None:
                masks.append(e.mask)
        return TrackingFrame(t, masks, {m.object_id: m.occluded for m in masks})

    def _stored_frame(self, t: int) -> TrackingFrame:
        masks = [e.mask for o in self._objects.values() if (e := o.cond.get(t) or o.non_cond.get(t)) is not None]
        return TrackingFrame(t, masks, {m.object_id: m.occluded for m in masks})
