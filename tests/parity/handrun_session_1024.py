"""By hand (not collected by pytest): the session parity scenarios at 1024 px on the hiera-tiny architecture.

    OMP_NUM_THREADS=1 python tests/parity/handrun_session_1024.py CHECKPOINT.pt [NUM_FRAMES [SCENARIOS]]

CHECKPOINT is a calibrated hiera-tiny 1024 px checkpoint written by ``calibration.save_checkpoint(TINY_1024,
path)`` (its yaml beside it). Prints the mean and minimum IoU of every step of scenarios (a), (b), (c) of
test_session_parity.py against Meta's predictor. SCENARIOS: comma-separated names (default a,b,c); ``c3`` is
(c) up to its first propagation (two objects, the second first prompted on frame 5, propagate), for a loaded
machine.
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
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else ["a", "b", "c"]
    tsp.SCENARIOS["c3"] = lambda: (lambda fd, steps: (fd, steps[:3]))(*tsp.scenario_c())
    runner = _Runner(ckpt)
    for name in names:
        t0 = time.time()
        _, reports = tsp.play(runner, name)
        print(f"scenario {name} ({tsp.N} frames, 1024 px, {time.time() - t0:.0f} s):\n{summary(reports)}", flush=True)
    if "a" not in names:
        return
    frames_dir, steps = tsp.scenario_a()
    with runner.loader.open_session(tsp._frames(frames_dir)) as session:
        session.add_prompt(0, 1, points=steps[0].points, labels=steps[0].labels)
        list(session.propagate(max_frames=3))
        print("memory after 4 tracked frames:", session.memory_report(), flush=True)


if __name__ == "__main__":
    main()
