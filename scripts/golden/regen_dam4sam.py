"""Regenerate the DAM4SAM golden files (tests/golden/dam4sam_*.json) from an official DAM4SAM checkout.

The official code is never part of this repository: pass the folder of a jovanavidenovic/DAM4SAM checkout
(its root: ``dam4sam_tracker.py``, ``utils/``, ``sam2/``) and a folder with its extra dependency, vot-toolkit
(``pip install --target DIR --no-deps vot-toolkit==0.7.1`` plus what it imports: lazy-object-proxy,
attributee==0.1.9, six, colorama, class-registry, numba/llvmlite, setuptools<70 for pkg_resources). The run
happens in a subprocess (``scripts/golden/run_official_dam4sam.py``) whose PYTHONPATH starts with the checkout,
so its ``sam2`` shadows the installed ``sam2==1.1.0`` (which builds the checkpoint here).

    python scripts/golden/regen_dam4sam.py --checkout /work/official/DAM4SAM --pythonpath /work/official/pydeps
    python scripts/golden/regen_dam4sam.py --checkout ... --pythonpath ... --golden 1024   # hand-run size

What a golden holds: the clip (sequence, frame count, box prompt = the ground-truth mask's bounding box on
frame 0; frames optionally resized once to the model's size), the checkpoint recipe (architecture, seed, IoU
bias; tests/golden/dam4sam_checkpoint.py) and the digest of its state dict, the official commit and the exact
command, and per frame the official output mask (COCO RLE), predicted IoUs, object logit, the DRM and RAM
frames read, the object pointers' distances and whether the frame became a DRM anchor (run_official_dam4sam.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "golden"))

import dam4sam_checkpoint as recipe  # noqa: E402
from regen import commit_of  # noqa: E402  (scripts/golden/regen.py, beside this file)

GOLDENS: dict[str, dict[str, Any]] = {
    # 256 px small architecture, the test suite's (tests/test_golden_dam4sam.py). Frames resized once to the
    # model's 256 x 256 (tests/golden/dam4sam_checkpoint.py::frames_at), so neither side resizes them: what is
    # compared is the algorithm (the distractor test then runs at 256 x 256)
    "small": {"name": "dam4sam_car-shadow", "sequence": "car-shadow", "num_frames": 40, "frame_size": 256,
              "checkpoint": {"architecture_name": "small", "seed": 6, "iou_bias": 1.5}},
    # the same on the video's own 854 x 480 frames: each side resizes them its own way (the distractor test at
    # 854 x 480)
    "small-native": {"name": "dam4sam_car-shadow_native", "sequence": "car-shadow", "num_frames": 40,
                     "frame_size": None, "checkpoint": {"architecture_name": "small", "seed": 6, "iou_bias": 1.5}},
    # the released hiera-tiny shape at 1024 px, native frames (the hand-run size; opt-in test)
    "1024": {"name": "dam4sam_car-shadow_1024", "sequence": "car-shadow", "num_frames": 40, "frame_size": None,
             "checkpoint": {"architecture_name": "hiera-tiny-1024", "seed": 7, "iou_bias": [1.5, 1.5, 1.5, 1.8]}},
}


def gt_box(mask_png: Path, size: int | None) -> list[float]:
    """The bounding box (x0, y0, x1, y1), pixel corners, of a ground-truth mask; scaled to ``size`` x ``size``
    frames when given (rounded to 1/10 pixel)."""
    m = np.asarray(Image.open(mask_png)) > 0
    ys, xs = np.nonzero(m)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    if size is None:
        return box
    h, w = m.shape
    return [round(v * size / (w if i % 2 == 0 else h), 1) for i, v in enumerate(box)]


def regen(spec: dict[str, Any], checkout: Path, data: Path, out_dir: Path, pythonpath: list[str]) -> Path:
    ck = {**spec["checkpoint"], "constants": recipe.CK.calibration_constants()}
    arch = recipe.architecture(ck["architecture_name"])
    sd = recipe.state_dict(**ck)
    seq = spec["sequence"]
    frames = data / "davis2016" / "JPEGImages" / "480p" / seq
    mask = data / "davis2016" / "Annotations" / "480p" / seq / "00000.png"
    box = gt_box(mask, spec["frame_size"])
    with tempfile.TemporaryDirectory() as tmp:
        digest = None
        if spec["frame_size"] is not None:
            digest = recipe.frames_at(frames, spec["num_frames"], spec["frame_size"], Path(tmp) / "frames")
            frames = Path(tmp) / "frames"
        pt = recipe.CK.save(sd, Path(tmp) / "golden.pt")
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(ROOT / "scripts" / "golden" / "run_official_dam4sam.py"), "--checkpoint",
               str(pt), "--image-size", str(arch.image_size), "--frames", str(frames),
               "--box", *(str(v) for v in box), "--num-frames", str(spec["num_frames"]), "--out", str(out),
               *(f"--override={o}" for o in arch.overrides())]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), *pythonpath]), "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, check=True, env=env, cwd=tmp)
        result = json.loads(out.read_text())
    result.pop("official_package", None)
    result.pop("box_xyxy", None)
    golden = {
        "method": "dam4sam",
        "official": {"repository": "jovanavidenovic/DAM4SAM", "commit": commit_of(checkout),
                     "runner": "scripts/golden/run_official_dam4sam.py",
                     "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                     "device": "cpu", "dtype": "float32", "fill_hole_area": 0, "input_image_size": arch.image_size},
        "clip": {"dataset": "davis2016", "sequence": seq, "num_frames": spec["num_frames"],
                 "frame_size": spec["frame_size"], "frames_digest": digest,
                 "prompt": {"frame": 0, "obj_id": 1, "box_xyxy": box,
                            "from": f"bounding box of davis2016/Annotations/480p/{seq}/00000.png"}},
        "checkpoint": {"architecture": arch.name, "overrides": arch.overrides(), "recipe": ck,
                       "state_digest": recipe.CK.state_digest(sd)},
        **result,
    }
    path = out_dir / f"{spec['name']}.json"
    tmp_path = path.with_name(path.name + ".tmp")
    tmp_path.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    tmp_path.replace(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", type=Path, required=True, help="root folder of a DAM4SAM checkout")
    ap.add_argument("--golden", choices=sorted(GOLDENS), default="small")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "golden")
    ap.add_argument("--pythonpath", action="append", default=[], help="extra folder for the checkout's deps")
    args = ap.parse_args()
    if not (args.checkout / "dam4sam_tracker.py").is_file() or not (args.checkout / "sam2").is_dir():
        print(f"error: {args.checkout} is not a DAM4SAM checkout (no dam4sam_tracker.py and sam2/); pass its root",
              file=sys.stderr)
        sys.exit(2)
    if not (args.data / "davis2016").is_dir():
        print(f"error: {args.data} holds no davis2016 folder; pass --data", file=sys.stderr)
        sys.exit(2)
    print("wrote", regen(GOLDENS[args.golden], args.checkout, args.data, args.out_dir, args.pythonpath))


if __name__ == "__main__":
    main()
