"""Re-run the table of user mistakes and faults (issue 13) against the real ``vidtrack`` console script.

Each row runs ``vidtrack`` in a subprocess on small generated inputs (a random tiny SAM 2 checkpoint: its masks
are meaningless, which does not matter here) and prints the observed exit status, the first stderr line and
whether it matches what the row expects. ``tests/test_user_errors.py`` runs the same rows and also checks what
is left on disk.

    python scripts/check_user_errors.py            # all rows, a markdown table on stdout
    python scripts/check_user_errors.py --keep DIR # keep the generated inputs and outputs in DIR

Rows that need something this machine may not allow (mounting a tmpfs for the full-disk and read-only rows, a
machine without /dev/video0) print ``skipped`` with the reason. Exit status 1 when a row does not match.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TINY = 128  # input size of the random test model (the real models use 1024)


# --------------------------------------------------------------------------------------------------- inputs


def _frames(n: int, height: int, width: int) -> list[np.ndarray]:
    """A red box moving right over a noisy background."""
    rng = np.random.default_rng(0)
    bg = rng.integers(20, 60, (height, width, 3), dtype=np.uint8)
    out = []
    for t in range(n):
        f = bg.copy()
        x = 4 + (t * 2) % max(width - 24, 1)
        f[height // 3: height // 3 + 12, x: x + 16] = (220, 50, 50)
        out.append(f)
    return out


def write_video(path: Path, frames: list[np.ndarray], *, faststart: bool = False) -> Path:
    """H.264 with PyAV; ``faststart`` puts the index first, as streaming-ready files (and phones) do, so a cut
    file still opens and declares its full frame count."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=10)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def make_inputs(root: Path) -> dict[str, Path]:
    """Every input the rows need, in ``root``."""
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    from vidtrack.engines.sam2.weights import random_sam2_model, sam2_config, tiny_test_config, with_image_size

    root.mkdir(parents=True, exist_ok=True)
    p = {name: root / name for name in ("video.mp4", "long.mp4", "full300.mp4", "truncated.mp4", "tiny-test",
                                        "sam2.1-tiny-128", "bert", "broken-sam2", "corrupt.pt", "a-file")}
    write_video(p["video.mp4"], _frames(12, 64, 96))
    write_video(p["long.mp4"], _frames(3000, 64, 64))
    write_video(p["full300.mp4"], _frames(300, 64, 96), faststart=True)
    data = p["full300.mp4"].read_bytes()
    p["truncated.mp4"].write_bytes(data[: int(len(data) * 0.3)])  # the first 30 % of the bytes

    random_sam2_model(tiny_test_config(TINY), seed=0).save_pretrained(str(p["tiny-test"]))
    # SAM 2.1 tiny's architecture (the size is read from it) at a small input size, so it runs in seconds
    random_sam2_model(with_image_size(sam2_config("tiny"), TINY), seed=0).save_pretrained(str(p["sam2.1-tiny-128"]))
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         vocab_size=100)).save_pretrained(str(p["bert"]))
    # a SAM 2 folder with one weight missing and one foreign weight: loading must not fill in random values
    shutil.copytree(p["tiny-test"], p["broken-sam2"])
    from safetensors.torch import load_file, save_file

    sd = load_file(str(p["broken-sam2"] / "model.safetensors"))
    sd.pop("mask_decoder.iou_prediction_head.proj_out.weight")
    sd["extra_head.weight"] = torch.zeros(3)
    save_file(sd, str(p["broken-sam2"] / "model.safetensors"), metadata={"format": "pt"})
    torch.save({"model": {"w": torch.randn(4096)}}, p["corrupt.pt"])
    data = p["corrupt.pt"].read_bytes()
    p["corrupt.pt"].write_bytes(data[: len(data) // 2])  # a download cut in half
    p["a-file"].write_text("not a folder\n")
    return p


# ------------------------------------------------------------------------------------------------------ rows


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def first_line(self) -> str:
        lines = [line for line in self.err.splitlines() if line.strip()]
        if self.code != 0:  # click's usage errors end with the "Error: ..." line that says what is wrong
            errors = [line for line in lines if line.startswith(("error:", "Error:", "interrupted"))]
            if errors:
                return errors[0].strip()
        return (lines[0] if lines else self.out.strip().splitlines()[0] if self.out.strip() else "").strip()


@dataclass
class Case:
    """One row: what the user did, the command, and what must happen."""

    name: str
    args: Callable[[dict[str, Path], Path], list[str]]
    code: int
    message: str  # a regular expression the stderr (or, for exit 0 without stderr, stdout) must match
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[dict[str, Path], Path], str | None] | None = None  # returns a reason to skip
    send: int | None = None  # a signal to send after `send_after` seconds
    send_after: float = 15.0  # long enough to be tracking on a busy machine
    max_seconds: float | None = None
    check: Callable[[dict[str, Path], Path, Run], None] | None = None  # what must be on disk afterwards
    teardown: Callable[[Path], None] | None = None


def vidtrack_command() -> list[str]:
    """The installed console script (it honours PYTHONPATH, so a checkout under test is what runs)."""
    exe = Path(sys.executable).with_name("vidtrack")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vidtrack")
    if found is None:
        raise SystemExit("the vidtrack console script is not installed (pip install -e .)")
    return [found]


def run_case(case: Case, inputs: dict[str, Path], work: Path, timeout: float = 300) -> Run:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **case.env}
    env.pop("VIDTRACK_DEBUG", None) if "VIDTRACK_DEBUG" not in case.env else None
    cmd = [*vidtrack_command(), *case.args(inputs, work)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=work,
                            start_new_session=True)
    if case.send is not None:
        try:
            proc.wait(timeout=case.send_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(case.send)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return Run(proc.returncode, out, err, time.monotonic() - t0)


def problems(case: Case, run: Run) -> list[str]:
    """What differs from the row's expectation (empty when it matches)."""
    found = []
    if run.code != case.code:
        found.append(f"exit {run.code}, expected {case.code}")
    text = run.err if run.err.strip() else run.out
    if not re.search(case.message, text):
        found.append(f"message does not match {case.message!r}")
    if "Traceback" in run.err and "--debug" not in case.args({}, Path()) and "VIDTRACK_DEBUG" not in case.env:
        found.append("a traceback was printed")
    if case.max_seconds is not None and run.seconds > case.max_seconds:
        found.append(f"took {run.seconds:.1f} s, more than {case.max_seconds:g} s")
    return found


# ---- setups and checks

def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SilentTcpServer:
    """Accepts connections on 127.0.0.1 and never sends a byte (a camera that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # kept open, silent

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


_SERVERS: dict[str, SilentTcpServer] = {}


def _silent_tcp(_inputs: dict[str, Path], _work: Path) -> str | None:
    _SERVERS["tcp"] = SilentTcpServer()
    return None


def _mount_tmpfs(path: Path, options: str) -> str | None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        return f"mount refused: {r.stderr.strip() or r.returncode}"
    return None


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def _readonly_setup(_inputs: dict[str, Path], work: Path) -> str | None:
    return _mount_tmpfs(work / "ro", "ro,size=64k")


FULL_PREVIOUS: dict[str, bytes] = {}


def _full_disk_setup(inputs: dict[str, Path], work: Path) -> str | None:
    """A 1 MiB tmpfs holding a previous run's outputs, then filled to the last few KiB."""
    disk = work / "small-disk"
    reason = _mount_tmpfs(disk, "size=1m")
    if reason:
        return reason
    first = subprocess.run([*vidtrack_command(), "track", str(inputs["video.mp4"]), "--checkpoint",
                            str(inputs["tiny-test"]), "--box", "4,21,16,12", "--out", str(disk / "out"), "-q",
                            "--device", "cpu"], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    if first.returncode != 0:
        _umount(disk)
        raise RuntimeError(f"the first run on the small disk failed: {first.stderr}")
    for f in (disk / "out").iterdir():
        FULL_PREVIOUS[f.name] = f.read_bytes()
    st = os.statvfs(disk)
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(st.f_bavail * st.f_frsize - 8192, 0))
    return None


def _full_disk_check(_inputs: dict[str, Path], work: Path, _run: Run) -> None:
    out = work / "small-disk" / "out"
    now = {f.name: f.read_bytes() for f in out.iterdir()}
    assert now == FULL_PREVIOUS, f"previous outputs changed: {sorted(now)} vs {sorted(FULL_PREVIOUS)}"
    leftovers = [p.name for p in (work / "small-disk").rglob("*") if p.name.startswith(".")]
    assert not leftovers, f"temporary files left: {leftovers}"


def _absent(name: str) -> Callable[[dict[str, Path], Path, Run], None]:
    def check(_inputs: dict[str, Path], work: Path, _run: Run) -> None:
        assert not (work / name).exists(), f"{name} was created: {sorted((work / name).rglob('*'))}"

    return check


def _truncated_check(_inputs: dict[str, Path], work: Path, _run: Run) -> None:
    s = json.loads((work / "out-truncated" / "summary.json").read_text())
    assert s["truncated"] is True and s["frames_expected"] == 300, s
    assert 0 < s["frames_decoded"] < 300 and s["frames"] == s["frames_decoded"], s


def _model_check(_inputs: dict[str, Path], work: Path, _run: Run) -> None:
    s = json.loads((work / "out-model" / "summary.json").read_text())
    masks = json.loads((work / "out-model" / "masks.json").read_text())
    assert s["model"] == "sam2.1-tiny", s
    assert masks["info"]["model"] == "sam2.1-tiny", masks["info"]


def _file_unchanged(_inputs: dict[str, Path], _work: Path, _run: Run) -> None:
    assert _inputs["a-file"].read_text() == "not a folder\n"


def _common(inputs: dict[str, Path]) -> list[str]:
    return ["--checkpoint", str(inputs["tiny-test"]), "--device", "cpu", "-q"]


def _track(video: str, out: str, *extra: str) -> Callable[[dict[str, Path], Path], list[str]]:
    def args(inputs: dict[str, Path], work: Path) -> list[str]:
        if not inputs:  # only asked whether --debug is among the arguments
            return list(extra)
        src = str(inputs[video]) if video in inputs else video
        return ["track", src, "--box", "4,21,16,12", "--out", str(work / out), *_common(inputs), *extra]

    return args


def _cmd(*parts: str) -> Callable[[dict[str, Path], Path], list[str]]:
    """Arguments with {name} replaced by input paths and {work} by the work folder."""

    def args(inputs: dict[str, Path], work: Path) -> list[str]:
        if not inputs:
            return list(parts)
        names = {k.replace(".", "_").replace("-", "_"): str(v) for k, v in inputs.items()}
        return [p.format(work=work, **names) for p in parts]

    return args


def cases() -> list[Case]:
    camera_missing = None if not Path("/dev/video0").exists() else "this machine has /dev/video0"
    udp_port = _free_port(socket.SOCK_DGRAM)
    closed_port = _free_port(socket.SOCK_STREAM)
    return [
        Case("mistyped option --ot", _cmd("track", "{video_mp4}", "--ot", "x"), 2,
             r"^error: no such option: --ot.*; see 'vidtrack track --help'"),
        Case("missing --out", _cmd("track", "{video_mp4}", "--box", "1,1,5,5"), 2, r"^error: missing option '--out'"),
        Case("--stride abc", _cmd("track", "{video_mp4}", "--out", "o", "--stride", "abc"), 2,
             r"^error: invalid value for '--stride'"),
        Case("mistyped command `vidtrack trak`", _cmd("trak"), 2,
             r"^error: no such command 'trak'\. Did you mean 'track'\? See 'vidtrack --help'$"),
        Case("vidtrack --version", _cmd("--version"), 0, r"^vidtrack \d+\.\d+"),
        Case("Ctrl-C (SIGINT) during track", _track("long.mp4", "out-int"), 130,
             r"^interrupted (at frame \d+ of \d+|while loading \S+|while checking the inputs) \(SIGINT\); "
             r"nothing written",
             send=signal.SIGINT, check=_absent("out-int")),
        Case("SIGTERM during track", _track("long.mp4", "out-term"), 143,
             r"^interrupted (at frame \d+ of \d+|while loading \S+|while checking the inputs) \(SIGTERM\); "
             r"nothing written",
             send=signal.SIGTERM, check=_absent("out-term")),
        Case("--out is an existing file", _cmd("track", "{video_mp4}", "--box", "4,21,16,12", "--out", "{a_file}",
                                               "--checkpoint", "{tiny_test}", "-q"), 2,
             r"^error: --out .*a-file is an existing file", check=_file_unchanged),
        Case("--out cannot be created (under a file)",
             _cmd("track", "{video_mp4}", "--box", "4,21,16,12", "--out", "{a_file}/sub", "--checkpoint",
                  "{tiny_test}", "-q"), 2, r"^error: cannot create --out folder .*is a file"),
        Case("--out in a read-only folder", _cmd("track", "{video_mp4}", "--box", "4,21,16,12", "--out",
                                                 "{work}/ro/out", "--checkpoint", "{tiny_test}", "-q"), 2,
             r"^error: cannot write --out .*not writable", setup=_readonly_setup,
             teardown=lambda work: _umount(work / "ro")),
        Case("--checkpoint is a BERT folder", _track("video.mp4", "out-bert", "--checkpoint", "BERT"), 2,
             r"^error: checkpoint folder .*bert holds a 'bert' model .*not SAM 2", check=_absent("out-bert")),
        Case("--checkpoint folder with a missing and an unexpected weight",
             _track("video.mp4", "out-broken", "--checkpoint", "BROKEN"), 2,
             r"^error: .*does not fit Sam2VideoModel: weights 1 missing .*1 unexpected .*never runs with randomly",
             check=_absent("out-broken")),
        Case("truncated video (first 30 % of the bytes)", _track("truncated.mp4", "out-truncated"), 0,
             r"^warning: .*truncated\.mp4 ended after \d+ of the 300 frames its header declares",
             check=_truncated_check),
        Case("truncated video with --strict", _track("truncated.mp4", "out-strict", "--strict"), 2,
             r"^error: .*truncated\.mp4 ended after \d+ of the 300 frames.*nothing written \(--strict\)",
             check=_absent("out-strict")),
        Case("--frame 99999 (checked before the model loads: the checkpoint is a BERT folder)",
             _track("long.mp4", "out-frame", "--frame", "99999", "--checkpoint", "BERT"), 2,
             r"^error: prompt for object 1 is on frame 99999, which is never processed: .*long\.mp4 yields frames "
             r"0\.\.2999", max_seconds=30, check=_absent("out-frame")),
        Case("--model sam2.1-large --checkpoint (tiny weights)",
             _track("video.mp4", "out-model", "--model", "sam2.1-large", "--checkpoint", "TINY_SAM21", "--end", "3"),
             0, r"^note: the weights are sam2.1-tiny, not sam2.1-large", check=_model_check),
        Case("--download with no network (Hub endpoint refuses connections)",
             _cmd("track", "{video_mp4}", "--box", "4,21,16,12", "--out", "{work}/out-dl", "--model", "sam2.1-small",
                  "--download", "--cache-dir", "{work}/empty-cache", "-q"), 2,
             r"^error: cannot download facebook/sam2\.1-hiera-small: .* is unreachable", max_seconds=30,
             env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port}"},
             check=_absent("out-dl")),
        Case("camera 0 on a machine without one", _cmd("track", "0", "--box", "4,21,16,12", "--out", "o"), 2,
             r"^error: no camera 0 \(/dev/video0 does not exist",
             setup=lambda _i, _w: camera_missing),
        Case("UDP stream that sends nothing", _cmd("track", f"udp://127.0.0.1:{udp_port}", "--box", "4,21,16,12",
                                                   "--out", "o"), 2,
             r"^error: no video from udp://127\.0\.0\.1:\d+: nothing arrived within \d+ s \(timed out\)",
             env={"VIDTRACK_STREAM_TIMEOUT": "3"}, max_seconds=30),
        Case("TCP stream that accepts and never answers",
             lambda inputs, work: ["track", f"tcp://127.0.0.1:{_SERVERS['tcp'].port}", "--box", "4,21,16,12",
                                   "--out", "o"] if inputs else [], 2,
             r"^error: no video from tcp://127\.0\.0\.1:\d+: nothing arrived within \d+ s \(timed out\)",
             env={"VIDTRACK_STREAM_TIMEOUT": "3"}, setup=_silent_tcp, max_seconds=30,
             teardown=lambda _w: _SERVERS.pop("tcp").close()),
        Case("corrupt .pt", _track("video.mp4", "out-corrupt", "--checkpoint", "CORRUPT"), 2,
             r"^error: cannot read checkpoint .*corrupt\.pt: (?!.*weights_only).*damaged or truncated",
             check=_absent("out-corrupt")),
        Case("disk full while writing (1 MiB tmpfs)",
             _cmd("track", "{video_mp4}", "--box", "4,21,16,12", "--out", "{work}/small-disk/out", "--checkpoint",
                  "{tiny_test}", "-q", "--device", "cpu", "-f", "rle-json,rle-jsonl,davis-png,sav-png"), 2,
             r"^error: no space left on device.*no file was left half-written", setup=_full_disk_setup,
             check=_full_disk_check, teardown=lambda work: _umount(work / "small-disk")),
        Case("export --out is a file", _cmd("export", "{work}/out-truncated/masks.json", "-f", "davis-png", "--out",
                                            "{a_file}"), 2, r"^error: --out .*a-file is an existing file"),
        Case("eval --out is a file", _cmd("eval", "--dataset", "{work}", "--layout", "davis", "--model",
                                          "sam2.1-tiny", "--out", "{a_file}"), 2,
             r"^error: --out .*a-file is an existing file"),
        Case("score with a missing --pred folder", _cmd("score", "--pred", "{work}/nope", "--gt", "{work}"), 2,
             r"^error: predictions folder not found"),
        Case("batch --out is a file", _cmd("batch", "{work}", "--out", "{a_file}"), 2,
             r"^error: --out .*a-file is an existing file"),
        Case("bench --json is a folder", _cmd("bench", "--json", "{work}"), 2, r"^error: --json .* is a folder"),
        Case("models --bogus", _cmd("models", "--bogus"), 2, r"^error: no such option: --bogus"),
        Case("--debug shows the traceback", _track("video.mp4", "out-debug", "--checkpoint", "BERT", "--debug"), 2,
             r"(?s)Traceback.*WeightsError.*\nerror: checkpoint folder"),
        Case("VIDTRACK_DEBUG=1 shows the traceback", _track("video.mp4", "out-debug", "--checkpoint", "BERT"), 2,
             r"(?s)Traceback.*WeightsError.*\nerror: checkpoint folder", env={"VIDTRACK_DEBUG": "1"}),
    ]


def _resolve(args: list[str], inputs: dict[str, Path]) -> list[str]:
    aliases = {"BERT": "bert", "BROKEN": "broken-sam2", "TINY_SAM21": "sam2.1-tiny-128", "CORRUPT": "corrupt.pt"}
    out = list(args)
    for i, a in enumerate(out):  # a later --checkpoint overrides the default one: replace both
        if a in aliases:
            out[i] = str(inputs[aliases[a]])
    if out.count("--checkpoint") > 1:
        first = out.index("--checkpoint")
        del out[first: first + 2]
    return out


def execute(case: Case, inputs: dict[str, Path], work: Path) -> tuple[Run | None, str | None, list[str]]:
    """Run one row: (run, skip reason, problems)."""
    reason = case.setup(inputs, work) if case.setup else None
    if reason:
        return None, reason, []
    try:
        resolved = Case(**{**case.__dict__, "args": lambda i, w: _resolve(case.args(i, w), i) if i else
                           case.args(i, w)})
        run = run_case(resolved, inputs, work)
        found = problems(resolved, run)
        if case.check is not None and not found:
            try:
                case.check(inputs, work, run)
            except AssertionError as e:
                found.append(f"on disk: {e}")
        return run, None, found
    finally:
        if case.teardown is not None:
            case.teardown(work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="generate inputs and outputs here and keep them")
    ap.add_argument("--only", help="run only rows whose name contains this text")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="vidtrack-user-errors-"))
    try:
        inputs = make_inputs(root / "inputs")
        work = root / "work"
        work.mkdir(exist_ok=True)
        print("| what the user did | exit | first line on stderr | as required |")
        print("|---|---|---|---|")
        failed = 0
        for case in cases():
            if args.only and args.only not in case.name:
                continue
            run, skip, found = execute(case, inputs, work)
            if run is None:
                print(f"| {case.name} | - | skipped: {skip} | - |", flush=True)
                continue
            failed += bool(found)
            verdict = "yes" if not found else "NO: " + "; ".join(found)
            line = run.first_line.replace("|", "\\|")
            print(f"| {case.name} | {run.code} | {line} | {verdict} |", flush=True)
        return 1 if failed else 0
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

