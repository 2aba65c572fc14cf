"""The studio's actions on an interactive session, as JSON-ready dicts: applied live and replayed on restore.

The page never calls the session directly: every click becomes one action dict, applied through
:func:`apply_action` and appended to the project's ``actions.json``. A restarted server replays the same dicts
into a fresh session (:func:`replay`), so prompts come back exactly as they were given.

Actions::

    {"op": "add_prompt", "frame": 12, "object_id": 1, "points": [[x, y], ...], "labels": [1, 0],
     "box": [x1, y1, x2, y2] | null, "mask": {COCO RLE} | null, "clear_old_points": false}
    {"op": "clear_prompts", "frame": 12, "object_id": 1 | null}
    {"op": "remove_object", "object_id": 1}
    {"op": "reset"}
    {"op": "propagate", "direction": "forward", "start": null, "max_frames": null, "frames": 57}

A propagation is logged when it ends, with the number of frames it yielded (a cancelled one stops early).
Replaying it matters: Meta's predictor refines a click on a tracked frame from that frame's tracked output,
so the prompts alone do not rebuild the session a correction was made in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vidtrack.errors import InputError
from vidtrack.types import RLE, TrackingFrame, rle_decode, rle_encode

OPS = ("add_prompt", "clear_prompts", "remove_object", "reset", "propagate")


def prompt_action(frame: int, object_id: int, *, points: list[list[float]] | None = None,
                  labels: list[int] | None = None, box: list[float] | None = None, mask: np.ndarray | None = None,
                  clear_old_points: bool = False) -> dict[str, Any]:
    """An ``add_prompt`` action; a mask is stored as COCO RLE."""
    if points is not None and (labels is None or len(labels) != len(points)):
        raise InputError("give one label (1 positive, 0 negative) per point")
    if points is None and box is None and mask is None:
        raise InputError("a prompt needs points, a box or a mask")
    return {"op": "add_prompt", "frame": int(frame), "object_id": int(object_id),
            "points": [[float(x), float(y)] for x, y in points] if points is not None else None,
            "labels": [int(v) for v in labels] if labels is not None else None,
            "box": [float(v) for v in box] if box is not None else None,
            "mask": rle_encode(np.asarray(mask, dtype=bool)) if mask is not None else None,
            "clear_old_points": bool(clear_old_points)}


def propagate_action(direction: str, start: int | None, max_frames: int | None, frames: int) -> dict[str, Any]:
    return {"op": "propagate", "direction": direction, "start": start, "max_frames": max_frames,
            "frames": int(frames)}


def apply_action(session: Any, action: Mapping[str, Any]) -> TrackingFrame | None:
    """Apply one action to an interactive session; returns the frame's masks for prompt and clear actions.
    A logged propagation is run again for as many frames as it yielded."""
    op = action.get("op")
    if op == "propagate":
        gen = session.propagate(direction=action["direction"], start=action.get("start"),
                                max_frames=action.get("max_frames"))
        try:
            for _ in range(int(action["frames"])):
                if next(gen, None) is None:
                    break
        finally:
            gen.close()
        return None
    if op == "add_prompt":
        points = action.get("points")
        labels = action.get("labels")
        box = action.get("box")
        mask: RLE | None = action.get("mask")
        return session.add_prompt(
            int(action["frame"]), int(action["object_id"]),
            points=np.asarray(points, dtype=np.float32).reshape(-1, 2) if points is not None else None,
            labels=np.asarray(labels, dtype=np.int32) if labels is not None else None,
            box=np.asarray(box, dtype=np.float32) if box is not None else None,
            mask=rle_decode(mask) if mask is not None else None,
            clear_old_points=bool(action.get("clear_old_points", False)))
    if op == "clear_prompts":
        oid = action.get("object_id")
        return session.clear_prompts(int(action["frame"]), None if oid is None else int(oid))
    if op == "remove_object":
        session.remove_object(int(action["object_id"]))
        return None
    if op == "reset":
        session.reset()
        return None
    raise InputError(f"unknown action {op!r}; one of {', '.join(OPS)}")


def replay(session: Any, actions: Iterable[Mapping[str, Any]]) -> int:
    """Apply every logged action in order to a fresh session; returns how many were applied."""
    n = 0
    for action in actions:
        apply_action(session, action)
        n += 1
    return n


def prompted_frames(actions: Iterable[Mapping[str, Any]]) -> dict[int, list[int]]:
    """Object id -> the frames that hold its prompts now (after clears, removals and resets)."""
    live: dict[int, set[int]] = {}
    for a in actions:
        op = a.get("op")
        if op == "add_prompt":
            live.setdefault(int(a["object_id"]), set()).add(int(a["frame"]))
        elif op == "clear_prompts":
            oid = a.get("object_id")
            for o, frames in live.items():
                if oid is None or int(oid) == o:
                    frames.discard(int(a["frame"]))
        elif op == "remove_object":
            live.pop(int(a["object_id"]), None)
        elif op == "reset":
            live.clear()
    return {o: sorted(f) for o, f in live.items() if f}


def frame_prompts(actions: Iterable[Mapping[str, Any]]) -> dict[int, dict[int, dict[str, Any]]]:
    """What to draw on each frame: frame -> object id -> ``{"points", "labels", "box", "mask"}`` as prompted
    now (points accumulate until ``clear_old_points``; a clear removes them)."""
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for a in actions:
        op = a.get("op")
        if op == "add_prompt":
            f, o = int(a["frame"]), int(a["object_id"])
            cur = out.setdefault(f, {}).get(o)
            if cur is None or a.get("clear_old_points"):
                cur = {"points": [], "labels": [], "box": None, "mask": False}
                out[f][o] = cur
            cur["points"] += a.get("points") or []
            cur["labels"] += a.get("labels") or []
            if a.get("box") is not None:
                cur["box"] = a["box"]
            if a.get("mask") is not None:
                cur["mask"] = True
        elif op == "clear_prompts":
            oid = a.get("object_id")
            frame = out.get(int(a["frame"]), {})
            for o in list(frame):
                if oid is None or int(oid) == o:
                    del frame[o]
        elif op == "remove_object":
            for frame in out.values():
                frame.pop(int(a["object_id"]), None)
        elif op == "reset":
            out.clear()
    return {f: objs for f, objs in out.items() if objs}
