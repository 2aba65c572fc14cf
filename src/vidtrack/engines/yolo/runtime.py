"""The only place ``ultralytics`` is imported (lazily: it is an optional, AGPL-3.0 extra).

ultralytics reads its switches once, when ``ultralytics.utils`` is first imported, so they are set here
before that import, with ``setdefault`` so that a user's own settings win (``ultralytics/utils/__init__.py``
reads them at import):

* ``YOLO_OFFLINE=1``: no DNS probe at import, no telemetry, no run-time ``pip install``;
* ``YOLO_AUTOINSTALL=false``: never install packages into the user's environment (``lap`` is in our extra);
* ``YOLO_VERBOSE=false``: no per-frame logging;
* ``YOLO_CONFIG_DIR``: its settings file goes under vidtrack's cache, not the user's global config;
* ``ULTRALYTICS_SAFE_LOAD=1``: checkpoints are unpickled with torch's ``weights_only`` allow-list.

Telemetry is additionally switched off for this process (``events.enabled = False``), never by
``settings.update`` (that rewrites the user's settings file).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from vidtrack.errors import DependencyError

INSTALL_HINT = "install the yolo extra: pip install 'vidtrack[yolo]' (ultralytics, AGPL-3.0, and lap)"

ENV_DEFAULTS = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
    "ULTRALYTICS_SAFE_LOAD": "1",
}


def default_config_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidtrack" / "ultralytics"


def ultralytics_available() -> bool:
    """Whether ``import ultralytics`` can work (False also when it is blocked with ``sys.modules[...] = None``)."""
    if "ultralytics" in sys.modules:
        return sys.modules["ultralytics"] is not None
    try:
        return importlib.util.find_spec("ultralytics") is not None
    except (ImportError, ValueError):
        return False


def missing(model_name: str) -> DependencyError:
    return DependencyError(f"{model_name} needs ultralytics, which is not installed; {INSTALL_HINT}")


def set_env_defaults() -> None:
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))


def import_ultralytics(model_name: str = "the YOLO backend") -> ModuleType:
    """``import ultralytics`` with the offline switches set; a clear :class:`DependencyError` when absent."""
    if "ultralytics" not in sys.modules:
        set_env_defaults()
        Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    try:
        mod = importlib.import_module("ultralytics")
    except ImportError as e:
        if getattr(e, "name", None) in (None, "ultralytics") or "ultralytics" in str(e):
            raise missing(model_name) from None
        raise DependencyError(f"{model_name}: importing ultralytics failed ({e}); {INSTALL_HINT}"
                              ) from None
    try:  # per-process telemetry off, whatever the settings file says
        events = importlib.import_module("ultralytics.utils.events")
        events.events.enabled = False
    except Exception:  # older versions have no events module: YOLO_OFFLINE covers them
        pass
    return mod
