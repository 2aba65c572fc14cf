"""vidtrack: promptable video object segmentation and tracking.

SAM 2.1, SAMURAI and SAM2Long on ``transformers.Sam2VideoModel``, and YOLO11-seg, behind one API.
"""

from typing import TYPE_CHECKING, Any

from vidtrack.errors import InputError, ModelNotFoundError, VidtrackError, WeightsError

if TYPE_CHECKING:
    from vidtrack.api import TrackingConfig, TrackingFramework, TrackingModelLoader, create_tracking_loader
    from vidtrack.types import Prompt, TrackingFrame, TrackingMask, TrackingResult

_LAZY = {"TrackingConfig": "vidtrack.api", "TrackingFramework": "vidtrack.api", "TrackingModelLoader": "vidtrack.api",
         "create_tracking_loader": "vidtrack.api", "Prompt": "vidtrack.types", "TrackingFrame": "vidtrack.types",
         "TrackingMask": "vidtrack.types", "TrackingResult": "vidtrack.types"}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``vidtrack --help`` (which imports this package) then needs
    neither numpy, the video decoders nor the trackers."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vidtrack' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "InputError",
    "ModelNotFoundError",
    "Prompt",
    "TrackingConfig",
    "TrackingFrame",
    "TrackingFramework",
    "TrackingMask",
    "TrackingModelLoader",
    "TrackingResult",
    "VidtrackError",
    "WeightsError",
    "create_tracking_loader",
]
__version__ = "0.1.0"
