"""vidtrack: promptable video object segmentation and tracking.

SAM 2.1, SAMURAI and SAM2Long on ``transformers.Sam2VideoModel``, and YOLO11-seg, behind one API.
"""

from vidtrack.api import (
    TrackingConfig,
    TrackingFramework,
    TrackingModelLoader,
    create_tracking_loader,
)
from vidtrack.errors import InputError, ModelNotFoundError, VidtrackError, WeightsError
from vidtrack.types import Prompt, TrackingFrame, TrackingMask, TrackingResult

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
