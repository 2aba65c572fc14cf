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


def test_bench_bad_tracker_options_fail_before_any_case(tmp_path, capsys):
    from conftest import error_line

    out = tmp_path / "b.json"
    bench = ["bench", "--frames", "4", "--resolution", "64x96", "--image-size", "64", "--json", str(out)]
    assert "unknown memory policy 'bogus'" in error_line([*bench, "--policy", "bogus"], capsys)
    assert "--semantics must be one of official, causal; got 'bogus'" in error_line(
        [*bench, "--semantics", "bogus"], capsys)
    # a swept value is checked like the same option of `track`, in every case, before the first runs
    assert "--max-batch must be >= 1" in error_line([*bench, "--max-batch", "0,-2"], capsys)
    assert "--device must be" in error_line([*bench, "--device", "cpu,gpu"], capsys)
    # mode=online suits the first model's SAM2Long, not the second's SAM 2.1: found before the first case runs
    assert "the vanilla policy does not take these options" in error_line(
        [*bench, "--models", "sam2long-tiny,sam2.1-tiny", "--policy-option", "mode=online"], capsys)
    assert not out.exists()


def test_bench_policy_and_options_reach_the_loader(tmp_path):
    from vidtrack.bench import BenchCase
    from vidtrack.cli_options import TrackerOptions

    case = BenchCase(tracker=TrackerOptions(policy="sam2long", policy_option=["num_pathways=2"], semantics="causal"))
    cfg = case.config()  # the same builder as track/eval/batch, with bench's own extras
    assert (cfg.policy, cfg.policy_options, cfg.semantics, cfg.backward) == ("sam2long", {"num_pathways": 2},
                                                                              "causal", False)
    out = tmp_path / "b.json"
    try:
        main(["bench", "--models", "sam2.1-tiny", "--policy", "sam2long", "--policy-option", "num_pathways=2",
              "--frames", "8", "--objects", "1", "--resolution", "64x96", "--image-size", "64", "--warmup", "2",
              "--json", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    [r] = json.loads(out.read_text())["results"]
    assert r["policy"] == "sam2long"  # what the loader says it runs, not the model name's vanilla
    assert (r["case"]["policy"], r["case"]["policy_options"]) == ("sam2long", {"num_pathways": 2})
    # the official code would run 1 pass on the first tracked frame, then P per frame: (1 + 6 P) / 7 with P = 2
    # (the default P = 3 would give 19 / 7)
    assert r["sam2long_runs_official_per_object_frame"] == round((1 + 6 * 2) / 7, 3)
