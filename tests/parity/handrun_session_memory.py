"""By hand (not collected by pytest): process RSS of an interactive session over a long video.

    OMP_NUM_THREADS=1 python tests/parity/handrun_session_memory.py CHECKPOINT.pt NUM_FRAMES

Writes a NUM_FRAMES-long 320x240 H.264 clip of moving shapes (tests/conftest.py), opens a session on it with
the checkpoint (e.g. the calibrated 256 px one of tests/parity), prompts two objects on frame 0 (a box and a
mask), propagates over the whole clip and prints the RSS before, during (before and after ``malloc_trim``:
glibc keeps freed heap pages, so the second figure is what is live) and after, with the session's
``memory_report()``. Compare 200 with 2,000 frames: only the per-frame metadata (pointer, scores, RLE) grows.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import moving_shapes, shape_masks
from parity.harness import load_vidtrack


def write_clip(path: Path, n: int, height: int = 240, width: int = 320) -> None:
    base = moving_shapes(50, height, width)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(base[i % 50], format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main() -> None:
    ckpt, n = sys.argv[1], int(sys.argv[2])
    proc = psutil.Process()
    libc = ctypes.CDLL("libc.so.6")
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        write_clip(clip, n)
        loader = load_vidtrack(ckpt)
        a, b = shape_masks(240, 320)
        ys, xs = np.nonzero(a)
        with loader.open_session(clip) as s:
            s.add_prompt(0, 1, box=(xs.min(), ys.min(), xs.max(), ys.max()))
            s.add_prompt(0, 2, mask=b)
            before = proc.memory_info().rss / 2**20
            marks = {}
            t0 = time.time()
            for tf in s.propagate():
                if tf.frame_idx in (100, 200, 500, 1000, 1500, n - 1):
                    rss = proc.memory_info().rss / 2**20
                    libc.malloc_trim(0)  # freed heap the allocator kept: what is left is live memory
                    marks[tf.frame_idx] = (round(rss), round(proc.memory_info().rss / 2**20))
            report = s.memory_report()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} frames in {time.time() - t0:.0f} s; RSS before propagating {before:.0f} MiB, at frames "
          f"{marks} (MiB, before and after malloc_trim), peak {peak:.0f} MiB; {report}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
