"""Masks from the network's letterboxed input back to the video's pixels.

Without ``retina_masks`` ultralytics returns masks at the padded network input size (e.g. 384x640 for a
360x640 frame, 640x640 for static exports). Resizing those straight onto the frame shifts and stretches them
(reference: mean IoU with ground truth 0.968 -> 0.411 on the ONNX path). Here the padding is cut off using
the same letterbox geometry the predictor used (scale = min(in_h / H, in_w / W), the image centred with the
remainder as padding), the rest is resized bilinearly and thresholded at 0.5, and the result is cropped to
the detection box in frame pixels, which is what ``retina_masks=True`` does at frame resolution.
Written from that description; no ultralytics code is used.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_BUDGET = 16_000_000
"""Mask pixels (masks x frame pixels) resized at once."""


def letterbox_window(in_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the frame's content inside a letterboxed input of size ``in_hw``."""
    ih, iw = in_hw
    fh, fw = frame_hw
    gain = min(ih / fh, iw / fw)
    nh, nw = max(round(fh * gain), 1), max(round(fw * gain), 1)
    top = round((ih - nh) / 2 - 0.1)
    left = round((iw - nw) / 2 - 0.1)
    return max(top, 0), max(left, 0), min(nh, ih), min(nw, iw)


def unletterbox(masks: torch.Tensor, frame_hw: tuple[int, int], boxes: torch.Tensor | None = None) -> np.ndarray:
    """Letterboxed masks ``(N, h, w)`` (0/1) -> boolean numpy masks ``(N, H, W)`` at frame size.

    ``boxes`` (N, 4) xyxy in frame pixels crop each mask to its box, as masks never leave their box upstream.
    """
    fh, fw = frame_hw
    n = int(masks.shape[0])
    out = np.zeros((n, fh, fw), dtype=bool)
    # chunks bound the float intermediate (100 masks at 1080p would otherwise need ~800 MB)
    step = max(1, PIXEL_BUDGET // max(fh * fw, 1))
    for i in range(0, n, step):
        out[i : i + step] = _unletterbox_chunk(masks[i : i + step], frame_hw,
                                               None if boxes is None else boxes[i : i + step])
    return out


def _unletterbox_chunk(masks: torch.Tensor, frame_hw: tuple[int, int], boxes: torch.Tensor | None) -> np.ndarray:
    fh, fw = frame_hw
    if tuple(masks.shape[-2:]) == (fh, fw):
        out = masks.bool()
    else:
        ih, iw = int(masks.shape[-2]), int(masks.shape[-1])
        top, left, h, w = letterbox_window((ih, iw), frame_hw)
        m = masks.float()
        if boxes is not None and len(boxes):
            m = _extend_past_box(m, boxes, min(ih / fh, iw / fw), top, left)
        m = m[:, top : top + h, left : left + w][None]
        out = F.interpolate(m, size=(fh, fw), mode="bilinear", align_corners=False)[0] > 0.5
    if boxes is not None and len(boxes):
        b = boxes.to(out.device, torch.float32)
        cols = torch.arange(fw, device=out.device, dtype=torch.float32)[None, None, :]
        rows = torch.arange(fh, device=out.device, dtype=torch.float32)[None, :, None]
        x1, y1, x2, y2 = (b[:, k, None, None] for k in range(4))
        out = out & (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
    return out.cpu().numpy()


def _extend_past_box(masks: torch.Tensor, boxes: torch.Tensor, gain: float, top: int, left: int) -> torch.Tensor:
    """Copy each mask's first/last row and column inside its box one pixel outward.

    Upstream masks are cut at the box at input resolution; bilinear resizing would then blend the boundary
    pixels with the zeros outside and lose up to one frame pixel along box edges that cut through the object.
    The final crop at frame resolution (as ``retina_masks`` does) removes whatever this adds outside the box.
    """
    m = masks.clone()
    n, ih, iw = m.shape
    b = boxes.detach().cpu().double().numpy() * gain
    for i in range(n):
        c1 = max(int(np.ceil(b[i, 0] + left)), 0)
        c2 = min(int(np.ceil(b[i, 2] + left)), iw)  # first column outside
        r1 = max(int(np.ceil(b[i, 1] + top)), 0)
        r2 = min(int(np.ceil(b[i, 3] + top)), ih)
        if c2 <= c1 or r2 <= r1:
            continue
        if c1 > 0:
            m[i, r1:r2, c1 - 1] = m[i, r1:r2, c1]
        if c2 < iw:
            m[i, r1:r2, c2] = m[i, r1:r2, c2 - 1]
        lo, hi = max(c1 - 1, 0), min(c2 + 1, iw)
        if r1 > 0:
            m[i, r1 - 1, lo:hi] = m[i, r1, lo:hi]
        if r2 < ih:
            m[i, r2, lo:hi] = m[i, r2 - 1, lo:hi]
    return m


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union
