"""Public API: configuration, the loader interface and the factory.

``create_tracking_loader(name, config)`` returns a :class:`TrackingModelLoader`; ``load()`` it, then either
``track(frames, initial_masks, object_ids)`` (the original module's call: a list of frames and first-frame
masks), ``track_video(source, prompts)`` (any source, prompts on any frame; by default Meta's semantics, where
every prompt is processed first, see ``TrackingConfig.semantics``), ``stream(source, prompts)`` (yields each
frame as soon as it is computed; causal: a prompt takes effect when its frame is reached) or
``open_stream(height, width)`` (push frames and prompts yourself, e.g. from a camera; causal).
"""

from __future__ import annotations

from vidtrack.catalog import resolve_model
from vidtrack.config import SEMANTICS, TrackingConfig, TrackingFramework
from vidtrack.errors import InputError, ModelNotFoundError
from vidtrack.tracking import (
    ProgressFn,
    PromptSchedule,
    TrackingModelLoader,
    check_prompts,
    finish_result,
    first_prompt_frames,
)


def create_tracking_loader(model_name: str, config: TrackingConfig | None = None) -> TrackingModelLoader:
    """A loader for any catalogue name or alias (``sam2``, ``sam2.1-large``, ``samurai``, ``sam2long``,
    ``yolo11n-seg``...). Raises :class:`ModelNotFoundError` for unknown names."""
    config = config or TrackingConfig()
    spec = resolve_model(config.model_id or model_name)
    if config.framework is not None:
        fw = TrackingFramework(config.framework).value
        if fw != spec.family:
            raise ModelNotFoundError(f"model {spec.name} is a {spec.family} model, not {fw}")
    if spec.family == "yolo":
        if config.policy is not None:
            raise InputError(f"{spec.name} is a YOLO model: memory policies apply to the SAM 2 family only; "
                             "drop the policy or choose a sam2.1-* model")
        from vidtrack.engines.yolo import create_yolo_loader

        return create_yolo_loader(spec, config)
    from vidtrack.engines.sam2.loader import Sam2Loader
    from vidtrack.policies import POLICIES, MemoryPolicy, resolve_policy

    if config.policy is not None:  # a bad name or import path fails here, before any weights are loaded
        return Sam2Loader(spec, config, resolve_policy(config.policy), reference_policy=MemoryPolicy)
    if spec.policy not in POLICIES:
        raise ModelNotFoundError(
            f"{spec.name}: the {spec.family} memory policy is not available in this release; "
            f"use sam2.1-{spec.size} for plain SAM 2.1 tracking"
        )
    return Sam2Loader(spec, config, POLICIES[spec.policy], spec.policy_options, reference_policy=MemoryPolicy)


__all__ = [
    "SEMANTICS",
    "ProgressFn",
    "PromptSchedule",
    "TrackingConfig",
    "TrackingFramework",
    "TrackingModelLoader",
    "check_prompts",
    "create_tracking_loader",
    "finish_result",
    "first_prompt_frames",
]
