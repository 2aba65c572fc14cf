"""DAM4SAM / SAM2.1++ (Videnovic, Lukežič, Kristan, "A Distractor-Aware Memory for Visual Object Tracking with
SAM2", CVPR 2025, arXiv 2411.17576): a recent-appearance memory plus a distractor-resolving memory.

What changes from SAM 2.1, as the official code does it (jovanavidenovic/DAM4SAM @ 9c95450):

1. **Memory read** (``sam2_base.py::_prepare_memory_conditioned_features``, ``sam2_utils.py::
   select_closest_cond_frames``). Conditioning frames are the object's prompt frames plus *DRM anchors*; up to
   ``max_cond_frames`` (4) are read, with the conditioning temporal encoding (no temporal position): the first
   prompt frame, the newest one before ``t - 1``, then the closest others except ``t - 1``. The *RAM* gets
   ``num_maskmem - |DRM read|`` slots: ``t - 1`` if the object was visible there (it may be an anchor), else
   the newest visible frame; then every earlier slot the newest visible non-conditioning frame on the stride
   grid (multiples of ``ram_stride`` = 5 from the first prompt) strictly before the previous slot. RAM frames
   get temporal encodings by rank (newest = "previous frame"). Object pointers: the DRM frames read, then the
   frames ``t - 1 ... t - 15`` where the object was visible. "Visible" is a non-empty low-res mask.
2. **DRM update** (``dam4sam_tracker.py::DAM4SAMTracker.track``). The chosen mask stays argmax predicted IoU.
   Frame ``t`` becomes an anchor when tracking is reliable -- chosen IoU > 0.8, mask area within 0.8-1.2 of
   the median of the last 10 non-empty areas (out of the last 300), more than 5 frames since the last anchor
   -- and an alternative candidate reveals a distractor: for each non-chosen candidate, the largest
   8-connected component of (candidate AND NOT chosen), united with the chosen mask, has a box whose IoU with
   the chosen mask's box is <= 0.7. Masks and boxes are at video resolution; boxes and their IoU follow
   vot-toolkit's ``Mask.convert(RECTANGLE)`` and ``calculate_overlaps`` (width = right - left).
   An anchor's memory is re-encoded from its binarised mask, as the official predictor's preflight does for
   every conditioning frame (``add_to_drm`` files the frame's output as a conditioning output).
3. **Initialisation from a box** (``DAM4SAMTracker.estimate_mask_from_box``): a box-only prompt is turned
   into a mask by one single-mask decoder pass, then used as a mask prompt (``box_prompt_as_mask``).
4. **Pointer window** (``DAM4SAMTracker.track`` streams: ``num_frames`` grows by one per frame): the pointers'
   temporal encoding is normalised by ``min(frames seen, 16) - 1`` instead of 15 on the first 15 frames.

Beyond the official code (single object, forward, whole-history lists): state is per (session, object), so
several objects run in one session; frame positions are counted from the object's first prompt and in the
direction of travel (the official code assumes frame 0, forward); memory is bounded: only the records a future
read can select are kept (the newest ``max_cond_frames`` anchors, the newest visible frame, the newest visible
stride frames, the pointer window) and the size history is a 300-frame window.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from vidtrack.engines.sam2.contract import Candidates, Choice, Decision, DecoderRun, Kept, MemoryRead
from vidtrack.engines.sam2.state import FrameNote, FrameRecord, ObjectTrack, PolicyState
from vidtrack.errors import InputError
from vidtrack.policies.base import MemoryPolicy


@dataclass
class Dam4SamNote(FrameNote):
    """Beside each record: whether the object was visible (non-empty low-res mask, the official
    ``n_pixels_pos >= 1``), its video-resolution area, and whether the frame became a DRM anchor."""

    visible: bool = True
    area: int = 0
    anchor: bool = False


@dataclass
class Dam4SamObjectState(PolicyState):
    first_cond: int | None = None  # the object's first prompt frame (the official frame 0)
    anchors: list[int] = field(default_factory=list)  # DRM anchors still held, oldest first
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=300))  # areas of the tracked frames
    last_added: int | None = None  # frame of the newest anchor


# --- video-resolution geometry (the official distractor test) -------------------------------------------------

def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a non-empty boolean mask (ties: the one met first in raster order,
    as OpenCV's labelling orders them).

    Vectorised over runs: each row's runs of True, an edge between runs of consecutive rows that touch (one
    pixel of diagonal slack), then every run takes the smallest run index of its component (min-propagation
    along the edges with pointer jumping), so the label is the component's first run in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # runs [start, end), in raster order
    n = rows.size
    stride = w + 2
    key_start = rows * stride + starts
    key_end = rows * stride + ends
    # runs of the row above touching run i: those with end >= start_i and start <= end_i, a contiguous range
    lo = np.searchsorted(key_end, (rows - 1) * stride + starts, side="left")
    hi = np.searchsorted(key_start, (rows - 1) * stride + ends, side="right")
    hi = np.maximum(hi, lo)
    count = hi - lo
    a = np.repeat(np.arange(n), count)
    b = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
    label = np.arange(n)
    while True:
        before = label.copy()
        np.minimum.at(label, a, label[b])
        np.minimum.at(label, b, label[a])
        label = label[label]
        if np.array_equal(label, before):
            break
    areas = np.bincount(label, weights=ends - starts, minlength=n)
    best = int(np.argmax(areas))  # first maximum: the component met first among equal areas
    pick = label == best
    steps = np.zeros((h, w + 1), np.int32)  # +1 where a kept run starts, -1 where it ends
    np.add.at(steps, (rows[pick], starts[pick]), 1)
    np.add.at(steps, (rows[pick], ends[pick]), -1)
    return np.cumsum(steps, axis=1)[:, :w] > 0


def vot_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """vot-toolkit's ``Mask.convert(RECTANGLE)``: (left, top, right - left, bottom - top), inclusive right and
    bottom pixel indices, so one pixel narrower than the mask; (0, 0, 0, 0) when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0]), int(rows[-1] - rows[0]))


def vot_box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """vot-toolkit's ``calculate_overlaps`` of two rectangles (x, y, w, h) without bounds: pixel IoU of the
    rasters ``[x, x + w - 1] x [y, y + h - 1]``; 1 when the union's extent is at most one pixel wide or high."""
    b1 = (a[0], a[1], a[0] + a[2] - 1, a[1] + a[3] - 1)
    b2 = (b[0], b[1], b[0] + b[2] - 1, b[1] + b[3] - 1)
    if min(b1[0], b2[0]) >= max(b1[2], b2[2]) or min(b1[1], b2[1]) >= max(b1[3], b2[3]):
        return 1.0
    a1 = max(0, a[2]) * max(0, a[3])
    a2 = max(0, b[2]) * max(0, b[3])
    iw = max(0, min(b1[2], b2[2]) - max(b1[0], b2[0]) + 1)
    ih = max(0, min(b1[3], b2[3]) - max(b1[1], b2[1]) + 1)
    inter = iw * ih if a1 and a2 else 0
    union = a1 + a2 - inter
    return inter / union if union > 0 else 0.0


def reveals_distractor(chosen: np.ndarray, alternatives: list[np.ndarray], max_box_iou: float) -> bool:
    """The official test: some alternative's largest part outside the chosen mask, added to it, stretches the
    chosen mask's box so much that the two boxes' IoU is <= ``max_box_iou``."""
    parts = [a & ~chosen for a in alternatives]
    parts = [largest_component(p) for p in parts if p.any()]
    if not parts:
        return False
    box = vot_box(chosen)
    return min(vot_box_iou(box, vot_box(p | chosen)) for p in parts) <= max_box_iou


class Dam4SamPolicy(MemoryPolicy):
    """DAM4SAM's distractor-aware memory (module doc). The defaults are the official ``sam21pp_hiera_*.yaml``
    and ``dam4sam_tracker.py`` constants."""

    name = "dam4sam"
    box_prompt_as_mask = True

    def __init__(
        self,
        num_maskmem: int = 7,
        max_obj_ptrs: int = 16,
        *,
        max_cond_frames: int = 4,
        ram_stride: int = 5,
        anchor_iou_threshold: float = 0.8,
        size_ratio_range: tuple[float, float] = (0.8, 1.2),
        size_history: int = 300,
        size_median_frames: int = 10,
        anchor_min_gap: int = 5,
        distractor_box_iou: float = 0.7,
        growing_pointer_window: bool = True,
    ) -> None:
        super().__init__(num_maskmem, max_obj_ptrs)
        if max_cond_frames < 2:
            raise InputError(f"dam4sam max_cond_frames must be >= 2 (the first prompt and one anchor); got "
                             f"{max_cond_frames}")
        if ram_stride < 1:
            raise InputError(f"dam4sam ram_stride must be >= 1; got {ram_stride}")
        self.max_cond_frames = max_cond_frames
        self.ram_stride = ram_stride
        self.anchor_iou_threshold = anchor_iou_threshold
        self.size_ratio_range = (float(size_ratio_range[0]), float(size_ratio_range[1]))
        self.size_history = size_history
        self.size_median_frames = size_median_frames
        self.anchor_min_gap = anchor_min_gap
        self.distractor_box_iou = distractor_box_iou
        self.growing_pointer_window = growing_pointer_window

    def new_object_state(self, object_id: int) -> Dam4SamObjectState:
        return Dam4SamObjectState(sizes=deque(maxlen=self.size_history))

    def state(self, track: ObjectTrack) -> Dam4SamObjectState:
        st = track.policy_state
        if not isinstance(st, Dam4SamObjectState):
            raise TypeError(f"object {track.object_id} holds a {type(st).__name__}, not DAM4SAM's state")
        return st

    # --- frame positions relative to the first prompt, in the direction of travel -----------------------------
    @staticmethod
    def _sign(track: ObjectTrack) -> int:
        return -1 if track.reverse else 1

    def _rel(self, track: ObjectTrack, t: int) -> int:
        first = self.state(track).first_cond
        return (t - (first if first is not None else 0)) * self._sign(track)

    def _abs(self, track: ObjectTrack, r: int) -> int:
        first = self.state(track).first_cond
        return (first if first is not None else 0) + r * self._sign(track)

    @staticmethod
    def _visible(rec: FrameRecord | None) -> bool:
        if rec is None:
            return False
        return rec.note.visible if isinstance(rec.note, Dam4SamNote) else rec.object_score_logit > 0

    # --- memory read -------------------------------------------------------------------------------------------
    def drm_read(self, track: ObjectTrack, frame_idx: int) -> list[int]:
        """The conditioning frames read at ``frame_idx`` (``select_closest_cond_frames``), in the official order:
        the newest before ``t - 1``, the first prompt, then the closest others except ``t - 1``."""
        st = self.state(track)
        t = self._rel(track, frame_idx)
        rel = {self._rel(track, f): f for f in track.cond}
        selected: list[int] = []
        before = [r for r in rel if r < t - 1]
        if before and max(before) >= 0:
            selected.append(max(before))
        if st.first_cond is not None and 0 not in selected and 0 in rel:
            selected.append(0)
        rest = sorted((r for r in rel if r not in selected and r != t - 1), key=lambda r: abs(r - t))
        selected += rest[: max(0, self.max_cond_frames - len(selected))]
        return [rel[r] for r in selected]

    def ram_read(self, track: ObjectTrack, frame_idx: int, drm: list[int]) -> list[int]:
        """The RAM frames read at ``frame_idx``, newest first (the official slot loop)."""
        t = self._rel(track, frame_idx)
        selected = {self._rel(track, f) for f in drm}
        stride = self.ram_stride

        def usable(r: int, allow_cond: bool) -> bool:
            f = self._abs(track, r)
            rec = track.non_cond.get(f)
            if rec is None and allow_cond:
                rec = track.cond.get(f)
            return rec is not None and self._visible(rec) and r not in selected

        def walk(r: int, step: int) -> int | None:
            while True:
                r -= step
                if r <= 0:
                    return None
                if usable(r, allow_cond=False):
                    return r

        out: list[int] = []
        prev: int | None = t - 1
        for i in range(self.num_maskmem - len(drm)):
            if prev is None or prev < 0:
                break
            if i == 0:
                prev = prev if usable(prev, allow_cond=True) else walk(prev, 1)
            else:
                prev = ((prev - 1) // stride) * stride
                prev = prev if usable(prev, allow_cond=False) else walk(prev, stride)
            if prev is not None:
                out.append(self._abs(track, prev))
        return out

    def memory_reads(self, track: ObjectTrack, frame_idx: int, max_ptrs: int) -> list[MemoryRead]:
        drm = self.drm_read(track, frame_idx)
        ram = self.ram_read(track, frame_idx, drm)
        # DRM: the conditioning slot (no temporal position); RAM oldest first, rank k from the newest -> slot k
        memories = [(self.num_maskmem - 1, track.cond[f]) for f in drm]
        for rank in range(len(ram) - 1, -1, -1):
            f = ram[rank]
            rec = track.non_cond.get(f) or track.cond[f]
            memories.append((rank, rec))
        t = self._rel(track, frame_idx)
        span = max(2, min(t + 1, max_ptrs)) if self.growing_pointer_window else max_ptrs
        pointers = [(t - self._rel(track, f), track.cond[f]) for f in drm if self._rel(track, f) <= t]
        drm_set = set(drm)
        for k in range(1, span):
            if t - k < 0:
                break
            f = self._abs(track, t - k)
            ptr = track.non_cond.get(f)
            if ptr is None and f not in drm_set:
                ptr = track.cond.get(f)
            if ptr is not None and self._visible(ptr):
                pointers.append((k, ptr))
        return [MemoryRead(memories, pointers, max_ptrs=span)]

    # --- one tracked frame -------------------------------------------------------------------------------------
    def frame_metadata(self, track: ObjectTrack, frame_idx: int, cands: Candidates, chosen: int) -> Dam4SamNote:
        present = cands.object_score_logit > self.object_score_threshold  # a mask prompt's logit is +-10
        visible = bool(present and (cands.low_res_masks[chosen] > 0).any())
        return Dam4SamNote(visible=visible)

    def choose(self, track: ObjectTrack, frame_idx: int, runs: list[DecoderRun], image_size: int) -> Decision:
        import torch  # where it runs: checking --policy dam4sam must not import it

        from vidtrack.engines.sam2.preprocess import masks_to_video_res

        st = self.state(track)
        cands = Candidates.of_run(runs[0], image_size)
        k = self.choose_candidate(track, frame_idx, cands)
        present = cands.object_score_logit > self.object_score_threshold
        low = cands.low_res_masks if present else torch.full_like(cands.low_res_masks, -1024.0)
        visible = bool((low[k] > 0).any())
        h, w = track.video_size or (image_size, image_size)
        chosen = masks_to_video_res(low[k : k + 1, None], h, w)[0].cpu().numpy()
        area = int(chosen.sum())
        st.sizes.append(area)
        nonempty = [s for s in st.sizes if s >= 1][-self.size_median_frames :]
        ratio = area / float(np.median(nonempty)) if len(st.sizes) > 1 and area >= 1 else -1.0
        lo, hi = self.size_ratio_range
        t = self._rel(track, frame_idx)
        anchor = False
        if (float(cands.ious[k]) > self.anchor_iou_threshold and lo <= ratio <= hi and area >= 1
                and (st.last_added is None or t - self._rel(track, st.last_added) > self.anchor_min_gap)):
            others = [j for j in range(low.size(0)) if j != k]
            alts = masks_to_video_res(low[others][:, None], h, w).cpu().numpy()
            anchor = reveals_distractor(chosen, list(alts), self.distractor_box_iou)
        return Decision([Choice(0, k, note=Dam4SamNote(visible=visible, area=area, anchor=anchor))])

    def remember(
        self, track: ObjectTrack, frame_idx: int, decision: Decision, kept: list[Kept], max_ptrs: int
    ) -> None:
        rec = kept[0].record
        if isinstance(rec.note, Dam4SamNote) and rec.note.anchor:
            st = self.state(track)
            rec.is_cond = True  # memorised from its binarised mask, like every conditioning frame
            track.cond[frame_idx] = rec
            st.anchors.append(frame_idx)
            st.last_added = frame_idx
        else:
            track.non_cond[frame_idx] = rec
        self.record_stored(track, rec)

    def record_stored(self, track: ObjectTrack, rec: FrameRecord) -> None:
        st = self.state(track)
        if rec.is_cond and st.first_cond is None:
            st.first_cond = rec.frame_idx

    # --- forgetting --------------------------------------------------------------------------------------------
    def prune(self, track: ObjectTrack, frame_idx: int) -> None:
        """Keep what a future read can select: the newest ``max_cond_frames`` anchors (older ones are never
        selected again, prompts are kept), the newest visible frame (RAM slot 0), the newest visible frames on
        the stride grid (the other RAM slots) and the pointer window."""
        st = self.state(track)
        t = self._rel(track, frame_idx)
        window = self.max_obj_ptrs - 1
        for f in st.anchors[: -self.max_cond_frames]:
            if t + 1 - self._rel(track, f) > window:
                del track.cond[f]
        st.anchors = [f for f in st.anchors if f in track.cond]
        visible = sorted((self._rel(track, f) for f, r in track.non_cond.items() if self._visible(r)), reverse=True)
        keep = set(visible[:1]) | {t}
        keep |= set([r for r in visible if r > 0 and r % self.ram_stride == 0][: self.num_maskmem - 1])
        for f in list(track.non_cond):
            r = self._rel(track, f)
            if r in keep:
                continue
            if t + 1 - r > window:
                del track.non_cond[f]
            else:
                track.non_cond[f].maskmem_features = None
