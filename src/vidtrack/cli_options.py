"""The tracker options every tracking command shares (``track``, ``eval``, ``batch``, ``bench``), defined once.

:func:`tracker_options` adds the options below to a command and hands it one :class:`TrackerOptions`, whose
:meth:`~TrackerOptions.config` is the one place the command line builds a :class:`~vidtrack.config.TrackingConfig`.
Every value is checked by :meth:`~TrackerOptions.check` before any work (one ``error:`` line, exit status 2);
``--policy`` / ``--policy-option`` are checked by building the policy once with the given options, which imports
the policies but not torch (they import it where they run), so every bad input answers well under a second.

``bench`` sweeps some of these (comma-separated devices, dtypes, batch sizes, compile, sizes): it takes the
others from this group (``tracker_options(swept=...)``) and puts its swept values into one
:class:`TrackerOptions` per case (:mod:`vidtrack.bench.cases`), checked and turned into a config the same way.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

import typer

from vidtrack.errors import InputError
from vidtrack.image_sizes import check_image_size

DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")
AUTOCASTS = ("auto", "off", "bfloat16", "float16", "bf16", "fp16")
ON_OFF_AUTO = ("auto", "on", "off")
RESIZES = ("transformers", "official")


def parse_policy_options(items: list[str] | None) -> dict[str, Any]:
    """``["mode=online", "num_pathways=2"]`` -> ``{"mode": "online", "num_pathways": 2}`` (values read as JSON
    when they parse, else as text)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--policy-option must be KEY=VALUE (e.g. mode=online); got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise InputError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_device(device: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise InputError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
    return device


def check_positive(value: int | None, option: str) -> int | None:
    if value is not None and value < 1:
        raise InputError(f"{option} must be >= 1; got {value}")
    return value


@dataclass
class TrackerOptions:
    """The shared tracker options, as given on the command line (see :func:`tracker_options`)."""

    device: str = "auto"
    dtype: str = "auto"
    autocast: str = "auto"
    compile: bool = False
    threads: int | None = None
    max_batch: int | None = None
    encoder_ahead: str = "auto"
    resize: str = "transformers"
    semantics: str = "official"
    model_config: str | None = None
    policy: str | None = None
    policy_option: list[str] = field(default_factory=list)
    image_size: int | None = None

    @property
    def policy_options(self) -> dict[str, Any]:
        return parse_policy_options(self.policy_option)

    def check(self, model: str) -> TrackerOptions:
        """Every value, before any work; ``model`` is the catalogue name the options will run with."""
        from vidtrack.catalog import resolve_model
        from vidtrack.config import SEMANTICS

        check_device(self.device)
        check_choice(self.dtype, DTYPES, "--dtype")
        check_choice(self.autocast, AUTOCASTS, "--autocast")
        check_choice(self.encoder_ahead, ON_OFF_AUTO, "--encoder-ahead")
        check_choice(self.resize, RESIZES, "--resize")
        check_choice(self.semantics, SEMANTICS, "--semantics")
        check_positive(self.threads, "--threads")
        check_positive(self.max_batch, "--max-batch")
        options = self.policy_options
        spec = resolve_model(model)
        check_image_size(self.image_size, spec.backend, "--image-size")
        if spec.family == "yolo":
            if self.policy is not None or options:
                raise InputError(f"{spec.name} is a YOLO model: --policy and --policy-option apply to the SAM 2 "
                                 "family only")
            return self
        if self.policy is not None or options:
            self._build_policy(spec.policy, spec.policy_options, options)
        return self

    def _build_policy(self, implied: str, defaults: dict[str, Any], options: dict[str, Any]) -> None:
        """Build the policy once with SAM 2.1's windows, so an unknown name or option fails now, not after
        the weights are loaded."""
        from vidtrack.policies import POLICIES, check_policy, resolve_policy

        name = self.policy or implied
        factory = resolve_policy(self.policy) if self.policy is not None else POLICIES[implied]
        kwargs = options if self.policy is not None else {**defaults, **options}
        try:
            built = factory(num_maskmem=7, max_obj_ptrs=16, **kwargs)
        except TypeError as e:
            raise InputError(f"--policy-option: the {name} policy does not take these options ({e}); "
                             f"given: {', '.join(options) or 'none'}") from None
        check_policy(built, name)

    def config_fields(self) -> dict[str, Any]:
        """The :class:`~vidtrack.config.TrackingConfig` fields these options set."""
        return {"device": self.device, "dtype": self.dtype, "autocast": self.autocast, "compile": self.compile,
                "threads": self.threads, "max_batch": self.max_batch, "encoder_ahead": self.encoder_ahead,
                "resize": self.resize, "semantics": self.semantics, "model_config": self.model_config,
                "policy": self.policy, "policy_options": self.policy_options, "image_size": self.image_size}

    def mask_fields(self) -> dict[str, Any]:
        """The options that change masks (what a resumed ``eval`` run folder must agree on)."""
        keep = ("dtype", "resize", "semantics", "model_config", "policy", "policy_options", "image_size")
        return {k: v for k, v in self.config_fields().items() if k in keep}

    def config(self, model: str, **extra: Any) -> Any:
        """The one :class:`~vidtrack.config.TrackingConfig` of a command: these options plus ``extra``
        (checkpoint, cache folder, backward...)."""
        from vidtrack.config import TrackingConfig

        return TrackingConfig(model_id=model, **self.config_fields(), **extra)


TRACKING_DEFAULTS: dict[str, Any] = {f.name: (f.default_factory() if callable(f.default_factory) else f.default)
                                     for f in fields(TrackerOptions)}
TRACKING_DEFAULTS.pop("policy_option")
TRACKING_DEFAULTS["policy_options"] = {}
"""The TrackingConfig fields of :meth:`TrackerOptions.config_fields` at their defaults."""


def _opt(kind: Any, *names: str, help: str) -> Any:
    return Annotated[kind, typer.Option(*names, help=help)]


_OPTIONS: list[tuple[str, Any, Any]] = [
    ("device", _opt(str, "--device", help="auto, cpu, cuda, cuda:N, mps"), "auto"),
    ("dtype", _opt(str, "--dtype", help="weights: auto (float32), float32, bfloat16, float16"), "auto"),
    ("autocast", _opt(str, "--autocast", help="auto (bf16 on Ampere+ GPUs, fp16 on older, off on CPU), off, "
                                              "bfloat16, float16"), "auto"),
    ("compile", _opt(bool, "--compile/--no-compile", help="torch.compile the model (warm-up at load)"), False),
    ("threads", _opt(int | None, "--threads", help="CPU threads (default: CPUs available to this process)"), None),
    ("max_batch", _opt(int | None, "--max-batch", help="objects per memory-attention/decoder call (1 = one at a "
                                                       "time; default 16 on GPU, 1 on CPU)"), None),
    ("encoder_ahead", _opt(str, "--encoder-ahead", help="image encoder one frame ahead: auto (GPU), on, off"), "auto"),
    ("resize", _opt(str, "--resize", help="frame resize: transformers or official (Meta's PIL resize)"),
     "transformers"),
    ("semantics", _opt(str, "--semantics", help="prompts on several frames: official (Meta's predictor: every "
                                                "prompt first, tracking from the earliest prompted frame) or causal "
                                                "(a prompt takes effect when its frame is reached), see "
                                                "docs/SEMANTICS.md"), "official"),
    ("model_config", _opt(str | None, "--model-config", help="Meta's yaml model config of a custom-size "
                                                             "--checkpoint (default: <checkpoint>.yaml beside it, "
                                                             "if any)"), None),
    ("policy", _opt(str | None, "--policy", help="memory policy instead of the model's own: vanilla, samurai, "
                                                 "sam2long, dam4sam, or your own as package.module:Factory "
                                                 "(docs/CUSTOM_POLICY.md)"), None),
    ("policy_option", _opt(list[str] | None, "--policy-option", help="policy option KEY=VALUE, repeatable (e.g. "
                                                                      "mode=online or preset=official for "
                                                                      "SAM2Long, kf_score_weight=0.15 for "
                                                                      "SAMURAI)"), None),
    ("image_size", _opt(int | None, "--image-size", help="model input size in pixels (default: the checkpoint's "
                                                         "own): a multiple of 32 for SAM 2.1, 256 for EdgeTAM, 14 "
                                                         "for the SAM 3 tracker; smaller is faster, coarser"), None),
]
assert [name for name, _, _ in _OPTIONS] == [f.name for f in fields(TrackerOptions)]


def tracker_options(command: Callable[..., Any] | None = None, *, swept: Collection[str] = ()) -> Any:
    """Add the shared tracker options to ``command``, which takes them as one keyword ``tracker``
    (:class:`TrackerOptions`). typer reads the options from the wrapper's signature.

    ``@tracker_options(swept=(...))`` leaves out the named options: the command defines its own flags under
    those names (``bench``'s comma-separated sweeps) and ``tracker`` holds their defaults.
    """
    if command is None:
        return functools.partial(tracker_options, swept=swept)
    unknown = set(swept) - {name for name, _, _ in _OPTIONS}
    if unknown:
        raise TypeError(f"not tracker options: {', '.join(sorted(unknown))}")
    sig = inspect.signature(command, eval_str=True)  # annotations as objects: the wrapper lives in another module
    own = [p for name, p in sig.parameters.items() if name != "tracker"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, annotation, default in _OPTIONS if name not in swept]
    names = [p.name for p in added]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names if name in kwargs}
        values["policy_option"] = values.get("policy_option") or []
        return command(*args, tracker=TrackerOptions(**values), **kwargs)

    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    wrapper.__signature__ = sig.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    del wrapper.__wrapped__  # typer must read the new signature, not follow back to the command's own
    return wrapper
