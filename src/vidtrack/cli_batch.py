"""``vidtrack batch``: track many videos from a manifest or a folder, resumably, on local workers or Ray."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from vidtrack.cli_options import TRACKING_DEFAULTS, TrackerOptions, tracker_options
from vidtrack.errors import InputError
from vidtrack.export.registry import format_help

BATCH_HELP = (
    "Track many videos listed in a manifest (.jsonl, .csv or .json: source, prompts or mask/box, optional id, "
    "model, checkpoint, formats, stride, start, end...) or found in a folder (name.mp4 with name.json prompts "
    "or a name.png frame-0 mask beside it).\n\n"
    "Outputs: OUT/<id>/ (the chosen formats and done.json) per finished video, OUT/<id>.error.txt per failed "
    "video, OUT/batch_summary.json. Each video's outputs appear atomically; re-running skips finished videos, "
    "redoes those whose video, prompts or options changed, and retries failures. Exit status 1 when some "
    "video failed."
)


def batch(
    manifest: Annotated[Path, typer.Argument(help="manifest (.jsonl, .csv, .json) or a folder of videos")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    workers: Annotated[int | None, typer.Option(help="worker processes / Ray actors (default: one per GPU, else "
                                                     "1; 0 = in this process, local only)")] = None,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray (Ray Data actor pool)")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: start a local cluster)")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="default model (a manifest entry may override)")
                     ] = "sam2.1-tiny",
    checkpoint: Annotated[str | None, typer.Option(help="Meta .pt/.safetensors file or transformers folder")] = None,
    formats: Annotated[str, typer.Option("--format", "-f", help=format_help("default output formats, "
                                                                            "comma-separated: "))] = "rle-json",
    stride: Annotated[int, typer.Option(help="process every N-th frame")] = 1,
    start: Annotated[int, typer.Option(help="first frame")] = 0,
    end: Annotated[int | None, typer.Option(help="stop before this frame")] = None,
    backward: Annotated[bool, typer.Option(help="track later-prompted objects back to the first frame")] = True,
    retries: Annotated[int, typer.Option(help="extra attempts for a video that failed for a reason other than "
                                              "bad input (or whose worker died)")] = 1,
    gpus_per_worker: Annotated[float | None, typer.Option(help="Ray: GPUs per actor (0.5 = two per GPU)")] = None,
    ray_cpus: Annotated[int | None, typer.Option(help="Ray: CPUs of the local cluster started for the run")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    tracker: TrackerOptions | None = None,
) -> None:
    from rich.console import Console

    from vidtrack.batch import BatchOptions, JobOptions, load_manifest, run_batch
    from vidtrack.batch.manifest import parse_format_list

    if stride < 1 or start < 0:
        raise InputError("--stride must be >= 1 and --start >= 0")
    if retries < 0:
        raise InputError("--retries must be >= 0")
    assert tracker is not None  # given by @tracker_options
    tracker.check(model)
    # device and threads are per worker (GPUs round-robin); dtype and resize are per video (a manifest entry may
    # change them); the other tracker options hold for the whole batch
    extra = {k: v for k, v in tracker.config_fields().items() if k not in ("device", "threads", "dtype", "resize")}
    changed = {k: v for k, v in extra.items() if v != TRACKING_DEFAULTS[k]}
    defaults = JobOptions(model=model, checkpoint=str(Path(checkpoint).expanduser().resolve()) if checkpoint else None,
                          dtype=tracker.dtype, resize=tracker.resize, backward=backward,
                          formats=parse_format_list(formats, "--format"), stride=stride, start=start, end=end,
                          tracking=json.dumps(changed, sort_keys=True) if changed else "")
    from vidtrack.cli_errors import PROGRESS
    from vidtrack.output_checks import check_output_dir

    check_output_dir(out_dir)
    jobs = load_manifest(manifest, defaults)
    PROGRESS.kept = f"finished videos are kept in {out_dir}; run the same command again to resume"
    opts = BatchOptions(out_dir=out_dir.expanduser().resolve(), executor=executor.strip().lower(), workers=workers,
                        device=tracker.device, retries=retries, threads=tracker.threads, address=address,
                        gpus_per_worker=gpus_per_worker, ray_cpus=ray_cpus, quiet=quiet)
    err = Console(stderr=True)
    summary = run_batch(jobs, opts, console=err)
    colour = "green" if summary.ok else "yellow"
    err.print(f"[{colour}]batch finished[/]: {summary.done} done, {summary.skipped} skipped, {summary.failed} failed "
              f"of {summary.total}; {summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps) -> "
              f"{opts.out_dir / 'batch_summary.json'}", highlight=False, soft_wrap=True)
    if not summary.ok:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    """Add ``batch`` to the ``vidtrack`` command."""
    app.command("batch", help=BATCH_HELP)(tracker_options(batch))
