"""By hand (not collected by pytest): the session parity scenarios at 1024 px on the hiera-tiny architecture.

    OMP_NUM_THREADS=1 python tests/parity/handrun_session_1024.py CHECKPOINT.pt [NUM_FRAMES]

CHECKPOINT is a calibrated hiera-tiny 1024 px checkpoint written by ``calibration.save_checkpoint(TINY_1024,
path)`` (its yaml beside it). Prints the mean and minimum IoU of every step of scenarios (a), (b), (c) of
test_session_parity.py against Meta's predictor.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parity import test_session_parity as tsp
from parity.calibration import TINY_1024, build_predictor
from parity.harness import load_vidtrack
from parity.session_harness import summary


class _Runner:
    def __init__(self, checkpoint: str) -> None:
        self.predictor = build_predictor(TINY_1024, checkpoint)
        self.loader = load_vidtrack(checkpoint)


def main() -> None:
    ckpt = sys.argv[1]
    tsp.N = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    runner = _Runner(ckpt)
    for name in ("a", "b", "c"):
        t0 = time.time()
        _, reports = tsp.play(runner, name)
        print(f"scenario {name} ({tsp.N} frames, 1024 px, {time.time() - t0:.0f} s):\n{summary(reports)}", flush=True)


if __name__ == "__main__":
    main()
