"""Getting tracked masks out in the format the next tool reads, and reading them back.

Formats (:data:`FORMATS`): ``rle-json``, ``rle-jsonl``, ``ytvis-json``, ``davis-png``, ``sav-png``,
``mots-txt``, ``mot-txt``, ``box-txt``, ``overlay-mp4``; plus ``supervision.Detections`` per frame
(:func:`to_detections`). Every writer streams (memory stays flat on long videos) and is atomic (a killed run
leaves the previous complete output or none): single files are written to a hidden temporary file and
renamed; folders are written into a hidden temporary folder and renamed.

Python API::

    from vidtrack.export import open_writer, export_result, read_result

    with open_writer("davis-png", "out/davis", width=W, height=H) as w:   # streaming
        for frame in loader.stream(source, prompts):
            w.write(frame)

    export_result(result, "out", "davis-png,overlay-mp4", source="clip.mp4")   # a whole result
    result = read_result("out/davis")                                          # any readable format

Overlap rule (``davis-png``, ``mots-txt``, and drawing order in ``overlay-mp4``): the lowest object id wins
(SAM 2's convention); ``overlap="highest-score"`` lets the most confident object win instead.
"""

from vidtrack.export.atomic import AtomicDir, AtomicFile, atomic_write
from vidtrack.export.base import DAVIS_PALETTE, OVERLAP_RULES, Writer, davis_palette, object_color
from vidtrack.export.detections import iter_detections, to_detections
from vidtrack.export.mot import BoxTxtWriter, MotsTxtWriter, MotTxtWriter, read_mots_txt
from vidtrack.export.overlay import OverlayMp4Writer, render_overlay
from vidtrack.export.png_folders import DavisPngWriter, SavPngWriter, read_davis_png, read_sav_png
from vidtrack.export.registry import (
    FORMATS,
    ExportFormat,
    check_formats,
    export_result,
    format_help,
    open_writer,
    parse_formats,
    read_result,
    result_prompts,
    write_formats,
)
from vidtrack.export.rle_json import (
    RleJsonlWriter,
    RleJsonWriter,
    iter_rle_jsonl,
    read_rle_json,
    read_rle_jsonl,
    result_to_dict,
    write_rle_json,
    write_rle_jsonl,
)
from vidtrack.export.ytvis import YtvisWriter, read_ytvis_json, write_ytvis_json

__all__ = [
    "DAVIS_PALETTE",
    "FORMATS",
    "OVERLAP_RULES",
    "AtomicDir",
    "AtomicFile",
    "BoxTxtWriter",
    "DavisPngWriter",
    "ExportFormat",
    "MotTxtWriter",
    "MotsTxtWriter",
    "OverlayMp4Writer",
    "RleJsonWriter",
    "RleJsonlWriter",
    "SavPngWriter",
    "Writer",
    "YtvisWriter",
    "atomic_write",
    "check_formats",
    "davis_palette",
    "export_result",
    "format_help",
    "iter_detections",
    "iter_rle_jsonl",
    "object_color",
    "open_writer",
    "parse_formats",
    "read_davis_png",
    "read_mots_txt",
    "read_result",
    "read_rle_json",
    "read_rle_jsonl",
    "read_sav_png",
    "read_ytvis_json",
    "render_overlay",
    "result_prompts",
    "result_to_dict",
    "to_detections",
    "write_formats",
    "write_rle_json",
    "write_rle_jsonl",
    "write_ytvis_json",
]
