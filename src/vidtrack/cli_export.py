"""``vidtrack export``: convert a tracking result into the formats other tools read.

Also :func:`write_formats` and :func:`check_formats`, which ``vidtrack track --format`` uses to write its
outputs with the same names and defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vidtrack.errors import InputError

FORMAT_HELP = ("comma-separated: rle-json, rle-jsonl, ytvis-json, davis-png, sav-png, mots-txt, mot-txt, box-txt, "
               "overlay-mp4 (needs --source)")


def check_formats(formats: str, source: object = None) -> list[str]:
    """Validate a ``--format`` value before any work is done; returns the names.

    ``source`` may be the path/URL or an opened :class:`~vidtrack.sources.FrameSource`. Raises
    :class:`InputError` for an unknown name, or for ``overlay-mp4`` without a source that can be read again
    (none given, or a live stream: camera, network stream, pipe).
    """
    from vidtrack.export import FORMATS, parse_formats

    names = parse_formats(formats)
    if any(FORMATS[n].needs_images for n in names):
        if source is None:
            raise InputError("overlay-mp4 draws on the video: pass the source video (--source VIDEO)")
        if getattr(source, "is_live", False):
            raise InputError(f"overlay-mp4 re-reads the video after tracking, but {getattr(source, 'name', source)} "
                             "is a live stream; record it to a file first, or drop overlay-mp4")
    return names


def write_formats(result: Any, out_dir: str | Path, formats: str, source: object = None, *,
                  info: dict[str, Any] | None = None, options: dict[str, dict[str, Any]] | None = None,
                  progress: Any = None) -> dict[str, Path]:
    """Write ``result`` into ``out_dir`` in each of ``formats`` (a ``--format`` string); returns name -> path.

    ``source`` is the video the result was tracked on, re-read for ``overlay-mp4`` (frames are matched by
    ``frame_idx``, so ``--stride``/``--start`` results work). File names: see ``vidtrack export --help``.
    """
    from vidtrack.export import export_result

    names = check_formats(formats, source)
    return export_result(result, out_dir, names, source=source, info=info, options=options, progress=progress)


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
