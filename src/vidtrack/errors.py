"""Error types raised for bad input.

Every error a user can cause by what they pass in (a missing video, a mask of the wrong size, an unknown
model name, unreadable weights) is a :class:`VidtrackError`. Its message is one line that names the problem
and what to do about it; the CLI prints it and exits with status 2, without a traceback.
"""

from __future__ import annotations


class VidtrackError(Exception):
    """Base class of every user-facing error."""


class InputError(VidtrackError, ValueError):
    """The video, a prompt or an option is not usable as given."""


class ModelNotFoundError(VidtrackError, ValueError):
    """The model name is not in the catalogue."""


class WeightsError(VidtrackError, RuntimeError):
    """Weights are missing, unreachable or unreadable."""


class NotLoadedError(VidtrackError, RuntimeError):
    """A tracker was used before ``load()`` or after ``unload()``."""


class DependencyError(VidtrackError, ImportError):
    """An optional dependency is needed and missing; the message says which extra to install."""
