"""What ``vidtrack bench`` measures: one :class:`BenchCase` per combination of the swept values.

A case is the video and weights to run (``model``, ``arch``, ``frames``, ``objects``...) plus the tracker
options of :mod:`vidtrack.cli_options` (``tracker``): its ``TrackingConfig`` is built by
:meth:`~vidtrack.cli_options.TrackerOptions.config`, the same as for ``track``, ``eval`` and ``batch``, and
every case is checked by :meth:`BenchCase.check` before the first one runs. This module imports neither torch
nor the trackers, so a bad option answers at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields, replace
from typing import Any

from vidtrack.cli_options import TrackerOptions
from vidtrack.errors import InputError

SWEPT_TRACKER_OPTIONS = ("device", "dtype", "max_batch", "compile", "image_size")
"""Tracker options ``bench`` takes as comma-separated lists and sweeps (the others are one value for all cases)."""


def _bench_tracker() -> TrackerOptions:
    return TrackerOptions(device="cpu", dtype="float32")  # bench's defaults: comparable figures on any machine


@dataclass
class BenchCase:
    """One measured configuration.

    ``arch`` is a SAM 2.1 size (``tiny`` ... ``large``, random weights at that size), ``auto`` (the size in the
    model name, so ``sam2.1-tiny,sam2.1-large`` in one sweep are each at their own size) or ``test`` (the 1.4 M
    parameter test config); ``checkpoint`` uses real weights instead. ``source`` is a video path, or None to
    generate ``frames`` frames of ``height`` x ``width`` with ``objects`` moving shapes. ``tracker`` holds the
    tracker options (device, dtype, max batch, policy...; ``image_size`` also sizes the random weights).
    """

    model: str = "sam2.1-tiny"
    arch: str = "test"
    checkpoint: str | None = None
    source: str | None = None
    frames: int = 50
    objects: int = 1
    height: int = 480
    width: int = 854
    warmup: int = 3
    seed: int = 0
    object_bias: float = 2.0  # random weights only: object-score head bias (small = uncertain objects)
    iou_spread: float = 0.0  # random weights only: spread of predicted IoUs (> 0 lets SAM2Long pathways split)
    tracker: TrackerOptions = field(default_factory=_bench_tracker)

    def check(self) -> BenchCase:
        """Every value, before any case runs (one ``error:`` line; the tracker options as for ``track``)."""
        from vidtrack.catalog import resolve_model

        if resolve_model(self.model).family == "yolo":
            raise InputError(f"vidtrack bench measures the SAM 2 family; {self.model} is a YOLO model (YOLO is "
                             "benchmarked by ultralytics)")
        for value, option in ((self.frames, "--frames"), (self.objects, "--objects")):
            if value < 1:
                raise InputError(f"{option} values must be >= 1; got {value}")
        self.tracker.check(self.model)
        return self

    def config(self) -> Any:
        """The case's :class:`~vidtrack.config.TrackingConfig` (one forward pass, as a stream)."""
        return self.tracker.config(self.model, checkpoint_path=self.checkpoint, backward=False)

    def record(self) -> dict[str, Any]:
        """The case as the JSON results hold it: one flat dict, the tracker options by their config names."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "tracker"}
        return {**own, **self.tracker.config_fields()}


_CASE_FIELDS = {f.name for f in fields(BenchCase)} - {"tracker"}


def sweep_cases(base: BenchCase, **axes: list[Any]) -> list[BenchCase]:
    """Every combination of the given axes, over ``base``: a case field (``model=[...]``, ``frames=[50, 400]``)
    or a swept tracker option (``device=[...]``, ``max_batch=[1, 16]``, :data:`SWEPT_TRACKER_OPTIONS`)."""
    unknown = set(axes) - _CASE_FIELDS - set(SWEPT_TRACKER_OPTIONS)
    if unknown:
        raise TypeError(f"not a bench axis: {', '.join(sorted(unknown))}")
    keys = list(axes)
    cases = []
    for values in itertools.product(*(axes[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        own = {k: v for k, v in chosen.items() if k in _CASE_FIELDS}
        tracker = replace(base.tracker, **{k: v for k, v in chosen.items() if k not in _CASE_FIELDS})
        cases.append(replace(base, **own, tracker=tracker))
    return cases


__all__ = ["SWEPT_TRACKER_OPTIONS", "BenchCase", "sweep_cases"]
