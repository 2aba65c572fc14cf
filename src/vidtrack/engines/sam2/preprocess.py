"""Frame and mask pre/post-processing in plain torch (no torchvision).

``resize="transformers"`` reproduces ``Sam2VideoVideoProcessor`` exactly (max |diff| 0): resize the uint8
frame with antialiased bilinear interpolation to S x S (aspect ratio not kept, no padding), then /255 and
ImageNet mean/std. ``resize="official"`` reproduces the loader of Meta's predictor (``sam2/utils/misc.py``):
``PIL.Image.resize((S, S))`` with Pillow's default filter, then /255 and mean/std. The two differ by a few
grey levels per pixel; the parity check against the official code uses the official one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizeMethod = Literal["transformers", "official"]


def preprocess_frame(
    frame: np.ndarray,
    image_size: int,
    *,
    resize: ResizeMethod = "transformers",
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> normalised (3, S, S) tensor."""
    if resize == "official":
        resized = np.array(Image.fromarray(frame).resize((image_size, image_size)))
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1).contiguous().float().div_(255.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).unsqueeze(0)
        if t.device.type == "cpu":
            # torchvision resizes uint8 tensors in uint8 (its fixed-point kernel); resizing in float instead
            # differs by up to 0.0175 after normalisation, so use the same uint8 path.
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        else:  # the uint8 kernel is CPU-only; float then round is within one grey level of it
            t = F.interpolate(t.float(), size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True).round_().clamp_(0, 255)
        x = t[0].contiguous().float().div_(255.0)
    # in place on a contiguous (3, S, S) tensor: the same arithmetic as (x / 255 - mean) / std, without the
    # temporaries and strided reads (16 -> 8 ms a frame at 1024 px on one CPU thread)
    m = torch.tensor(mean, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, device=x.device).view(3, 1, 1)
    return x.sub_(m).div_(s).to(dtype)


def mask_to_model_input(mask: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean (H, W) mask prompt -> (1, 1, S, S) float {0, 1}.

    Same as ``Sam2VideoProcessor.process_new_mask_for_video_frame`` and the official ``add_new_mask``:
    antialiased bilinear resize of the 0/1 mask, then ``>= 0.5``.
    """
    m = torch.from_numpy(mask.astype(np.float32)).to(device)[None, None]
    if m.shape[-2:] != (image_size, image_size):
        m = F.interpolate(m, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return (m >= 0.5).float()


def scale_points(points: np.ndarray, height: int, width: int, image_size: int) -> np.ndarray:
    """Pixel (x, y) in the video frame -> model-input pixels (x * S / W, y * S / H)."""
    out = np.asarray(points, dtype=np.float32).reshape(-1, 2).copy()
    out[:, 0] *= image_size / width
    out[:, 1] *= image_size / height
    return out


def masks_to_video_res(low_res_logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 1, h, w) mask logits -> (N, H, W) boolean masks.

    One bilinear resize straight to the video size, then ``> 0``: what the official predictor's
    ``_get_orig_video_res_output`` and ``Sam2VideoProcessor.post_process_masks`` both do.
    """
    up = F.interpolate(low_res_logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    return up[:, 0] > 0
