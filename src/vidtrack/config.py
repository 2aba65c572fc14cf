"""How to build and run a tracker: :class:`TrackingConfig` and the names of its choices.

Below every tracker and the public API: loaders read it, ``vidtrack.api`` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TrackingFramework(StrEnum):
    """Tracker families."""

    SAM2 = "sam2"
    SAMURAI = "samurai"
    SAM2LONG = "sam2long"
    DAM4SAM = "dam4sam"
    YOLO = "yolo"


@dataclass
class TrackingConfig:
    """How to build and run a tracker.

    Attributes:
        model_id: a catalogue name (``sam2.1-tiny``, ``samurai-large``...); when None the name given to
            :func:`create_tracking_loader` is used.
        framework: force a family (normally implied by the name).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        cache_dir: Hugging Face cache folder for Hub weights.
        checkpoint_path: a Meta ``sam2.1_hiera_*.pt``/``.safetensors`` file or a transformers-format folder.
        model_config: Meta's yaml model config of a Meta checkpoint of a custom architecture (fine-tuned at
            another input size, other Hiera depth/width): head counts, global-attention blocks, windows and the
            input size are only there. When None, ``<checkpoint name>.yaml`` beside the file is used if present,
            else the released size of the same shape at 1024 px.
        image_size: SAM 2 family: the model's input size in pixels, any multiple of 32 (the Hiera trunk's total
            stride), e.g. 512 for about 1/8 of the 1024 px cost on a CPU, with coarser masks (BENCHMARKS.md).
            None: the checkpoint's own (1024 for the released models, the yaml's for a Meta checkpoint). Position
            encodings and RoPE grids follow it; the weights are the same at every size.
        dtype: weight dtype, ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (float32 weights; on CUDA
            the model then runs under autocast, see ``autocast``).
        autocast: ``"auto"`` (with ``dtype="auto"`` on CUDA: bfloat16 on GPUs of compute capability >= 8.0,
            float16 on older ones; off on CPU, where bf16 is slower), ``"off"``, ``"bfloat16"`` or ``"float16"``.
        compile: ``torch.compile`` the image encoder, memory attention, mask decoder and memory encoder, with a
            warm-up clip at ``load()`` (minutes on first use; pays off on long videos and GPUs).
        encoder_ahead: run the image encoder one frame ahead of the memory path in a worker thread (a second
            CUDA stream on GPUs): ``"auto"`` (on for CUDA), ``"on"``, ``"off"``.
        download: allow fetching weights from the Hub (never done otherwise).
        resize: frame resizing, ``"transformers"`` (transformers' processor, default) or ``"official"`` (Meta's
            loader: PIL resize), see :mod:`vidtrack.engines.sam2.preprocess`.
        policy: the memory policy of the SAM 2 family, when not the one the model name implies: a built-in name
            (``"vanilla"``, ``"samurai"``, ``"sam2long"``), a ``MemoryPolicy`` subclass or any factory returning
            one (called with ``num_maskmem=``, ``max_obj_ptrs=`` and ``policy_options``), or an import path
            ``"package.module:Factory"`` for a policy written outside vidtrack (docs/CUSTOM_POLICY.md).
        policy_options: overrides for the memory policy (e.g. ``{"kf_score_weight": 0.15}`` for SAMURAI). With
            ``policy`` set, only these are passed (the catalogue's defaults are for its own policy).
        semantics: how :meth:`~TrackingModelLoader.track_video` and ``track`` treat prompts on several frames
            (docs/SEMANTICS.md). ``"official"`` (default): Meta's ``SAM2VideoPredictor`` order -- every prompt
            is processed first, tracking starts at the earliest prompted frame of any object, every frame of an
            object attends to all its prompted frames (also later ones). ``"causal"``: a prompt takes effect
            when its frame is reached, as in ``stream``/``open_stream`` (always causal). Both give the same
            masks when every prompt is on the first frame. SAM 2 family only.
        backward: frames before the earliest prompt. ``"official"``: also run Meta's reverse propagation from
            the frame before the earliest prompted frame down to the first frame. ``"causal"``: track objects
            first prompted after the first frame backward to the first frame.
        threads: CPU threads for torch; None uses ``OMP_NUM_THREADS`` if set, else the CPUs this process may use
            (affinity-aware, so a container or Ray worker limited to N CPUs uses N threads).
        max_batch: how many object hypotheses (objects, SAM2Long pathways) go through memory attention, the
            mask decoder and the memory encoder in one call; 1 runs them one at a time like the official code.
            None: 16 on GPUs; 1 on CPUs, where memory attention is compute-bound and batching measured slower
            (BENCHMARKS.md).
    """

    model_id: str | None = None
    framework: TrackingFramework | str | None = None
    device: str = "auto"
    cache_dir: str | None = None
    checkpoint_path: str | None = None
    model_config: str | None = None
    image_size: int | None = None
    dtype: str = "auto"
    download: bool = False
    resize: str = "transformers"
    policy: str | Callable[..., Any] | None = None
    policy_options: dict[str, Any] = field(default_factory=dict)
    backward: bool = True
    semantics: str = "official"
    threads: int | None = None
    max_batch: int | None = None
    autocast: str = "auto"
    compile: bool = False
    encoder_ahead: str = "auto"



SEMANTICS = ("official", "causal")
"""Values of :attr:`TrackingConfig.semantics` (docs/SEMANTICS.md)."""
