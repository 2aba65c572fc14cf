"""Benchmark evaluation: metrics equal to the reference toolkits, dataset layouts, runners.

* :mod:`vidtrack.eval.vos` — J, F, J&F, recall, decay (davis2017 / vos-benchmark / SA-V definitions) with the
  :data:`DAVIS` and :data:`SAV` protocols, streaming over frames.
* :mod:`vidtrack.eval.ope` — success AUC, OP50/OP75, precision@20, normalised precision (@0.20 and the
  51-threshold mean, named apart), GOT-10k AO/SR (got10k-toolkit conventions, LaSOT absent frames).
* :mod:`vidtrack.eval.mot` — HOTA/DetA/AssA, MOTSA/sMOTSA, IDF1 (TrackEval's definitions).
* :mod:`vidtrack.eval.datasets` — DAVIS, SA-V per-object and LaSOT/GOT-10k/TrackingNet layouts.
* :mod:`vidtrack.eval.runner` — run a tracker over a dataset (resumable) and score predictions; CSV and JSON.

Each module's docstring states exactly which reference and which convention it follows.
"""

from vidtrack.eval.datasets import BoxDataset, BoxSequence, VOSDataset, VOSPredictions, VOSSequence
from vidtrack.eval.mot import MOTAccumulator, combine_mot
from vidtrack.eval.ope import (
    box_iou,
    center_error,
    got10k_sequence,
    normalized_center_error,
    ope_sequence,
    summarize_got10k,
    summarize_ope,
)
from vidtrack.eval.runner import EvalReport, run_boxes, run_vos, score_boxes, score_vos, write_report
from vidtrack.eval.vos import (
    DAVIS,
    PROTOCOLS,
    SAV,
    FrameMasks,
    ObjectScores,
    VOSProtocol,
    boundary_f,
    db_statistics,
    evaluate_vos_sequence,
    region_j,
    summarize_vos,
)

__all__ = [
    "DAVIS",
    "PROTOCOLS",
    "SAV",
    "BoxDataset",
    "BoxSequence",
    "EvalReport",
    "FrameMasks",
    "MOTAccumulator",
    "ObjectScores",
    "VOSDataset",
    "VOSPredictions",
    "VOSProtocol",
    "VOSSequence",
    "boundary_f",
    "box_iou",
    "center_error",
    "combine_mot",
    "db_statistics",
    "evaluate_vos_sequence",
    "got10k_sequence",
    "normalized_center_error",
    "ope_sequence",
    "region_j",
    "run_boxes",
    "run_vos",
    "score_boxes",
    "score_vos",
    "summarize_got10k",
    "summarize_ope",
    "summarize_vos",
    "write_report",
]
