"""Checks that a checkpoint really is SAM 2 before and while it is loaded: never a silent random init.

transformers loads any folder into any model class: a BERT folder into ``Sam2VideoModel`` prints a load report
and returns a randomly initialised SAM 2, which then tracks and writes plausible-looking files. Here:

* a transformers folder is refused before loading unless its ``config.json`` names a SAM 2 model type and a
  weights file is present (:func:`check_transformers_folder`);
* every load (folder, Hub id, Meta ``.pt``/``.safetensors``) fails when a weight is missing, unexpected or of
  another shape (:func:`from_pretrained_strict`, :func:`load_state_dict_strict`);
* an unreadable file gets one line in our words (:func:`unreadable_message`): torch's own message advises
  re-running with ``weights_only=False``, which would execute arbitrary pickled code, so it is never repeated;
* the size that actually runs is read from the weights (:func:`size_of`), so results name what ran;
* ``--download`` fails within seconds when the Hub cannot be reached (:func:`check_hub_reachable`), instead of
  the Hub client's retries over half a minute.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import urllib.parse
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from vidtrack.errors import WeightsError

SAM2_MODEL_TYPES = frozenset({"sam2_video", "sam2"})
"""``config.json`` model types whose weights fit ``Sam2VideoModel`` (the video model and the image model that
shares its layout; the latter then fails the strict key check with what is missing)."""

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

_SIZES = {(96, 12): "tiny", (96, 16): "small", (112, 24): "base-plus", (144, 48): "large"}
"""(Hiera embedding width, number of Hiera blocks) -> SAM 2 size, as Meta's four configs define them."""

HUB_CHECK_TIMEOUT_S = 4.0


def check_transformers_folder(
    folder: Path, model_types: Collection[str] = SAM2_MODEL_TYPES, family: str = "SAM 2", hint: str | None = None,
) -> None:
    """Refuse, before loading anything, a folder that is not a transformers checkpoint of ``model_types``."""
    config = folder / "config.json"
    hint = hint or ("pass a SAM 2.1 checkpoint: a sam2.1_hiera_*.pt file or a folder saved by "
                    "Sam2VideoModel.save_pretrained")
    if not config.is_file():
        raise WeightsError(f"checkpoint folder {folder} has no config.json, so it is not a transformers model; {hint}")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WeightsError(f"cannot read {config}: {' '.join(str(e).split())}; {hint}") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in model_types:
        raise WeightsError(f"checkpoint folder {folder} holds a {model_type!r} model (config.json model_type), not "
                           f"{family} ({', '.join(sorted(model_types))}); {hint}")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise WeightsError(f"checkpoint folder {folder} has a config.json but no weights ({WEIGHT_FILES[0]}); {hint}")


def _examples(keys: Any) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:2]) + (", ..." if len(keys) > 2 else "")


def check_load_report(missing: Any, unexpected: Any, mismatched: Any, *, what: str, expected: str) -> None:
    """Raise when any weight is missing, unexpected or of another shape (no part of the model left random)."""
    missing = [k for k in missing if not k.endswith("position_ids")]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if mismatched:
        names = [m[0] if isinstance(m, tuple) else m for m in mismatched]
        problems.append(f"{len(names)} of another shape ({_examples(names)})")
    if problems:
        raise WeightsError(f"{what} does not fit {expected}: weights {'; '.join(problems)}; vidtrack never runs "
                           "with randomly initialised weights, so pass the checkpoint of the model you name")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bars would break the one-line errors; we report problems."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def from_pretrained_strict(
    ref: str, *, cache_dir: str | Path | None, local_only: bool, what: str, config: Any = None
) -> Any:
    """``Sam2VideoModel.from_pretrained`` that fails on any missing, unexpected or mismatched weight
    (``config``: another config than the stored one, e.g. at another input size)."""
    from transformers import Sam2VideoModel

    extra = {"config": config} if config is not None else {}
    with _quiet_transformers():
        loaded: Any = Sam2VideoModel.from_pretrained(ref, cache_dir=cache_dir, local_files_only=local_only,
                                                     output_loading_info=True, **extra)
        model, info = loaded
    check_load_report(info.get("missing_keys", ()), info.get("unexpected_keys", ()),
                      info.get("mismatched_keys", ()), what=what, expected="Sam2VideoModel")
    return model


def load_state_dict_strict(
    model: Any, state_dict: dict[str, Any], *, what: str, expected: str, assign: bool = False
) -> None:
    """Load ``state_dict`` into ``model``; every key must exist with the same shape, and none may be left out
    (but ``position_ids`` buffers, which the model computes itself). ``assign``: take the given tensors as the
    parameters instead of copying into allocated ones (a model built without initialisation)."""
    own = model.state_dict()
    mismatched = [k for k, v in state_dict.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    check_load_report(missing, unexpected, mismatched, what=what, expected=expected)
    model.load_state_dict(state_dict, strict=False, assign=assign)  # completeness checked just above


def size_of(config: Any) -> str | None:
    """The SAM 2 size (tiny ... large) a ``Sam2VideoConfig`` describes, or None for other shapes (test models)."""
    try:
        backbone = config.vision_config.backbone_config
        key = (int(backbone.hidden_size), int(sum(backbone.blocks_per_stage)))
    except (AttributeError, TypeError, ValueError):
        return None
    return _SIZES.get(key)


def unreadable_message(path: Path, exc: BaseException) -> str:
    """One line, in our words, for a checkpoint file torch or safetensors cannot read."""
    text = " ".join(str(exc).split())
    if path.suffix == ".safetensors":
        why = "not a valid .safetensors file (damaged or truncated?)"
    elif "weights_only" in text or "Weights only load failed" in text or type(exc).__name__ == "UnpicklingError":
        why = ("not a plain PyTorch file of tensors: it is damaged or truncated, or it pickles other Python objects, "
               "which vidtrack never unpickles because that could run arbitrary code")
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        why = exc.strerror or type(exc).__name__
    else:  # a cut or damaged zip archive (torch.save's format) raises RuntimeError or OSError(EINVAL)
        why = f"not a readable PyTorch checkpoint (damaged or truncated? {type(exc).__name__})"
    return f"cannot read checkpoint {path}: {why}; pass a SAM 2.1 .pt/.safetensors file (e.g. sam2.1_hiera_tiny.pt)"


def _endpoint() -> tuple[str, int, str]:
    """(host, port, what) of the first hop to the Hub: the HTTPS proxy when one is set, else the endpoint."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urllib.parse.urlsplit(proxy or endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.hostname or "", port, f"proxy {proxy}" if proxy else endpoint


def check_hub_reachable(ref: str, timeout: float = HUB_CHECK_TIMEOUT_S) -> None:
    """Fail in seconds, with one line, when ``--download`` cannot reach the Hub (offline mode, no network)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise WeightsError(f"cannot download {ref}: HF_HUB_OFFLINE is set; unset it, or pass --checkpoint PATH")
    host, port, what = _endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__ if not isinstance(e, TimeoutError) else f"no answer in {timeout:g} s"
        raise WeightsError(f"cannot download {ref}: {what} is unreachable ({why}); check the network connection, "
                           "or pass --checkpoint PATH to weights you have") from None


def spec_for_weights(spec: Any, model: Any) -> Any:
    """The catalogue entry of what will actually run: ``spec``'s family at the size read from the weights
    (``--model sam2.1-large --checkpoint sam2.1_hiera_tiny.pt`` runs, and is reported as, ``sam2.1-tiny``, with
    that size's policy defaults). Weights of no catalogue size (test models) keep ``spec``."""
    from vidtrack.catalog import CATALOGUE

    size = size_of(model.config)
    if size is None or size == spec.size:
        return spec
    return CATALOGUE.get(f"{spec.name[: -len(spec.size) - 1]}-{size}", spec)
