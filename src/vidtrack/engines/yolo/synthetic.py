"""Deterministic scripted scenes for testing identity keeping without a detector.

Each scene is a few coloured shapes on a path, drawn back to front, plus optional occluders that are never
detected (a wall). From the drawing we derive what a reasonable detector would report per frame:

* an object's detected mask is its *visible* part (hidden pixels removed, clipped to the frame);
* it is detected with a high score when at least ``high_visible`` of its area is visible, with a low score
  (ByteTrack's second stage) down to ``low_visible``, and not at all below;
* its embedding is a colour histogram of the visible pixels (what the YOLO backend computes too).

Ground truth is the id of the object each detection came from, so tests can count id switches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vidtrack.engines.yolo.identity import Detections

Path = Callable[[int], tuple[float, float]]


@dataclass
class ScriptedObject:
    """One object: ``shape`` "disk" (radius ``size[0]``) or "box" (half sizes ``size``), centre ``path(t)``."""

    object_id: int
    shape: str
    size: tuple[float, float]
    color: tuple[int, int, int]
    path: Path
    depth: int = 0  # larger = nearer the camera (drawn later)
    cls: int = 0
    present: Callable[[int], bool] = field(default=lambda t: True)  # False: not in the scene at all

    def mask(self, t: int, height: int, width: int) -> np.ndarray:
        yy, xx = np.mgrid[:height, :width]
        cx, cy = self.path(t)
        if self.shape == "disk":
            return (xx - cx) ** 2 + (yy - cy) ** 2 < self.size[0] ** 2
        return (np.abs(xx - cx) < self.size[0]) & (np.abs(yy - cy) < self.size[1])


@dataclass
class SyntheticVideo:
    frames: list[np.ndarray]  # RGB uint8
    detections: list[Detections]
    truth: list[list[int]]  # per frame, the object id behind each detection
    full_masks: list[dict[int, np.ndarray]]  # per frame, each present object's visible mask (may be empty)
    height: int
    width: int


def color_embedding(frame: np.ndarray, mask: np.ndarray, bins: int = 8) -> np.ndarray:
    """L2-normalised concatenated per-channel histogram of the masked pixels (a cheap appearance cue)."""
    px = frame[mask]
    if px.size == 0:
        return np.zeros(3 * bins)
    q = (px.astype(np.int64) * bins) // 256
    h = np.concatenate([np.bincount(q[:, c], minlength=bins) for c in range(3)]).astype(np.float64)
    return h / max(float(np.linalg.norm(h)), 1e-12)


def render(
    objects: list[ScriptedObject],
    num_frames: int,
    height: int = 120,
    width: int = 200,
    *,
    walls: list[tuple[int, int, int, int]] = (),  # type: ignore[assignment]
    high_visible: float = 0.6,
    low_visible: float = 0.3,
    miss: Callable[[int, int], bool] = lambda oid, t: False,  # scripted detector misses
    seed: int = 0,
) -> SyntheticVideo:
    rng = np.random.default_rng(seed)
    bg = rng.integers(30, 60, (height, width, 3), dtype=np.uint8)
    frames, dets, truth, fulls = [], [], [], []
    order = sorted(objects, key=lambda o: o.depth)
    for t in range(num_frames):
        img = bg.copy()
        owner = np.zeros((height, width), dtype=np.int64)  # object id visible at each pixel (0 none)
        masks = {}
        for o in order:
            if not o.present(t):
                continue
            m = o.mask(t, height, width)
            masks[o.object_id] = m
            img[m] = o.color
            owner[m] = o.object_id
        for x1, y1, x2, y2 in walls:
            img[y1:y2, x1:x2] = (128, 128, 128)
            owner[y1:y2, x1:x2] = 0
        vis_masks, scores, ids = [], [], []
        visible_now = {}
        for o in objects:
            if o.object_id not in masks:
                continue
            full = masks[o.object_id]
            vis = owner == o.object_id
            visible_now[o.object_id] = vis
            area = max(int(full.sum()), 1)
            frac = vis.sum() / area
            if miss(o.object_id, t) or frac < low_visible or not vis.any():
                continue
            vis_masks.append(vis)
            scores.append(0.9 if frac >= high_visible else 0.2)
            ids.append(o.object_id)
        emb = np.array([color_embedding(img, m) for m in vis_masks]) if vis_masks else None
        classes = [next(o.cls for o in objects if o.object_id == i) for i in ids]
        dets.append(Detections.from_masks(vis_masks, scores, classes, embeddings=emb))
        frames.append(img)
        truth.append(ids)
        fulls.append(visible_now)
    return SyntheticVideo(frames, dets, truth, fulls, height, width)


def linear(x0: float, y0: float, vx: float, vy: float) -> Path:
    return lambda t: (x0 + vx * t, y0 + vy * t)


# --- the scenes the tests use ------------------------------------------------------------------------------
def crossing(num_frames: int = 60) -> SyntheticVideo:
    """Two same-class, same-size discs of similar colour cross; the nearer one hides the other completely
    for a few frames."""
    a = ScriptedObject(1, "disk", (14, 14), (200, 60, 60), linear(30, 60, 2.5, 0.0), depth=1)
    b = ScriptedObject(2, "disk", (14, 14), (190, 70, 60), linear(170, 66, -2.5, 0.0), depth=0)
    return render([a, b], num_frames)


def occlusion(num_frames: int = 70, wall: tuple[int, int, int, int] = (80, 0, 120, 120)) -> SyntheticVideo:
    """A disc and a box pass behind a wall (each fully hidden for several frames) while a third object
    stays in view."""
    a = ScriptedObject(1, "disk", (12, 12), (220, 50, 50), linear(20, 35, 2.5, 0.0))
    b = ScriptedObject(2, "box", (11, 9), (50, 200, 60), linear(185, 85, -2.5, 0.0))
    c = ScriptedObject(3, "disk", (9, 9), (60, 60, 220), linear(40, 100, 0.3, 0.0))
    return render([a, b, c], num_frames, walls=[wall])


def enter_leave(num_frames: int = 80) -> SyntheticVideo:
    """Objects enter at the left edge at different times and leave at the right edge."""
    objs = [
        ScriptedObject(1, "box", (10, 8), (220, 200, 40), lambda t: (-15 + 4.0 * t, 30)),
        ScriptedObject(2, "disk", (10, 10), (40, 200, 220), lambda t: (-15 + 4.0 * (t - 25), 70),
                       present=lambda t: t >= 25),
        ScriptedObject(3, "disk", (8, 8), (220, 60, 200), lambda t: (-15 + 5.0 * (t - 45), 100),
                       present=lambda t: t >= 45),
    ]
    return render(objs, num_frames)


def missed_then_back(num_frames: int = 50, gap: tuple[int, int] = (15, 27)) -> SyntheticVideo:
    """The detector misses object 1 for ``gap`` frames (no occluder: a flaky detector); a second object of
    another colour moves nearby the whole time."""
    a = ScriptedObject(1, "disk", (12, 12), (220, 50, 50), linear(30, 40, 2.0, 0.5))
    b = ScriptedObject(2, "box", (10, 10), (40, 220, 60), linear(30, 95, 2.0, -0.2))
    return render([a, b], num_frames, miss=lambda oid, t: oid == 1 and gap[0] <= t < gap[1])


def distractor(num_frames: int = 50) -> SyntheticVideo:
    """The detector misses object 1 for frames 15..34. Meanwhile a differently coloured disc (id 8) enters right
    next to where it was, and a look-alike (id 9) enters far away: neither may take id 1, which must come back
    when object 1 is detected again."""
    a = ScriptedObject(1, "disk", (12, 12), (220, 50, 50), linear(60, 60, 0.5, 0.0))
    near = ScriptedObject(8, "disk", (12, 12), (40, 220, 60), lambda t: (60 + 0.5 * t + 24, 70),
                          present=lambda t: t >= 18)
    far = ScriptedObject(9, "disk", (12, 12), (220, 50, 50), lambda t: (185, 20), present=lambda t: t >= 18)
    return render([a, near, far], num_frames, miss=lambda oid, t: oid == 1 and 15 <= t < 35)
