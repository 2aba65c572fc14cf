"""The SAM 2.1 streaming engine on ``transformers.Sam2VideoModel``.

We drive the model's sub-modules (image encoder, prompt encoder, mask decoder, memory attention, memory
encoder) from our own loop instead of ``Sam2VideoInferenceSession``, for three reasons:

1. **Faithfulness.** On prompted frames transformers 5.x differs from Meta's predictor (docs/POLICIES.md):
   the official code memorises a prompt frame from its 256x256 mask upsampled and binarised, and takes a mask
   prompt's object pointer from the single-mask token. We do what the official code does.
2. **Hooks.** SAMURAI and SAM2Long need every candidate mask, IoU and token, and their own choice of memory
   frames; the session API returns only the argmax mask.
3. **Bounded memory.** The session keeps pixels, 1024x1024 masks and memories of every frame forever; our
   bank keeps only what a future frame can read (see the policy's ``prune``), so state after 1,000
   frames equals state after 20.

A :class:`Sam2Session` tracks one video in one direction with explicit frame indices; frames are handed in
one at a time and dropped after use.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.sam2_video.modeling_sam2_video import get_1d_sine_pe

from vidtrack.engines.sam2.backends import Backend, backend_for
from vidtrack.engines.sam2.contract import (
    NO_OBJ_SCORE,
    Candidates,
    Choice,
    DecoderRun,
    ImageFeatures,
    Kept,
    KeyScale,
    MemoryRead,
    ObjectOutput,
    Policy,
    StepTimings,
)
from vidtrack.engines.sam2.fast_modules import install_fast_modules
from vidtrack.engines.sam2.preprocess import (
    ResizeMethod,
    masks_to_video_res,
    scale_points,
)
from vidtrack.engines.sam2.state import FrameRecord, ObjectTrack
from vidtrack.errors import InputError
from vidtrack.types import Prompt, TrackingMask, rle_encode

__all__ = [  # the contract types are re-exported for callers that drive the engine directly
    "NO_OBJ_SCORE",
    "DecoderRun",
    "ImageFeatures",
    "KeyScale",
    "MemoryRead",
    "ObjectOutput",
    "Sam2Engine",
    "Sam2Session",
    "StepTimings",
]

CPU_MAX_BATCH = 1
"""Default object batch on CPUs: one at a time. Memory attention is compute-bound there, so batching saves no
work and its larger activations cost cache misses: hiera-tiny at 512 px, 8 objects, one thread, measured
4,784 CPU ms/frame at batch 1 vs 5,020 at batch 4 (BENCHMARKS.md)."""
GPU_MAX_BATCH = 16
class Sam2Engine:
    """Holds the model and the constants derived from its config; makes sessions."""

    def __init__(
        self,
        model: Any,
        *,
        device: torch.device | str = "cpu",
        resize: ResizeMethod = "transformers",
        max_batch: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.device = torch.device(device)
        if max_batch is None:
            max_batch = CPU_MAX_BATCH if self.device.type == "cpu" else GPU_MAX_BATCH
        if max_batch < 1:
            raise InputError(f"max_batch must be >= 1; got {max_batch}")
        install_fast_modules(model)  # issue 17 seam: faster drop-in forwards, same outputs (fast_modules.py)
        self.model = model.eval()
        self.max_batch = int(max_batch)
        self.autocast_dtype = autocast_dtype
        self.resize: ResizeMethod = resize
        # issue 18 seam: what differs between SAM 2.1, EdgeTAM and the SAM 3 tracker (backends/, BACKENDS.md)
        self.backend: Backend = backend_for(self.model, self.device)
        b = self.backend
        self.config = b.config
        self.image_size = b.image_size
        self.num_maskmem = b.num_maskmem
        self.max_obj_ptrs = b.max_obj_ptrs
        self.hidden_dim = b.hidden_dim
        self.mem_dim = b.mem_dim
        self.feat_sizes = b.feat_sizes
        self.low_res_size = b.low_res_size
        self.dtype = b.dtype
        self.image_pe = b.image_pe

    def new_session(
        self,
        policy: Policy,
        height: int,
        width: int,
        *,
        num_frames: int | None = None,
        reverse: bool = False,
    ) -> Sam2Session:
        return Sam2Session(self, policy, height, width, num_frames=num_frames, reverse=reverse)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for the model calls when asked for (see :func:`runtime.resolve_precision`)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.inference_mode()
    def warmup(self, policy: Callable[[], Policy], frames: int | None = None) -> None:
        """Run two short synthetic clips (boxes on a grey frame: one object, then two) so lazy work --
        ``torch.compile`` for batch 1 and for any larger batch, cuDNN autotuning, allocator growth -- happens
        before the first real frame. Covers every memory length of the first ``num_maskmem + 1`` frames."""
        n = frames if frames is not None else self.num_maskmem + 1
        side = max(self.image_size // 4, 16)
        frame = np.full((side, side, 3), 127, np.uint8)
        frame[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (200, 60, 60)
        boxes = [(side / 4, side / 4, 3 * side / 4, 3 * side / 4), (0.0, 0.0, side / 2, side / 2)]
        for objects in (1, 2):
            session = self.new_session(policy(), side, side, num_frames=n)
            first = [Prompt.from_box(0, k + 1, boxes[k], fmt="xyxy") for k in range(objects)]
            for i in range(n):
                session.step(i, frame, first if i == 0 else [])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # --- model stages ------------------------------------------------------------------------------------
    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        return self.backend.preprocess(frame, self.resize)

    def encode_image(self, pixel_values: torch.Tensor) -> ImageFeatures:
        return self.backend.encode_image(pixel_values)

    def top_feature_map(self, feats: ImageFeatures, add_no_memory: bool) -> torch.Tensor:
        """The lowest-resolution feature map as (1, C, H, W), optionally plus ``no_memory_embedding``
        (what the official code feeds the decoder on an initial conditioning frame)."""
        x = feats.top + self.model.no_memory_embedding if add_no_memory else feats.top
        return x.permute(1, 2, 0).reshape(1, self.hidden_dim, *self.feat_sizes[-1])

    def sam_heads(
        self,
        pix_feat: torch.Tensor,
        feats: ImageFeatures,
        *,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder (the official ``_forward_sam_heads`` before any choice).

        Returns (low_res_masks (B, K, h, w), ious (B, K), tokens (B, K, C), object_score_logits (B, 1)).
        """
        b = pix_feat.size(0)
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 1, 2, device=self.device)
            point_labels = -torch.ones(b, 1, 1, dtype=torch.int32, device=self.device)
        if mask_input is not None and tuple(mask_input.shape[-2:]) != self.low_res_size:
            mask_input = F.interpolate(mask_input.float(), size=self.low_res_size, mode="bilinear",
                                       align_corners=False, antialias=True)
        if mask_input is not None:
            mask_input = mask_input.to(self.dtype)
        masks, ious, tokens, obj_logits = self.backend.decode(pix_feat, feats, point_coords, point_labels, mask_input,
                                                              multimask)
        return masks[:, 0].float(), ious[:, 0].float(), tokens[:, 0], obj_logits[:, 0].float()

    def object_pointer(self, token: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Pointer from a SAM output token, replaced by ``no_object_pointer`` when the object is absent."""
        return self.gate_pointer(self.model.object_pointer_proj(token), present)

    def gate_pointer(self, ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The official hard gate (``fixed_no_obj_ptr``, no soft gating): absent objects point nowhere."""
        lam = present.to(ptr.dtype)
        return lam * ptr + (1 - lam) * self.model.no_object_pointer

    def encode_memory(
        self, feats: ImageFeatures, high_res_masks: torch.Tensor, object_score_logits: torch.Tensor,
        binarize: bool,
    ) -> torch.Tensor:
        """Memory encoder for a batch of objects' masks on one frame -> (N, B, mem_dim) bf16 memory tokens
        (the backend's; ``binarize`` is the official ``is_mask_from_pts``)."""
        return self.backend.encode_memory(feats, high_res_masks, object_score_logits, binarize)

    def memory_tokens(
        self, read: MemoryRead, max_ptrs: int
    ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
        """One read's memory tokens (N, 1, mem_dim), their position encodings, the number of object-pointer
        tokens (the last ones, excluded from RoPE) and the per-token key weights (N,) or None."""
        m = self.model
        mem: list[torch.Tensor] = []
        mem_pos: list[torch.Tensor] = []
        pos_enc = self.backend.memory_pos_enc
        for slot, rec in read.memories:
            assert rec.maskmem_features is not None and pos_enc is not None
            mem.append(rec.maskmem_features.to(self.device))
            mem_pos.append(pos_enc + m.memory_temporal_positional_encoding[slot].reshape(1, 1, -1))
        num_ptr_tokens = 0
        pointers = read.pointers
        if pointers:
            ptrs = torch.stack([rec.obj_ptr for _, rec in pointers], dim=0).to(self.device)  # (N, 1, C)
            c = self.hidden_dim
            if self.config.enable_temporal_pos_encoding_for_object_pointers:
                t = torch.tensor([d for d, _ in pointers], device=self.device, dtype=torch.float32)
                span = read.max_ptrs or max_ptrs
                pe = get_1d_sine_pe(t / float(span - 1), dim=c).to(ptrs.dtype)
                ptr_pos = m.temporal_positional_encoding_projection_layer(pe).unsqueeze(1)
            else:
                ptr_pos = ptrs.new_zeros(len(pointers), 1, self.mem_dim)
            if self.mem_dim < c:
                split = c // self.mem_dim
                ptrs = ptrs.reshape(-1, 1, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            mem.append(ptrs)
            mem_pos.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[0]
        memory = torch.cat(mem, dim=0).to(self.dtype)
        memory_pos = torch.cat(mem_pos, dim=0).to(self.dtype)
        scale = None
        ks = read.key_scale
        if ks is not None:
            assert len(ks.frames) == len(read.memories) and len(ks.pointers) == len(pointers)
            tokens = [x.shape[0] for x in mem[: len(read.memories)]]
            per_ptr = num_ptr_tokens // max(len(pointers), 1)
            scale = torch.cat(
                [w.reshape(1).expand(n) for w, n in zip(ks.frames, tokens, strict=True)]
                + [w.reshape(1).expand(per_ptr) for w in ks.pointers]
            ).to(device=self.device, dtype=self.dtype)
        return memory, memory_pos, num_ptr_tokens, scale

    def memory_conditioned_batch(self, feats: ImageFeatures, reads: list[MemoryRead], max_ptrs: int) -> torch.Tensor:
        """Memory attention for several reads of the same frame in one call -> (B, C, H, W), in read order.

        Every read must have the same token layout (number of memory frames and of pointers) and either all or
        none carry key weights; :meth:`decode_reads` groups reads that way. ``key_scale`` (SAM2Long) multiplies
        the cross-attention *keys* (memory + position encoding) of each memory frame and object pointer by a
        weight; values are untouched. Reads without weights run the model's own memory attention unchanged.
        """
        parts = [self.memory_tokens(r, max_ptrs) for r in reads]
        b = len(parts)
        memory = torch.cat([p[0] for p in parts], dim=1)
        memory_pos = torch.cat([p[1] for p in parts], dim=1)
        num_ptr_tokens = parts[0][2]
        current = feats.top.expand(-1, b, -1)
        current_pos = feats.vision_pos[-1].expand(-1, b, -1)
        scales = [p[3] for p in parts]
        key_scale = None  # SAM2Long's key modulation, one row per read
        if any(x is not None for x in scales):
            assert all(x is not None for x in scales), "key weights for some reads of a batch only"
            key_scale = torch.stack([x for x in scales if x is not None], dim=0)
        out = self.backend.memory_attention(current, current_pos, memory, memory_pos,
                                            num_ptr_tokens=num_ptr_tokens, num_frames=len(reads[0].memories),
                                            key_scale=key_scale)
        return out.transpose(1, 2).reshape(b, self.hidden_dim, *self.feat_sizes[-1])  # (B, HW, C) in

    def decode_reads(
        self, feats: ImageFeatures, reads: list[MemoryRead], max_ptrs: int, multimask: bool, timings: StepTimings
    ) -> list[DecoderRun]:
        """Memory attention and the mask decoder for every read of one frame (all objects, all hypotheses),
        batched: reads with the same token layout share one memory-attention call, and every read goes through
        one decoder call, in chunks of ``max_batch``. ``max_batch=1`` is the official one-at-a-time loop."""
        if not reads:
            return []
        t0 = time.perf_counter()
        groups: dict[tuple[int, int, bool], list[int]] = {}
        for i, r in enumerate(reads):
            groups.setdefault((len(r.memories), len(r.pointers), r.key_scale is None), []).append(i)
        pix: list[torch.Tensor | None] = [None] * len(reads)
        for idx in groups.values():
            for c in range(0, len(idx), self.max_batch):
                chunk = idx[c : c + self.max_batch]
                out = self.memory_conditioned_batch(feats, [reads[i] for i in chunk], max_ptrs)
                for j, i in enumerate(chunk):
                    pix[i] = out[j : j + 1]
        t1 = time.perf_counter()
        timings.add("memory_attention", t1 - t0)
        runs: list[DecoderRun] = []
        for c in range(0, len(reads), self.max_batch):
            batch = torch.cat([p for p in pix[c : c + self.max_batch] if p is not None], dim=0)
            masks, ious, tokens, logits = self.sam_heads(batch, feats, multimask=multimask)
            runs.extend(
                DecoderRun(masks[j : j + 1], ious[j : j + 1], tokens[j : j + 1], float(logits[j, 0].item()))
                for j in range(batch.size(0))
            )
        timings.add("decoder", time.perf_counter() - t1)
        return runs

    def upsample(self, low_res: torch.Tensor) -> torch.Tensor:
        return self.backend.upsample(low_res)


class Sam2Session:
    """Tracks the objects of one video in one direction, one frame at a time.

    Call :meth:`step` with strictly consecutive frame indices (increasing, or decreasing when
    ``reverse``). A prompt for an object on a frame makes that frame a conditioning frame for it, processed
    like the official predictor processes prompts given before propagation: without memory, kept in memory
    for the rest of the video.

    Two ways to give prompts (docs/SEMANTICS.md):

    * **causal** -- pass them to :meth:`step` with their frame: the frame becomes a conditioning frame when it
      is reached, and frames before it never see it (streaming);
    * **official** -- hand every prompt to :meth:`add_prompts` *before* the first :meth:`step`, as Meta's
      ``SAM2VideoPredictor`` does (``add_new_mask`` / ``add_new_points_or_box``, then the memory encoding of
      ``propagate_in_video_preflight``). Every object is then tracked from the first stepped frame on, and
      every tracked frame attends to all of the object's conditioning frames, later ones included (object
      pointers only from those already passed in the direction of travel, ``only_obj_ptrs_in_the_past_for_eval``).
      Stepping a frame that is already a conditioning frame of an object neither recomputes nor returns that
      object (its output came from :meth:`add_prompts`), like ``propagate_in_video``.
    """

    def __init__(
        self,
        engine: Sam2Engine,
        policy: Policy,
        height: int,
        width: int,
        *,
        num_frames: int | None = None,
        reverse: bool = False,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.height = height
        self.width = width
        self.reverse = reverse
        # Official: min(num_frames, max_obj_ptrs_in_encoder); streams of unknown length use the full window.
        self.max_ptrs = min(num_frames, engine.max_obj_ptrs) if num_frames else engine.max_obj_ptrs
        self.max_ptrs = max(self.max_ptrs, 2)
        self.tracks: dict[int, ObjectTrack] = {}
        self.last_frame: int | None = None
        self.last_records: dict[int, FrameRecord] = {}  # object id -> its record on the last stepped frame

    # --- public ------------------------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return list(self.tracks)

    def state_nbytes(self) -> int:
        """Bytes held by every object's memory bank (the quantity that must not grow with video length)."""
        return sum(t.nbytes() for t in self.tracks.values())

    @torch.inference_mode()
    def step(
        self, frame_idx: int, frame: np.ndarray | None, prompts: Iterable[Prompt] = (),
        features: ImageFeatures | None = None, skip: Collection[int] = (),
    ) -> tuple[list[ObjectOutput], StepTimings]:
        """Process one frame: apply its prompts, track every started object, memorise, prune.

        ``features`` are this frame's image-encoder output when computed ahead (:class:`runtime.EncoderAhead`);
        ``frame`` may then be None. Objects in ``skip`` are not tracked on this frame (an interactive session
        reuses their stored output); the records of the objects tracked are in :attr:`last_records` after.
        """
        with self.engine.autocast():
            return self._step(frame_idx, frame, prompts, features, skip)

    @torch.inference_mode()
    def add_prompts(
        self, frame_idx: int, frame: np.ndarray, prompts: Iterable[Prompt], features: ImageFeatures | None = None,
    ) -> tuple[list[ObjectOutput], StepTimings]:
        """Official semantics: process one frame's prompts as initial conditioning frames before propagation.

        What Meta's predictor does for prompts added before ``propagate_in_video``: each prompted object's
        output on this frame is computed without memory (``is_init_cond_frame``), and its memory is encoded
        from that output (``propagate_in_video_preflight``). Call it for every prompted frame, in increasing
        frame order (policies note an object's first prompt), before the first :meth:`step`. Returns the
        prompted objects' outputs; :meth:`step` will not recompute them.
        """
        if self.last_frame is not None:
            raise InputError("add_prompts must be called before the first frame is stepped; pass later prompts "
                             "to step() with their frame (causal)")
        with self.engine.autocast():
            timings = StepTimings()
            by_obj = self._prompts_by_object(frame_idx, prompts)
            if not by_obj:
                return [], timings
            feats = self._features(frame_idx, frame, features, timings)
            outputs, to_memorise = self._apply_prompts(frame_idx, feats, by_obj, timings)
            self._memorise(feats, to_memorise, timings)
            return outputs, timings

    def seed_object(self, object_id: int, cond: dict[int, FrameRecord], non_cond: dict[int, FrameRecord]) -> None:
        """Start an object with records another pass stored (before the first :meth:`step`).

        Meta's reverse propagation after a forward one runs on the same state: it reads the object's
        conditioning frames and the non-conditioning memories and pointers the forward pass left next to its
        start. The conditioning records are shared (never modified); the policy sees them in frame order."""
        if self.last_frame is not None:
            raise InputError("seed_object must be called before the first frame is stepped")
        track = self._track(object_id)
        for t in sorted(cond):
            track.cond[t] = cond[t]
            self.policy.record_stored(track, cond[t])
        for t in sorted(non_cond):
            track.non_cond[t] = non_cond[t]

    def _features(
        self, frame_idx: int, frame: np.ndarray | None, features: ImageFeatures | None, timings: StepTimings
    ) -> ImageFeatures:
        if frame is not None:
            self._check_size(frame_idx, frame)
        if features is not None:
            return features
        assert frame is not None, "a frame or its features are needed"
        t0 = time.perf_counter()
        feats = self.engine.encode_image(self.engine.preprocess(frame))
        timings.add("image_encoder", time.perf_counter() - t0)
        return feats

    def _check_size(self, frame_idx: int, frame: np.ndarray) -> None:
        if frame.shape[:2] != (self.height, self.width):
            raise InputError(
                f"frame {frame_idx} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self.width}x{self.height}; every frame of a video must have the same size"
            )

    def _track(self, obj_id: int) -> ObjectTrack:
        track = self.tracks.get(obj_id)
        if track is None:
            track = ObjectTrack(obj_id, reverse=self.reverse, video_size=(self.height, self.width))
            track.policy_state = self.policy.new_object_state(obj_id)
            self.tracks[obj_id] = track
        return track

    def _apply_prompts(
        self, frame_idx: int, feats: ImageFeatures, by_obj: dict[int, Prompt], timings: StepTimings
    ) -> tuple[list[ObjectOutput], list[tuple[FrameRecord, torch.Tensor, bool]]]:
        """Each prompted object's output on its (new) conditioning frame, and the records to memorise."""
        outputs: list[ObjectOutput] = []
        to_memorise: list[tuple[FrameRecord, torch.Tensor, bool]] = []
        for obj_id in sorted(by_obj):
            track = self._track(obj_id)
            out, rec, hi = self._prompted_frame(track, frame_idx, feats, by_obj[obj_id], timings)
            track.cond[frame_idx] = rec
            self.policy.record_stored(track, rec)
            to_memorise.append((rec, hi, True))
            outputs.append(out)
        if len(to_memorise) > 1:  # the family's rule for objects prompted together (SAM 3: no overlap)
            joint = self.engine.backend.prompt_memory_masks(torch.cat([hi for _, hi, _ in to_memorise]))
            to_memorise = [(rec, joint[i : i + 1], b) for i, (rec, _, b) in enumerate(to_memorise)]
        return outputs, to_memorise

    def _memorise(
        self, feats: ImageFeatures, to_memorise: list[tuple[FrameRecord, torch.Tensor, bool]], timings: StepTimings
    ) -> None:
        """The memory encoder for every record of this frame, batched (prompted frames binarised first)."""
        eng = self.engine
        t0 = time.perf_counter()
        for binarize in (True, False):
            group = [x for x in to_memorise if x[2] is binarize]
            for c in range(0, len(group), eng.max_batch):
                chunk = group[c : c + eng.max_batch]
                masks = torch.cat([hi for _, hi, _ in chunk], dim=0)
                logits = torch.tensor([[r.object_score_logit] for r, _, _ in chunk], device=eng.device)
                mem = eng.encode_memory(feats, masks, logits, binarize)
                for i, (rec, _, _) in enumerate(chunk):
                    rec.maskmem_features = mem[:, i : i + 1].clone()
        timings.add("memory_encoder", time.perf_counter() - t0)

    def _step(
        self, frame_idx: int, frame: np.ndarray | None, prompts: Iterable[Prompt], features: ImageFeatures | None,
        skip: Collection[int] = (),
    ) -> tuple[list[ObjectOutput], StepTimings]:
        eng = self.engine
        timings = StepTimings()
        self._check_order(frame_idx)
        by_obj = self._prompts_by_object(frame_idx, prompts)
        self.last_records = {}
        # objects to track here: started, not prompted now, and not on a conditioning frame of theirs given
        # beforehand (official semantics: that frame's output came from add_prompts)
        to_track = [t for _, t in sorted(self.tracks.items())
                    if t.started and t.object_id not in by_obj and frame_idx not in t.cond
                    and t.object_id not in skip]
        if not by_obj and not to_track:
            for track in self.tracks.values():
                self.policy.prune(track, frame_idx)
            self.last_frame = frame_idx
            return [], timings
        feats = self._features(frame_idx, frame, features, timings)

        prompted, to_memorise = self._apply_prompts(frame_idx, feats, by_obj, timings)
        by_id: dict[int, ObjectOutput] = {o.object_id: o for o in prompted}
        limit = eng.backend.limit_conditioning  # SAM 3: at most 4 conditioning frames per read
        reads = [(track, [limit(r, frame_idx, reverse=track.reverse, max_ptrs=self.max_ptrs)
                          for r in self.policy.memory_reads(track, frame_idx, self.max_ptrs)])
                 for track in to_track]

        # every object's (and hypothesis') memory attention and decoder, batched
        cfg = eng.config
        multimask = bool(cfg.multimask_output_in_sam and cfg.multimask_output_for_tracking)
        runs = eng.decode_reads(feats, [r for _, mine in reads for r in mine], self.max_ptrs, multimask, timings)
        at = 0
        for track, mine in reads:
            track_runs, at = runs[at : at + len(mine)], at + len(mine)
            t0 = time.perf_counter()
            decision = self.policy.choose(track, frame_idx, track_runs, eng.image_size)
            kept = [self._keep(track, frame_idx, track_runs[c.read], c) for c in decision.choices]
            if self.policy.keeps_branch_masks:
                for k, m in zip(kept, self.to_tracking_masks([k.output for k in kept]), strict=True):
                    k.mask = m
            self.policy.remember(track, frame_idx, decision, kept, self.max_ptrs)
            timings.add("policy", time.perf_counter() - t0)
            # a record the policy filed as conditioning (DAM4SAM's anchors) is memorised like a prompt frame
            to_memorise.extend((k.record, eng.upsample(k.output.low_res_logits), k.record.is_cond) for k in kept)
            by_id[track.object_id] = kept[0].output
            self.last_records[track.object_id] = kept[0].record
        outputs = [by_id[k] for k in sorted(by_id)]
        self._memorise(feats, to_memorise, timings)

        t0 = time.perf_counter()
        for track in self.tracks.values():
            self.policy.prune(track, frame_idx)
        timings.add("policy", time.perf_counter() - t0)
        self.last_frame = frame_idx
        return outputs, timings

    def final_masks(self) -> dict[int, list[TrackingMask]]:
        """Masks a non-causal policy revises once the last frame is processed (SAM2Long offline mode: the best
        pathway traced back), as frame index -> masks replacing those objects' streamed masks. Empty for
        causal policies."""
        out: dict[int, list[TrackingMask]] = {}
        for track in self.tracks.values():
            for f, m in self.policy.final_masks(track).items():
                out.setdefault(f, []).append(m)
        return out

    def to_tracking_masks(self, outputs: list[ObjectOutput]) -> list[TrackingMask]:
        """Video-resolution masks as RLE: one bilinear resize of the logits, then ``> 0``."""
        if not outputs:
            return []
        logits = torch.cat([o.low_res_logits for o in outputs], dim=0)
        dense = masks_to_video_res(logits, self.height, self.width).cpu().numpy()
        return [
            TrackingMask(
                rle=rle_encode(dense[i]),
                confidence=o.iou,
                object_id=o.object_id,
                visibility=float(1.0 / (1.0 + np.exp(-np.clip(o.object_score_logit, -80, 80)))),
                occluded=o.occluded,
            )
            for i, o in enumerate(outputs)
        ]

    # --- internals ---------------------------------------------------------------------------------------
    def _check_order(self, frame_idx: int) -> None:
        if self.last_frame is None:
            return
        expected = self.last_frame + (-1 if self.reverse else 1)
        if frame_idx != expected:
            raise InputError(
                f"frames must be given in order: expected frame {expected} after {self.last_frame}, "
                f"got {frame_idx}"
            )

    def _prompts_by_object(self, frame_idx: int, prompts: Iterable[Prompt]) -> dict[int, Prompt]:
        by_obj: dict[int, Prompt] = {}
        for p in prompts:
            if p.frame_idx != frame_idx:
                raise InputError(f"prompt for frame {p.frame_idx} was given with frame {frame_idx}")
            if p.object_id in by_obj:
                raise InputError(
                    f"two prompts for object {p.object_id} on frame {frame_idx}; combine them into one "
                    "(a box and points can go in one prompt)"
                )
            by_obj[p.object_id] = p.validate(self.height, self.width)
        return by_obj

    def _prompted_frame(
        self, track: ObjectTrack, frame_idx: int, feats: ImageFeatures, prompt: Prompt, timings: StepTimings,
        *, prev_logits: torch.Tensor | None = None, memory: MemoryRead | None = None,
    ) -> tuple[ObjectOutput, FrameRecord, torch.Tensor]:
        """One object's output on a prompted frame, its record (memory not yet encoded) and the high-res mask
        to memorise.

        Interactive corrections (Meta's ``add_new_points_or_box``) add two inputs for point/box prompts:
        ``prev_logits``, the low-res logits the frame had before this click (fed to the prompt encoder as a
        dense mask prompt, clamped to +-32), and ``memory``, given when the frame was already tracked for this
        object: the decoder then reads memory-conditioned features (``is_init_cond_frame=False``) and the
        multimask rule of tracked frames applies. Mask prompts ignore both (Meta uses the mask as the output).
        """
        eng = self.engine
        t0 = time.perf_counter()
        thr = self.policy.object_score_threshold
        no_clicks = prompt.points is None or len(prompt.points) == 0
        if prompt.mask is None and no_clicks and prompt.box is not None and self.policy.box_prompt_as_mask:
            prompt = self._box_to_mask(feats, prompt)
        if prompt.mask is not None:
            # Official `_use_mask_as_output`: the mask is the output (logits +10 / -10); the pointer comes from
            # a single-mask decoder pass on the raw features with the downsampled mask as a dense prompt.
            mask_in, low = eng.backend.mask_prompt(prompt.mask)
            _, _, tokens, dec_logit = eng.sam_heads(
                eng.top_feature_map(feats, add_no_memory=False), feats,
                mask_input=eng.model.mask_downsample(mask_in.to(eng.dtype)), multimask=False,
            )
            ptr = eng.object_pointer(tokens[:, 0], dec_logit > thr)
            present = mask_in.flatten(1).gt(0).any(dim=1, keepdim=True)
            ptr = eng.gate_pointer(ptr, present)  # gated twice, as in the official code
            logit = 10.0 if bool(present.item()) else -10.0
            iou = 1.0
            note = self.policy.frame_metadata(
                track, frame_idx,
                Candidates(low[0], torch.ones(1), tokens[0, :1], logit, False, eng.image_size), 0,
            )
        else:
            pts = np.zeros((0, 2), np.float32) if prompt.points is None else prompt.points
            labels = np.zeros((0,), np.int32) if prompt.labels is None else prompt.labels
            if prompt.box is not None:  # a box is two points labelled 2 and 3, before the clicks
                x1, y1, x2, y2 = prompt.box
                pts = np.concatenate([np.array([[x1, y1], [x2, y2]], np.float32), pts])
                labels = np.concatenate([np.array([2, 3], np.int32), labels])
            coords = torch.from_numpy(scale_points(pts, self.height, self.width, eng.image_size))
            cfg = eng.config
            multimask = bool(cfg.multimask_output_in_sam) and (
                memory is None or bool(cfg.multimask_output_for_tracking)
            ) and (cfg.multimask_min_pt_num <= len(labels) <= cfg.multimask_max_pt_num)
            if memory is None:
                pix = eng.top_feature_map(feats, add_no_memory=True)
            else:
                pix = eng.memory_conditioned_batch(feats, [memory], self.max_ptrs)
            masks, ious, tokens, obj_logits = eng.sam_heads(
                pix, feats,
                point_coords=coords[None, None].to(eng.device),
                point_labels=torch.from_numpy(labels)[None, None].to(eng.device),
                mask_input=None if prev_logits is None else prev_logits.clamp(-32.0, 32.0),
                multimask=multimask,
            )
            cands = Candidates(masks[0], ious[0], tokens[0], float(obj_logits.item()), multimask, eng.image_size)
            k = self.policy.choose_candidate(track, frame_idx, cands)
            note = self.policy.frame_metadata(track, frame_idx, cands, k)
            present = obj_logits > thr
            low = torch.where(present[:, :, None, None], masks[:, k : k + 1], NO_OBJ_SCORE)
            ptr = eng.object_pointer(tokens[:, k], present)
            logit = float(obj_logits.item())
            iou = float(ious[0, k].item())
        timings.add("decoder", time.perf_counter() - t0)
        # Official preflight: a prompt frame is memorised from its low-res mask upsampled and binarised.
        hi = eng.upsample(low)
        rec = FrameRecord(frame_idx, True, ptr, logit, iou, note=note)
        out = ObjectOutput(track.object_id, low, iou, logit, logit <= thr, True)
        return out, rec, hi

    def _box_to_mask(self, feats: ImageFeatures, prompt: Prompt) -> Prompt:
        """A box prompt turned into a mask prompt, as DAM4SAM's official ``estimate_mask_from_box`` does: one
        single-mask decoder pass on the memory-free features with the box, upsampled to the video, ``> 0``."""
        eng = self.engine
        assert prompt.box is not None
        x1, y1, x2, y2 = prompt.box
        coords = torch.from_numpy(scale_points(np.array([[x1, y1], [x2, y2]], np.float32), self.height, self.width,
                                               eng.image_size))
        masks, _, _, _ = eng.sam_heads(
            eng.top_feature_map(feats, add_no_memory=True), feats, point_coords=coords[None, None].to(eng.device),
            point_labels=torch.tensor([[[2, 3]]], dtype=torch.int32, device=eng.device), multimask=False,
        )
        mask = masks_to_video_res(masks[:, :1], self.height, self.width)[0].cpu().numpy()
        return Prompt.from_mask(prompt.frame_idx, prompt.object_id, mask, origin=prompt.origin)

    def _keep(self, track: ObjectTrack, frame_idx: int, run: DecoderRun, choice: Choice) -> Kept:
        """One survivor of a tracked frame: the object-present gate on its mask and pointer, its record."""
        eng = self.engine
        k = choice.candidate
        logit = run.object_score_logit
        present = torch.tensor([[logit > self.policy.object_score_threshold]], device=eng.device)
        low = torch.where(present[:, :, None, None], run.masks[:, k : k + 1], NO_OBJ_SCORE)
        ptr = eng.object_pointer(run.tokens[:, k], present)
        iou = float(run.ious[0, k].item()) if choice.iou is None else choice.iou
        rec = FrameRecord(frame_idx, False, ptr, logit, iou, note=choice.note)
        out = ObjectOutput(track.object_id, low, iou, logit, not bool(present.item()), False)
        return Kept(choice, rec, out)
