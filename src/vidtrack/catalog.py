"""The model catalogue: every name a user may pass, what it resolves to, and the policy defaults.

Names follow the original module (``sam2``, ``samurai``, ``sam2long``, ``yolo11n-seg``; ``dam4sam``) plus
size-qualified forms (``sam2.1-tiny``, ``samurai-large``, ``sam2long-base-plus``, ``dam4sam-tiny``). Bare family
names pick the size the original module used: large for SAMURAI, SAM2Long and DAM4SAM (as their papers report),
tiny for plain SAM 2.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidtrack.errors import ModelNotFoundError

SAM2_SIZES = ("tiny", "small", "base-plus", "large")

SAM2_HUB_IDS = {size: f"facebook/sam2.1-hiera-{size}" for size in SAM2_SIZES}
"""transformers-format repos on the Hugging Face Hub (the same repos also hold Meta's ``.pt`` files)."""

META_CHECKPOINT_NAMES = {
    "tiny": "sam2.1_hiera_tiny.pt",
    "small": "sam2.1_hiera_small.pt",
    "base-plus": "sam2.1_hiera_base_plus.pt",
    "large": "sam2.1_hiera_large.pt",
}

SAM2_PARAMS_M = {"tiny": 38.9, "small": 46.0, "base-plus": 80.8, "large": 224.4}

YOLO_SIZES = ("n", "s", "m", "l", "x")


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to."""

    name: str  # canonical name, e.g. "samurai-large"
    family: str  # "sam2" | "samurai" | "sam2long" | "dam4sam" | "yolo"
    size: str  # "tiny" | ... | "large" for the SAM 2 family; "n" ... "x" for YOLO
    hub_id: str  # transformers Hub id, or the ultralytics weights file name
    params_m: float
    policy_options: dict[str, Any] = field(default_factory=dict)
    backend: str = "sam2"  # the engine's model family (engines/sam2/backends): "sam2" | "edgetam" | ...

    @property
    def policy(self) -> str:
        return {"sam2": "vanilla"}.get(self.family, self.family)


def _sam2_spec(family: str, size: str) -> ModelSpec:
    options: dict[str, Any] = {}
    if family == "samurai":
        # SAMURAI's configs/samurai/*.yaml: kf_score_weight 0.25 for t/s/b+, 0.15 for large (docs/POLICIES.md)
        options = {"kf_score_weight": 0.15 if size == "large" else 0.25}
    elif family == "sam2long":
        options = {"num_pathways": 3, "iou_threshold": 0.3, "uncertainty": 2.0}
    prefix = {"sam2": "sam2.1", "samurai": "samurai", "sam2long": "sam2long", "dam4sam": "dam4sam"}[family]
    return ModelSpec(f"{prefix}-{size}", family, size, SAM2_HUB_IDS[size], SAM2_PARAMS_M[size], options)


EDGETAM_HUB_ID = "yonigozlan/EdgeTAM-hf"
"""EdgeTAM in transformers format (``EdgeTamVideoModel``), as the transformers documentation loads it."""
EDGETAM_PARAMS_M = 13.9


def _edgetam_specs() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """EdgeTAM (one size) under every memory policy: ``edgetam``, ``samurai-edgetam``, ``sam2long-edgetam``,
    ``dam4sam-edgetam``; the policy defaults are those of the small SAM 2.1 models."""
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for family in ("sam2", "samurai", "sam2long", "dam4sam"):
        base = _sam2_spec(family, "tiny")
        name = "edgetam" if family == "sam2" else f"{family}-edgetam"
        specs[name] = ModelSpec(name, family, "edgetam", EDGETAM_HUB_ID, EDGETAM_PARAMS_M, base.policy_options,
                                backend="edgetam")
        if family != "sam2":
            aliases[f"{family}_edgetam"] = name
            aliases[f"edgetam-{family}"] = name
    aliases.update({"edge-tam": "edgetam", "edge_tam": "edgetam", "edgetam.pt": "edgetam",
                    "facebook/edgetam": "edgetam", EDGETAM_HUB_ID.lower(): "edgetam",
                    "sam2-long-edgetam": "sam2long-edgetam"})
    return specs, aliases


SAM3_HUB_ID = "facebook/sam3"
"""SAM 3 on the Hub (gated: users request access); ``Sam3TrackerVideoModel`` reads its tracker and ViT."""
SAM3_TRACKER_PARAMS_M = 465.8
"""ViT-L/14 perception encoder (454.0 M) + the tracker's neck, memory and SAM heads (11.7 M)."""


def _sam3_tracker_specs() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    """The SAM 3 tracker (one size) under every memory policy: ``sam3-tracker``, ``samurai-sam3-tracker``,
    ``sam2long-sam3-tracker``, ``dam4sam-sam3-tracker``; the policy defaults are those of the large SAM 2.1
    models (SAM 3 is the largest tracker)."""
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for family in ("sam2", "samurai", "sam2long", "dam4sam"):
        base = _sam2_spec(family, "large")
        name = "sam3-tracker" if family == "sam2" else f"{family}-sam3-tracker"
        specs[name] = ModelSpec(name, family, "sam3-tracker", SAM3_HUB_ID, SAM3_TRACKER_PARAMS_M,
                                base.policy_options, backend="sam3-tracker")
        for word in ("sam3", "sam3tracker", "sam3_tracker", "sam-3-tracker"):
            if family == "sam2":
                aliases[word] = name
            else:
                aliases[f"{family}-{word}"] = name
                aliases[f"{family}_{word}"] = name
    aliases.update({"sam3.pt": "sam3-tracker", SAM3_HUB_ID: "sam3-tracker", "sam2-long-sam3-tracker":
                    "sam2long-sam3-tracker"})
    return specs, aliases


def _build_catalogue() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    specs: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    for family in ("sam2", "samurai", "sam2long", "dam4sam"):
        for size in SAM2_SIZES:
            spec = _sam2_spec(family, size)
            specs[spec.name] = spec
    yolo_params = {"n": 2.9, "s": 10.1, "m": 22.4, "l": 27.6, "x": 62.1}
    for s in YOLO_SIZES:
        specs[f"yolo11{s}-seg"] = ModelSpec(f"yolo11{s}-seg", "yolo", s, f"yolo11{s}-seg.pt", yolo_params[s])
    size_words = {
        "tiny": ("tiny", "t", "hiera-tiny", "hiera-t"),
        "small": ("small", "s", "hiera-small", "hiera-s"),
        "base-plus": ("base-plus", "base_plus", "b+", "baseplus", "hiera-base-plus", "hiera-b+"),
        "large": ("large", "l", "hiera-large", "hiera-l"),
    }
    for size, words in size_words.items():
        for w in words:
            for p in ("sam2.1", "sam2", "sam2-1", "sam21"):
                aliases[f"{p}-{w}"] = f"sam2.1-{size}"
                aliases[f"{p}_{w}"] = f"sam2.1-{size}"
            for fam in ("samurai", "sam2long", "dam4sam"):
                aliases[f"{fam}-{w}"] = f"{fam}-{size}"
                aliases[f"{fam}_{w}"] = f"{fam}-{size}"
            aliases[f"sam2-long-{w}"] = f"sam2long-{size}"
            aliases[f"sam2.1long-{w}"] = f"sam2long-{size}"
            aliases[f"sam2.1_hiera_{w.replace('-', '_')}"] = f"sam2.1-{size}"  # Meta's file names
        aliases[f"facebook/sam2.1-hiera-{size}"] = f"sam2.1-{size}"
    aliases.update(
        {
            "sam2": "sam2.1-tiny",
            "sam2.1": "sam2.1-tiny",
            "sam": "sam2.1-tiny",
            "samurai": "samurai-large",
            "sam2long": "sam2long-large",
            "sam2-long": "sam2long-large",
            "sam2_long": "sam2long-large",
            "dam4sam": "dam4sam-large",  # the paper's and the official README's headline model
            "sam2.1++": "dam4sam-large",
            "sam21pp": "dam4sam-large",
            "yolo11seg": "yolo11n-seg",
            "yolo11-seg": "yolo11n-seg",
            "yolo": "yolo11n-seg",
            "yolo-seg": "yolo11n-seg",
        }
    )
    for s in YOLO_SIZES:
        aliases[f"yolo11{s}seg"] = f"yolo11{s}-seg"
        aliases[f"yolo11{s}-seg.pt"] = f"yolo11{s}-seg"
    return specs, aliases


CATALOGUE, ALIASES = _build_catalogue()
for _specs, _aliases in (_edgetam_specs(), _sam3_tracker_specs()):
    CATALOGUE.update(_specs)
    ALIASES.update(_aliases)


def resolve_model(name: str) -> ModelSpec:
    """Resolve a model name or alias (case-insensitive) to its :class:`ModelSpec`."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in CATALOGUE:
        return CATALOGUE[key]
    known = ", ".join(sorted(CATALOGUE))
    raise ModelNotFoundError(f"unknown model {name!r}; known models: {known} (see `vidtrack models`)")
