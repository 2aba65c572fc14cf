"""Identity over time for a per-frame detector: user ids (prompted mode) or fresh ids (auto mode).

YOLO11-seg segments every frame on its own, so which mask is which object is ours to decide. This module is
pure numpy/scipy (no ultralytics, no torch) so it can be tested on scripted detections.

Design (written from the SORT and ByteTrack papers, Bewley et al. arXiv 1602.00763 and Zhang et al.
arXiv 2110.06864, and from crossing / occlusion clips measured while building it):

* Every detection of the chosen classes is tracked, also in prompted mode. Objects the user did not prompt
  get *anonymous* tracks that are never reported; they exist so that a non-user object that has been seen
  for a while cannot later be taken for a lost user object ("without stealing another object's id").
* Motion: a constant-velocity Kalman filter on the box (:mod:`vidtrack.kalman`). Shape: the last
  observed mask, shifted by the predicted motion. The association score of a track and a detection is
  ``mask_weight * maskIoU(shifted last mask, mask) + (1 - mask_weight) * boxIoU(predicted box, box)``; masks
  are what separates two same-size objects at a crossing, where box IoU alone ties.
* Three stages per frame (Hungarian, :func:`scipy.optimize.linear_sum_assignment`, each with a gate):

  1. all live tracks (seen within ``max_lost_frames``) against the high-confidence detections;
  2. ByteTrack's second stage: tracks seen on the previous frame and still unmatched against the
     low-confidence detections (box IoU >= ``low_match_iou``), which keeps an object through a frame where
     it is half hidden and the detector is unsure;
  3. re-attachment: lost user tracks (any age) and lost anonymous/auto tracks against detections nothing
     claimed, gated by distance to the extrapolated position (the gate grows with the frames lost), the
     class, the area ratio and, when detections carry colour embeddings, appearance. A pair is only accepted
     when it is unambiguous: no other candidate of the same track or detection passes the gate with a cost
     within ``ambiguity_margin``. Motion-only re-attachment at a crossing produced wrong labels in the
     reference measurements, so this layer prefers "occluded" over a guess.

* Prompted mode: a prompt (mask, box or points, with the user's id, on any frame) is matched to that
  frame's detections by Hungarian on mask IoU (box IoU for box prompts). A matched prompt (re)starts the
  user's track from the detection. An unmatched mask prompt starts the track from the user's mask, which is
  reported on that frame (the user asserted it), and the track then waits for a detection to re-attach.
* Auto mode (no prompts): unmatched high-confidence detections start tentative tracks that get an id once
  they are matched on ``min_hits`` frames (on the first frame at once), so one-frame false positives do not
  use up ids; tracks unseen for more than ``max_lost_frames`` are dropped.

Per frame each reported object is either matched (visible, the detection's mask and confidence) or not
(occluded: empty mask, confidence 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from vidtrack.kalman import KalmanState, box_iou, initiate, predict, update, xyah_to_xyxy, xyxy_to_xyah
from vidtrack.types import Prompt

Box = tuple[float, float, float, float]


# --- masks as tight patches --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """A boolean mask stored as its tight bounding-box crop: IoU and shifts cost O(box), not O(frame)."""

    y0: int
    x0: int
    data: np.ndarray  # (h, w) bool
    area: int

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Patch:
        m = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(m.any(axis=1))
        if rows.size == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), 0)
        cols = np.flatnonzero(m.any(axis=0))
        data = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return cls(int(rows[0]), int(cols[0]), data.copy(), int(np.count_nonzero(data)))

    @classmethod
    def from_box(cls, box: Box, height: int, width: int) -> Patch:
        """A filled box (for box prompts, which have no mask)."""
        x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x2, y2 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
        if x2 <= x1 or y2 <= y1:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), 0)
        return cls(y1, x1, np.ones((y2 - y1, x2 - x1), dtype=bool), (y2 - y1) * (x2 - x1))

    @property
    def box(self) -> Box:
        h, w = self.data.shape
        return float(self.x0), float(self.y0), float(self.x0 + w), float(self.y0 + h)

    def to_mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), dtype=bool)
        h, w = self.data.shape
        y0, x0 = max(self.y0, 0), max(self.x0, 0)
        y1, x1 = min(self.y0 + h, height), min(self.x0 + w, width)
        if y1 > y0 and x1 > x0:
            out[y0:y1, x0:x1] = self.data[y0 - self.y0 : y1 - self.y0, x0 - self.x0 : x1 - self.x0]
        return out


def patch_iou(a: Patch, b: Patch, dy: int = 0, dx: int = 0) -> float:
    """IoU of ``a`` shifted by (dy, dx) pixels and ``b`` (shifts are not clipped to any frame)."""
    if a.area == 0 or b.area == 0:
        return 0.0
    ay, ax = a.y0 + dy, a.x0 + dx
    ah, aw = a.data.shape
    bh, bw = b.data.shape
    y0, y1 = max(ay, b.y0), min(ay + ah, b.y0 + bh)
    x0, x1 = max(ax, b.x0), min(ax + aw, b.x0 + bw)
    inter = 0
    if y1 > y0 and x1 > x0:
        inter = int(np.count_nonzero(a.data[y0 - ay : y1 - ay, x0 - ax : x1 - ax]
                                     & b.data[y0 - b.y0 : y1 - b.y0, x0 - b.x0 : x1 - b.x0]))
    return inter / (a.area + b.area - inter)


# --- inputs and outputs ------------------------------------------------------------------------------------
@dataclass
class Detections:
    """One frame's detections in frame pixels (any detector; the YOLO backend fills it from ultralytics).

    ``masks`` are boolean masks at the video's resolution, one per box. ``embeddings`` are optional unit
    vectors (e.g. colour histograms of the masked pixels) used only to re-attach lost objects.
    """

    boxes: np.ndarray  # (N, 4) xyxy
    scores: np.ndarray  # (N,)
    classes: np.ndarray  # (N,) int
    patches: list[Patch]
    embeddings: np.ndarray | None = None  # (N, D)
    masks: list[np.ndarray] | None = field(default=None, repr=False)  # full-size masks, when the caller has them

    @classmethod
    def from_masks(
        cls,
        masks: Sequence[np.ndarray] | np.ndarray,
        scores: Sequence[float] | np.ndarray,
        classes: Sequence[int] | np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        embeddings: np.ndarray | None = None,
    ) -> Detections:
        """Build from full-size boolean masks; boxes default to the masks' tight boxes."""
        mlist = [np.asarray(m, dtype=bool) for m in masks]
        patches = [Patch.from_mask(m) for m in mlist]
        n = len(mlist)
        b = np.array([p.box for p in patches], dtype=np.float64).reshape(n, 4) if boxes is None else (
            np.asarray(boxes, dtype=np.float64).reshape(n, 4))
        c = np.zeros(n, dtype=np.int64) if classes is None else np.asarray(classes, dtype=np.int64).reshape(n)
        return cls(b, np.asarray(scores, dtype=np.float64).reshape(n), c, patches, embeddings, mlist)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [], None, [])

    def __len__(self) -> int:
        return len(self.patches)


@dataclass
class ObjectState:
    """What the identity layer says about one reported object on one frame."""

    object_id: int
    detection: int | None  # index into this frame's Detections, None when not matched
    confidence: float
    box: Box  # observed box when matched, else the predicted one
    prompt_mask: Patch | None = None  # the user's own mask, on a prompt frame where no detection matched it

    @property
    def visible(self) -> bool:
        return self.detection is not None or self.prompt_mask is not None


@dataclass
class IdentityOptions:
    """Knobs of the identity layer (defaults follow ByteTrack where it has one)."""

    high_conf: float = 0.25  # detections >= this go to stage 1 and may start tracks
    low_conf: float = 0.1  # detections in [low_conf, high_conf) only extend tracks seen last frame (stage 2)
    new_track_conf: float = 0.25
    match_thresh: float = 0.2  # minimum stage-1 similarity (1 - ByteTrack's 0.8 cost)
    low_match_iou: float = 0.5
    mask_weight: float = 0.5
    max_lost_frames: int = 30  # frames a track is extrapolated; auto/anonymous tracks are then dropped
    min_hits: int = 2
    prompt_iou: float = 0.5  # minimum IoU between a prompt and the detection it is matched to
    reattach_distance: float = 1.5  # gate radius in object sizes (sqrt of box area) ...
    reattach_growth: float = 0.1  # ... plus this many sizes per frame lost
    reattach_area_ratio: float = 2.5
    appearance_thresh: float = 0.75  # min cosine similarity of embeddings to re-attach (when both have one)
    ambiguity_margin: float = 0.3
    class_consistent: bool = True  # re-attachment needs the same class


@dataclass
class _Track:
    track_id: int  # user id (prompted), assigned id (auto, 0 while tentative) or negative (anonymous)
    user: bool
    kf: KalmanState
    patch: Patch
    obs_center: tuple[float, float]
    cls: int
    embedding: np.ndarray | None
    lost: int = 0
    hits: int = 1
    confirmed: bool = False
    velocity: tuple[float, float] = (0.0, 0.0)
    ref_area: float = 0.0  # slowly decaying maximum of the observed area: the object's unhidden size

    def predicted_box(self) -> Box:
        return xyah_to_xyxy(self.kf.mean)

    def shift(self) -> tuple[int, int]:
        return round(float(self.kf.mean[1] - self.obs_center[1])), round(float(self.kf.mean[0] - self.obs_center[0]))

    def size(self) -> float:
        return max(float(np.sqrt(max(self.ref_area, self.patch.area, 1.0))), 1.0)


def _center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _assign(sim: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    """Hungarian on similarity; pairs below ``thresh`` are refused."""
    if sim.size == 0:
        return []
    rows, cols = linear_sum_assignment(-sim)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if sim[r, c] >= thresh]


class IdentityTracker:
    """Frame-by-frame identity keeping; call :meth:`step` once per processed frame, in order."""

    def __init__(
        self, options: IdentityOptions | None = None, *, height: int, width: int, prompted: bool = False
    ) -> None:
        """``prompted``: report only user ids (set it when prompts will come, even on a later frame, so that
        no automatic id is ever reported); a prompt arriving in auto mode switches the tracker to prompted."""
        self.opt = options or IdentityOptions()
        self.height, self.width = height, width
        self.tracks: list[_Track] = []
        self.frame_count = 0
        self._next_auto = 1
        self._next_anon = -1
        self.prompted = prompted

    # --- public --------------------------------------------------------------------------------------------
    def step(self, dets: Detections, prompts: Iterable[Prompt] = ()) -> list[ObjectState]:
        """Associate this frame's detections; ``prompts`` are the user's prompts for this frame."""
        o = self.opt
        first = self.frame_count == 0
        self.frame_count += 1
        for t in self.tracks:
            if t.lost <= o.max_lost_frames:  # dormant user tracks are not extrapolated further (no drift)
                t.kf = predict(t.kf)
        claimed: dict[int, int] = {}  # detection -> track index
        states: dict[int, ObjectState] = {}

        # prompts claim their detections first
        plist = list(prompts)
        if plist:
            if not self.prompted:
                self.prompted = True
                for t in self.tracks:
                    if not t.user:
                        t.track_id, self._next_anon = self._next_anon, self._next_anon - 1
            self._apply_prompts(dets, plist, claimed, states)

        high = [j for j in range(len(dets)) if dets.scores[j] >= o.high_conf and j not in claimed]
        low = [j for j in range(len(dets)) if o.low_conf <= dets.scores[j] < o.high_conf and j not in claimed]
        taken_tracks = set(claimed.values())
        live = [i for i, t in enumerate(self.tracks) if i not in taken_tracks and t.lost <= o.max_lost_frames]

        # stage 1
        matched = self._match_stage(live, high, dets, claimed, use_mask=True, thresh=o.match_thresh)
        # stage 2: low-confidence detections extend tracks seen on the previous frame
        prev = [i for i in live if i not in matched and self.tracks[i].lost == 0]
        matched |= self._match_stage(prev, low, dets, claimed, use_mask=False, thresh=o.low_match_iou)
        # stage 3: re-attach lost tracks to detections nothing claimed
        taken_tracks = set(claimed.values())
        lost = [i for i, t in enumerate(self.tracks) if i not in taken_tracks and t.lost > 0
                and (t.user or t.lost <= o.max_lost_frames) and (t.user or t.confirmed)]
        free = [j for j in high if j not in claimed]
        self._reattach(lost, free, dets, claimed)

        # update matched tracks, age the others
        det_of: dict[int, int] = {}  # id(track) -> detection; track indices change when tracks are pruned
        for j, i in claimed.items():
            self._observe(self.tracks[i], dets, j)
            det_of[id(self.tracks[i])] = j
        taken_tracks = set(claimed.values())
        for i, t in enumerate(self.tracks):
            if i not in taken_tracks and not (t.user and t.track_id in states):
                t.lost += 1
        # new tracks from unclaimed confident detections
        for j in range(len(dets)):
            if j not in claimed and dets.scores[j] >= o.new_track_conf:
                det_of[id(self._birth(dets, j, confirmed=first))] = j
        self._confirm_and_prune()

        # report
        for t in self.tracks:
            if not self._reported(t) or t.track_id in states:
                continue
            jd = det_of.get(id(t))
            if jd is not None:
                states[t.track_id] = ObjectState(t.track_id, jd, float(dets.scores[jd]), tuple(dets.boxes[jd]))
            else:
                states[t.track_id] = ObjectState(t.track_id, None, 0.0, t.predicted_box())
        return [states[k] for k in sorted(states)]

    @property
    def object_ids(self) -> list[int]:
        return sorted(t.track_id for t in self.tracks if self._reported(t))

    # --- stages --------------------------------------------------------------------------------------------
    def _similarity(self, t: _Track, dets: Detections, j: int, use_mask: bool) -> float:
        pb, db = t.predicted_box(), tuple(dets.boxes[j])
        biou = box_iou(pb, db)
        if not use_mask:
            # stage 2 (unsure detections of objects seen last frame): a half-hidden object's box lies inside
            # its predicted box, so a box mostly inside the prediction counts as a match too
            ix = max(0.0, min(pb[2], db[2]) - max(pb[0], db[0])) * max(0.0, min(pb[3], db[3]) - max(pb[1], db[1]))
            ioa = ix / max((db[2] - db[0]) * (db[3] - db[1]), 1e-9)
            if biou >= 0.2 and ioa >= 0.85:
                return max(biou, self.opt.low_match_iou)
            return biou
        dy, dx = t.shift()
        miou = patch_iou(t.patch, dets.patches[j], dy, dx)
        w = self.opt.mask_weight
        return w * miou + (1 - w) * biou

    def _match_stage(
        self, tracks: list[int], cand: list[int], dets: Detections, claimed: dict[int, int], *, use_mask: bool,
        thresh: float,
    ) -> set[int]:
        cand = [j for j in cand if j not in claimed]
        if not tracks or not cand:
            return set()
        sim = np.array([[self._similarity(self.tracks[i], dets, j, use_mask) for j in cand] for i in tracks])
        out = set()
        for r, c in _assign(sim, thresh):
            claimed[cand[c]] = tracks[r]
            out.add(tracks[r])
        return out

    def _reattach(self, tracks: list[int], cand: list[int], dets: Detections, claimed: dict[int, int]) -> None:
        o = self.opt
        if not tracks or not cand:
            return
        inf = np.inf
        cost = np.full((len(tracks), len(cand)), inf)
        for r, i in enumerate(tracks):
            t = self.tracks[i]
            steps = min(t.lost, o.max_lost_frames)
            cx = t.obs_center[0] + t.velocity[0] * steps
            cy = t.obs_center[1] + t.velocity[1] * steps
            size = t.size()
            radius = (o.reattach_distance + o.reattach_growth * t.lost) * size
            for c, j in enumerate(cand):
                p = dets.patches[j]
                if p.area == 0:
                    continue
                if o.class_consistent and int(dets.classes[j]) != t.cls:
                    continue
                ratio = p.area / max(t.ref_area, t.patch.area, 1)
                if not (1 / o.reattach_area_ratio <= ratio <= o.reattach_area_ratio):
                    continue
                dcx, dcy = _center(tuple(dets.boxes[j]))
                dist = float(np.hypot(dcx - cx, dcy - cy))
                if dist > radius:
                    continue
                c_app = 0.0
                e = dets.embeddings
                if t.embedding is not None and e is not None:
                    s = float(np.dot(t.embedding, e[j]))
                    if s < o.appearance_thresh:
                        continue
                    c_app = 1.0 - s
                cost[r, c] = dist / radius + c_app
        finite = np.isfinite(cost)
        if not finite.any():
            return
        big = 1e6
        rows, cols = linear_sum_assignment(np.where(finite, cost, big))
        for r, c in zip(rows, cols, strict=True):
            if not finite[r, c]:
                continue
            best = cost[r, c]
            others = np.concatenate([np.delete(cost[r], c), np.delete(cost[:, c], r)])
            others = others[np.isfinite(others)]
            if others.size and others.min() - best < o.ambiguity_margin:
                continue  # ambiguous: report occluded rather than guess
            claimed[cand[c]] = tracks[r]

    # --- prompts -------------------------------------------------------------------------------------------
    def _apply_prompts(
        self, dets: Detections, prompts: list[Prompt], claimed: dict[int, int], states: dict[int, ObjectState]
    ) -> None:
        o = self.opt
        sim = np.zeros((len(prompts), len(dets)))
        ppatch: list[Patch | None] = []
        for p in prompts:
            r = len(ppatch)
            patch: Patch | None = None
            if p.mask is not None:
                patch = Patch.from_mask(p.mask)
            elif p.box is not None:
                patch = Patch.from_box(p.box, self.height, self.width)
            ppatch.append(patch if p.mask is not None else None)
            for j in range(len(dets)):
                if p.mask is not None and patch is not None:
                    sim[r, j] = patch_iou(patch, dets.patches[j])
                elif p.box is not None:
                    sim[r, j] = box_iou(p.box, tuple(dets.boxes[j]))
                if p.points is not None and len(p.points):
                    sim[r, j] = (sim[r, j] if p.box is not None else 1.0) * _points_fit(p, dets.patches[j])
        pairs = dict(_assign(sim, o.prompt_iou)) if len(dets) else {}
        # a re-prompt replaces the user's track; anonymous tracks sitting on a prompted detection are dropped
        ids = {int(p.object_id) for p in prompts}
        boxes = [tuple(dets.boxes[j]) for j in pairs.values()]
        self.tracks = [t for t in self.tracks if not (t.user and t.track_id in ids)
                       and (t.user or all(box_iou(t.predicted_box(), b) < 0.5 for b in boxes))]
        for r, p in enumerate(prompts):
            oid = int(p.object_id)
            if r in pairs:
                j = pairs[r]
                t = self._new_track(dets, j, oid, user=True)
                t.confirmed, t.hits = True, 0  # _observe (called for claimed detections) counts the hit
                self.tracks.append(t)
                claimed[j] = len(self.tracks) - 1
                states[oid] = ObjectState(oid, j, float(dets.scores[j]), tuple(dets.boxes[j]))
                continue
            patch = ppatch[r]
            if patch is None and p.box is not None:
                patch = Patch.from_box(p.box, self.height, self.width)
            if patch is None or patch.area == 0:
                continue  # a points-only prompt that hit no detection: nothing to track yet
            t = _Track(oid, True, initiate(xyxy_to_xyah(patch.box)), patch, _center(patch.box),
                       self._guess_class(dets, patch), None, lost=1, hits=0, confirmed=True,
                       ref_area=float(patch.area))
            self.tracks.append(t)  # lost=1: not seen by the detector; re-attached from the next frame on
            if ppatch[r] is not None:  # the user's own mask is this frame's answer
                states[oid] = ObjectState(oid, None, 1.0, patch.box, prompt_mask=patch)
            else:
                states[oid] = ObjectState(oid, None, 0.0, patch.box)

    def _guess_class(self, dets: Detections, patch: Patch) -> int:
        """Class of the best-overlapping detection (any IoU), or -1 (then class is not checked)."""
        best, cls = 0.0, -1
        for j in range(len(dets)):
            v = patch_iou(patch, dets.patches[j])
            if v > best:
                best, cls = v, int(dets.classes[j])
        return cls

    # --- track bookkeeping ---------------------------------------------------------------------------------
    def _new_track(self, dets: Detections, j: int, track_id: int, *, user: bool) -> _Track:
        box = tuple(dets.boxes[j])
        emb = None if dets.embeddings is None else np.asarray(dets.embeddings[j], dtype=np.float64)
        return _Track(track_id, user, initiate(xyxy_to_xyah(box)), dets.patches[j], _center(box),
                      int(dets.classes[j]), emb, ref_area=float(dets.patches[j].area))

    def _birth(self, dets: Detections, j: int, *, confirmed: bool) -> _Track:
        if self.prompted:
            tid = self._next_anon
            self._next_anon -= 1
        else:
            tid = 0  # an id is given on confirmation
        t = self._new_track(dets, j, tid, user=False)
        t.confirmed = confirmed
        if confirmed and not self.prompted:
            t.track_id = self._take_auto_id()
        self.tracks.append(t)
        return t

    def _take_auto_id(self) -> int:
        tid = self._next_auto
        self._next_auto += 1
        return tid

    def _observe(self, t: _Track, dets: Detections, j: int) -> None:
        box = tuple(dets.boxes[j])
        c = _center(box)
        area = float(dets.patches[j].area)
        whole = area >= 0.8 * t.ref_area  # a shrinking (half-hidden) mask drags its centre: no velocity from it
        t.ref_area = max(0.98 * t.ref_area, area)
        if t.lost == 0 and t.hits > 0 and whole:
            # per-frame velocity of the observed centre, smoothed; used to extrapolate lost tracks
            t.velocity = (0.7 * t.velocity[0] + 0.3 * (c[0] - t.obs_center[0]),
                          0.7 * t.velocity[1] + 0.3 * (c[1] - t.obs_center[1]))
        elif t.hits == 0:
            t.kf = initiate(xyxy_to_xyah(box))
        meas = xyxy_to_xyah(box)
        if t.lost > 0:
            # after a gap the filter's velocity is stale (a shrinking half-hidden box drags it): restart it
            t.kf = initiate(meas)
        else:
            t.kf = update(t.kf, meas)
        t.patch = dets.patches[j]
        t.obs_center = c
        if t.cls < 0:
            t.cls = int(dets.classes[j])
        if dets.embeddings is not None:
            e = np.asarray(dets.embeddings[j], dtype=np.float64)
            if t.embedding is None:
                t.embedding = e
            else:
                m = 0.9 * t.embedding + 0.1 * e
                t.embedding = m / max(float(np.linalg.norm(m)), 1e-12)
        t.hits += 1
        t.lost = 0

    def _confirm_and_prune(self) -> None:
        o = self.opt
        keep = []
        for t in self.tracks:
            if not t.confirmed:
                if t.lost > 0:
                    continue  # a tentative track missed once: a false positive
                if t.hits >= o.min_hits:
                    t.confirmed = True
                    if not self.prompted and t.track_id == 0:
                        t.track_id = self._take_auto_id()
            if not t.user and t.lost > o.max_lost_frames:
                continue
            keep.append(t)
        self.tracks = keep

    def _reported(self, t: _Track) -> bool:
        if self.prompted:
            return t.user
        return t.confirmed and t.track_id > 0


def _points_fit(p: Prompt, patch: Patch) -> float:
    """1.0 when every positive point lies in the detection's mask and no negative point does, else 0."""
    assert p.points is not None
    labels = p.labels if p.labels is not None else np.ones(len(p.points), dtype=np.int32)
    h, w = patch.data.shape
    for (x, y), lab in zip(p.points, labels, strict=True):
        yy, xx = int(y) - patch.y0, int(x) - patch.x0
        inside = 0 <= yy < h and 0 <= xx < w and bool(patch.data[yy, xx])
        if inside != bool(lab):
            return 0.0
    return 1.0
