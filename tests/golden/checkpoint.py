"""The checkpoint the SAMURAI / SAM2Long goldens were recorded on: 14a's calibrated random init
(``tests/parity/calibration.py``) plus one change of ours, the IoU head's output layer scaled by ``iou_gain``.

Why the extra step: on the calibrated init the three candidates' predicted IoUs differ by 0.03-0.1 and hardly
move from frame to frame, so SAMURAI's weighted choice (0.25 KF IoU + 0.75 predicted IoU) always equals the
argmax and no frame falls under its 0.5 admission threshold. Scaling the IoU logits down brings the predicted
IoUs close to 0.5 and close to each other, as for an ambiguous object with trained weights: the Kalman filter
then decides between candidates, some frames fall below 0.5 (refused from memory), and SAM2Long's cumulative
scores stay close enough for a lower-ranked pathway to overtake (back-tracking changes the output).

The state dict is rebuilt from the seed at test time (46 MB: too big to commit); :func:`state_digest` pins it
so a change of PyTorch's random streams or of the calibration is reported instead of silently compared.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import torch

PARITY = Path(__file__).resolve().parents[1] / "parity"


def calibration() -> Any:
    if str(PARITY) not in sys.path:
        sys.path.insert(0, str(PARITY))
    import calibration as cal

    return cal


CONSTANTS = ("QK_GAIN", "OUT_GAIN", "TPOS_GAIN", "PTR_TPOS_GAIN", "OBJECT_BIAS")
"""The calibration module's gains; a golden records their values and is rebuilt with them."""


def calibration_constants() -> dict[str, float]:
    cal = calibration()
    return {k: float(getattr(cal, k)) for k in CONSTANTS if hasattr(cal, k)}


def golden_state_dict(seed: int, iou_gain: float, arch: Any = None, token_gain: float = 1.0,
                      token_qk: float = 1.0, mask_gain: float = 1.0, constants: dict[str, float] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Build the official model for ``arch`` (default: calibration.SMALL), calibrate it with ``constants``
    (default: the module's current gains), then apply our extra gains (IoU head, decoder token-to-image
    attention, memory mask channel)."""
    cal = calibration()
    saved = calibration_constants()
    torch.manual_seed(seed)  # the prompt encoder's Gaussian matrix is a buffer, drawn at construction
    pred = cal.build_predictor(arch or cal.SMALL)
    try:
        for k, v in (constants or {}).items():
            if k not in saved:
                raise ValueError(f"calibration has no constant {k}: the golden needs regenerating")
            setattr(cal, k, v)
        cal.calibrate(pred, seed)
    finally:
        for k, v in saved.items():
            setattr(cal, k, v)
    with torch.no_grad():
        last = pred.sam_mask_decoder.iou_prediction_head.layers[-1]
        last.weight.mul_(iou_gain)
        last.bias.mul_(iou_gain)
        tr = pred.sam_mask_decoder.transformer
        for att in [*(layer.cross_attn_token_to_image for layer in tr.layers), tr.final_attn_token_to_image]:
            att.q_proj.weight.mul_(token_qk)
            att.k_proj.weight.mul_(token_qk)
            att.out_proj.weight.mul_(token_gain)
            att.out_proj.bias.mul_(token_gain)
        down = pred.memory_encoder.mask_downsampler.encoder[-1]
        down.weight.mul_(mask_gain)
        down.bias.mul_(mask_gain)
    return {k: v.detach().clone().contiguous() for k, v in pred.state_dict().items()}


def state_digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save(sd: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Meta's ``{"model": state_dict}`` layout, written under a temporary name and renamed."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"model": sd}, tmp)
    os.replace(tmp, p)
    return p
