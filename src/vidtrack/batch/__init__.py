"""Batch inference over many videos: ``vidtrack batch MANIFEST --out DIR``.

One video is the unit of work (memory-based trackers keep state across a whole video), one model is loaded
per worker and reused across its videos, and every video's outputs are written by the worker that tracked
it, atomically, with a done-marker holding a checksum of its inputs. Hence a batch can be killed at any
moment and re-run: finished videos are skipped, changed ones redone, failed ones retried.

Executors: ``local`` (spawned processes, one per GPU round-robin, or in-process with ``workers=0``) and
``ray`` (a Ray Data actor pool on a local or an existing cluster; ``pip install 'vidtrack[ray]'``).

Python API::

    from vidtrack.batch import BatchOptions, JobOptions, load_manifest, run_batch

    jobs = load_manifest("videos.jsonl", JobOptions(model="sam2.1-base-plus", formats=("rle-json", "davis-png")))
    summary = run_batch(jobs, BatchOptions(out_dir=Path("out"), workers=2))
    print(summary.done, summary.skipped, summary.failed)
"""

from vidtrack.batch.manifest import VIDEO_EXTENSIONS, JobOptions, VideoJob, load_manifest, scan_folder
from vidtrack.batch.runner import BatchOptions, BatchSummary, plan, run_batch
from vidtrack.batch.worker import VideoProcessor

__all__ = [
    "VIDEO_EXTENSIONS",
    "BatchOptions",
    "BatchSummary",
    "JobOptions",
    "VideoJob",
    "VideoProcessor",
    "load_manifest",
    "plan",
    "run_batch",
    "scan_folder",
]
