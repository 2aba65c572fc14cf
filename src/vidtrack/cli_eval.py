"""``vidtrack eval`` (run a model over a benchmark, then score it) and ``vidtrack score`` (score predictions).

Both print a summary table and, with ``--out``, write ``per_sequence.csv`` and ``summary.json``; the metric
conventions (which reference toolkit each number equals) are listed in the JSON and in
:mod:`vidtrack.eval`. User errors are :class:`~vidtrack.errors.InputError` (exit status 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vidtrack.cli_errors import PROGRESS
from vidtrack.cli_options import TrackerOptions, tracker_options
from vidtrack.errors import InputError
from vidtrack.output_checks import check_output_dir

err = Console(stderr=True)
out = Console()

LAYOUTS = ("davis", "sav", "lasot")
VOS_KEYS = ("J&F", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
BOX_KEYS = ("success_auc", "OP50", "OP75", "precision@20", "norm_precision@0.20", "norm_precision_auc51", "AO",
            "SR0.5", "SR0.75")
MOT_KEYS = ("HOTA", "DetA", "AssA", "MOTSA", "sMOTSA", "IDF1")


def detect_layout(root: Path) -> str:
    """``lasot`` when sequences hold ``groundtruth.txt`` (or TrackingNet's anno/ + frames/), ``sav`` when a
    sequence folder holds object folders, ``davis`` otherwise."""
    if not root.is_dir():
        raise InputError(f"folder not found: {root}")
    if (root / "anno").is_dir() and (root / "frames").is_dir():
        return "lasot"
    for depth_glob in ("groundtruth*.txt", "*/groundtruth*.txt", "*/*/groundtruth*.txt"):
        if next(root.glob(depth_glob), None) is not None:
            return "lasot"
    for ann in ("Annotations_6fps", "Annotations"):
        if (root / ann).is_dir():
            root = root / ann
            break
    if (root / "480p").is_dir():
        root = root / "480p"
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if seqs and any(p.is_dir() for p in seqs[0].iterdir()):
        return "sav"
    return "davis"


def _layout(value: str | None, root: Path) -> str:
    if value is None or value == "auto":
        return detect_layout(root)
    if value not in LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(LAYOUTS)} (or auto); got {value!r}")
    return value


def _protocol(rules: str | None, layout: str) -> Any:
    from vidtrack.eval.vos import PROTOCOLS

    name = rules or ("sav" if layout == "sav" else "davis")
    if name not in PROTOCOLS:
        raise InputError(f"--rules must be one of {', '.join(PROTOCOLS)}; got {name!r}")
    return PROTOCOLS[name]


def _absent(value: str) -> Any:
    if value not in ("fail", "drop"):
        raise InputError(f"--absent must be 'fail' (LaSOT toolkit) or 'drop'; got {value!r}")
    return value


def _dataset(layout: str, root: Path, sequences: str | None, resolution: str) -> Any:
    from vidtrack.eval.datasets import BoxDataset, VOSDataset

    if layout == "lasot":
        return BoxDataset(root, sequences=sequences)
    return VOSDataset(root, "sav" if layout == "sav" else "davis", resolution=resolution, sequences=sequences)


class _Bar:
    """A progress bar over sequences on stderr; nothing with --quiet or when stderr is not a terminal (logs)."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[seq]}"), TimeElapsedColumn(), console=err,
                                 disable=quiet or not err.is_terminal, transient=True)
        self.label = label
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, name: str, done: int, total: int) -> None:
        if name:
            PROGRESS.where = f"at sequence {name} ({done + 1} of {total})"
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=total, seq="")
        self.progress.update(self.task, completed=done, seq=name)


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if f != f else f"{100 * f:.2f}"


def _print_summary(report: Any, title: str) -> None:
    """One metric per row (narrow terminals), values in percent, counts as they are."""
    s = report.summary
    out.print(title, style="bold", soft_wrap=True, highlight=False)
    table = Table("metric", "value")
    if report.kind == "vos":
        for k in VOS_KEYS:
            table.add_row(f"{k} (%)", _pct(s[k]))
        table.add_row("objects / sequences", f"{s['objects']} / {s['sequences']}")
        if "MOT" in s:
            table.add_section()
            for k in MOT_KEYS:
                table.add_row(f"{k} (%)", _pct(s["MOT"][k]))
            table.add_row("IDSW", str(s["MOT"]["IDSW"]))
    else:
        for k in BOX_KEYS:
            table.add_row(f"{k} (%)", _pct(s[k]))
        table.add_row("sequences", str(s["sequences"]))
    out.print(table)
    missing = report.info.get("missing_frames")
    if missing:
        err.print(f"[yellow]warning[/]: {sum(missing.values())} missing prediction frame(s) scored as empty "
                  f"in {len(missing)} sequence(s)", soft_wrap=True)


def _score(layout: str, dataset: Any, pred: Path, rules: str | None, allow_missing: bool, mot: bool, absent: str,
           quiet: bool) -> Any:
    from vidtrack.eval.runner import score_boxes, score_vos

    with _Bar("scoring", quiet) as bar:
        if layout == "lasot":
            return score_boxes(dataset, pred, absent_policy=_absent(absent), progress=bar)
        return score_vos(dataset, pred, _protocol(rules, layout), allow_missing=allow_missing, mot=mot,
                         progress=bar)


def _emit(report: Any, out_dir: Path | None, as_json: bool, title: str) -> None:
    from vidtrack.eval.runner import write_report

    paths = write_report(report, out_dir) if out_dir is not None else {}
    if as_json:
        out.print_json(json.dumps(report.to_json()["summary"] | {"protocol": report.protocol}))
    else:
        _print_summary(report, title)
    if paths:
        err.print(f"[green]written[/]: {paths['csv']}, {paths['json']}", soft_wrap=True, highlight=False)


LayoutOpt = Annotated[str | None, typer.Option("--layout", help="davis, sav or lasot (default: detected)")]
RulesOpt = Annotated[str | None, typer.Option(
    "--rules", help="VOS protocol: davis (objects from frame 0) or sav (late objects, sparse GT); "
                    "default: davis for --layout davis, sav for --layout sav")]
SeqOpt = Annotated[str | None, typer.Option("--sequences", help="names a,b,c or a text file with one per line")]
ResOpt = Annotated[str, typer.Option("--resolution", help="DAVIS resolution folder, if present")]
MotOpt = Annotated[bool, typer.Option("--mot", help="also HOTA/DetA/AssA, MOTSA, IDF1 (VOS layouts)")]
AbsentOpt = Annotated[str, typer.Option("--absent", help="box layouts: absent frames 'fail' (LaSOT toolkit) or "
                                                         "'drop'")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the summary as JSON")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]


def score_cmd(
    pred: Annotated[Path, typer.Option("--pred", help="predictions: <seq>/<frame>.png, <seq>/<obj>/<frame>.png, "
                                                      "<seq>/masks.json or <seq>.txt")],
    gt: Annotated[Path, typer.Option("--gt", help="dataset root or annotation folder")],
    layout: LayoutOpt = None,
    rules: RulesOpt = None,
    sequences: SeqOpt = None,
    resolution: ResOpt = "480p",
    allow_missing: Annotated[bool, typer.Option("--allow-missing", help="score missing prediction files as empty "
                                                                        "(default: error)")] = False,
    mot: MotOpt = False,
    absent: AbsentOpt = "fail",
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="write per_sequence.csv and summary.json "
                                                                     "here")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Score existing predictions against ground truth (J&F, or success/precision for boxes)."""
    if out_dir is not None:
        check_output_dir(out_dir)
    if not pred.is_dir():
        raise InputError(f"predictions folder not found: {pred}")
    if (pred / "run_info.json").is_file() and (pred / "predictions").is_dir():
        pred = pred / "predictions"  # a `vidtrack eval` run folder
    lay = _layout(layout, gt)
    dataset = _dataset(lay, gt, sequences, resolution)
    report = _score(lay, dataset, pred, rules, allow_missing, mot, absent, quiet)
    _emit(report, out_dir, as_json, f"{pred} ({report.protocol})")


def eval_cmd(
    dataset_dir: Annotated[Path, typer.Option("--dataset", help="dataset root (DAVIS, SA-V or LaSOT layout)")],
    model: Annotated[str, typer.Option("--model", "-m", help="model name, see `vidtrack models`")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="run folder: predictions/, timing/, per_sequence.csv, "
                                                              "summary.json; rerun to resume")],
    layout: LayoutOpt = None,
    rules: RulesOpt = None,
    sequences: SeqOpt = None,
    resolution: ResOpt = "480p",
    checkpoint: Annotated[str | None, typer.Option(help="Meta .pt/.safetensors file or transformers folder")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Hugging Face cache folder")] = None,
    download: Annotated[bool, typer.Option(help="allow downloading weights from the Hub")] = False,
    mot: MotOpt = False,
    absent: AbsentOpt = "fail",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    tracker: TrackerOptions | None = None,
) -> None:
    """Run a model over every unfinished sequence of a dataset, then score all of them."""
    from vidtrack.api import create_tracking_loader
    from vidtrack.catalog import resolve_model
    from vidtrack.eval.runner import check_run_info, pending_sequences, run_boxes, run_info, run_vos, timing_summary

    check_output_dir(out_dir)
    assert tracker is not None  # given by @tracker_options
    tracker.check(model)
    lay = _layout(layout, dataset_dir)
    dataset = _dataset(lay, dataset_dir, sequences, resolution)
    protocol = _protocol(rules, lay) if lay != "lasot" else None
    if lay == "lasot":
        _absent(absent)
    model_name = resolve_model(model).name
    check_run_info(out_dir, run_info(model_name, protocol.name if protocol is not None else "ope", dataset,
                                     tracker=tracker.mask_fields()))
    todo = pending_sequences(dataset, out_dir)
    if todo:
        config = tracker.config(model, checkpoint_path=checkpoint, cache_dir=cache_dir, download=download)
        loader = create_tracking_loader(model, config)
        PROGRESS.where = f"while loading {loader.name}"
        loader.load()
        if loader.name != model_name:
            err.print(f"note: the weights are {loader.name}, not {model_name}; running and reporting {loader.name}",
                      highlight=False, soft_wrap=True, markup=False)
            model_name = loader.name
        PROGRESS.kept = f"finished sequences are kept in {out_dir}; run the same command again to resume"
        try:
            with _Bar(f"tracking ({loader.name})", quiet) as bar:
                if lay == "lasot":
                    log = run_boxes(dataset, loader, out_dir, progress=bar)
                else:
                    assert protocol is not None
                    log = run_vos(dataset, loader, out_dir, protocol, progress=bar)
        finally:
            loader.unload()
        err.print(f"tracked {len(log.ran)} sequence(s), {len(log.skipped)} already done", highlight=False)
    else:
        err.print(f"all {len(dataset)} sequence(s) already tracked in {out_dir}; scoring only", highlight=False)
    report = _score(lay, dataset, out_dir / "predictions", rules, False, mot, absent, quiet)
    report.info.update({"model": model_name, "dataset": os.fspath(dataset_dir), "layout": lay,
                        "timing": timing_summary(out_dir, dataset.names)})
    _emit(report, out_dir, as_json, f"{model_name} on {dataset_dir.name} ({report.protocol})")


def register(app: typer.Typer) -> None:
    """Add ``eval`` and ``score`` to the ``vidtrack`` command."""
    app.command("eval")(tracker_options(eval_cmd))
    app.command("score")(score_cmd)
