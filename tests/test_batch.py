"""vidtrack batch: manifests, resumability under SIGKILL, change detection, failures, retries, the run lock.

The batch here is 8 short generated clips (8-10 frames, 96x160) plus a corrupt file, tracked with the
1.4 M-parameter random SAM 2.1 model. The reference outputs come from an uninterrupted in-process run
(``workers=0``); the killed-and-resumed run uses the spawned process pool, so the comparison also shows that
a worker process computes exactly what the driver process does.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import error_line, moving_shapes, run_cli, shape_masks, write_video

NUM_GOOD = 8
TIMING_KEYS = {"total_processing_time", "fps"}


def palette_png(path: Path, masks: dict[int, np.ndarray]) -> Path:
    """A DAVIS-style palette PNG: pixel value = object id."""
    arr = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for oid, m in masks.items():
        arr[m] = oid
    img = Image.fromarray(arr, mode="P")
    img.putpalette([0, 0, 0, 220, 50, 50, 50, 210, 60] + [0] * (768 - 9))
    img.save(path)
    return path


def build_batch(root: Path) -> Path:
    """Write 8 clips with a mix of prompt styles, one corrupt video, and a JSONL manifest; returns the manifest."""
    vids = root / "videos"
    vids.mkdir(parents=True)
    box, disc = shape_masks()
    entries: list[dict[str, Any]] = []
    for i in range(NUM_GOOD):
        n = 8 + i % 3
        write_video(vids / f"clip{i}.mp4", moving_shapes(n, seed=i))
        if i < 3:  # a two-object palette mask
            palette_png(vids / f"clip{i}.png", {1: box, 2: disc})
            entries.append({"source": f"videos/clip{i}.mp4", "mask": f"videos/clip{i}.png"})
        elif i < 5:  # prompts.json: a mask file for one object, a box for the other
            palette_png(vids / f"clip{i}_disc.png", {2: disc})
            (vids / f"clip{i}.json").write_text(json.dumps([
                {"frame": 0, "mask": f"clip{i}_disc.png"},
                {"frame": 0, "object_id": 1, "box": [16, 27, 28, 22]},
            ]))
            entries.append({"source": f"videos/clip{i}.mp4", "prompts": f"videos/clip{i}.json"})
        elif i == 5:  # an inline box as a list
            entries.append({"source": f"videos/clip{i}.mp4", "box": [16, 27, 28, 22], "object_id": 3})
        elif i == 6:  # an inline box on a later frame: tracked forward and backward
            entries.append({"id": "late-box", "source": f"videos/clip{i}.mp4", "box": "20,27,28,22", "frame": 2})
        else:  # per-video options
            palette_png(vids / f"clip{i}.png", {1: box, 2: disc})
            entries.append({"source": f"videos/clip{i}.mp4", "mask": f"videos/clip{i}.png",
                            "formats": ["rle-json", "davis-png"]})
    (vids / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    entries.insert(4, {"source": "videos/broken.mp4", "box": "10,10,20,20"})
    manifest = root / "batch.jsonl"
    manifest.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return manifest


def good_ids() -> list[str]:
    return [f"clip{i}" if i != 6 else "late-box" for i in range(NUM_GOOD)]


def masks_signature(out: Path, video_id: str) -> dict[str, Any]:
    """masks.json of a video without its timing fields (wall-clock times differ run to run)."""
    data = json.loads((out / video_id / "masks.json").read_text())
    frames = [{k: v for k, v in f.items() if k != "processing_time"} for f in data["frames"]]
    info = {k: v for k, v in data["info"].items() if k not in TIMING_KEYS}
    return {"frames": frames, "info": info}


@dataclass
class BatchCase:
    manifest: Path
    checkpoint: Path
    reference: Path


_CASE: dict[str, BatchCase] = {}


@pytest.fixture(scope="session")
def batch_case(tmp_path_factory, tiny_checkpoint_dir) -> BatchCase:
    """The batch and its uninterrupted reference outputs (built once, shared with test_batch_ray)."""
    if "case" not in _CASE:
        from vidtrack.batch import BatchOptions, JobOptions, load_manifest, run_batch

        root = tmp_path_factory.mktemp("batch")
        manifest = build_batch(root)
        ref = root / "reference"
        jobs = load_manifest(manifest, JobOptions(checkpoint=str(tiny_checkpoint_dir), dtype="float32"))
        summary = run_batch(jobs, BatchOptions(out_dir=ref, workers=0, device="cpu", quiet=True))
        assert (summary.done, summary.skipped, summary.failed) == (NUM_GOOD, 0, 1), summary
        _CASE["case"] = BatchCase(manifest, tiny_checkpoint_dir, ref)
    return _CASE["case"]


def batch_args(case: BatchCase, out: Path, *extra: str) -> list[str]:
    return ["batch", str(case.manifest), "--out", str(out), "--checkpoint", str(case.checkpoint),
            "--dtype", "float32", "--device", "cpu", "-q", *extra]


def assert_same_outputs(out: Path, reference: Path) -> None:
    for vid in good_ids():
        assert (out / vid / "done.json").is_file(), vid
        assert masks_signature(out, vid) == masks_signature(reference, vid), vid
    assert sorted(p.name for p in (out / "clip7" / "davis").iterdir()) == \
        sorted(p.name for p in (reference / "clip7" / "davis").iterdir())
    for png in (reference / "clip7" / "davis").iterdir():
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(out / "clip7" / "davis" / png.name)))


def assert_recorded_failure(out: Path) -> None:
    err = (out / "broken.error.txt").read_text()
    assert err.count("\n") == 1 and "cannot decode video" in err and "broken.mp4" in err, err
    assert not (out / "broken").exists()
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["failed"] == 1 and summary["done"] + summary["skipped"] == NUM_GOOD
    row = next(v for v in summary["videos"] if v["id"] == "broken")
    assert row["status"] == "failed" and row["error"] == err.strip()


# ---------------------------------------------------------------------------------------------------------
# The headline: killed at random points, re-run until done, same outputs
# ---------------------------------------------------------------------------------------------------------


def _group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _finished(out: Path) -> int:
    return sum((out / v / "done.json").is_file() for v in good_ids())


def test_sigkill_at_random_points_then_resume_gives_identical_outputs(batch_case, tmp_path):
    """SIGKILL the driver once during start-up and then at random moments after random numbers of finished
    videos (mid-tracking, mid-export, mid-rename: wherever the delay lands), re-running each time."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vidtrack.cli", *batch_args(batch_case, out, "--workers", "2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    rng = random.Random(int(os.environ.get("VIDTRACK_BATCH_KILL_SEED", "1234")))
    # finished videos before each kill; each kill after the first costs a worker start-up (torch import), so
    # three kills keep the test well under a minute on a 2-core CI machine
    targets = [0, *sorted(rng.sample(range(1, NUM_GOOD - 2), 2))]
    kills, done_at_kill = 0, []
    for target in targets:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while _finished(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.5, 3.0) if target == 0 else rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            proc.communicate()
            continue
        proc.send_signal(signal.SIGKILL)  # the driver only: its workers must notice and die with it
        proc.communicate()
        kills += 1
        done_at_kill.append(_finished(out))
        gone = _group_gone(proc.pid, 10.0)
        if not gone:  # clean up what this test started before failing
            os.killpg(proc.pid, signal.SIGKILL)
        assert gone, "batch workers outlived their killed driver"
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    print(f"kills: {kills}, finished videos at each kill: {done_at_kill}")
    assert kills >= 2 and any(0 < n < NUM_GOOD for n in done_at_kill), (kills, done_at_kill)  # one mid-batch
    assert final.returncode == 1, final.stderr  # 1: some video failed (the corrupt one)
    assert "failed" in final.stderr and "batch finished" in final.stderr
    assert_same_outputs(out, batch_case.reference)
    assert_recorded_failure(out)
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))], "staging folders left behind"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    summary = json.loads((out / "batch_summary.json").read_text())
    assert again.returncode == 1 and (summary["skipped"], summary["done"], summary["failed"]) == (NUM_GOOD, 0, 1)


# ---------------------------------------------------------------------------------------------------------
# Change detection
# ---------------------------------------------------------------------------------------------------------


def test_changed_prompt_or_option_is_redone_unchanged_is_skipped(batch_case, tmp_path, capsys):
    import shutil

    vids = batch_case.manifest.parent / "videos"
    work = tmp_path / "in"
    work.mkdir()
    for name in ("clip0.png", "clip1.png", "clip3.json", "clip3_disc.png"):
        shutil.copy(vids / name, work / name)
    entries = [
        {"source": str(vids / "clip0.mp4"), "mask": "clip0.png"},
        {"source": str(vids / "clip1.mp4"), "mask": "clip1.png"},
        {"source": str(vids / "clip3.mp4"), "prompts": "clip3.json"},
    ]
    manifest = work / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(e) for e in entries))
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--checkpoint", str(batch_case.checkpoint), "--dtype",
            "float32", "--device", "cpu", "--workers", "0", "-q"]

    def run() -> dict[str, str]:
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
        summary = json.loads((out / "batch_summary.json").read_text())
        return {v["id"]: v["status"] for v in summary["videos"]}

    assert run() == {"clip0": "done", "clip1": "done", "clip3": "done"}
    for vid in ("clip0", "clip1", "clip3"):  # same inputs as the reference batch: same masks
        assert masks_signature(out, vid) == masks_signature(batch_case.reference, vid)
    assert run() == {"clip0": "skipped", "clip1": "skipped", "clip3": "skipped"}

    # the same prompts re-saved differently (key order, spacing) are not a change
    items = json.loads((work / "clip3.json").read_text())
    (work / "clip3.json").write_text(json.dumps(items[::-1], indent=4))
    # a repainted mask is
    box, _ = shape_masks()
    palette_png(work / "clip1.png", {1: box})
    before = json.loads((out / "clip1" / "done.json").read_text())["checksum"]
    assert run() == {"clip0": "skipped", "clip1": "done", "clip3": "skipped"}
    marker = json.loads((out / "clip1" / "done.json").read_text())
    assert marker["checksum"] != before
    assert json.loads((out / "clip1" / "masks.json").read_text())["info"]["object_ids"] == [1]

    # a changed option (formats) in the manifest redoes that video and writes the new format
    entries[0]["formats"] = "rle-json,davis-png"
    manifest.write_text("\n".join(json.dumps(e) for e in entries))
    assert run() == {"clip0": "done", "clip1": "skipped", "clip3": "skipped"}
    assert (out / "clip0" / "davis").is_dir()
    # and a changed video file too
    write_video(vids.parent / "clip0b.mp4", moving_shapes(8, seed=42))
    entries[0]["source"] = str(vids.parent / "clip0b.mp4")
    entries[0]["id"] = "clip0"
    manifest.write_text("\n".join(json.dumps(e) for e in entries))
    assert run()["clip0"] == "done"


# ---------------------------------------------------------------------------------------------------------
# Failures, retries, lock
# ---------------------------------------------------------------------------------------------------------


def test_transient_error_is_retried_and_bad_input_is_not(batch_case, tmp_path, monkeypatch):
    from vidtrack.batch import JobOptions, VideoProcessor, load_manifest

    jobs = {j.id: j for j in load_manifest(batch_case.manifest, JobOptions(checkpoint=str(batch_case.checkpoint),
                                                                           dtype="float32"))}
    proc = VideoProcessor(tmp_path, device="cpu", retries=2)
    real = VideoProcessor.loader_for
    calls = {"n": 0}

    def flaky(self, opts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, opts)

    monkeypatch.setattr(VideoProcessor, "loader_for", flaky)
    res = proc.process(jobs["clip2"])
    assert res["status"] == "done" and res["attempts"] == 2
    assert masks_signature(tmp_path, "clip2") == masks_signature(batch_case.reference, "clip2")

    res = proc.process(jobs["broken"])  # bad input: one attempt, one-line error file
    assert res["status"] == "failed" and res["attempts"] == 1
    assert (tmp_path / "broken.error.txt").read_text().strip() == res["error"]

    always = VideoProcessor(tmp_path / "b", device="cpu", retries=1)
    monkeypatch.setattr(VideoProcessor, "loader_for", lambda self, opts: (_ for _ in ()).throw(OSError("disk")))
    res = always.process(jobs["clip0"])
    assert res["status"] == "failed" and res["attempts"] == 2
    assert res["error"] == "OSError: disk (after 2 attempts)"
    proc.close()


def test_worker_killed_mid_video_is_replaced_and_the_video_retried(batch_case, tmp_path):
    """A pool worker that dies (SIGKILL, as the OOM killer would) costs its video one attempt: a fresh worker
    takes the slot and redoes it, and the next video still runs."""
    import multiprocessing

    from vidtrack.batch import JobOptions, load_manifest
    from vidtrack.batch.local import run_local

    jobs = {j.id: j for j in load_manifest(batch_case.manifest, JobOptions(checkpoint=str(batch_case.checkpoint),
                                                                           dtype="float32"))}
    killed: list[int] = []

    def kill_worker_once(_n: int) -> None:
        if not killed:
            for child in multiprocessing.active_children():
                if child.name.startswith("vidtrack-batch-") and child.pid is not None:
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)

    results = list(run_local([jobs["clip0"], jobs["clip1"]], out_dir=tmp_path, workers=1, device="cpu", retries=1,
                             threads=1, progress=kill_worker_once))
    assert len(killed) == 1
    status = {r["id"]: r["status"] for r in results}
    # the killed video is redone (or found committed, when the kill landed after its rename): never lost
    assert status["clip0"] in ("done", "skipped") and status["clip1"] == "done", results
    for vid in ("clip0", "clip1"):
        assert masks_signature(tmp_path, vid) == masks_signature(batch_case.reference, vid)
    assert not list(tmp_path.glob("*.error.txt"))


def test_stale_staging_folders_are_removed_and_foreign_folders_kept(batch_case, tmp_path, capsys):
    from vidtrack.batch.state import commit_stage, new_stage

    out = tmp_path / "out"
    (out / ".clip0.0123abcd.tmp").mkdir(parents=True)
    (out / ".clip0.0123abcd.tmp" / "masks.json").write_text("{half")
    (out / "notes").mkdir()
    code, _, err = run_cli(["batch", str(batch_case.manifest), "--out", str(out), "--checkpoint",
                            str(batch_case.checkpoint), "--dtype", "float32", "--device", "cpu", "--workers",
                            "0", "-q"], capsys)
    assert code == 1 and "1 failed" in err
    assert not (out / ".clip0.0123abcd.tmp").exists() and (out / "notes").is_dir()
    assert_same_outputs(out, batch_case.reference)
    stage = new_stage(out, "notes")
    with pytest.raises(Exception, match="not a vidtrack batch output"):
        commit_stage(stage, out, "notes")  # never replaces a folder that is not ours


def test_second_batch_on_same_output_is_refused(batch_case, tmp_path, capsys):
    from vidtrack.batch.state import run_lock

    out = tmp_path / "out"
    with run_lock(out):
        line = error_line(batch_args(batch_case, out, "--workers", "0"), capsys)
    assert "another vidtrack batch" in line and str(os.getpid()) in line


# ---------------------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------------------


def test_csv_json_and_folder_manifests(batch_case, tmp_path):
    from vidtrack.batch import JobOptions, load_manifest

    vids = batch_case.manifest.parent / "videos"
    jsonl = {j.id: j for j in load_manifest(batch_case.manifest)}
    csv_path = batch_case.manifest.parent / "batch.csv"
    csv_path.write_text(
        "source,mask,prompts,box,frame,id,formats,stride\n"
        "videos/clip0.mp4,videos/clip0.png,,,,,,\n"
        "videos/clip3.mp4,,videos/clip3.json,,,,,\n"
        'videos/clip6.mp4,,,"20,27,28,22",2,late-box,,\n'
        'videos/clip7.mp4,videos/clip7.png,,,,,"rle-json,davis-png",\n'
    )
    from_csv = {j.id: j for j in load_manifest(csv_path)}
    for vid in ("clip0", "clip3", "late-box", "clip7"):
        a, b = jsonl[vid], from_csv[vid]
        assert (a.source, a.masks, a.prompts, a.box, a.frame, a.options) == \
            (b.source, b.masks, b.prompts, b.box, b.frame, b.options), vid
    json_path = tmp_path / "m.json"
    json_path.write_text(json.dumps({"videos": [{"video": str(vids / "clip5.mp4"), "box": "1,2,3,4"}]}))
    (job,) = load_manifest(json_path, JobOptions(model="sam2.1-small", stride=2))
    assert job.id == "clip5" and job.options.model == "sam2.1-small" and job.options.stride == 2

    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("clip0.mp4", "clip0.png", "clip3.mp4", "clip3_disc.png"):
        (folder / name).write_bytes((vids / name).read_bytes())
    (folder / "clip3.json").write_text((vids / "clip3.json").read_text())
    jobs = {j.id: j for j in load_manifest(folder)}
    assert set(jobs) == {"clip0", "clip3"}
    assert jobs["clip0"].masks == (str(folder / "clip0.png"),) and jobs["clip0"].frame == 0
    assert jobs["clip3"].prompts == str(folder / "clip3.json")
    assert len(jobs["clip3"].load_prompts()) == 2
    # a round trip through the dict form that crosses process and Ray boundaries
    from vidtrack.batch import VideoJob

    assert all(VideoJob.from_dict(json.loads(json.dumps(j.to_dict()))) == j for j in jsonl.values())


@pytest.mark.parametrize(("lines", "needle"), [
    ('{"source": "a.mp4", "box": "1,2,3,4", "promts": "p.json"}', "batch.jsonl:1: unknown field 'promts'"),
    ('{"source": "a.mp4"}', "batch.jsonl:1: no prompt"),
    ('{"box": "1,2,3,4"}', "no 'source'"),
    ('{"source": "a.mp4", "box": "1,2,3,4"}\n{"source": "x/a.mp4", "box": "1,2,3,4"}', "batch.jsonl:2: id 'a' is "
                                                                                      "already used"),
    ('{"source": "a.mp4", "box": "1,2,3,4", "formats": "rle-json,png"}', "unknown export format 'png'"),
    ('{"source": "a.mp4", "box": "1,2,3,4", "stride": "two"}', "stride must be an integer"),
    ("not json", "batch.jsonl:1: not valid JSON"),
])
def test_manifest_errors_are_one_line_and_name_the_entry(tmp_path, capsys, lines, needle):
    manifest = tmp_path / "batch.jsonl"
    manifest.write_text(lines + "\n")
    line = error_line(["batch", str(manifest), "--out", str(tmp_path / "out"), "-q"], capsys)
    assert needle in line, line
    assert not (tmp_path / "out").exists()  # nothing started


def test_folder_without_prompt_files_and_option_errors(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    line = error_line(["batch", str(tmp_path / "v"), "--out", str(tmp_path / "out")], capsys)
    assert "have no prompt file: a.mp4" in line
    (tmp_path / "v" / "a.json").write_text("[]")
    line = error_line(["batch", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--executor", "spark"], capsys)
    assert "unknown executor 'spark'" in line
    line = error_line(["batch", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--address", "x:1"], capsys)
    assert "--executor ray" in line


def test_folder_given_as_a_relative_path(tmp_path, monkeypatch):
    """`vidtrack batch clips --out out` from the folder above: every video and prompt file is found (the folder
    used to be prefixed twice, clips/clips/a.json, and every video failed)."""
    from vidtrack.batch import load_manifest

    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "a.mp4", moving_shapes(3))
    (clips / "a.json").write_text(json.dumps([{"frame": 0, "object_id": 1, "box": [16, 27, 28, 22]}]))
    monkeypatch.chdir(tmp_path)
    (job,) = load_manifest("clips")
    assert Path(job.source).resolve() == (clips / "a.mp4").resolve() and Path(job.source).is_file()
    assert [p.box for p in job.load_prompts()] == [(16.0, 27.0, 44.0, 49.0)]
