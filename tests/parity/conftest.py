"""Session fixtures of the parity tests: calibrated checkpoints, Meta's predictor and vidtrack on them, and
cached runs of each case (every official and vidtrack run happens once per session).

Skips, with the reason, when Meta's ``sam2`` package or the real frames of ../shared/data are absent; CI
installs ``sam2`` (README), so there they run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .calibration import SMALL, SMALL_V20, Architecture, OfficialRun, run_official, save_checkpoint
from .harness import Case, ParityReport, VidtrackRun, compare, load_vidtrack, run_vidtrack

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not found at {p} (only present beside the project checkout)")
    return p


def davis_frames(seq: str) -> Path:
    return data_path("davis2016", "JPEGImages", "480p", seq)


def davis_mask(seq: str, frame: int) -> np.ndarray:
    """DAVIS-2016 ground truth of one frame (mode L, 255 = the object) as a bool mask."""
    return np.asarray(Image.open(data_path("davis2016", "Annotations", "480p", seq, f"{frame:05d}.png"))) > 0


def judo_frames() -> Path:
    return data_path("cutie_judo", "JPEGImages")


def judo_mask(frame: int, obj: int) -> np.ndarray:
    """One object of a Cutie judo palette prompt (objects 1-4 are introduced on frames 0, 5, 8, 13)."""
    return np.asarray(Image.open(data_path("cutie_judo", "prompts", f"{frame:05d}.png"))) == obj


@pytest.fixture(scope="session")
def sam2_official() -> Any:
    """Meta's package, or skip."""
    return pytest.importorskip("sam2", reason="Meta's sam2==1.1.0 is not installed (see requirements-nodeps.txt)")


class ParityRunner:
    """One checkpoint's official predictor and vidtrack loader, and the cached runs of each case by name."""

    def __init__(self, arch: Architecture, checkpoint: Path) -> None:
        from .calibration import build_predictor

        self.arch = arch
        self.checkpoint = checkpoint
        self.predictor = build_predictor(arch, checkpoint)
        self.loader = load_vidtrack(checkpoint)
        self._official: dict[str, OfficialRun] = {}
        self._ours: dict[tuple[str, bool], VidtrackRun] = {}

    def official(self, case: Case, **kw: Any) -> OfficialRun:
        if kw:  # variants (perturbed, memory dropped) are not cached
            return run_official(self.predictor, case.frames_dir, case.num_frames, case.prompts, reverse=case.reverse,
                                start_frame_idx=case.start_frame_idx, **kw)
        if case.name not in self._official:
            self._official[case.name] = run_official(
                self.predictor, case.frames_dir, case.num_frames, case.prompts, reverse=case.reverse,
                start_frame_idx=case.start_frame_idx)
        return self._official[case.name]

    def ours(self, case: Case, whole_video: bool = False) -> VidtrackRun:
        key = (case.name, whole_video)
        if key not in self._ours:
            self._ours[key] = run_vidtrack(self.loader, case, whole_video=whole_video)
        return self._ours[key]

    def report(self, case: Case, whole_video: bool = False) -> ParityReport:
        return compare(case, self.ours(case, whole_video), self.official(case))


def _runner(arch: Architecture, tmp_path_factory: pytest.TempPathFactory) -> ParityRunner:
    ckpt = save_checkpoint(arch, tmp_path_factory.mktemp(f"ckpt-{arch.name}") / f"{arch.name}.pt")
    return ParityRunner(arch, ckpt)


@pytest.fixture(scope="session")
def parity(sam2_official: Any, tmp_path_factory: pytest.TempPathFactory) -> ParityRunner:
    """SAM 2.1 on the small calibrated architecture (:data:`calibration.SMALL`, 256 px): checkpoint written as
    Meta's ``.pt`` + model yaml, loaded by vidtrack through its own conversion."""
    return _runner(SMALL, tmp_path_factory)


@pytest.fixture(scope="session")
def parity_v20(sam2_official: Any, tmp_path_factory: pytest.TempPathFactory) -> ParityRunner:
    """The same for a SAM 2.0 checkpoint (``configs/sam2/sam2_hiera_t.yaml`` with the small overrides)."""
    return _runner(SMALL_V20, tmp_path_factory)


@pytest.fixture(scope="session")
def case_factory() -> Callable[..., Case]:
    """``case_factory(name, frames_dir, num_frames, prompts, reverse=False, start_frame_idx=None)``."""

    def make(name: str, frames_dir: Path, num_frames: int, prompts: Any, **kw: Any) -> Case:
        return Case(name, frames_dir, num_frames, tuple(prompts), **kw)

    return make
