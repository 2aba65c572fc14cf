"""Run a tracker over a benchmark and score predictions: the code behind ``vidtrack eval`` and ``vidtrack score``.

Running is resumable at sequence granularity: each sequence's predictions are written into a hidden
``.<seq>.partial`` folder and renamed into place when complete, so a killed run leaves either a finished
sequence or nothing, and the next run skips every finished sequence. ``run_info.json`` records the model and
protocol so that a resumed run cannot silently mix two models' predictions.

Prompts follow each benchmark's semi-supervised protocol: DAVIS gives every object's ground-truth mask on the
first annotated frame; SA-V/YouTube-VOS/MOSE/LVOS (the SA-V protocol) give each object's mask on the first
annotated frame where it appears; LaSOT/GOT-10k/TrackingNet give the ground-truth box on frame 0.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from vidtrack.errors import InputError
from vidtrack.eval.datasets import (
    BoxDataset,
    BoxSequence,
    VOSDataset,
    VOSPredictions,
    VOSSequence,
    read_box_predictions,
)
from vidtrack.eval.io import compose_labels, read_object_png, write_boxes, write_label_png
from vidtrack.eval.mot import MOTAccumulator, combine_mot
from vidtrack.eval.ope import got10k_sequence, ope_sequence, summarize_got10k, summarize_ope
from vidtrack.eval.vos import DAVIS, FrameMasks, ObjectScores, VOSProtocol, evaluate_vos_sequence, summarize_vos
from vidtrack.export.atomic import atomic_write

if TYPE_CHECKING:
    from vidtrack.api import TrackingModelLoader
    from vidtrack.types import Prompt, TrackingResult

__all__ = [
    "EvalReport",
    "RunLog",
    "check_run_info",
    "pending_sequences",
    "run_boxes",
    "run_info",
    "run_vos",
    "score_boxes",
    "score_vos",
    "timing_summary",
    "write_report",
]

Progress = Callable[[str, int, int], None]
"""``progress(sequence, done, total)``, called before each sequence and once at the end (name "")."""

VOS_CONVENTIONS = [
    "J = |P∩G|/|P∪G| (1 when both empty); F = boundary F-measure with a disk of radius ceil(0.008·diagonal), "
    "davis2017 _seg2bmap boundaries and edge cases (both empty: 1; one empty: 0)",
    "per-object frame means pooled over all objects of all sequences; J&F = (J-Mean + F-Mean)/2; fractions in [0,1]",
    "recall = fraction of frames > 0.5; decay = first-quarter minus last-quarter mean (davis2017 bins, 64-bit "
    "indices, correct past 255 frames)",
]
BOX_CONVENTIONS = [
    "got10k-toolkit primitives: IoU on x,y,w,h (continuous); success = IoU > τ for τ = linspace(0,1,21), AUC = "
    "mean of the curve; precision = centre error <= 20 px with centres xy+(wh-1)/2; curves averaged over sequences",
    "norm_precision@0.20: normalised precision curve at 0.20 (pytracking/SAMURAI/OSTrack/mmtracking); "
    "norm_precision_auc51: mean over the 51 thresholds 0..0.5 (got10k-toolkit LaSOT) — not comparable",
    "first frame prediction := ground truth; NaN or zero-size predictions take the previous box (LaSOT toolkit)",
    "GOT-10k AO/SR0.5/SR0.75: boxes clipped to the image as got10k does, frame 0 and cover==0 (or absent) frames "
    "excluded, IoUs of all frames of all sequences pooled",
]


@dataclass
class EvalReport:
    """Scores of one dataset: per-sequence rows (per object for VOS), the summary and the conventions used."""

    kind: Literal["vos", "box"]
    protocol: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    conventions: list[str]
    mot_rows: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "protocol": self.protocol, "summary": _jsonable(self.summary),
                "conventions": self.conventions, "info": _jsonable(self.info),
                "per_sequence": _jsonable(self.rows), **({"mot_per_sequence": _jsonable(self.mot_rows)}
                                                         if self.mot_rows else {})}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_write(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})


def write_report(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``per_sequence.csv`` (and ``mot_per_sequence.csv``) and ``summary.json`` into ``out_dir``."""
    out = Path(out_dir)
    paths = {"csv": out / "per_sequence.csv", "json": out / "summary.json"}
    _write_csv(paths["csv"], report.rows)
    if report.mot_rows:
        paths["mot_csv"] = out / "mot_per_sequence.csv"
        _write_csv(paths["mot_csv"], report.mot_rows)
    with atomic_write(paths["json"]) as f:
        json.dump(report.to_json(), f, indent=1, allow_nan=False)
    return paths


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def _iou_matrix(gt: FrameMasks, pred: FrameMasks, gi: list[int], pi: list[int]) -> np.ndarray:
    """Mask IoUs (gt rows, pred columns) with the same integer counts pycocotools uses."""
    if not gi or not pi:
        return np.zeros((len(gi), len(pi)))
    gl, pl = gt.labels, pred.labels
    if gl is not None and pl is not None and max(int(gl.max()), int(pl.max())) < 256:
        k = max(int(gl.max()), int(pl.max())) + 1  # one joint histogram gives every intersection
        joint = np.bincount(gl.astype(np.int64).ravel() * k + pl.astype(np.int64).ravel(), minlength=k * k)
        joint = joint.reshape(k, k)
        area_g, area_p = joint.sum(axis=1), joint.sum(axis=0)
        inter = joint[np.ix_(gi, pi)].astype(np.float64)
        union = area_g[gi][:, None] + area_p[pi][None, :] - inter
        return inter / union
    out = np.zeros((len(gi), len(pi)))
    gm = [gt.mask(g) for g in gi]
    pm = [pred.mask(p) for p in pi]
    for a, g in enumerate(gm):
        for b, p in enumerate(pm):
            n_inter = int(np.count_nonzero(g & p))
            out[a, b] = n_inter / int(np.count_nonzero(g | p))
    return out


def score_vos(
    dataset: VOSDataset,
    pred_root: str | Path,
    protocol: VOSProtocol = DAVIS,
    *,
    allow_missing: bool = False,
    mot: bool = False,
    progress: Progress | None = None,
) -> EvalReport:
    """J&F (and with ``mot=True`` HOTA/MOTSA over every annotated frame) of predictions under ``pred_root``."""
    objects: list[ObjectScores] = []
    mot_results: list[dict[str, Any]] = []
    mot_rows: list[dict[str, Any]] = []
    missing: dict[str, int] = {}
    voids = set() if protocol.void_label is None else {protocol.void_label}
    for i, seq in enumerate(dataset):
        if progress:
            progress(seq.name, i, len(dataset))
        pred = VOSPredictions(pred_root, seq, allow_missing=allow_missing)
        acc = MOTAccumulator(seq.name) if mot else None

        def feed(_fr: Hashable, gt: FrameMasks, pr: FrameMasks, acc: MOTAccumulator | None = acc) -> None:
            assert acc is not None
            gi, pi = sorted(gt.ids - voids), sorted(pr.ids - voids)
            acc.add(gi, pi, _iou_matrix(gt, pr, gi, pi))

        objects += evaluate_vos_sequence(seq.name, seq.frames, seq.read_gt, pred.read, protocol,
                                         object_frames=seq.object_frames, on_frame=feed if mot else None)
        if pred.missing:
            missing[seq.name] = pred.missing
        if acc is not None:
            r = acc.compute()
            mot_results.append(r)
            mot_rows.append({"sequence": seq.name, **{k: r[k] for k in ("HOTA", "DetA", "AssA", "LocA", "MOTSA",
                                                                          "sMOTSA", "IDSW", "IDF1")}})
    if progress:
        progress("", len(dataset), len(dataset))
    summary: dict[str, Any] = summarize_vos(objects)
    conventions = [f"protocol {protocol.name}: " + _describe(protocol), *VOS_CONVENTIONS]
    if mot:
        combined = combine_mot(mot_results)
        summary["MOT"] = {k: combined[k] for k in ("HOTA", "DetA", "AssA", "LocA", "MOTSA", "sMOTSA", "IDSW",
                                                   "IDF1")}
        conventions.append("HOTA/DetA/AssA (mean over α = 0.05..0.95), MOTSA/sMOTSA (CLEAR at IoU 0.5) and IDF1 as "
                           "TrackEval, over every annotated frame, a detection = a non-empty mask")
    rows = [o.to_row() for o in objects]
    return EvalReport("vos", protocol.name, rows, summary, conventions, mot_rows,
                      {"missing_frames": missing} if missing else {})


def _describe(p: VOSProtocol) -> str:
    objs = ("objects = ids of the first annotated frame (late objects are an error)" if p.objects == "first_frame"
            else "objects counted from their first appearance in GT or prediction; ids never in GT dropped")
    return (f"{objs}; {'first and last annotated frames skipped' if p.skip_first_last else 'all annotated frames'}"
            f"; {'label 255 is void' if p.void_label is not None else '255 is an ordinary id'}")


def score_boxes(
    dataset: BoxDataset,
    pred_root: str | Path,
    *,
    absent_policy: Literal["fail", "drop"] = "fail",
    progress: Progress | None = None,
) -> EvalReport:
    """OPE (success AUC, OP50/75, P@20, both normalised precisions) and GOT-10k AO/SR of box predictions."""
    ope, got, rows = [], [], []
    for i, seq in enumerate(dataset):
        if progress:
            progress(seq.name, i, len(dataset))
        reps = read_box_predictions(pred_root, seq.name)
        o = ope_sequence(reps[0], seq.gt, absent=seq.absent, name=seq.name, absent_policy=absent_policy)
        g = got10k_sequence(reps, seq.gt, cover=_got_keep(seq), resolution=seq.image_size(), name=seq.name)
        ope.append(o)
        got.append(g)
        rows.append(o.to_row() | g.scores)
    if progress:
        progress("", len(dataset), len(dataset))
    summary = summarize_ope(ope) | summarize_got10k(got)
    return EvalReport("box", f"ope(absent={absent_policy})", rows, summary, list(BOX_CONVENTIONS))


def _got_keep(seq: BoxSequence) -> np.ndarray:
    """Frames GOT-10k scores: cover > 0 (or not absent), and a valid ground-truth box."""
    g = seq.gt
    keep = ~np.isnan(g).any(axis=1) & (g[:, 2] > 0) & (g[:, 3] > 0)
    if seq.cover is not None:
        if len(seq.cover) != len(g):
            raise InputError(f"{seq.name}: {len(seq.cover)} cover flags for {len(g)} frames")
        keep &= seq.cover > 0
    elif seq.absent is not None:
        keep &= ~seq.absent
    return keep.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Running a tracker
# --------------------------------------------------------------------------------------------------


def check_run_info(out_dir: str | Path, info: dict[str, Any]) -> None:
    """Refuse to resume into a run folder made with another model, protocol or tracker options (those that
    change masks); record ``info``. A folder recorded without tracker options resumes with any."""
    out_dir = Path(out_dir)
    path = out_dir / "run_info.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        diff = [k for k in ("model", "protocol", "tracker") if k in old and k in info and old[k] != info[k]]
        if diff:
            k = diff[0]
            raise InputError(f"{out_dir} holds predictions made with {k}={old[k]!r}, not {info[k]!r}; "
                             "use another --out folder or delete it to start over")
    with atomic_write(path) as f:
        json.dump(info, f, indent=1)


def run_info(model: str, protocol: str, dataset: VOSDataset | BoxDataset,
             tracker: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run folder is tied to: the canonical model name, the protocol, the dataset folder and, when
    given, the tracker options that change masks (policy, semantics, input size...)."""
    info: dict[str, Any] = {"model": model, "protocol": protocol, "dataset": str(Path(dataset.root).resolve())}
    if tracker is not None:
        info["tracker"] = tracker
    return info


def _vos_prompts(seq: VOSSequence, protocol: VOSProtocol, index: dict[str, int]) -> list[Prompt]:
    from vidtrack.types import Prompt

    voids = set() if protocol.void_label is None else {protocol.void_label}
    prompts: list[Prompt] = []

    def pos(stem: str) -> int:
        if stem not in index:
            raise InputError(f"{seq.name}: annotation {stem}.png has no frame image {stem}.* in {seq.frames_dir}")
        return index[stem]

    if seq.per_object:
        assert seq.object_frames is not None
        for o, frames in sorted(seq.object_frames.items()):
            assert seq.object_dirs is not None
            for stem in frames[:1] if protocol.objects == "first_frame" else frames:
                m = read_object_png(seq.ann_dir / seq.object_dirs[o] / f"{stem}.png")
                if m.any():
                    origin = f"{seq.name}/{seq.object_dirs[o]}/{stem}.png"
                    prompts.append(Prompt.from_mask(pos(stem), o + 1, m, origin=origin))
                    break
        return prompts
    done: set[int] = set()
    for stem in seq.frames[:1] if protocol.objects == "first_frame" else seq.frames:
        gt = seq.read_gt(stem)
        for o in sorted(gt.ids - voids - done):
            prompts.append(Prompt.from_mask(pos(stem), o, gt.mask(o), origin=f"{seq.name}/{stem}.png"))
            done.add(o)
    return prompts


def _write_vos(seq: VOSSequence, result: TrackingResult, index: dict[str, int], dest: Path) -> None:
    by_idx = {f.frame_idx: f for f in result.frames}
    shape = seq.shape
    if seq.object_dirs is None:
        for stem in seq.frames:
            fr = by_idx.get(index[stem])
            masks = {m.object_id: m.mask for m in fr.masks} if fr is not None else {}
            write_label_png(dest / f"{stem}.png", compose_labels(masks, shape))
        return
    assert seq.object_frames is not None
    for o, frames in seq.object_frames.items():
        od = dest / seq.object_dirs[o]
        od.mkdir(parents=True, exist_ok=True)
        for stem in frames:
            fr = by_idx.get(index[stem])
            m = fr.mask_for(o + 1) if fr is not None else None
            write_label_png(od / f"{stem}.png", m.mask.astype(np.uint8) if m is not None else np.zeros(shape, np.uint8))


@dataclass
class RunLog:
    """What a run did: sequences tracked now, sequences skipped because they were already finished."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)


def _finish_sequence(out_dir: Path, name: str, result: TrackingResult, log: RunLog) -> None:
    t = {"frames": len(result.frames), "seconds": round(result.total_processing_time, 4),
         "fps": round(result.fps, 3)}
    log.timings[name] = t
    with atomic_write(out_dir / "timing" / f"{name}.json") as f:
        json.dump(t, f)
    log.ran.append(name)


def run_vos(
    dataset: VOSDataset,
    loader: TrackingModelLoader,
    out_dir: str | Path,
    protocol: VOSProtocol = DAVIS,
    *,
    progress: Progress | None = None,
) -> RunLog:
    """Track every sequence not yet finished and write its predictions to ``out_dir/predictions/<seq>``
    (palette PNGs, or per-object PNGs for per-object ground truth), one PNG per annotated frame."""
    out = Path(out_dir)
    preds = out / "predictions"
    preds.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info(loader.name, protocol.name, dataset))
    log = RunLog()
    for i, seq in enumerate(dataset):
        if progress:
            progress(seq.name, i, len(dataset))
        dest = preds / seq.name
        if dest.is_dir():
            log.skipped.append(seq.name)
            continue
        if not seq.frame_files:
            raise InputError(f"{seq.name}: no frame images in {seq.frames_dir} (expected JPEGImages/ next to "
                             "Annotations/)")
        index = {p.stem: k for k, p in enumerate(seq.frame_files)}
        prompts = _vos_prompts(seq, protocol, index)
        if not prompts:
            raise InputError(f"{seq.name}: no object in the ground truth to prompt the tracker with")
        assert seq.frames_dir is not None
        result = loader.track_video(str(seq.frames_dir), prompts)
        partial = preds / f".{seq.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _write_vos(seq, result, index, partial)
        partial.rename(dest)
        _finish_sequence(out, seq.name, result, log)
    if progress:
        progress("", len(dataset), len(dataset))
    return log


def run_boxes(
    dataset: BoxDataset,
    loader: TrackingModelLoader,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
) -> RunLog:
    """Track every unfinished sequence from its frame-0 ground-truth box; write ``predictions/<seq>.txt``
    (one ``x,y,w,h`` per frame: the tight box of the predicted mask, ``0,0,0,0`` where it is empty; frame 0
    is the given box)."""
    from vidtrack.types import Prompt

    out = Path(out_dir)
    preds = out / "predictions"
    preds.mkdir(parents=True, exist_ok=True)
    check_run_info(out, run_info(loader.name, "ope", dataset))
    log = RunLog()
    for i, seq in enumerate(dataset):
        if progress:
            progress(seq.name, i, len(dataset))
        dest = preds / f"{seq.name}.txt"
        if dest.is_file():
            log.skipped.append(seq.name)
            continue
        if not seq.frame_files:
            raise InputError(f"{seq.name}: no frame images in {seq.frames_dir}")
        n = min(len(seq.gt), len(seq.frame_files))
        prompt = Prompt.from_box(0, 1, seq.gt[0].tolist(), fmt="xywh")
        assert seq.frames_dir is not None
        result = loader.track_video(str(seq.frames_dir), [prompt], end=n)
        boxes = np.zeros((len(seq.gt), 4))
        for fr in result.frames:
            m = fr.mask_for(1)
            if m is not None and fr.frame_idx < len(boxes):
                boxes[fr.frame_idx] = m.bbox
        boxes[0] = seq.gt[0]  # the initialisation box, as OPE result files have it
        write_boxes(dest, boxes)
        _finish_sequence(out, seq.name, result, log)
    if progress:
        progress("", len(dataset), len(dataset))
    return log


def pending_sequences(dataset: VOSDataset | BoxDataset, out_dir: str | Path) -> list[str]:
    """Sequences whose predictions are not yet complete under ``out_dir/predictions``."""
    preds = Path(out_dir) / "predictions"
    if isinstance(dataset, BoxDataset):
        return [n for n in dataset.names if not (preds / f"{n}.txt").is_file()]
    return [n for n in dataset.names if not (preds / n).is_dir()]


def timing_summary(out_dir: str | Path, names: Iterable[str]) -> dict[str, float]:
    """Total frames, seconds and overall fps from ``timing/<seq>.json`` of the given sequences."""
    frames = 0
    seconds = 0.0
    for n in names:
        p = Path(out_dir) / "timing" / f"{n}.json"
        if p.is_file():
            t = json.loads(p.read_text())
            frames += int(t.get("frames", 0))
            seconds += float(t.get("seconds", 0.0))
    return {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 3) if seconds else 0.0}

