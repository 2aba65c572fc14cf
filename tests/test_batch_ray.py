"""vidtrack batch --executor ray: the same batch on a Ray Data actor pool (a 2-CPU local cluster started for
the run) gives the same outputs as the uninterrupted local run and records the same failure.

Resuming is the driver's job (plan + done-markers) and the same for both executors; test_batch.py covers it.
One Ray run costs ~10 s of fixed overhead here (cluster start 3 s, actors importing torch 3-4 s, shutdown
1.5 s), so this file runs Ray once.

Needs the ``ray`` extra (part of ``dev``, so CI runs it); skipped with the reason when Ray is not installed.
"""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from test_batch import (  # the shared batch and its reference outputs
    assert_recorded_failure,
    assert_same_outputs,
    batch_args,
    batch_case,  # noqa: F401 - a fixture
)

pytest.importorskip("ray.data", reason="Ray is not installed: pip install 'vidtrack[ray]' to run the Ray executor "
                                       "tests")


def test_ray_executor_matches_local_outputs(batch_case, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    args = batch_args(batch_case, out, "--executor", "ray", "--workers", "2", "--ray-cpus", "2")
    code, _, err = run_cli(args, capsys)
    assert code == 1, err  # the corrupt video failed; everything else done
    assert "batch finished: 8 done, 0 skipped, 1 failed" in err, err
    assert_same_outputs(out, batch_case.reference)
    assert_recorded_failure(out)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["executor"] == "ray" and summary["frames"] > 0
    workers = {v["worker"] for v in summary["videos"] if v["status"] == "done"}
    # at most one model per actor (2 actors); usually both take videos, but a slow-starting actor may get none
    assert 1 <= len(workers) <= 2, workers
