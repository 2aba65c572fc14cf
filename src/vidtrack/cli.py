"""The ``vidtrack`` command: a thin layer over the API.

Every user error ends as one line on stderr and exit status 2, without a traceback.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vidtrack.cli_errors import PROGRESS
from vidtrack.cli_options import TrackerOptions, tracker_options
from vidtrack.errors import InputError
from vidtrack.export.registry import format_help

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Promptable video object segmentation and tracking (SAM 2.1, SAMURAI, SAM2Long, YOLO11-seg).")
err = Console(stderr=True)
out = Console()


def _show_version(value: bool) -> None:
    if value:
        from vidtrack import __version__

        typer.echo(f"vidtrack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="print the version and exit")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="on an error, also print the traceback (anywhere on the "
                                                        "command line; or VIDTRACK_DEBUG=1)")] = False,
) -> None:
    """Exit status: 0 done, 1 some videos failed (batch) or an internal error, 2 bad input, 130/143 interrupted."""


def _peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@app.command()
@tracker_options
def track(
    source: Annotated[str, typer.Argument(help="video file, frame folder, camera (/dev/video0) or stream URL")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    model: Annotated[str, typer.Option("--model", "-m", help="model name, see `vidtrack models`")] = "sam2.1-tiny",
    checkpoint: Annotated[str | None, typer.Option(help="Meta .pt/.safetensors file or transformers folder")] = None,
    mask: Annotated[list[Path] | None, typer.Option(help="mask PNG (palette PNG: one object per index); "
                                                      "frame taken from a numeric file name unless --frame")] = None,
    box: Annotated[str | None, typer.Option(help="box x,y,w,h in pixels")] = None,
    points: Annotated[str | None, typer.Option(help="points 'x,y[,label];...' (label 1 positive, 0 negative)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="prompts.json with prompts on any frames")] = None,
    frame: Annotated[int | None, typer.Option(help="frame of --box/--points/--mask (default 0)")] = None,
    object_id: Annotated[int, typer.Option(help="object id for --box/--points")] = 1,
    stride: Annotated[int, typer.Option(help="process every N-th frame")] = 1,
    start: Annotated[int, typer.Option(help="first frame")] = 0,
    end: Annotated[int | None, typer.Option(help="stop before this frame")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = None,
    download: Annotated[bool, typer.Option(help="allow downloading weights from the Hub")] = False,
    backward: Annotated[bool, typer.Option(help="also fill the frames before the earliest prompt (official: Meta's "
                                           "reverse propagation; causal: later-prompted objects back to the first "
                                           "frame)")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    formats: Annotated[str, typer.Option("--format", "-f", help=format_help("output formats, comma-separated: "))
                       ] = "rle-json",
    strict: Annotated[bool, typer.Option(help="a video that ends before the frame count its header declares "
                                              "(truncated) is an error, not a warning")] = False,
    tracker: TrackerOptions | None = None,
) -> None:
    """Track objects through a video and write the chosen formats (default: COCO-RLE JSON masks.json) to --out."""
    PROGRESS.where = "while checking the inputs"
    from vidtrack.api import PromptSchedule, check_prompts, create_tracking_loader
    from vidtrack.catalog import resolve_model
    from vidtrack.export import check_formats, write_formats
    from vidtrack.export.atomic import atomic_write
    from vidtrack.output_checks import check_output_dir
    from vidtrack.prompt_files import load_prompts_json, mask_prompts, parse_box, parse_points
    from vidtrack.sources import open_source

    plist = []
    for m in mask or []:
        plist += mask_prompts(m, frame)
    if box:
        plist.append(parse_box(box, frame or 0, object_id))
    if points:
        plist.append(parse_points(points, frame or 0, object_id))
    if prompts:
        plist += load_prompts_json(prompts)
    if not plist:
        raise InputError("no prompt given; pass --mask PNG, --box x,y,w,h, --points 'x,y;...' or --prompts FILE")
    assert tracker is not None  # given by @tracker_options
    tracker.check(model)

    src = open_source(source, stride=stride, start=start, end=end)
    height, width = src.probe_size()
    for p in check_prompts(plist):  # check everything now, before loading weights
        p.validate(height, width, source=f"{source}")
    PromptSchedule(plist, src)  # a prompt on a frame past the container's frame count, before decoding
    check_formats(formats, src)
    check_output_dir(out_dir)
    requested = resolve_model(model).name
    config = tracker.config(model, checkpoint_path=checkpoint, cache_dir=cache_dir, download=download,
                            backward=backward)
    loader = create_tracking_loader(model, config)
    PROGRESS.where = f"while loading {loader.name}"
    t0 = time.perf_counter()
    loader.load()
    load_s = time.perf_counter() - t0
    if loader.name != requested:
        err.print(f"note: the weights are {loader.name}, not {requested}; running and reporting {loader.name}",
                  highlight=False, soft_wrap=True, markup=False)

    total = src.num_frames
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(), console=err,
                  disable=quiet) as bar:
        task = bar.add_task(f"{loader.name}", total=total, fps=0.0)
        started = time.perf_counter()
        count = 0

        def progress(f: Any) -> None:
            nonlocal count
            count += 1
            PROGRESS.where = f"at frame {f.frame_idx}" + (f" of {src.num_frames}" if src.num_frames else "")
            bar.update(task, advance=1, fps=count / max(time.perf_counter() - started, 1e-9))

        result = loader.track_video(src, plist, progress=progress)
    truncation = src.truncation()
    if truncation is not None:
        expected, decoded = truncation
        what = (f"{source} ended after {decoded} of the {expected} frames its header declares (truncated or "
                "damaged file)")
        if strict:
            raise InputError(f"{what}; nothing written (--strict)")
        err.print(f"[yellow]warning[/]: {escape(what)}; results cover the {decoded} decoded frames",
                  highlight=False, soft_wrap=True)
    PROGRESS.where = f"while writing {out_dir}"
    PROGRESS.kept = "outputs are written atomically: each is complete or absent"
    paths = write_formats(result, out_dir, formats, source=source, info={"source": str(source)})
    path = paths.get("rle-json") or next(iter(paths.values()))
    loader.unload()

    summary: dict[str, Any] = {
        "model": loader.name,
        "frames": len(result.frames),
        "objects": len(result.object_ids),
        "fps": round(result.fps, 3),
        "seconds": round(result.total_processing_time, 3),
        "load_seconds": round(load_s, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "output": str(path),
        "outputs": {k: str(v) for k, v in paths.items()},
    }
    try:
        import torch

        if torch.cuda.is_available() and loader.device.type == "cuda":  # type: ignore[attr-defined]
            summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:  # pragma: no cover
        pass
    summary["truncated"] = truncation is not None
    if truncation is not None:
        summary.update( frames_expected=truncation[0], frames_decoded=truncation[1])
    with atomic_write(out_dir / "summary.json") as f:
        f.write(json.dumps(summary, indent=1))
    err.print(
        f"[green]done[/]: {summary['frames']} frames, {summary['objects']} objects, {summary['fps']} fps, "
        f"peak RSS {summary['peak_rss_mb']} MiB -> {escape(str(path))}",
        soft_wrap=True,
    )


@app.command()
def models(
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List the model catalogue and which weights are available locally."""
    from vidtrack.catalog import CATALOGUE

    rows: list[dict[str, Any]] = []
    for spec in CATALOGUE.values():
        rows.append({"name": spec.name, "family": spec.family, "size": spec.size, "params_m": spec.params_m,
                     "weights": spec.hub_id, "local": _weights_local(spec.family, spec.hub_id, cache_dir)})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table()
    # the name is what users type or grep for: never shortened, however narrow the terminal
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
    for column in ("family", "size", "params (M)", "weights", "local"):
        table.add_column(column, no_wrap=column != "weights")
    for r in rows:
        table.add_row(r["name"], r["family"], r["size"], f"{r['params_m']:.1f}", r["weights"],
                      "[green]yes[/]" if r["local"] else "no")
    # a pipe gets whole rows (rich would cut them to 80 columns)
    (out if out.is_terminal else Console(width=160)).print(table)


def _weights_local(family: str, ref: str, cache_dir: str | None) -> bool:
    if family == "yolo":
        return Path(ref).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(ref, "config.json", cache_dir=cache_dir)
        return isinstance(hit, str) and os.path.exists(hit)
    except Exception:  # any cache problem just means "not available"
        return False


# Commands that live in their own modules register themselves here (each module has `register(app)`).
COMMAND_MODULES: list[str] = ["vidtrack.cli_export", "vidtrack.cli_eval", "vidtrack.cli_bench", "vidtrack.cli_batch",
                              "vidtrack.cli_studio"]


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


def _print_line(line: str) -> None:
    """One message line on stderr (``error:`` in red on a terminal; never parsed as rich markup)."""
    if line.startswith("error:"):
        err.print(f"[red]error[/]:{escape(line[len('error:'):])}", highlight=False, soft_wrap=True)
    else:
        err.print(line, markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every command ends through :func:`vidtrack.cli_errors.run` (one line, a meaningful status)."""
    from vidtrack import cli_errors

    args = sys.argv[1:] if argv is None else list(argv)
    code = cli_errors.run(lambda a: app(args=a, standalone_mode=False, prog_name="vidtrack"), args,
                          error=_print_line)
    sys.exit(code)


if __name__ == "__main__":
    main()
