"""SAMURAI (Yang et al., arXiv 2411.11922): motion-aware mask choice and motion-aware memory.

Three changes to SAM 2.1, as in the official code (yangchris11/samurai @ 76ba195, ``sam2_base.py``):

1. **Candidate choice.** A Kalman filter follows the chosen mask's box in model-input coordinates. The first
   tracked frame initialises it; for the next frames (warm-up) the argmax-IoU candidate is chosen and the filter
   updated while its predicted IoU is > 0.3 (otherwise the filter restarts on the next frame). Once stable for
   15 frames the choice is ``argmax(w * IoU(kf_box, box_j) + (1 - w) * pred_iou_j)``; a chosen IoU < 0.3
   restarts the filter. ``w`` is 0.25 for tiny/small/base-plus and 0.15 for large.
2. **Object-present gate** at logit > -1 instead of > 0 (masks and object pointers; memory encoding keeps > 0).
3. **Memory.** The 6 non-conditioning memories are the most recent frames with predicted IoU > 0.5, object logit
   > 0 and KF score > 0 (none during warm-up counts as passing), out of the last 15 such frames, plus the
   previous frame always; temporal encodings go by rank. Object pointers are vanilla.

Beyond the official code: state lives per (session, object), so several objects are tracked in one run and
nothing leaks between objects or videos; the admitted frames are kept in a running window (O(1) per frame)
instead of a backward scan; memory is pruned to what can still be read.

Kept quirk: the official scan stops at frame 2, so the frame right after the prompt frame is never admitted
(it still enters memory as "the previous frame" on the next frame). We keep that, relative to the object's
first prompt.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vidtrack import kalman
from vidtrack.engines.sam2.contract import Candidates
from vidtrack.engines.sam2.state import FrameNote, FrameRecord, ObjectTrack, PolicyState
from vidtrack.policies.base import MemoryPolicy

if TYPE_CHECKING:  # torch is imported where it runs: checking --policy samurai must not import it
    import torch


@dataclass
class SamuraiNote(FrameNote):
    """What SAMURAI keeps beside a record: the chosen candidate's Kalman IoU (None during warm-up and on
    single-output frames), the stable-frame count, and whether the filter overrode the argmax."""

    kf_score: float | None = None
    stable_frames: int = 0
    kf_choice: bool = False


@dataclass
class SamuraiObjectState(PolicyState):
    kf: kalman.KalmanState | None = None
    stable_frames: int = 0
    admitted: deque[int] = field(default_factory=deque)  # frames that passed the memory thresholds, oldest first
    first_cond: int | None = None
    last_kf_score: float | None = None
    last_choice_was_kf: bool = False


def mask_box(low_res_logits: torch.Tensor, image_size: int) -> tuple[float, float, float, float]:
    """Box (x_min, y_min, x_max, y_max) of ``upsample(logits) > 0`` at model resolution; (0, 0, 0, 0) if empty."""
    import torch.nn.functional as F

    high = F.interpolate(low_res_logits[None, None].float(), size=(image_size, image_size), mode="bilinear",
                         align_corners=False)[0, 0] > 0
    rows = high.any(dim=1).nonzero().flatten()
    if rows.numel() == 0:
        return (0.0, 0.0, 0.0, 0.0)
    cols = high.any(dim=0).nonzero().flatten()
    return (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))


class SamuraiPolicy(MemoryPolicy):
    name = "samurai"

    def __init__(
        self,
        num_maskmem: int = 7,
        max_obj_ptrs: int = 16,
        *,
        kf_score_weight: float = 0.15,
        stable_frames_threshold: int = 15,
        stable_ious_threshold: float = 0.3,
        min_obj_score_logits: float = -1.0,
        memory_bank_iou_threshold: float = 0.5,
        memory_bank_obj_score_threshold: float = 0.0,
        memory_bank_kf_score_threshold: float = 0.0,
    ) -> None:
        super().__init__(num_maskmem, max_obj_ptrs)
        self.kf_score_weight = kf_score_weight
        self.stable_frames_threshold = stable_frames_threshold
        self.stable_ious_threshold = stable_ious_threshold
        self.object_score_threshold = min_obj_score_logits
        self.memory_bank_iou_threshold = memory_bank_iou_threshold
        self.memory_bank_obj_score_threshold = memory_bank_obj_score_threshold
        self.memory_bank_kf_score_threshold = memory_bank_kf_score_threshold

    def new_object_state(self, object_id: int) -> SamuraiObjectState:
        return SamuraiObjectState(admitted=deque(maxlen=self.max_obj_ptrs - 1))

    def state(self, track: ObjectTrack) -> SamuraiObjectState:
        st = track.policy_state
        if not isinstance(st, SamuraiObjectState):
            raise TypeError(f"object {track.object_id} holds a {type(st).__name__}, not SAMURAI's state")
        return st

    # --- candidate choice ----------------------------------------------------------------------------------
    def _box(self, cands: Candidates, k: int) -> tuple[float, float, float, float]:
        if cands.object_score_logit <= self.object_score_threshold:  # gated: every pixel is -1024
            return (0.0, 0.0, 0.0, 0.0)
        return mask_box(cands.low_res_masks[k], cands.image_size)

    def choose_candidate(self, track: ObjectTrack, frame_idx: int, cands: Candidates) -> int:
        st = self.state(track)
        st.last_kf_score = None
        st.last_choice_was_kf = False
        if not cands.multimask:  # prompt frames with one output never reach the filter
            return 0
        ious = cands.ious.float()
        if st.kf is None or st.stable_frames == 0:
            k = int(ious.argmax())
            st.kf = kalman.initiate(kalman.xyxy_to_xyah(self._box(cands, k)))
            st.stable_frames += 1
        elif st.stable_frames < self.stable_frames_threshold:
            st.kf = kalman.predict(st.kf)
            k = int(ious.argmax())
            if ious[k] > self.stable_ious_threshold:
                st.kf = kalman.update(st.kf, kalman.xyxy_to_xyah(self._box(cands, k)))
                st.stable_frames += 1
            else:
                st.stable_frames = 0
        else:
            import torch

            st.kf = kalman.predict(st.kf)
            boxes = [self._box(cands, j) for j in range(ious.numel())]
            kf_box = kalman.xyah_to_xyxy(st.kf.mean[:4])
            kf_ious = torch.tensor([kalman.box_iou(kf_box, b) for b in boxes], dtype=torch.float32)
            weighted = self.kf_score_weight * kf_ious + (1 - self.kf_score_weight) * ious  # float32, as official
            k = int(weighted.argmax())
            st.last_choice_was_kf = k != int(ious.argmax())
            st.last_kf_score = float(kf_ious[k])
            if ious[k] < self.stable_ious_threshold:
                st.stable_frames = 0
            else:
                st.kf = kalman.update(st.kf, kalman.xyxy_to_xyah(boxes[k]))
        return k

    def frame_metadata(self, track: ObjectTrack, frame_idx: int, cands: Candidates, chosen: int) -> SamuraiNote:
        st = self.state(track)
        return SamuraiNote(st.last_kf_score if cands.multimask else None, st.stable_frames, st.last_choice_was_kf)

    # --- memory ----------------------------------------------------------------------------------------------
    def record_stored(self, track: ObjectTrack, rec: FrameRecord) -> None:
        st = self.state(track)
        sign = -1 if track.reverse else 1
        if rec.is_cond:
            if st.first_cond is None:
                st.first_cond = rec.frame_idx
            return
        if st.first_cond is None or (rec.frame_idx - st.first_cond) * sign < 2:
            return  # the official scan never looks below frame 2
        kf = rec.note.kf_score if isinstance(rec.note, SamuraiNote) else None
        if (rec.iou > self.memory_bank_iou_threshold
                and rec.object_score_logit > self.memory_bank_obj_score_threshold
                and (kf is None or kf > self.memory_bank_kf_score_threshold)):
            st.admitted.append(rec.frame_idx)

    def _memory_window(self, track: ObjectTrack, frame_idx: int) -> list[int]:
        st = self.state(track)
        prev = frame_idx + (1 if track.reverse else -1)
        valid = list(st.admitted)
        if prev not in valid:
            valid.append(prev)
        return valid[-(self.num_maskmem - 1):]

    def memory_frames(self, track: ObjectTrack, frame_idx: int) -> list[tuple[int, FrameRecord]]:
        out = [(self.num_maskmem - 1, r) for r in track.cond.values()]
        window = self._memory_window(track, frame_idx)
        for i, f in enumerate(window):  # oldest first; the newest gets slot 0, like "the previous frame"
            rec = track.non_cond.get(f)
            if rec is not None and rec.maskmem_features is not None:
                out.append((len(window) - 1 - i, rec))
        return out

    def prune(self, track: ObjectTrack, frame_idx: int) -> None:
        st = self.state(track)
        sign = -1 if track.reverse else 1
        keep_memory = set(list(st.admitted)[-(self.num_maskmem - 1):]) | {frame_idx}
        for t in list(track.non_cond):
            if t in keep_memory:
                continue
            if (frame_idx - t) * sign + 1 > self.max_obj_ptrs - 1:
                del track.non_cond[t]
            else:
                track.non_cond[t].maskmem_features = None
