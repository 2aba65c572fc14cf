"""``vidtrack export``: convert a tracking result into the formats other tools read.

Format writing itself (also what ``vidtrack track --format`` uses) is :mod:`vidtrack.export`:
:func:`~vidtrack.export.check_formats`, :func:`~vidtrack.export.write_formats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vidtrack.errors import InputError
from vidtrack.export.registry import check_formats, format_help

FORMAT_HELP = format_help("comma-separated: ")
"""From the format table, so a new format appears in the help of export, track and batch."""


def export(
    result: Annotated[Path, typer.Argument(help="tracking result: masks.json (rle-json), .jsonl, YouTube-VIS .json, "
                                                "MOTS .txt, or a DAVIS / SA-V PNG folder")],
    formats: Annotated[str, typer.Option("--format", "-f", help=FORMAT_HELP)],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    source: Annotated[str | None, typer.Option(help="the video (or frame folder) the result was tracked on; "
                                                    "needed by overlay-mp4")] = None,
    overlap: Annotated[str, typer.Option(help="davis-png/mots-txt: who wins a pixel claimed by several objects: "
                                              "lowest-id or highest-score")] = "lowest-id",
    remap_ids: Annotated[bool | None, typer.Option("--remap-ids/--keep-ids",
                                                   help="davis-png/mots-txt: renumber objects 1..N (default: only "
                                                        "when ids do not fit)")] = None,
    object_id: Annotated[int | None, typer.Option(help="box-txt: the object to write (default: one file per "
                                                       "object)")] = None,
    class_id: Annotated[int, typer.Option(help="mots-txt: class of every object (2 = pedestrian)")] = 2,
    fps: Annotated[float | None, typer.Option(help="overlay-mp4 frame rate (default: the source's)")] = None,
    boxes: Annotated[bool, typer.Option(help="overlay-mp4: draw boxes")] = True,
    scores: Annotated[bool, typer.Option(help="overlay-mp4: show confidences")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Write a tracking result in other formats (see EXPORT_HELP)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from vidtrack.cli_errors import PROGRESS
    from vidtrack.export import read_result
    from vidtrack.output_checks import check_output_dir

    names = check_formats(formats, source)
    check_output_dir(out_dir)
    data = read_result(result)
    PROGRESS.kept = f"exports are written atomically: {out_dir} holds earlier complete outputs or none"
    options: dict[str, dict[str, Any]] = {}
    for name in ("davis-png", "mots-txt"):
        if name in names:
            options[name] = {"overlap": overlap}
            if remap_ids is not None:
                options[name]["remap_ids"] = remap_ids
    if "mots-txt" in names:
        options["mots-txt"]["class_id"] = class_id
    if "box-txt" in names and object_id is not None:
        if object_id not in data.object_ids:
            raise InputError(f"--object-id {object_id} is not in {result} (objects: {data.object_ids})")
        options["box-txt"] = {"object_id": object_id}
    if "overlay-mp4" in names:
        options["overlay-mp4"] = {"boxes": boxes, "scores": scores}
    info = {"source": source} if source else {}
    err = Console(stderr=True)
    with Progress(TextColumn("[bold]export"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=quiet or not err.is_terminal, transient=True) as bar:
        task = bar.add_task("export", total=len(data.frames))

        def advance(frame: Any) -> None:
            bar.update(task, advance=1)
            PROGRESS.where = f"at frame {frame.frame_idx}"

        from vidtrack.export import export_result

        paths = export_result(data, out_dir, names, source=source, options=options, info=info, fps=fps,
                              progress=advance)
    for path in paths.values():
        typer.echo(str(path))


EXPORT_HELP = (
    "Write a tracking result in other formats: DAVIS palette PNGs, SA-V per-object PNGs, YouTube-VIS JSON, MOTS, "
    "MOT and single-object box txt, an annotated MP4.\n\n"
    "Outputs in --out: masks.json, masks.jsonl, ytvis.json, davis/, sav/, mots.txt, mot.txt, boxes.txt (one "
    "object; else boxes_<id>.txt per object), overlay.mp4. Each is written atomically: an interrupted export "
    "leaves the previous output or none. The written paths are printed, one per line."
)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the ``vidtrack`` command."""
    app.command("export", help=EXPORT_HELP)(export)
