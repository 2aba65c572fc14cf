"""``vidtrack bench``: speed and memory of trackers, as JSON and a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidtrack.bench.cases import SWEPT_TRACKER_OPTIONS, BenchCase, sweep_cases
from vidtrack.cli_options import TrackerOptions, tracker_options
from vidtrack.errors import InputError


def _csv(text: str, cast: type = str) -> list:
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"cannot parse list {text!r}: expected comma-separated values") from None


def register(app: typer.Typer) -> None:
    @app.command()
    @tracker_options(swept=SWEPT_TRACKER_OPTIONS)
    def bench(
        models: Annotated[str, typer.Option(help="comma-separated model names")] = "sam2.1-tiny",
        arch: Annotated[str, typer.Option(help="random weights at: test (1.4 M params), tiny, small, base-plus, "
                                               "large, or auto (each model's own size); ignored with "
                                               "--checkpoint")] = "test",
        checkpoint: Annotated[str | None, typer.Option(help="real weights (Meta .pt or transformers folder)")] = None,
        source: Annotated[str | None, typer.Option(help="video to run on (default: generated moving shapes)")] = None,
        frames: Annotated[str, typer.Option(help="comma-separated video lengths")] = "50",
        objects: Annotated[str, typer.Option(help="comma-separated object counts")] = "1",
        image_size: Annotated[str, typer.Option(help="comma-separated model input sizes, multiples of 32 (0 = the "
                                                    "arch's or checkpoint's own)")] = "0",
        resolution: Annotated[str, typer.Option(help="generated video size HxW")] = "480x854",
        device: Annotated[str, typer.Option(help="comma-separated devices (auto, cpu, cuda, cuda:N, mps)")] = "cpu",
        dtype: Annotated[str, typer.Option(help="comma-separated weight dtypes (float32, bfloat16, float16)")
                         ] = "float32",
        warmup: Annotated[int, typer.Option(help="frames excluded from steady-state figures")] = 3,
        object_bias: Annotated[float, typer.Option(help="random weights: object-score bias; near 0 makes every "
                                                       "frame uncertain (SAM2Long pathways diverge)")] = 2.0,
        iou_spread: Annotated[float, typer.Option(help="random weights: spread of predicted IoUs; e.g. 0.2 makes "
                                                      "SAM2Long pathways diverge on uncertain frames")] = 0.0,
        max_batch: Annotated[str, typer.Option(help="comma-separated object batch sizes (1 = one object at a "
                                                    "time, the official loop; 0 = the default)")] = "0",
        compile: Annotated[str, typer.Option(help="comma-separated: off, on (torch.compile + warm-up)")] = "off",
        json_out: Annotated[Path | None, typer.Option("--json", help="write results here")] = None,
        md_out: Annotated[Path | None, typer.Option("--md", help="write a markdown table here")] = None,
        compare: Annotated[Path | None, typer.Option(help="earlier --json file: print FPS ratios")] = None,
        *,
        tracker: TrackerOptions,
    ) -> None:
        """Benchmark trackers (random weights unless --checkpoint: figures are then speed-only).

        The comma-separated options are swept (every combination is one case); the other tracker options are
        those of `vidtrack track` and apply to every case."""
        from rich.console import Console

        from vidtrack.export.atomic import atomic_write

        try:
            h, w = (int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise InputError(f"--resolution must be HxW, e.g. 480x854; got {resolution!r}") from None
        from vidtrack.output_checks import check_output_file

        for target, option in ((json_out, "--json"), (md_out, "--md")):
            if target is not None:
                check_output_file(target, option)
        compiles = []
        for v in _csv(compile):
            if v not in ("on", "off"):
                raise InputError(f"--compile takes on/off values; got {v!r}")
            compiles.append(v == "on")
        base = BenchCase(arch=arch, checkpoint=checkpoint, source=source, height=h, width=w, warmup=warmup,
                         object_bias=object_bias, iou_spread=iou_spread, tracker=tracker)
        cases = sweep_cases(base, model=_csv(models), frames=_csv(frames, int), objects=_csv(objects, int),
                            image_size=[s or None for s in _csv(image_size, int)], device=_csv(device),
                            dtype=_csv(dtype), max_batch=[b or None for b in _csv(max_batch, int)], compile=compiles)
        for case in cases:  # every case's options, as track checks its own, before the first case runs
            case.check()
        from vidtrack.bench.runner import machine_info, markdown_table, run_cases

        results = run_cases(cases)
        table = markdown_table(results)
        console = Console()
        console.print(table, soft_wrap=True, highlight=False)
        payload = {"machine": machine_info(), "results": results}
        if json_out:
            with atomic_write(json_out) as f:
                json.dump(payload, f, indent=1)
        if md_out:
            with atomic_write(md_out) as f:
                f.write(table + "\n")
        if compare:
            try:
                old = json.loads(compare.read_text())["results"]
            except (OSError, ValueError, KeyError) as e:
                raise InputError(f"cannot read --compare file {compare}: {e}") from None

            def key(r: dict) -> tuple:
                c = r["case"]
                return (r["model"], c["arch"], r["image_size"], r["frames"], r["objects"], c["device"], c["dtype"],
                        c.get("max_batch", 1), c.get("compile", False))

            before = {key(r): r for r in old}
            for r in results:
                o = before.get(key(r))
                if o:
                    fps_ratio = r["steady_fps"] / max(o["steady_fps"], 1e-9)
                    rss_ratio = r["peak_rss_mb"] / max(o["peak_rss_mb"], 1e-9)
                    console.print(f"{' '.join(map(str, key(r)))}: FPS x{fps_ratio:.3f}, peak RSS x{rss_ratio:.3f}")
