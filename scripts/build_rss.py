"""Model build time and process memory: Meta's official builder vs vidtrack's loader, one fresh process each.

    OMP_NUM_THREADS=1 python scripts/build_rss.py official CKPT.pt   # build_sam2_video_predictor
    OMP_NUM_THREADS=1 python scripts/build_rss.py vidtrack CKPT.pt   # create_tracking_loader(...).load()
    ... CKPT.pt 8 FRAMES_DIR                                          # then track 8 frames, RSS again

CKPT.pt is a Meta-format checkpoint with its yaml beside it (e.g. written by tests/parity/calibration.py).
Prints import time, build time (wall and process CPU), resident memory (VmRSS: anonymous and file-backed) after
the imports and after the build, and the peak. Run several times and take the minimum on a shared machine.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path


def rss_mib() -> tuple[float, float]:
    """(VmRSS, RssFile) in MiB: the whole resident set and its file-backed part (mapped files, libraries)."""
    vals = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssFile"):
            vals[key] = int(rest.split()[0]) / 1024
    return vals["VmRSS"], vals.get("RssFile", 0.0)


def main() -> int:
    who, ckpt = sys.argv[1], sys.argv[2]
    if who not in ("official", "vidtrack") or not Path(ckpt).is_file():
        print("error: usage: build_rss.py official|vidtrack CKPT.pt", file=sys.stderr)
        return 2
    w0, c0 = time.perf_counter(), time.process_time()
    import torch

    torch.set_num_threads(1)
    if who == "official":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "parity"))
        import calibration
        import sam2.build_sam  # noqa: F401
    else:
        from vidtrack import TrackingConfig, create_tracking_loader
        from vidtrack.engines.sam2 import loader as _loader  # noqa: F401  (what load() imports)
    w1, c1 = time.perf_counter(), time.process_time()
    r1, f1 = rss_mib()
    if who == "official":
        import yaml

        size = int(yaml.safe_load(Path(ckpt).with_suffix(".yaml").read_text())["model"]["image_size"])
        model: object = calibration.build_predictor(calibration.tiny(size), ckpt)
    else:
        model = create_tracking_loader("sam2.1-tiny", TrackingConfig(device="cpu", dtype="float32",
                                                                     checkpoint_path=ckpt, threads=1)).load()
    w2, c2 = time.perf_counter(), time.process_time()
    r2, f2 = rss_mib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{who}: import {w1 - w0:.2f} s wall / {c1 - c0:.2f} s CPU, RSS {r1:.0f} MiB (file {f1:.0f}); "
          f"build {w2 - w1:.2f} s wall / {c2 - c1:.2f} s CPU; RSS after build {r2:.0f} MiB (file {f2:.0f}); "
          f"peak {peak:.0f} MiB")
    if len(sys.argv) > 3:  # then track N frames of a JPEG folder (one box) and report RSS again
        n, frames_dir = int(sys.argv[3]), sys.argv[4]
        box = (400.0, 120.0, 600.0, 300.0)
        if who == "official":
            import numpy as np

            with calibration.frame_folder(frames_dir, n) as d, torch.inference_mode():
                state = model.init_state(str(d))  # type: ignore[attr-defined]
                model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(box))  # type: ignore[attr-defined]
                for _ in model.propagate_in_video(state):  # type: ignore[attr-defined]
                    pass
        else:
            from vidtrack import Prompt

            for _ in model.stream(frames_dir, [Prompt.from_box(0, 1, box, fmt="xyxy")], end=n):  # type: ignore[attr-defined]
                pass
        r3, f3 = rss_mib()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{who}: after {n} frames RSS {r3:.0f} MiB (file {f3:.0f}); peak {peak:.0f} MiB")
    del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
