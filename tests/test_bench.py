"""The benchmark tool completes and reports what it promises (no timing assertions: figures are measured
by hand, see BENCHMARKS.md)."""

from __future__ import annotations

import json

from vidtrack.cli import main


def test_bench_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "b.json"
    try:
        main(["bench", "--models", "sam2.1-tiny,samurai-tiny", "--frames", "6", "--objects", "1,2",
              "--resolution", "64x96", "--image-size", "64", "--warmup", "2", "--json", str(out), "--md",
              str(tmp_path / "b.md")])
    except SystemExit as e:
        assert e.code in (0, None)
    data = json.loads(out.read_text())
    assert len(data["results"]) == 4 and "torch" in data["machine"]
    for r in data["results"]:
        assert r["frames"] == 6 and r["speed_only"] is True
        assert r["fps"] > 0 and r["peak_rss_mb"] > 0 and r["state_kib"] > 0
        assert set(r["stage_ms_per_frame"]) >= {"image_encoder", "memory_attention", "decoder", "memory_encoder"}
    assert (tmp_path / "b.md").read_text().count("\n") == 6
    try:
        main(["bench", "--frames", "6", "--resolution", "64x96", "--image-size", "64", "--warmup", "2",
              "--compare", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    assert "FPS x" in capsys.readouterr().out


def test_bench_sweeps_batch_and_reports_sam2long_pathways(tmp_path):
    out = tmp_path / "b.json"
    try:
        main(["bench", "--models", "sam2long-tiny", "--frames", "8", "--objects", "2", "--max-batch", "1,4",
              "--resolution", "64x96", "--image-size", "64", "--warmup", "2", "--object-bias", "0.5",
              "--iou-spread", "0.3", "--policy-option", "num_pathways=2", "--json", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    results = json.loads(out.read_text())["results"]
    assert [r["engine"]["max_batch"] for r in results] == [1, 4]
    for r in results:
        assert r["case"]["policy_options"] == {"num_pathways": 2}
        assert r["steady_cpu_ms_per_frame"] > 0 and r["load_s"] >= 0
        # computed passes per object and frame: between 1 (pathways identical) and P = 2
        assert 1.0 <= r["sam2long_runs_per_object_frame"] <= r["sam2long_runs_official_per_object_frame"] <= 2.0
